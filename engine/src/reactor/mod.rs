//! Reactors: stateless actors that react to events by emitting events.

mod context;
pub(crate) mod decide;
pub(crate) mod driver;

use std::future::Future;

use choreo_schemas::{CodecError, Event, EventType};
use thiserror::Error;

use crate::retry::RetryPolicy;

pub use context::{EmitError, ReactContext};

/// A stateless actor: consumes some event types, emits others.
///
/// One durable pull consumer per reactor name is shared by every instance (competing
/// consumers). Events of one correlation reach `react` in log order; other correlations run
/// concurrently. Outputs emitted through the context are published (and acknowledged by
/// JetStream) before the input is acked; their ids are derived from the reactor name, the
/// input id and the output index, so a re-run after a crash cannot duplicate them on the log.
///
/// ```
/// use choreo::{Event, EventType, Payload, ReactContext, ReactError, Reactor};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct OrderPlaced { order: String, cents: u64 }
/// impl Payload for OrderPlaced { const TYPE: &'static str = "order.placed.v1"; }
///
/// #[derive(Serialize, Deserialize)]
/// struct InvoiceIssued { order: String, cents: u64 }
/// impl Payload for InvoiceIssued { const TYPE: &'static str = "invoice.issued.v1"; }
///
/// struct Billing;
///
/// impl Reactor for Billing {
///     fn name(&self) -> &str { "billing" }
///     fn consumes(&self) -> Vec<EventType> { vec![OrderPlaced::event_type()] }
///     fn emits(&self) -> Vec<EventType> { vec![InvoiceIssued::event_type()] }
///     async fn react(&self, event: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
///         let order: OrderPlaced = event.decode()?; // a bad payload goes to the DLQ
///         ctx.emit(&InvoiceIssued { order: order.order, cents: order.cents })?;
///         Ok(())
///     }
/// }
/// ```
pub trait Reactor: Send + Sync + 'static {
    /// Unique name: names the durable consumer and the DLQ subjects (a subject token).
    fn name(&self) -> &str;

    /// Event types this reactor reacts to.
    fn consumes(&self) -> Vec<EventType>;

    /// Event types this reactor may emit (the topology; emitting another type is an error).
    fn emits(&self) -> Vec<EventType>;

    /// Retries on transient errors (default: 5 attempts, exponential backoff with jitter).
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// Publish each input's outputs as one JetStream atomic batch (all or none on the log),
    /// instead of pipelined. Agents use it so a decision record never lands without its effects.
    fn atomic_outputs(&self) -> bool {
        false
    }

    /// Where the reactor's consumer starts the first time it is created (default:
    /// [`StartPosition::All`](crate::StartPosition::All), the whole backlog). An existing
    /// consumer keeps its position whatever this says.
    fn start_position(&self) -> crate::delivery::StartPosition {
        crate::delivery::StartPosition::All
    }

    /// Handle one event; emit outputs through `ctx`.
    fn react(
        &self,
        event: &Event,
        ctx: &mut ReactContext,
    ) -> impl Future<Output = Result<(), ReactError>> + Send;
}

/// Why a handler did not complete.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReactError {
    /// Worth retrying (a timeout, an unavailable dependency).
    #[error("transient: {0}")]
    Transient(String),
    /// Will never succeed for this input: dead-lettered at once with reason `rejected`.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The input's data is not what the handler expects: dead-lettered with `bad_payload`.
    #[error("bad payload: {0}")]
    BadPayload(String),
}

impl ReactError {
    /// A transient error from anything displayable.
    pub fn transient(e: impl std::fmt::Display) -> Self {
        Self::Transient(e.to_string())
    }

    /// A permanent error from anything displayable.
    pub fn permanent(e: impl std::fmt::Display) -> Self {
        Self::Permanent(e.to_string())
    }
}

/// A bare message is transient: retried with the reactor's policy before the input is
/// dead-lettered (say [`ReactError::permanent`] when retrying cannot help).
impl From<String> for ReactError {
    fn from(e: String) -> Self {
        Self::Transient(e)
    }
}

/// See `From<String>`.
impl From<&str> for ReactError {
    fn from(e: &str) -> Self {
        Self::Transient(e.to_owned())
    }
}

impl From<CodecError> for ReactError {
    fn from(e: CodecError) -> Self {
        Self::BadPayload(e.to_string())
    }
}

impl From<EmitError> for ReactError {
    fn from(e: EmitError) -> Self {
        Self::Permanent(e.to_string())
    }
}
