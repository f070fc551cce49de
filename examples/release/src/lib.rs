//! # The release example
//!
//! Agents think, services execute: a planner agent turns "release X" into sub-tasks, an executor
//! agent runs each through a tool (a simulated shell, a staging deploy), a verifier agent checks
//! the results, a human approves (the approval gate, answered by `choreo approve`, or by the
//! demo's auto-approver), and the deployer service ships to production. The saga orchestrates;
//! the staging deploy pushes its rollback, so a denial, a timeout or a failure rolls back. Every
//! model decision is recorded on the log, so replaying a release never asks the model again.
//! The model is scripted by default and OpenAI-compatible when configured (feature `openai`).

mod actors;
mod domain;
mod run;
mod saga;

pub use actors::{
    answer_for, model_from_env, scripted_model, Answer, AutoApprover, Deployer, SimulatedShell,
    StagingDeploy,
};
pub use domain::{
    DeployCompleted, DeployRequested, ReleaseRequested, RollbackCompleted, RollbackRequested,
};
pub use run::{
    classify, drive, node, predict, release_event, run, Outcome, ReleaseOptions, Summary,
};
pub use saga::{Phase, ReleaseSaga, ReleaseState};
