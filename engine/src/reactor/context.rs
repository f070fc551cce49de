//! The context a reactor emits through; stamps every output.

use std::collections::BTreeSet;
use std::sync::Arc;

use choreo_schemas::{
    encode_data, ActorName, CodecError, Event, EventId, EventType, Payload, TraceParent,
};
use thiserror::Error;
use time::OffsetDateTime;

/// Emitting an output failed.
#[derive(Debug, Error)]
pub enum EmitError {
    /// The type is not in the reactor's `emits()`.
    #[error("{actor} emitted {ty}, which is not in its declared emits()")]
    Undeclared {
        /// The actor.
        actor: String,
        /// The type emitted.
        ty: String,
    },
    /// The payload did not encode.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Handed to [`crate::Reactor::react`]: emits outputs stamped with the input's correlation,
/// causation = input id, depth + 1, the trace continued and a deterministic id.
#[derive(Debug)]
pub struct ReactContext {
    actor: ActorName,
    source: Arc<str>,
    emits: Arc<BTreeSet<EventType>>,
    input: Stamp,
    /// The handler span's context, when spans are exported: outputs become its children.
    span_trace: Option<TraceParent>,
    attempt: u32,
    dry_run: bool,
    outputs: Vec<Event>,
}

#[derive(Debug, Clone)]
struct Stamp {
    id: EventId,
    correlation: choreo_schemas::CorrelationId,
    depth: u32,
    trace: TraceParent,
    tracestate: Option<String>,
}

impl ReactContext {
    pub(crate) fn new(
        actor: ActorName,
        source: Arc<str>,
        emits: Arc<BTreeSet<EventType>>,
        input: &Event,
        attempt: u32,
    ) -> Self {
        Self {
            actor,
            source,
            emits,
            input: Stamp {
                id: input.id,
                correlation: input.correlation.clone(),
                depth: input.depth,
                trace: input
                    .traceparent
                    .unwrap_or_else(|| TraceParent::root_for(&input.id)),
                tracestate: input.tracestate.clone(),
            },
            span_trace: crate::telemetry::current_traceparent(),
            attempt,
            dry_run: false,
            outputs: Vec::new(),
        }
    }

    pub(crate) fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Whether the node runs in dry-run mode: services must not perform external effects and
    /// emit `<type>.dry_run` describing what they would have done instead.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Emit a typed payload. Returns the output's (deterministic) id.
    pub fn emit<P: Payload>(&mut self, payload: &P) -> Result<EventId, EmitError> {
        let ty = P::event_type();
        self.check(&ty)?;
        let data = encode_data(payload)?;
        Ok(self.push(ty, data))
    }

    /// Emit an event with already-encoded msgpack data.
    pub fn emit_raw(&mut self, ty: EventType, data: Vec<u8>) -> Result<EventId, EmitError> {
        self.check(&ty)?;
        Ok(self.push(ty, data))
    }

    /// Which attempt this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The actor handling the input.
    pub fn actor(&self) -> &ActorName {
        &self.actor
    }

    /// A key that is the same on every delivery and attempt of this input for this actor:
    /// hand it to external systems so they apply an effect once.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.actor, self.input.id)
    }

    /// Outputs emitted so far.
    pub fn outputs(&self) -> &[Event] {
        &self.outputs
    }

    pub(crate) fn into_outputs(self) -> Vec<Event> {
        self.outputs
    }

    fn check(&self, ty: &EventType) -> Result<(), EmitError> {
        if self.emits.contains(ty) {
            Ok(())
        } else {
            Err(EmitError::Undeclared {
                actor: self.actor.to_string(),
                ty: ty.to_string(),
            })
        }
    }

    fn push(&mut self, ty: EventType, data: Vec<u8>) -> EventId {
        let index = u32::try_from(self.outputs.len()).unwrap_or(u32::MAX);
        let id = EventId::derived(&self.actor, &self.input.id, index);
        self.outputs.push(Event {
            id,
            source: self.source.to_string(),
            ty,
            time: OffsetDateTime::now_utc(),
            subject: None,
            correlation: self.input.correlation.clone(),
            causation: self.input.id,
            depth: self.input.depth.saturating_add(1),
            traceparent: Some(
                self.span_trace
                    .unwrap_or_else(|| self.input.trace.child_for(&id)),
            ),
            tracestate: self.input.tracestate.clone(),
            data,
        });
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_schemas::CorrelationId;

    #[test]
    fn outputs_are_stamped_from_the_input() {
        let input = Event::root_raw(
            "urn:t",
            CorrelationId::new("c1").expect("valid"),
            EventType::new("a.v1").expect("valid"),
            vec![],
        );
        let out_ty = EventType::new("b.v1").expect("valid");
        let emits = Arc::new(BTreeSet::from([out_ty.clone()]));
        let actor = ActorName::new("r").expect("valid");
        let mut ctx =
            ReactContext::new(actor.clone(), "/actors/r".into(), emits.clone(), &input, 1);
        let id0 = ctx.emit_raw(out_ty.clone(), vec![]).expect("declared");
        let id1 = ctx.emit_raw(out_ty.clone(), vec![]).expect("declared");
        assert!(ctx
            .emit_raw(EventType::new("z.v1").expect("valid"), vec![])
            .is_err());
        let outs = ctx.into_outputs();
        assert_eq!(outs.len(), 2);
        let o = &outs[0];
        assert_eq!(
            (o.correlation.as_str(), o.causation, o.depth),
            ("c1", input.id, 1)
        );
        assert_eq!(
            o.traceparent.map(|t| t.trace_id),
            input.traceparent.map(|t| t.trace_id)
        );
        // A re-run (another attempt) derives the same ids.
        let mut again = ReactContext::new(actor, "/actors/r".into(), emits, &input, 2);
        assert_eq!(
            again.emit_raw(out_ty.clone(), vec![]).expect("declared"),
            id0
        );
        assert_eq!(again.emit_raw(out_ty, vec![]).expect("declared"), id1);
    }
}
