//! Building a scenario: the built-in travel workload by default, a user's own node command,
//! workload and invariants otherwise; validated by [`ScenarioBuilder::build`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::checker::{Expectations, Invariant};
use crate::error::ChaosError;
use crate::run::Scenario;
use crate::schedule::FaultKind;
use crate::topology::NodeCommand;
use crate::travel::{expectations, LedgerInvariant, Trips};
use crate::workload::Workload;

/// The step timeout the built-in travel nodes run with (`--step-timeout-ms`).
pub const TRAVEL_STEP_TIMEOUT: Duration = Duration::from_secs(4);

/// The arguments of `choreo node` for the built-in travel scenario, with the placeholders of
/// [`NodeCommand`].
pub fn travel_node_args(lease_ttl: Duration, partitions: u16, replicas: usize) -> Vec<String> {
    [
        "node",
        "--example",
        "travel",
        "--nats",
        "{nats}",
        "--node-id",
        "{id}",
        "--data-dir",
        "{data_dir}",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([
        "--lease-ttl-ms".to_owned(),
        lease_ttl.as_millis().to_string(),
        "--partitions".to_owned(),
        partitions.to_string(),
        "--replicas".to_owned(),
        replicas.to_string(),
        "--step-timeout-ms".to_owned(),
        TRAVEL_STEP_TIMEOUT.as_millis().to_string(),
    ])
    .collect()
}

/// Builds a [`Scenario`].
pub struct ScenarioBuilder {
    s: Scenario,
}

impl ScenarioBuilder {
    pub(crate) fn new(command: NodeCommand) -> Self {
        Self {
            s: Scenario {
                seed: 1,
                servers: 3,
                nodes: 3,
                command,
                workload: Arc::new(Trips { seed: 7 }),
                expectations: expectations(TRAVEL_STEP_TIMEOUT),
                extra: vec![Box::new(LedgerInvariant)],
                rate: 10.0,
                warmup: Duration::from_secs(5),
                faults_for: Duration::from_secs(60),
                quiesce_max: Duration::from_secs(120),
                kinds: FaultKind::ALL.to_vec(),
                per_kind: 1,
                lease_ttl: Duration::from_secs(2),
                partitions: 8,
                keep: None,
                progress: false,
            },
        }
    }

    /// The seed of the schedule, the jitter and the injections.
    pub fn seed(mut self, seed: u64) -> Self {
        self.s.seed = seed;
        self
    }
    /// Servers: 1, or a cluster of 3 (or 5).
    pub fn servers(mut self, n: usize) -> Self {
        self.s.servers = n;
        self
    }
    /// Node processes.
    pub fn nodes(mut self, n: usize) -> Self {
        self.s.nodes = n;
        self
    }
    /// Start events per second (open loop).
    pub fn rate(mut self, per_s: f64) -> Self {
        self.s.rate = per_s;
        self
    }
    /// The warm-up before the first fault.
    pub fn warmup(mut self, d: Duration) -> Self {
        self.s.warmup = d;
        self
    }
    /// The length of the fault phase.
    pub fn faults_for(mut self, d: Duration) -> Self {
        self.s.faults_for = d;
        self
    }
    /// The bound of the quiescence phase.
    pub fn quiesce_max(mut self, d: Duration) -> Self {
        self.s.quiesce_max = d;
        self
    }
    /// The fault kinds to inject (empty: a run with no faults, the control).
    pub fn kinds(mut self, kinds: Vec<FaultKind>) -> Self {
        self.s.kinds = kinds;
        self
    }
    /// Faults of each kind.
    pub fn per_kind(mut self, n: usize) -> Self {
        self.s.per_kind = n;
        self
    }
    /// The nodes' lease TTL (pauses and cuts outlast it).
    pub fn lease_ttl(mut self, d: Duration) -> Self {
        self.s.lease_ttl = d;
        self
    }
    /// Partitions of the log (the nodes must be started with the same count).
    pub fn partitions(mut self, n: u16) -> Self {
        self.s.partitions = n;
        self
    }
    /// Keep the servers' and nodes' data (and the nodes' logs) in `dir`.
    pub fn keep(mut self, dir: impl Into<PathBuf>) -> Self {
        self.s.keep = Some(dir.into());
        self
    }
    /// Print the schedule and progress on stderr.
    pub fn progress(mut self, on: bool) -> Self {
        self.s.progress = on;
        self
    }
    /// A workload of the user's own, with what the built-in invariants need to know of its
    /// saga. Replaces the travel workload and its ledger invariant.
    pub fn workload(mut self, w: Arc<dyn Workload>, e: Expectations) -> Self {
        self.s.workload = w;
        self.s.expectations = e;
        self.s.extra.clear();
        self
    }
    /// One more invariant over what was written.
    pub fn invariant(mut self, i: Box<dyn Invariant>) -> Self {
        self.s.extra.push(i);
        self
    }

    /// The scenario, or why it cannot run.
    pub fn build(self) -> Result<Scenario, ChaosError> {
        let s = self.s;
        let bad = |m: &str| Err(ChaosError::Scenario(m.to_owned()));
        if s.servers == 0 || s.servers == 2 || s.servers > 5 {
            return bad("servers must be 1, 3, 4 or 5 (2 cannot keep a quorum through a fault)");
        }
        if s.nodes == 0 || s.nodes > 16 {
            return bad("nodes must be 1..=16");
        }
        if !(s.rate > 0.0 && s.rate <= 10_000.0) {
            return bad("rate must be in (0, 10000] per second");
        }
        if s.partitions == 0 {
            return bad("partitions must be at least 1");
        }
        if s.lease_ttl < Duration::from_millis(500) {
            return bad("the lease TTL must be at least 500 ms");
        }
        if !s.kinds.is_empty() && s.faults_for < Duration::from_secs(5) {
            return bad("the fault phase must last at least 5 s");
        }
        if s.per_kind == 0 || s.per_kind > 100 {
            return bad("faults per kind must be 1..=100");
        }
        Ok(s)
    }
}
