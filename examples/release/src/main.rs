//! `release`: run the release example against its own temporary nats-server.

use choreo::{BusConfig, NatsServer};
use choreo_example_release::{run, ReleaseOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHOREO_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let server = NatsServer::start_temp().await?;
    let dir = tempfile::tempdir()?;
    let opts = ReleaseOptions::new(10, 7, dir.path().to_path_buf());
    let summary = run(
        BusConfig::builder().url(server.url()).build()?,
        &opts,
        |c, o, done, total| {
            println!("[{done:>2}/{total}] {c}: {}", o.as_str());
        },
    )
    .await?;
    for (o, n) in &summary.counts {
        println!("{:<10} {n}", o.as_str());
    }
    Ok(())
}
