//! The CloudEvents 1.0 envelope every event travels in.

use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;

use crate::error::CodecError;
use crate::event_type::EventType;
use crate::ids::{CorrelationId, EventId};
use crate::payload::{decode_data, encode_data, Payload};
use crate::trace::TraceParent;

/// The CloudEvents spec version choreo speaks.
pub const SPEC_VERSION: &str = "1.0";
/// The only data content type choreo puts on the wire.
pub const CONTENT_TYPE: &str = "application/msgpack";

/// One CloudEvent: the context attributes plus msgpack data.
///
/// `specversion` is always [`SPEC_VERSION`] and `datacontenttype` always [`CONTENT_TYPE`];
/// both are checked when an event is decoded from the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `id`: unique per event; also the JetStream `Nats-Msg-Id`.
    pub id: EventId,
    /// `source`: the actor or system that produced the event (a URI-reference).
    pub source: String,
    /// `type`: what happened or is commanded, e.g. `order.placed.v1`.
    pub ty: EventType,
    /// `time`: when the event was produced.
    pub time: OffsetDateTime,
    /// `subject`: optional subject of the event within the source's context.
    pub subject: Option<String>,
    /// `correlationid` extension: the business conversation.
    pub correlation: CorrelationId,
    /// `causationid` extension: the event that caused this one; roots cause themselves.
    pub causation: EventId,
    /// `depth` extension: hops from the root (roots are 0).
    pub depth: u32,
    /// W3C `traceparent`.
    pub traceparent: Option<TraceParent>,
    /// W3C `tracestate`, carried opaquely.
    pub tracestate: Option<String>,
    /// `deadline` extension: a command past it must not be executed (the reactor runtime
    /// answers `choreo.command.expired` instead). Set by sagas from the step timeout.
    pub deadline: Option<OffsetDateTime>,
    /// msgpack-encoded data.
    pub data: Vec<u8>,
}

impl Event {
    /// A root event (new v7 id, causes itself, depth 0, a fresh trace) with raw data.
    pub fn root_raw(
        source: impl Into<String>,
        correlation: CorrelationId,
        ty: EventType,
        data: Vec<u8>,
    ) -> Self {
        let id = EventId::new_root();
        Self {
            id,
            source: source.into(),
            ty,
            time: OffsetDateTime::now_utc(),
            subject: None,
            correlation,
            causation: id,
            depth: 0,
            traceparent: Some(TraceParent::root_for(&id)),
            tracestate: None,
            deadline: None,
            data,
        }
    }

    /// A root event carrying a typed payload.
    pub fn root<P: Payload>(
        source: impl Into<String>,
        correlation: CorrelationId,
        payload: &P,
    ) -> Result<Self, CodecError> {
        Ok(Self::root_raw(
            source,
            correlation,
            P::event_type(),
            encode_data(payload)?,
        ))
    }

    /// True when the event caused itself (no parent).
    pub fn is_root(&self) -> bool {
        self.causation == self.id
    }

    /// Decode the data as the payload `P`, checking that the event has `P`'s type.
    pub fn decode<P: Payload>(&self) -> Result<P, CodecError> {
        let expected = P::event_type();
        if self.ty != expected {
            return Err(CodecError::TypeMismatch {
                expected: expected.to_string(),
                actual: self.ty.to_string(),
            });
        }
        decode_data(&self.ty, &self.data)
    }

    /// Decode the data as any deserialisable type, without a type check.
    pub fn decode_as<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        decode_data(&self.ty, &self.data)
    }

    /// Replace the data with the msgpack encoding of `value`.
    pub fn set_data<T: Serialize>(&mut self, value: &T) -> Result<(), CodecError> {
        self.data = crate::payload::encode_value(&self.ty, value)?;
        Ok(())
    }
}
