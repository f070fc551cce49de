//! [`Effect`]: what a saga declares when it issues a command, so the runtime can undo the
//! command's effect whenever it turns out to have happened, even after the instance ended.

use std::time::Duration;

use choreo_schemas::{encode_data, EventType, Payload};

use crate::model::Compensation;
use crate::reactor::EmitError;

/// The effect of a command a saga issues with [`crate::SagaContext::issue`]: which answers
/// confirm or deny it, the command that undoes it, and how long it may take.
///
/// The runtime keeps it with the instance until an answer settles it:
/// - confirmed while the instance runs: the compensation goes on the stack (no
///   `push_compensation` needed);
/// - confirmed after the instance failed, timed out or was compensated: the compensation is
///   sent at once, exactly once;
/// - failed, or `choreo.command.expired` on its first delivery: nothing to undo;
/// - `choreo.command.expired` on a redelivery (an earlier delivery may have run): compensated
///   like a confirmation, so compensations must tolerate a step that never happened.
///
/// A failed instance stays `compensating` until no issued command is unanswered and every
/// compensation with a confirmation type is confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effect {
    pub(crate) confirmed_by: Vec<EventType>,
    pub(crate) failed_by: Vec<EventType>,
    pub(crate) compensation: Option<Compensation>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) grace: Duration,
}

/// Default [`Effect::grace`].
pub const DEFAULT_EFFECT_GRACE: Duration = Duration::from_secs(5);

impl Effect {
    /// An effect confirmed by answers of type `ty`.
    pub fn confirmed_by(ty: EventType) -> Self {
        Self {
            confirmed_by: vec![ty],
            failed_by: Vec::new(),
            compensation: None,
            deadline: None,
            grace: DEFAULT_EFFECT_GRACE,
        }
    }

    /// Another answer type that confirms it.
    pub fn or_confirmed_by(mut self, ty: EventType) -> Self {
        self.confirmed_by.push(ty);
        self
    }

    /// An answer type that reports it did not happen.
    pub fn failed_by(mut self, ty: EventType) -> Self {
        self.failed_by.push(ty);
        self
    }

    /// The command that undoes it, confirmed by `confirmed_by` (`None`: done once published).
    pub fn compensate_with<P: Payload>(
        self,
        payload: &P,
        confirmed_by: Option<EventType>,
    ) -> Result<Self, EmitError> {
        Ok(self.compensate_with_raw(P::event_type(), encode_data(payload)?, confirmed_by))
    }

    /// [`Effect::compensate_with`] with already-encoded data.
    pub fn compensate_with_raw(
        mut self,
        ty: EventType,
        data: Vec<u8>,
        confirmed_by: Option<EventType>,
    ) -> Self {
        self.compensation = Some(Compensation {
            ty: ty.to_string(),
            data,
            confirmed_by: confirmed_by.into_iter().map(|t| t.to_string()).collect(),
        });
        self
    }

    /// The command's deadline, counted from the input's log time: past it no reactor runs it.
    pub fn deadline(mut self, after: Duration) -> Self {
        self.deadline = Some(after);
        self
    }

    /// How long after the deadline a failed instance still waits for an answer before it
    /// compensates the effect unconfirmed (a handler that started just before the deadline may
    /// still be running). Default [`DEFAULT_EFFECT_GRACE`].
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Every answer type the saga must consume for this effect to settle.
    pub(crate) fn answer_types(&self) -> impl Iterator<Item = &EventType> {
        self.confirmed_by.iter().chain(&self.failed_by)
    }
}
