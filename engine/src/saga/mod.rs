//! Sagas (process managers): per-instance state, a compensation stack and durable timers,
//! decided by a pure handler and carried out by the runtime.

mod context;
pub(crate) mod decide;
mod effect;
pub(crate) mod host;
mod lifecycle;
pub(crate) mod operator;
mod outputs;
mod replay;
mod settle;
mod slip;
pub(crate) mod start;

use choreo_schemas::{CodecError, Event, EventType, SagaId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::reactor::EmitError;
use crate::retry::RetryPolicy;

pub use crate::model::{Compensation, InstanceRecord, SagaStatus};
pub use context::SagaContext;
pub use effect::{Effect, DEFAULT_EFFECT_GRACE};
pub use lifecycle::{
    Lifecycle, LIFECYCLE_TYPES, SAGA_COMPENSATED, SAGA_COMPENSATING, SAGA_COMPLETED, SAGA_FAILED,
    SAGA_FAULTED, SAGA_STARTED, SAGA_TIMED_OUT,
};
pub use operator::{OnFault, OperatorRequest, SAGA_COMPENSATE, SAGA_RETRY};
pub use replay::{
    assert_replays, replay, replay_against, Divergence, ReplayError, ReplayReport, Replayable,
};
pub use slip::{RoutingSlip, RoutingSlipBuilder, SlipState, SlipStep};

/// A process manager. `handle` and `on_timeout` are **pure**: no I/O, no clock, no randomness
/// except [`SagaContext::now`] and [`SagaContext::seed`], so a replay decides the same.
///
/// An instance starts on one of [`Saga::starts_on`] (state = `State::default()`), continues on
/// [`Saga::continues_on`], and ends when the handler calls `complete()` or `fail()`.
pub trait Saga: Send + Sync + 'static {
    /// The instance state, stored as msgpack.
    type State: Serialize + DeserializeOwned + Default + Send + Sync + 'static;

    /// Unique name (a subject token): names the consumers, the store keys and the DLQ subjects.
    fn name(&self) -> &str;

    /// Schema version of `State`; stored with each instance.
    fn state_version(&self) -> u32 {
        1
    }

    /// Read a state stored by an older version. `None`: the instance is faulted.
    fn upcast(&self, _from_version: u32, _state: &[u8]) -> Option<Self::State> {
        None
    }

    /// Event types that start an instance.
    fn starts_on(&self) -> Vec<EventType>;

    /// Event types that continue an existing instance (inputs for no instance are dropped):
    /// the answers of the commands it issues, and the confirmations of its compensations.
    /// `choreo.command.expired`, `choreo.command.dead_lettered` and the operator actions are
    /// always inputs.
    fn continues_on(&self) -> Vec<EventType>;

    /// Event types the saga may emit, compensations included.
    fn emits(&self) -> Vec<EventType>;

    /// Which instance an event belongs to (default: its correlation id). Instances are applied
    /// in log order per partition, so keep instances within one correlation.
    fn instance_of(&self, event: &Event) -> Option<SagaId> {
        Some(SagaId::from(event.correlation.clone()))
    }

    /// Retries when the handler returns a transient error.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// What a fault does to an instance (default: [`OnFault::Hold`], until `choreo sagas
    /// compensate` or `retry`).
    fn on_fault(&self) -> OnFault {
        OnFault::Hold
    }

    /// Which start events may start instances, fixed the first time any node hosts the saga
    /// (default: [`StartPosition::New`], only those stored after that: a saga added to a log
    /// with history starts no instance, and sends no command, for it). Changing it later
    /// changes nothing; a saga under a new name starts afresh. An earlier position reaches back
    /// only in partitions that have no head yet (a first deployment on a log with history):
    /// a partition's processor reads one position for all its sagas.
    fn start_position(&self) -> crate::delivery::StartPosition {
        crate::delivery::StartPosition::New
    }

    /// Decide on an event.
    fn handle(
        &self,
        state: &mut Self::State,
        event: &Event,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError>;

    /// Decide on a timer that fired.
    fn on_timeout(
        &self,
        state: &mut Self::State,
        timer: &str,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError>;
}

/// A saga handler error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SagaError {
    /// Retried with backoff; past the limit the instance is faulted.
    #[error("transient: {0}")]
    Transient(String),
    /// The instance is faulted at once and the input dead-lettered.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl SagaError {
    /// A transient error from anything displayable: retried with the saga's policy, then the
    /// instance is faulted.
    pub fn transient(e: impl std::fmt::Display) -> Self {
        Self::Transient(e.to_string())
    }

    /// A permanent error from anything displayable: the instance is faulted at once.
    pub fn permanent(e: impl std::fmt::Display) -> Self {
        Self::Permanent(e.to_string())
    }
}

/// A bare message is transient: retried with the saga's policy before the instance faults
/// (say [`SagaError::permanent`] when retrying cannot help).
impl From<String> for SagaError {
    fn from(e: String) -> Self {
        Self::Transient(e)
    }
}

/// See `From<String>`.
impl From<&str> for SagaError {
    fn from(e: &str) -> Self {
        Self::Transient(e.to_owned())
    }
}

impl From<CodecError> for SagaError {
    fn from(e: CodecError) -> Self {
        Self::Permanent(e.to_string())
    }
}

impl From<EmitError> for SagaError {
    fn from(e: EmitError) -> Self {
        Self::Permanent(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::SagaError;

    #[test]
    fn saga_errors_have_the_reactor_errors_helpers() {
        assert_eq!(SagaError::transient(7), SagaError::Transient("7".into()));
        assert_eq!(
            SagaError::permanent("no"),
            SagaError::Permanent("no".into())
        );
        let from_string: SagaError = String::from("busy").into();
        assert_eq!(from_string, SagaError::Transient("busy".into()));
        let question_mark = || -> Result<(), SagaError> { Err("down")? };
        assert_eq!(question_mark(), Err(SagaError::Transient("down".into())));
    }
}
