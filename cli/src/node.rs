//! `choreo node`: run one node process hosting an example's actors and sagas until SIGTERM or
//! Ctrl-C. Several such processes on one NATS share the saga partitions (one owner each, moved
//! on join, leave and death).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use choreo::{BusConfig, Replicas, RunningNode};
use clap::Args;

use crate::demo::Example;

/// The line a node prints once it is connected and claiming partitions (tests wait for it).
pub(crate) const READY: &str = "choreo node ready";

#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// Which example's actors and sagas to host.
    #[arg(long, value_enum, default_value_t = Example::Travel)]
    pub(crate) example: Example,
    /// NATS URL (several servers: comma-separated).
    #[arg(long, env = "CHOREO_NATS_URL", default_value = choreo::DEFAULT_NATS_URL)]
    pub(crate) nats: String,
    /// The node's store (its materialisation of the partitions it owns); default: a temporary
    /// directory removed at exit. The changelog in NATS is the durable truth either way.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// This node's id (unique among running nodes; a restarted node with the same id takes its
    /// leases back at once). Default: generated.
    #[arg(long)]
    pub(crate) node_id: Option<String>,
    /// Lease TTL in milliseconds: a dead node's partitions move after about this long.
    #[arg(long, default_value_t = 5000)]
    pub(crate) lease_ttl_ms: u64,
    /// Retention of ended saga instances in seconds (default 7 days; 0 keeps them forever):
    /// then they leave the changelog (a per-message TTL) and the store.
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    pub(crate) retention_secs: u64,
    /// Partition count used when the log is created.
    #[arg(long, env = "CHOREO_PARTITIONS", default_value_t = 16)]
    pub(crate) partitions: u16,
    /// Stream replicas (1, or 3 on a 3-server cluster).
    #[arg(long, default_value_t = 1)]
    pub(crate) replicas: u8,
    /// Step timeout of the travel saga (approval timeout of the release saga), in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub(crate) step_timeout_ms: u64,
    /// The seed of the example (the release example's auto-approver).
    #[arg(long, default_value_t = 7)]
    pub(crate) seed: u64,
    /// Turn deadlock detection and the stall watchdog off (this node publishes no topology
    /// and checks no waits).
    #[arg(long)]
    pub(crate) no_coordination: bool,
    /// Deliberate bugs, for testing the chaos suite's checker (travel only):
    /// `double-apply` (providers apply every booking twice), `forget-compensation` (the saga
    /// issues the hotel step without its compensation), `ignore-fencing` (commits are not
    /// fenced and a lost lease does not stop a partition).
    #[arg(long, hide = true, value_enum, value_delimiter = ',')]
    pub(crate) bug: Vec<Bug>,
    /// The data format of the events this node publishes: `msgpack`, or `json` for consumers
    /// in other languages (choreo reads both).
    #[arg(long, env = "CHOREO_DATA_FORMAT", default_value = "msgpack", value_parser = choreo_ops::parse_data_format)]
    pub(crate) data_format: choreo::DataFormat,
}

/// A deliberate bug (`--bug`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Bug {
    DoubleApply,
    ForgetCompensation,
    IgnoreFencing,
}

pub(crate) fn bus_config(
    url: &str,
    partitions: u16,
    replicas: u8,
    name: &str,
    data_format: choreo::DataFormat,
) -> anyhow::Result<BusConfig> {
    let replicas = match replicas {
        1 => Replicas::One,
        3 => Replicas::Three,
        n => anyhow::bail!("--replicas must be 1 or 3, not {n}"),
    };
    Ok(BusConfig::builder()
        .url(url)
        .partitions(partitions)
        .replicas(replicas)
        .client_name(name)
        .data_format(data_format)
        .build()?)
}

