//! `choreo dev`: a local nats-server for development.

use std::path::PathBuf;

use anyhow::Context as _;
use choreo::{Bus, BusConfig, NatsServer, ServerOptions};
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Port to listen on (loopback).
    #[arg(long, default_value_t = 4222)]
    port: u16,
    /// JetStream store directory (kept between runs).
    #[arg(long, default_value = ".choreo/nats")]
    store_dir: PathBuf,
    /// Partition count used when the log is created.
    #[arg(long, env = "CHOREO_PARTITIONS", default_value_t = 16)]
    partitions: u16,
    /// fsync every write (`sync_interval: always`).
    #[arg(long)]
    sync_always: bool,
}

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<()> {
    let mut server = NatsServer::start(ServerOptions {
        port: Some(args.port),
        store_dir: Some(args.store_dir.clone()),
        sync_always: args.sync_always,
    })
    .await?;
    let cfg = BusConfig::builder()
        .url(server.url())
        .partitions(args.partitions)
        .build()?;
    let bus = Bus::connect(cfg)
        .await
        .context("provision the choreo streams")?;
    println!(
        "nats-server {} ({}) with JetStream in {}",
        bus.server_version(),
        server.binary().path.display(),
        args.store_dir.display()
    );
    println!(
        "streams {} and {} ready, {} partitions",
        bus.config().events_stream(),
        bus.config().dlq_stream(),
        bus.config().partitions()
    );
    println!("URL: {}", server.url());
    println!("export CHOREO_NATS_URL={}", server.url());
    println!("Ctrl-C to stop.");
    tokio::signal::ctrl_c().await.context("wait for Ctrl-C")?;
    println!("stopping nats-server");
    server.stop().await?;
    Ok(())
}
