//! The effects a saga instance is responsible for: commands it issued whose outcome it does not
//! know yet, and compensations it sent that their service has not confirmed. Both are recorded
//! when the command is decided, so an answer that arrives after the instance ended still finds
//! what to undo (see `saga::settle`).

use serde::{Deserialize, Serialize};

use super::Compensation;

/// What is known of an issued command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectState {
    /// Issued; no answer yet.
    Pending,
    /// Its deadline passed before any runtime executed it: no effect. Kept so that an answer
    /// that still comes (a runtime that ignores deadlines) is compensated.
    Expired,
    /// Its service answered that it failed. Kept so that a confirmation that still comes
    /// (a service contradicting itself) is compensated.
    Failed,
    /// Its outcome stayed unknown past its deadline and grace (or a redelivery expired it), so
    /// it was compensated without a confirmation. Kept so that a confirmation that still comes
    /// is compensated again (the first compensation may have run before the effect).
    Undone,
}

/// A command issued by a saga, with what undoes it if it takes effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEffect {
    /// Id of the command event (answers name it as their causation).
    pub command: String,
    /// Type of the command.
    pub ty: String,
    /// Answer types meaning the effect happened.
    pub confirmed_by: Vec<String>,
    /// Answer types meaning it did not.
    pub failed_by: Vec<String>,
    /// The command that undoes it, if any.
    pub compensation: Option<Compensation>,
    /// Deadline of the command (Unix ms), if it has one.
    pub deadline_ms: Option<i64>,
    /// When a failed instance stops waiting for an answer and compensates the effect anyway
    /// (Unix ms: the deadline plus a grace for a handler that started just before it).
    pub settle_by_ms: Option<i64>,
    /// What is known.
    pub state: EffectState,
}

impl PendingEffect {
    /// How `answer` (type, causation) resolves this effect, if it does.
    pub(crate) fn answered_by(&self, ty: &str) -> Option<Answer> {
        if self.confirmed_by.iter().any(|t| t == ty) {
            Some(Answer::Confirmed)
        } else if self.failed_by.iter().any(|t| t == ty) {
            Some(Answer::Failed)
        } else {
            None
        }
    }
}

/// What an answer says about an effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The effect happened.
    Confirmed,
    /// It did not.
    Failed,
    /// The command expired unexecuted (first delivery past its deadline).
    Expired,
    /// The command expired on a redelivery: an earlier delivery may have executed it.
    ExpiredMaybeRan,
}

/// A compensation sent and not yet confirmed by its service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUndo {
    /// Id of the compensation command.
    pub command: String,
    /// Its type.
    pub ty: String,
    /// Answer types that confirm it.
    pub confirmed_by: Vec<String>,
}
