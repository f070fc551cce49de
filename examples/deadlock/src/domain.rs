//! The swarm's events: a task, and the four artifacts the agents write.

use choreo::Payload;
use serde::{Deserialize, Serialize};

/// Which wiring the agents use for a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Seed 002: the coder awaits the tests, the tester the docs, the docs writer the code.
    /// Nobody can start.
    Cyclic,
    /// A pipeline: spec, then code, then tests, then docs.
    Acyclic,
}

impl Variant {
    /// `cyclic` or `acyclic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cyclic => "cyclic",
            Self::Acyclic => "acyclic",
        }
    }
}

/// A task for the swarm (starts every agent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSubmitted {
    /// What to build.
    pub task: String,
    /// How the agents are wired for it.
    pub variant: Variant,
}
impl Payload for TaskSubmitted {
    const TYPE: &'static str = "task.submitted.v1";
}

/// The planner's spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecWritten {
    /// The spec.
    pub text: String,
}
impl Payload for SpecWritten {
    const TYPE: &'static str = "spec.written.v1";
}

/// The coder's code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeWritten {
    /// The code.
    pub text: String,
}
impl Payload for CodeWritten {
    const TYPE: &'static str = "code.written.v1";
}

/// The tester's tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestsWritten {
    /// The tests.
    pub text: String,
}
impl Payload for TestsWritten {
    const TYPE: &'static str = "tests.written.v1";
}

/// The docs writer's docs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocsWritten {
    /// The docs.
    pub text: String,
}
impl Payload for DocsWritten {
    const TYPE: &'static str = "docs.written.v1";
}
