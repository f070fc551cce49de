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
    forward_deadline: bool,
    outputs: Vec<Event>,
}

#[derive(Debug, Clone)]
struct Stamp {
    id: EventId,
    correlation: choreo_schemas::CorrelationId,
    depth: u32,
    trace: TraceParent,
    tracestate: Option<String>,
    deadline: Option<OffsetDateTime>,
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
                deadline: input.deadline,
            },
            span_trace: crate::telemetry::current_traceparent(),
            attempt,
            dry_run: false,
            forward_deadline: false,
            outputs: Vec::new(),
        }
    }

    /// The `choreo.command.expired` answer to `input`, refused past its deadline (an id of its
    /// own, apart from any output a run of the handler would derive).
    pub(crate) fn expired(mut self, delivered: u64, cause: &Event) -> Vec<Event> {
        let data = crate::delivery::CommandExpired {
            actor: self.actor.to_string(),
            command_type: cause.ty.to_string(),
            command_cause: cause.causation.to_string(),
            deadline: cause
                .deadline
                .and_then(|d| {
                    d.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default(),
            delivered,
        };
        let (Ok(ty), Ok(bytes)) = (
            EventType::new(crate::delivery::COMMAND_EXPIRED),
            rmp_serde::to_vec_named(&data),
        ) else {
            return Vec::new(); // a constant type and a plain struct: cannot fail
        };
        self.push_at(u32::MAX, ty, bytes);
        self.outputs
    }

    /// The `choreo.command.dead_lettered` notice for `input`, given up on with `reason` (an id
    /// of its own).
    pub(crate) fn dead_lettered(
        mut self,
        cause: &Event,
        reason: &crate::bus::DlqReason,
    ) -> Vec<Event> {
        let data = crate::delivery::CommandDeadLettered {
            actor: self.actor.to_string(),
            command_type: cause.ty.to_string(),
            command_cause: cause.causation.to_string(),
            reason: reason.code().to_owned(),
            detail: reason.to_string(),
        };
        let (Ok(ty), Ok(bytes)) = (
            EventType::new(crate::delivery::COMMAND_DEAD_LETTERED),
            rmp_serde::to_vec_named(&data),
        ) else {
            return Vec::new(); // a constant type and a plain struct: cannot fail
        };
        self.push_at(u32::MAX - 1, ty, bytes);
        self.outputs
    }

    /// Outputs from now on carry the input's deadline: for a reactor that forwards a command
    /// (a policy gate), so the service behind it refuses it once expired too.
    pub fn forward_deadline(&mut self) {
        self.forward_deadline = true;
    }

    /// The input's deadline, if it is a command that has one.
    pub fn deadline(&self) -> Option<OffsetDateTime> {
        self.input.deadline
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
        let index = u32::try_from(self.outputs.len()).unwrap_or(u32::MAX - 1);
        self.push_at(index, ty, data)
    }

    fn push_at(&mut self, index: u32, ty: EventType, data: Vec<u8>) -> EventId {
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
            deadline: if self.forward_deadline {
                self.input.deadline
            } else {
                None
            },
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
