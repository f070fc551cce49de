//! # The deadlock example (seed 002)
//!
//! Four agents, a planner, a coder, a tester and a docs writer, are each a saga started by the
//! same task. In the **cyclic** wiring of seed 002, the coder waits for the tests, the tester
//! for the docs and the docs writer for the code (the planner waits for the code too): every one
//! of them waits politely forever, declared with [`choreo::SagaContext::awaits`] and no timer,
//! no deadline. Nobody can start. The engine's deadlock detector sees the closed cycle among the
//! coder, the tester and the docs writer, puts a `choreo.deadlock.detected` event on the log and
//! fails its victim (the youngest wait, ties broken by the greatest saga name); the others hear
//! the victim's `choreo.saga.failed` and give up with it, so the swarm ends together. In the
//! **acyclic** wiring (spec, then code, then tests, then docs) every agent writes its artifact
//! and completes, and nothing is detected.
//!
//! The agents' "model" ([`write`]) is scripted and deterministic, pure text from the task and
//! the input, so it lives inside the pure saga handler and a replay writes the same artifacts.
//!
//! [`run`] hosts the swarm on a node of this process, submits one task of each variant and
//! reports how every agent ended; `choreo demo --example deadlock` prints that report.

mod agent;
mod domain;
mod model;
mod run;
mod wiring;

pub use agent::{AgentState, SwarmAgent};
pub use domain::{CodeWritten, DocsWritten, SpecWritten, TaskSubmitted, TestsWritten, Variant};
pub use model::write;
pub use run::{
    correlation_of, node, run, task_event, AgentOutcome, CorrelationSummary, DeadlockOptions,
    Summary, ACYCLIC_CORRELATION, CYCLIC_CORRELATION, TASK,
};
pub use wiring::{Artifact, Role, Wiring};
