//! Running the release swarm.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use choreo::{
    Bus, BusConfig, CorrelationId, Event, EventId, InstanceRecord, Node, RunningNode, SagaStatus,
    Store,
};
use choreo_agents::{Agent, Executor, Model, Planner, Verifier};
use choreo_services::Ledger;
use serde::Serialize;

use crate::actors::{answer_for, Answer, AutoApprover, Deployer, SimulatedShell, StagingDeploy};
use crate::domain::ReleaseRequested;
use crate::saga::ReleaseSaga;

/// How a release ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Deployed to production.
    Deployed,
    /// Approval denied: rolled back.
    Denied,
    /// Approval never came: rolled back.
    TimedOut,
    /// Something else failed: rolled back.
    Failed,
}

impl Outcome {
    /// Label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::Denied => "denied",
            Outcome::TimedOut => "timed out",
            Outcome::Failed => "failed",
        }
    }
}

/// Options of a run.
#[derive(Clone)]
pub struct ReleaseOptions {
    /// Number of releases.
    pub releases: u32,
    /// Seed of the demo's approver.
    pub seed: u64,
    /// Per-step timeout.
    pub step_timeout: Duration,
    /// Approval timeout.
    pub approval_timeout: Duration,
    /// The node's store.
    pub data_dir: PathBuf,
    /// Answer approvals automatically (the demo); otherwise someone runs `choreo approve`.
    pub auto_approve: bool,
    /// The model every agent uses.
    pub model: Arc<dyn Model>,
    /// Give up waiting after this long.
    pub deadline: Duration,
    /// The node's id in the cluster (default: generated).
    pub node_id: Option<String>,
    /// Lease TTL of partition ownership.
    pub lease_ttl: Duration,
    /// Retention of ended instances (zero: forever).
    pub retention: Duration,
    /// Deadlock detection and the stall watchdog (default on).
    pub coordination: bool,
}

impl std::fmt::Debug for ReleaseOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseOptions")
            .field("releases", &self.releases)
            .field("seed", &self.seed)
            .field("model", &self.model.name())
            .finish_non_exhaustive()
    }
}

impl ReleaseOptions {
    /// Defaults: auto-approval, a 1.5 s approval timeout, the model from the environment.
    pub fn new(releases: u32, seed: u64, data_dir: PathBuf) -> Self {
        Self {
            releases,
            seed,
            step_timeout: Duration::from_secs(30),
            approval_timeout: Duration::from_millis(1500),
            data_dir,
            auto_approve: true,
            model: crate::actors::model_from_env(),
            deadline: Duration::from_secs(120),
            node_id: None,
            lease_ttl: choreo::DEFAULT_LEASE_TTL,
            retention: choreo::DEFAULT_RETENTION,
            coordination: true,
        }
    }
}

/// With auto-approval, what happens to release `index` (the run must agree).
pub fn predict(opts: &ReleaseOptions, index: u32) -> Outcome {
    match answer_for(opts.seed, index) {
        Answer::Grant => Outcome::Deployed,
        Answer::Deny => Outcome::Denied,
        Answer::Ignore => Outcome::TimedOut,
    }
}

/// How a finished release's record reads as an outcome.
pub fn classify(record: &InstanceRecord) -> Outcome {
    let reason = record.reason.as_deref().unwrap_or_default();
    match record.status {
        SagaStatus::Completed => Outcome::Deployed,
        SagaStatus::Compensated if reason.contains("denied") => Outcome::Denied,
        SagaStatus::Compensated if reason.contains("approval timed out") => Outcome::TimedOut,
        _ => Outcome::Failed,
    }
}

/// The result of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Outcome per release correlation, in order.
    pub releases: Vec<(String, Outcome)>,
    /// Releases per outcome.
    pub counts: BTreeMap<Outcome, usize>,
}