async fn start(args: &NodeArgs, dir: PathBuf) -> anyhow::Result<RunningNode> {
    let cfg = bus_config(
        &args.nats,
        args.partitions,
        args.replicas,
        "choreo-node",
        args.data_format,
    )?;
    let ttl = Duration::from_millis(args.lease_ttl_ms);
    if !args.bug.is_empty() && args.example != Example::Travel {
        anyhow::bail!("--bug applies to the travel example only");
    }
    Ok(match args.example {
        Example::Travel => {
            let mut opts = choreo_example_travel::TravelOptions::new(0, args.seed, dir);
            opts.step_timeout = Duration::from_millis(args.step_timeout_ms);
            opts.node_id.clone_from(&args.node_id);
            opts.lease_ttl = ttl;
            opts.retention = Duration::from_secs(args.retention_secs);
            opts.coordination = !args.no_coordination;
            opts.bugs = choreo_example_travel::Bugs {
                double_apply: args.bug.contains(&Bug::DoubleApply),
                forget_compensation: args.bug.contains(&Bug::ForgetCompensation),
                ignore_fencing: args.bug.contains(&Bug::IgnoreFencing),
            };
            choreo_example_travel::node(cfg, &opts).await?
        }
        Example::Release => {
            let mut opts = choreo_example_release::ReleaseOptions::new(0, args.seed, dir);
            opts.approval_timeout = Duration::from_millis(args.step_timeout_ms);
            opts.node_id.clone_from(&args.node_id);
            opts.lease_ttl = ttl;
            opts.retention = Duration::from_secs(args.retention_secs);
            opts.coordination = !args.no_coordination;
            choreo_example_release::node(cfg, &opts).await?
        }
        Example::Deadlock => {
            // The four agents of seed 002 (`--retention-secs` does not apply: the engine's
            // default does).
            let mut opts = choreo_example_deadlock::DeadlockOptions::new(dir);
            opts.node_id.clone_from(&args.node_id);
            opts.lease_ttl = ttl;
            opts.coordination = !args.no_coordination;
            choreo_example_deadlock::node(cfg, &opts).await?
        }
    })
}

/// How long `choreo node` keeps starting again while the cluster cannot answer.
const START_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(120);

/// Whether a failed start failed because the cluster could not answer yet (no reply in time, no
/// JetStream leader, no quorum), not because of what was asked: then starting again may work.
fn cluster_not_ready(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}").to_lowercase();
    [
        "timed out",
        "temporarily unavailable",
        "no responders",
        "insufficient resources",
        "no suitable peers",
        "jetstream not enabled",
    ]
    .iter()
    .any(|p| text.contains(p))
}

pub(crate) async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install the SIGTERM handler")?;
    // A node started while its cluster cannot answer (a server restarting, a leader being
    // elected) waits for it, as a broker client would, instead of exiting.
    let give_up = tokio::time::Instant::now() + START_RETRY_FOR;
    let mut pause = std::time::Duration::from_millis(200);
    let node = loop {
        match start(&args, dir.clone()).await {
            Ok(node) => break node,
            Err(e) if cluster_not_ready(&e) && tokio::time::Instant::now() + pause < give_up => {
                eprintln!(
                    "choreo node: the cluster cannot answer yet ({e:#}); retrying in {pause:?}"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    };
    println!(
        "{READY}: {} hosting the {:?} example on {}",
        node.node_id(),
        args.example,
        args.nats
    );
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("wait for Ctrl-C")?,
    }
    eprintln!(
        "choreo node {}: stopping (handing its partitions over)",
        node.node_id()
    );
    node.shutdown().await?;
    eprintln!("choreo node: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::cluster_not_ready;

    #[test]
    fn only_a_cluster_that_cannot_answer_is_waited_for() {
        let timed_out = anyhow::anyhow!("jetstream request timed out")
            .context("JetStream request failed (create stream CHOREO_DLQ)");
        assert!(cluster_not_ready(&timed_out));
        let mismatch = anyhow::anyhow!(
            "the log in stream CHOREO_EVENTS was created with 8 partitions, but this node is configured with 4"
        );
        assert!(!cluster_not_ready(&mismatch));
    }
}
