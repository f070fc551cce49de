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
    /// Run a cluster of N servers on free loopback ports with temporary stores instead (3 for
    /// R3 streams: `choreo node --replicas 3`).
    #[arg(long)]
    cluster: Option<usize>,
}

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<()> {
    if let Some(n) = args.cluster {
        return run_cluster(n, args.partitions).await;
    }
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

async fn run_cluster(n: usize, partitions: u16) -> anyhow::Result<()> {
    if n == 0 {
        anyhow::bail!("--cluster needs at least 1 server");
    }
    let cluster = choreo::NatsCluster::start(n)
        .await
        .context("start the cluster")?;
    let url = cluster.urls().join(",");
    let replicas = if n >= 3 {
        choreo::Replicas::Three
    } else {
        choreo::Replicas::One
    };
    let cfg = BusConfig::builder()
        .url(url.as_str())
        .partitions(partitions)
        .replicas(replicas)
        .build()?;
    let bus = Bus::connect(cfg)
        .await
        .context("provision the choreo streams")?;
    println!(
        "{n} nats-servers {} in a cluster (temporary stores); streams with {} replica(s), {} partitions",
        bus.server_version(),
        if n >= 3 { 3 } else { 1 },
        bus.config().partitions()
    );
    println!("URL: {url}");
    println!("export CHOREO_NATS_URL={url}");
    println!(
        "then, in other terminals: choreo node --replicas {} --node-id n1 (and n2, n3...)",
        if n >= 3 { 3 } else { 1 }
    );
    println!("Ctrl-C to stop.");
    tokio::signal::ctrl_c().await.context("wait for Ctrl-C")?;
    println!("stopping the cluster");
    drop(cluster);
    Ok(())
}
