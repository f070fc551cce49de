//! # choreo-agents
//!
//! Non-deterministic actors whose outputs are **recorded**: a [`Model`] trait (scripted for tests
//! and demos, OpenAI-compatible behind the `openai` feature), the [`Agent`] wrapper that turns a
//! model-backed [`Decide`] into a reactor recording every [`AgentDecision`] before its effects
//! (published atomically with them), per-correlation [`Budget`]s, and ready agents: [`Planner`],
//! [`Executor`] (with [`Tool`]s) and [`Verifier`].
//!
//! ```
//! use std::sync::Arc;
//! use choreo::Reactor;
//! use choreo_agents::{Agent, Planner, ScriptedModel};
//!
//! let model = Arc::new(ScriptedModel::new("1. build\n2. test"));
//! let planner = Agent::new(Planner, model);
//! assert!(planner.atomic_outputs()); // decision + effects: all or nothing on the log
//! assert_eq!(planner.name(), "planner");
//! ```

mod agent;
mod budget;
mod model;
#[cfg(feature = "openai")]
mod openai;
mod protocol;
mod roles;
mod scripted;

use thiserror::Error;

pub use agent::{Agent, AgentDecision, BudgetExceeded, Decide};
pub use budget::{Budget, BudgetStore, Spent, BUDGET_BUCKET};
pub use model::{Completion, Message, Model, ModelError, Role, Usage};
#[cfg(feature = "openai")]
pub use openai::{OpenAiConfig, OpenAiModel};
pub use protocol::{
    GoalSubmitted, PlanCreated, TaskAssigned, TaskCompleted, TaskFailed, VerificationFailed,
    VerificationPassed, VerificationRequested,
};
pub use roles::{parse_list, Executor, Planner, Tool, Verifier};
pub use scripted::ScriptedModel;

/// An agent infrastructure error.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The budget bucket failed.
    #[error("agent budget store: {0}")]
    Kv(String),
}
