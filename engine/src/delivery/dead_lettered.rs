//! The notice a reactor publishes when it dead-letters an input: `choreo.command.dead_lettered`,
//! caused by the input, so a saga that issued it as a command (or as a compensation) learns that
//! it will not be answered, instead of waiting for a confirmation that cannot come.

use serde::{Deserialize, Serialize};

/// A reactor gave up on an input (it is in the DLQ).
pub const COMMAND_DEAD_LETTERED: &str = "choreo.command.dead_lettered";

/// The data of a [`COMMAND_DEAD_LETTERED`] event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandDeadLettered {
    /// The actor that gave up.
    pub actor: String,
    /// The input's type.
    pub command_type: String,
    /// The input's own causation id (for a forwarded command: the command the saga issued).
    pub command_cause: String,
    /// The DLQ reason code (`max_attempts`, `rejected`, `bad_payload`, …).
    pub reason: String,
    /// The reason's detail.
    pub detail: String,
}
