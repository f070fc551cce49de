//! `choreo bench`: the engine against the raw JetStream baseline (and a peer), in one run.

use std::path::PathBuf;

use clap::Args;

/// Arguments of `choreo bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Workload: raw, hop, saga, timers, failover or all.
    #[arg(default_value = "all")]
    workload: String,
    /// A few seconds per workload: smoke-sized but real measurements.
    #[arg(long)]
    quick: bool,
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Use this nats-server instead of starting one (no CHOREO_NATS_URL default: benchmarks
    /// should not run against a shared server by accident).
    #[arg(long)]
    nats: Option<String>,
    /// Start the server with `sync_interval: always` (fsync every write).
    #[arg(long)]
    sync_always: bool,
    /// Run the same saga against a peer engine in the same invocation (`restate`).
    #[arg(long)]
    peer: Option<String>,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let workloads = choreo_benches::Workload::parse(&args.workload)?;
    let opts = choreo_benches::BenchOptions::builder()
        .quick(args.quick)
        .nats_url(args.nats.clone())
        .sync_always(args.sync_always)
        .peer(
            args.peer
                .as_deref()
                .map(choreo_benches::Peer::parse)
                .transpose()?,
        )
        .build()?;
    let report = choreo_benches::run(&workloads, &opts).await?;
    print!("{}", report.to_table());
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json()?)?;
        println!("report written to {}", path.display());
    }
    Ok(())
}
