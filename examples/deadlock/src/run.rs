//! Running the swarm: one cyclic and one acyclic task on a node of this process, until every
//! agent of both has ended.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use choreo::{
    Bus, BusConfig, CorrelationId, DeadlockDetected, Event, Node, RunningNode, SagaStatus, Store,
    DEADLOCK_DETECTED,
};
use serde::Serialize;

use crate::agent::{AgentState, SwarmAgent};
use crate::domain::{CodeWritten, DocsWritten, SpecWritten, TaskSubmitted, TestsWritten, Variant};
use crate::wiring::Role;

/// The correlation of the cyclic task.
pub const CYCLIC_CORRELATION: &str = "swarm-cyclic";
/// The correlation of the acyclic task.
pub const ACYCLIC_CORRELATION: &str = "swarm-acyclic";
/// What the swarm is asked to build.
pub const TASK: &str = "a CSV parser";

/// How often the run reads the store while it waits.
const POLL: Duration = Duration::from_millis(50);

/// Options of a run.
#[derive(Clone, Debug)]
pub struct DeadlockOptions {
    /// The node's store.
    pub data_dir: PathBuf,
    /// Give up waiting for the agents to end after this long.
    pub deadline: Duration,
    /// The node's id in the cluster (default: generated).
    pub node_id: Option<String>,
    /// Lease TTL of partition ownership.
    pub lease_ttl: Duration,
    /// Deadlock detection and the stall watchdog (default on; off, the swarm waits forever).
    pub coordination: bool,
}

impl DeadlockOptions {
    /// Defaults: a 30 s deadline, a generated node id, the default lease TTL, detection on.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            deadline: Duration::from_secs(30),
            node_id: None,
            lease_ttl: choreo::DEFAULT_LEASE_TTL,
            coordination: true,
        }
    }
}

/// How one agent ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentOutcome {
    /// The agent (saga name).
    pub saga: String,
    /// Its final status.
    pub status: SagaStatus,
    /// Why it failed, if it did.
    pub reason: Option<String>,
    /// What it wrote, if anything (from its state).
    pub produced: Option<String>,
}

/// What happened on one correlation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CorrelationSummary {
    /// The correlation.
    pub correlation: String,
    /// The task's wiring.
    pub variant: Variant,
    /// Every agent, in [`Role::ALL`] order.
    pub agents: Vec<AgentOutcome>,
    /// The deadlocks detected on it, in log order.
    pub deadlocks: Vec<DeadlockDetected>,
}

impl CorrelationSummary {
    /// The outcome of the agent named `saga`.
    pub fn agent(&self, saga: &str) -> Option<&AgentOutcome> {
        self.agents.iter().find(|a| a.saga == saga)
    }
}

/// The result of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The cyclic task (seed 002).
    pub cyclic: CorrelationSummary,
    /// The acyclic task.
    pub acyclic: CorrelationSummary,
}

/// Start a node hosting the four agents.
pub async fn node(cfg: BusConfig, opts: &DeadlockOptions) -> anyhow::Result<RunningNode> {
    let mut b = Node::builder()
        .bus(cfg)
        .data_dir(&opts.data_dir)
        .lease_ttl(opts.lease_ttl)
        .coordination(opts.coordination)
        .register::<TaskSubmitted>()
        .register::<SpecWritten>()
        .register::<CodeWritten>()
        .register::<TestsWritten>()
        .register::<DocsWritten>();
    for role in Role::ALL {
        b = b.saga(SwarmAgent::new(role));
    }
    if let Some(id) = &opts.node_id {
        b = b.node_id(id);
    }
    Ok(b.build()?.start().await?)
}

/// The correlation of a variant's task.
pub fn correlation_of(variant: Variant) -> &'static str {
    match variant {
        Variant::Cyclic => CYCLIC_CORRELATION,
        Variant::Acyclic => ACYCLIC_CORRELATION,
    }
}

/// The root event of a variant's task.
pub fn task_event(variant: Variant) -> anyhow::Result<Event> {
    Ok(Event::root(
        "/examples/deadlock",
        CorrelationId::new(correlation_of(variant))?,
        &TaskSubmitted {
            task: TASK.to_owned(),
            variant,
        },
    )?)
}

/// Start a node, submit one cyclic and one acyclic task, wait until all eight agent instances
/// have ended (or `opts.deadline` passed), and report how each ended and what was detected.
pub async fn run(cfg: BusConfig, opts: &DeadlockOptions) -> anyhow::Result<Summary> {
    let node = node(cfg, opts).await?;
    let summary = watch(&node, opts).await;
    node.shutdown().await?;
    summary
}

async fn watch(node: &RunningNode, opts: &DeadlockOptions) -> anyhow::Result<Summary> {
    let store = node.store().context("the node has no store")?;
    let variants = [Variant::Cyclic, Variant::Acyclic];
    for v in variants {
        node.bus().publish(&task_event(v)?).await?;
    }
    let waited = tokio::time::timeout(opts.deadline, async {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            if pending(store, &variants)?.is_empty() {
                return anyhow::Ok(());
            }
        }
    })
    .await;
    match waited {
        Ok(r) => r?,
        Err(_) => anyhow::bail!(
            "not every agent ended within {:?}; still open: {}",
            opts.deadline,
            pending(store, &variants)?.join(", ")
        ),
    }
    Ok(Summary {
        cyclic: summarize(node.bus(), store, Variant::Cyclic).await?,
        acyclic: summarize(node.bus(), store, Variant::Acyclic).await?,
    })
}

/// The agent instances (`saga/correlation`) of `variants` not yet ended, with their status.
fn pending(store: &Store, variants: &[Variant]) -> anyhow::Result<Vec<String>> {
    let mut open = Vec::new();
    for v in variants {
        let corr = correlation_of(*v);
        for role in Role::ALL {
            let status = store.get(role.name(), corr)?.map(|r| r.status);
            if !status.is_some_and(SagaStatus::is_terminal) {
                open.push(format!(
                    "{}/{corr} ({})",
                    role.name(),
                    status.map_or("not started", SagaStatus::as_str)
                ));
            }
        }
    }
    Ok(open)
}

async fn summarize(
    bus: &Bus,
    store: &Store,
    variant: Variant,
) -> anyhow::Result<CorrelationSummary> {
    let corr = correlation_of(variant);
    let mut agents = Vec::new();
    for role in Role::ALL {
        let r = store
            .get(role.name(), corr)?
            .with_context(|| format!("no instance of {} on {corr}", role.name()))?;
        let state: Option<AgentState> = rmp_serde::from_slice(&r.state).ok();
        agents.push(AgentOutcome {
            saga: r.saga,
            status: r.status,
            reason: r.reason,
            produced: state.and_then(|s| s.produced),
        });
    }
    let mut deadlocks = Vec::new();
    for stored in bus.history(&CorrelationId::new(corr)?).await? {
        let Ok(e) = stored.event else { continue };
        if e.ty.as_str() == DEADLOCK_DETECTED {
            let d: DeadlockDetected = rmp_serde::from_slice(&e.data)
                .with_context(|| format!("decode {DEADLOCK_DETECTED} {}", e.id))?;
            deadlocks.push(d);
        }
    }
    Ok(CorrelationSummary {
        correlation: corr.to_owned(),
        variant,
        agents,
        deadlocks,
    })
}