/// Start the release node: saga, agents, deployer (and the auto-approver if asked).
pub async fn node(cfg: BusConfig, opts: &ReleaseOptions) -> anyhow::Result<RunningNode> {
    let bus = choreo::Bus::connect(cfg.clone()).await?;
    let ledger = Ledger::open(&bus, "RELEASE_LEDGER").await?;
    let mut b = Node::builder()
        .bus(cfg)
        .data_dir(&opts.data_dir)
        .lease_ttl(opts.lease_ttl)
        .retention(opts.retention)
        .coordination(opts.coordination)
        .register::<ReleaseRequested>()
        // A person answers approvals (`choreo approve`): never part of a deadlock.
        .external(<choreo_services::ApprovalGranted as choreo::Payload>::event_type())
        .external(<choreo_services::ApprovalDenied as choreo::Payload>::event_type())
        .saga(ReleaseSaga {
            step_timeout: opts.step_timeout,
            approval_timeout: opts.approval_timeout,
        })
        .reactor(Agent::new(Planner, opts.model.clone()))
        .reactor(Agent::new(
            Executor::new().tool(SimulatedShell).tool(StagingDeploy),
            opts.model.clone(),
        ))
        .reactor(Agent::new(Verifier, opts.model.clone()))
        .reactor(Deployer::new(ledger));
    if opts.auto_approve {
        b = b.reactor(AutoApprover { seed: opts.seed });
    }
    if let Some(id) = &opts.node_id {
        b = b.node_id(id);
    }
    Ok(b.build()?.start_on(bus).await?)
}

/// The root event of release `index` of run `run_id`.
pub fn release_event(index: u32, run_id: &str) -> anyhow::Result<Event> {
    let id = format!("release-{index}-{run_id}");
    Ok(Event::root(
        "/examples/release",
        CorrelationId::new(id.as_str())?,
        &ReleaseRequested {
            release: id,
            version: format!("1.{index}.0"),
        },
    )?)
}

/// Run `opts.releases` releases on a node of this process; `progress` is called as each ends.
pub async fn run(
    cfg: BusConfig,
    opts: &ReleaseOptions,
    progress: impl FnMut(&str, Outcome, usize, usize),
) -> anyhow::Result<Summary> {
    let node = node(cfg, opts).await?;
    let summary = drive(node.bus(), node.store(), opts, progress).await;
    node.shutdown().await?;
    summary
}

/// Publish `opts.releases` releases and wait for their outcomes (and their rollbacks'
/// confirmations), wherever the saga runs.
pub async fn drive(
    bus: &Bus,
    store: Option<&Store>,
    opts: &ReleaseOptions,
    mut progress: impl FnMut(&str, Outcome, usize, usize),
) -> anyhow::Result<Summary> {
    let run_id: String = EventId::new_root()
        .to_string()
        .chars()
        .rev()
        .take(6)
        .collect();
    let roots: Vec<Event> = (0..opts.releases)
        .map(|i| release_event(i, &run_id))
        .collect::<anyhow::Result<_>>()?;
    let records = choreo::run_to_end(
        bus,
        store,
        "release",
        &roots,
        opts.deadline,
        |r, done, total| progress(&r.correlation, classify(r), done, total),
    )
    .await?;
    // A compensated release has emitted its rollback; report only once the deployer confirmed
    // each one (the saga does not track compensation confirmations yet: issue 10).
    let rolled_back: std::collections::BTreeSet<String> = records
        .iter()
        .filter(|r| r.status == SagaStatus::Compensated)
        .map(|r| r.correlation.clone())
        .collect();
    wait_for_rollbacks(bus, rolled_back, opts.deadline).await?;
    let releases: Vec<(String, Outcome)> = records
        .iter()
        .map(|r| (r.correlation.clone(), classify(r)))
        .collect();
    let mut counts = BTreeMap::new();
    for (_, o) in &releases {
        *counts.entry(*o).or_default() += 1;
    }
    Ok(Summary { releases, counts })
}

/// Await `rollback.completed.v1` for each of `pending` (correlations), or fail after `deadline`.
async fn wait_for_rollbacks(
    bus: &Bus,
    mut pending: std::collections::BTreeSet<String>,
    deadline: Duration,
) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    if pending.is_empty() {
        return Ok(());
    }
    let filter = bus
        .subjects()
        .type_filter(&<crate::domain::RollbackCompleted as choreo::Payload>::event_type());
    let mut done = bus.follow_events(&filter, true).await?;
    tokio::time::timeout(deadline, async {
        while !pending.is_empty() {
            let Some(next) = done.next().await else {
                anyhow::bail!("the event stream closed");
            };
            if let Ok(e) = next?.event {
                pending.remove(e.correlation.as_str());
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("rollbacks not confirmed within {deadline:?}"))?
}
