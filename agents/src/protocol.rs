//! The events the ready agents speak.

use choreo::Payload;
use serde::{Deserialize, Serialize};

/// A goal to plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoalSubmitted {
    /// The goal, in words.
    pub goal: String,
}
impl Payload for GoalSubmitted {
    const TYPE: &'static str = "goal.submitted.v1";
}

/// The planner's ordered sub-tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanCreated {
    /// The goal.
    pub goal: String,
    /// Sub-tasks, in order.
    pub tasks: Vec<String>,
}
impl Payload for PlanCreated {
    const TYPE: &'static str = "plan.created.v1";
}

/// One sub-task for the executor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAssigned {
    /// The sub-task.
    pub task: String,
    /// Its index in the plan.
    pub index: u32,
}
impl Payload for TaskAssigned {
    const TYPE: &'static str = "task.assigned.v1";
}

/// A sub-task done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCompleted {
    /// The sub-task.
    pub task: String,
    /// Its index in the plan.
    pub index: u32,
    /// The tool that ran it.
    pub tool: String,
    /// What the tool reported.
    pub output: String,
}
impl Payload for TaskCompleted {
    const TYPE: &'static str = "task.completed.v1";
}

/// A sub-task that could not be done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailed {
    /// The sub-task.
    pub task: String,
    /// Its index in the plan.
    pub index: u32,
    /// Why.
    pub error: String,
}
impl Payload for TaskFailed {
    const TYPE: &'static str = "task.failed.v1";
}

/// Results to check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRequested {
    /// The goal.
    pub goal: String,
    /// (task, output) in plan order.
    pub results: Vec<(String, String)>,
}
impl Payload for VerificationRequested {
    const TYPE: &'static str = "verification.requested.v1";
}

/// The verifier is satisfied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationPassed {
    /// What it says.
    pub notes: String,
}
impl Payload for VerificationPassed {
    const TYPE: &'static str = "verification.passed.v1";
}

/// The verifier is not satisfied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationFailed {
    /// Why.
    pub reasons: Vec<String>,
}
impl Payload for VerificationFailed {
    const TYPE: &'static str = "verification.failed.v1";
}
