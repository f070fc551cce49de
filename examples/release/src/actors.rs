//! The release swarm's other actors: the deployer service, the executor's tools, the scripted
//! model, and the demo's stand-in for a human approver.

use std::sync::Arc;

use choreo::{Event, EventType, Payload, ReactContext, ReactError, Reactor};
use choreo_agents::{Model, ScriptedModel, Tool};
use choreo_services::{
    dry_run_type, emit_dry_run, ApprovalDenied, ApprovalGranted, ApprovalRequested, Ledger,
};
use futures::future::BoxFuture;

use crate::domain::{DeployCompleted, DeployRequested, RollbackCompleted, RollbackRequested};

/// Deploys and rolls back, once per command (idempotent ledger), or only reports in dry-run.
#[derive(Clone, Debug)]
pub struct Deployer {
    ledger: Ledger,
}

impl Deployer {
    /// A deployer recording in `ledger`.
    pub fn new(ledger: Ledger) -> Self {
        Self { ledger }
    }
}

impl Reactor for Deployer {
    fn name(&self) -> &str {
        "deployer"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![
            DeployRequested::event_type(),
            RollbackRequested::event_type(),
        ]
    }
    fn emits(&self) -> Vec<EventType> {
        let mut e = vec![
            DeployCompleted::event_type(),
            RollbackCompleted::event_type(),
        ];
        e.extend(self.consumes().iter().filter_map(|t| dry_run_type(t).ok()));
        e
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let rollback = e.ty == RollbackRequested::event_type();
        let (release, env) = if rollback {
            let r: RollbackRequested = e.decode()?;
            (r.release, r.env)
        } else {
            let d: DeployRequested = e.decode()?;
            (d.release, d.env)
        };
        let what = format!(
            "{} {release} in {env}",
            if rollback { "roll back" } else { "deploy" }
        );
        if ctx.dry_run() {
            return emit_dry_run(ctx, e, &what);
        }
        self.ledger
            .apply(&ctx.idempotency_key(), &what, &e.data)
            .await
            .map_err(ReactError::transient)?;
        if rollback {
            ctx.emit(&RollbackCompleted { release, env })?;
        } else {
            ctx.emit(&DeployCompleted { release, env })?;
        }
        Ok(())
    }
}

/// A simulated shell: every command succeeds deterministically (no process is started).
#[derive(Clone, Copy, Debug, Default)]
pub struct SimulatedShell;

impl Tool for SimulatedShell {
    fn name(&self) -> &str {
        "shell"
    }
    fn run<'a>(&'a self, argument: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            if argument.is_empty() {
                Err("empty command".to_owned())
            } else {
                Ok(format!("`{argument}` exited 0"))
            }
        })
    }
}

/// Deploys to staging (simulated).
#[derive(Clone, Copy, Debug, Default)]
pub struct StagingDeploy;

impl Tool for StagingDeploy {
    fn name(&self) -> &str {
        "deploy"
    }
    fn run<'a>(&'a self, argument: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            match argument {
                "staging" => Ok("deployed to staging".to_owned()),
                other => Err(format!(
                    "the executor may only deploy to staging, not {other:?}"
                )),
            }
        })
    }
}

/// The scripted model every agent of the example uses by default.
pub fn scripted_model() -> ScriptedModel {
    ScriptedModel::new("FAIL\n- no rule for this prompt")
        .when(
            "Plan the sub-tasks",
            "1. build\n2. test\n3. deploy to staging",
        )
        .when("Task: build", "shell: cargo build --release")
        .when("Task: test", "shell: cargo test --workspace")
        .when("Task: deploy to staging", "deploy: staging")
        .when("Verify the results", "PASS all checks green")
}

/// The OpenAI-compatible model when configured (feature `openai` and `CHOREO_OPENAI_BASE_URL`),
/// else the scripted one.
pub fn model_from_env() -> Arc<dyn Model> {
    #[cfg(feature = "openai")]
    if let Some(cfg) = choreo_agents::OpenAiConfig::from_env() {
        if let Ok(m) = choreo_agents::OpenAiModel::new(cfg) {
            return Arc::new(m);
        }
    }
    Arc::new(scripted_model())
}

/// What the demo's approver does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Approve.
    Grant,
    /// Refuse.
    Deny,
    /// Never answer (the approval times out).
    Ignore,
}

/// The demo's answer for release `index` with `seed`: 60 % granted, 20 % denied, 20 % ignored.
pub fn answer_for(seed: u64, index: u32) -> Answer {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in index.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    match (h ^ (h >> 31)) % 10 {
        0 | 1 => Answer::Deny,
        2 | 3 => Answer::Ignore,
        _ => Answer::Grant,
    }
}

/// Stands in for a human in the demo (in real use, `choreo approve` answers).
#[derive(Clone, Copy, Debug)]
pub struct AutoApprover {
    /// The run's seed.
    pub seed: u64,
}

impl Reactor for AutoApprover {
    fn name(&self) -> &str {
        "auto-approver"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![ApprovalRequested::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![ApprovalGranted::event_type(), ApprovalDenied::event_type()]
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let index = e
            .correlation
            .as_str()
            .split('-')
            .nth(1)
            .and_then(|i| i.parse().ok())
            .unwrap_or(0);
        match answer_for(self.seed, index) {
            Answer::Grant => ctx.emit(&ApprovalGranted {
                by: "auto-approver".into(),
                reason: Some("demo".into()),
            })?,
            Answer::Deny => ctx.emit(&ApprovalDenied {
                by: "auto-approver".into(),
                reason: Some("not this week".into()),
            })?,
            Answer::Ignore => return Ok(()),
        };
        Ok(())
    }
}
