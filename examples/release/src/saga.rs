//! The release saga: plan → run each sub-task → verify → approval → deploy to production.
//! A sub-task that deployed to staging pushes its rollback; a failure, a denial or an approval
//! that never comes rolls back.

use std::time::Duration;

use choreo::{Event, EventType, Payload, Saga, SagaContext, SagaError};
use choreo_agents::{
    GoalSubmitted, PlanCreated, TaskAssigned, TaskCompleted, TaskFailed, VerificationFailed,
    VerificationPassed, VerificationRequested,
};
use choreo_services::{ApprovalDenied, ApprovalGranted, ApprovalRequested};
use serde::{Deserialize, Serialize};

use crate::domain::{DeployCompleted, DeployRequested, ReleaseRequested, RollbackRequested};

/// Where a release is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Waiting for the plan.
    #[default]
    Planning,
    /// Running sub-tasks.
    Executing,
    /// Waiting for the verifier.
    Verifying,
    /// Waiting for a human.
    Approving,
    /// Deploying to production.
    Deploying,
}

/// Saga state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseState {
    /// The request.
    pub release: Option<ReleaseRequested>,
    /// The plan.
    pub tasks: Vec<String>,
    /// Results so far.
    pub results: Vec<(String, String)>,
    /// Phase.
    pub phase: Phase,
}

/// The saga.
#[derive(Clone, Debug)]
pub struct ReleaseSaga {
    /// How long agents and the deployer may take per step.
    pub step_timeout: Duration,
    /// How long a human may take to approve.
    pub approval_timeout: Duration,
}

const STEP: &str = "step";
const APPROVAL: &str = "approval";

impl ReleaseSaga {
    fn release(state: &ReleaseState) -> Result<&ReleaseRequested, SagaError> {
        state
            .release
            .as_ref()
            .ok_or_else(|| SagaError::Permanent("no release".into()))
    }

    fn assign(&self, state: &ReleaseState, ctx: &mut SagaContext) -> Result<(), SagaError> {
        let index = state.results.len();
        let task = state.tasks.get(index).cloned().unwrap_or_default();
        ctx.emit(&TaskAssigned {
            task,
            index: u32::try_from(index).unwrap_or(u32::MAX),
        })?;
        ctx.schedule(STEP, self.step_timeout);
        ctx.awaits(TaskCompleted::event_type());
        Ok(())
    }
}

impl Saga for ReleaseSaga {
    type State = ReleaseState;

    fn name(&self) -> &str {
        "release"
    }
    fn starts_on(&self) -> Vec<EventType> {
        vec![ReleaseRequested::event_type()]
    }
    fn continues_on(&self) -> Vec<EventType> {
        vec![
            PlanCreated::event_type(),
            TaskCompleted::event_type(),
            TaskFailed::event_type(),
            VerificationPassed::event_type(),
            VerificationFailed::event_type(),
            ApprovalGranted::event_type(),
            ApprovalDenied::event_type(),
            DeployCompleted::event_type(),
        ]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![
            GoalSubmitted::event_type(),
            TaskAssigned::event_type(),
            VerificationRequested::event_type(),
            ApprovalRequested::event_type(),
            DeployRequested::event_type(),
            RollbackRequested::event_type(),
        ]
    }

    fn handle(
        &self,
        s: &mut ReleaseState,
        e: &Event,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        let ty = e.ty.as_str();
        match (s.phase, ty) {
            (_, "release.requested.v1") if s.release.is_none() => {
                let r: ReleaseRequested = e.decode()?;
                ctx.emit(&GoalSubmitted {
                    goal: format!("release {} version {}", r.release, r.version),
                })?;
                ctx.schedule(STEP, self.step_timeout);
                ctx.awaits(PlanCreated::event_type());
                s.release = Some(r);
            }
            (Phase::Planning, "plan.created.v1") => {
                let plan: PlanCreated = e.decode()?;
                if plan.tasks.is_empty() {
                    ctx.fail("the planner returned no sub-tasks");
                } else {
                    s.tasks = plan.tasks;
                    s.phase = Phase::Executing;
                    self.assign(s, ctx)?;
                }
            }
            (Phase::Executing, "task.completed.v1") => {
                let done: TaskCompleted = e.decode()?;
                if done.index as usize != s.results.len() {
                    return Ok(()); // a late duplicate
                }
                if done.task.contains("staging") {
                    let release = Self::release(s)?.release.clone();
                    ctx.push_compensation(&RollbackRequested {
                        release,
                        env: "staging".into(),
                    })?;
                }
                s.results.push((done.task, done.output));
                if s.results.len() < s.tasks.len() {
                    self.assign(s, ctx)?;
                } else {
                    s.phase = Phase::Verifying;
                    let goal = format!("release {}", Self::release(s)?.release);
                    ctx.emit(&VerificationRequested {
                        goal,
                        results: s.results.clone(),
                    })?;
                    ctx.schedule(STEP, self.step_timeout);
                    ctx.awaits(VerificationPassed::event_type());
                }
            }
            (Phase::Executing, "task.failed.v1") => {
                let f: TaskFailed = e.decode()?;
                ctx.cancel(STEP);
                ctx.fail(format!("sub-task {:?} failed: {}", f.task, f.error));
            }
            (Phase::Verifying, "verification.passed.v1") => {
                let r = Self::release(s)?;
                ctx.emit(&ApprovalRequested {
                    subject: format!("deploy {} {} to production", r.release, r.version),
                    details: s
                        .results
                        .iter()
                        .map(|(t, o)| format!("{t}: {o}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                })?;
                ctx.cancel(STEP);
                ctx.schedule(APPROVAL, self.approval_timeout);
                ctx.awaits(ApprovalGranted::event_type());
                s.phase = Phase::Approving;
            }
            (Phase::Verifying, "verification.failed.v1") => {
                let v: VerificationFailed = e.decode()?;
                ctx.cancel(STEP);
                ctx.fail(format!("verification failed: {}", v.reasons.join("; ")));
            }
            (Phase::Approving, "approval.granted.v1") => {
                let release = Self::release(s)?.release.clone();
                ctx.cancel(APPROVAL);
                ctx.emit(&DeployRequested {
                    release: release.clone(),
                    env: "production".into(),
                })?;
                ctx.push_compensation(&RollbackRequested {
                    release,
                    env: "production".into(),
                })?;
                ctx.schedule(STEP, self.step_timeout);
                ctx.awaits(DeployCompleted::event_type());
                s.phase = Phase::Deploying;
            }
            (Phase::Approving, "approval.denied.v1") => {
                let d: ApprovalDenied = e.decode()?;
                ctx.cancel(APPROVAL);
                ctx.fail(format!(
                    "approval denied by {}{}",
                    d.by,
                    d.reason.map(|r| format!(": {r}")).unwrap_or_default()
                ));
            }
            (Phase::Deploying, "deploy.completed.v1") => {
                ctx.cancel(STEP);
                ctx.complete();
            }
            _ => {} // late or out-of-phase answers
        }
        Ok(())
    }

    fn on_timeout(
        &self,
        s: &mut ReleaseState,
        timer: &str,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        match timer {
            APPROVAL if s.phase == Phase::Approving => ctx.fail("approval timed out"),
            STEP => ctx.fail(format!("{:?} timed out", s.phase)),
            _ => {}
        }
        Ok(())
    }
}
