//! Stamping of a saga input's outputs: deterministic ids, causation, depth and trace.

use choreo_schemas::{Event, EventId, EventType, SagaId, TraceParent};
use time::OffsetDateTime;

use super::decide::{timer_input_id, SagaInput};
use super::lifecycle::{self, Lifecycle};
use crate::model::InstanceRecord;

/// Builds the stamped output events of one input.
pub(crate) struct Outputs {
    source: String,
    prefix: String,
    applied: u64,
    correlation: choreo_schemas::CorrelationId,
    causation: EventId,
    depth: u32,
    trace: TraceParent,
    saga: String,
    instance: String,
    /// The input's time: every output is stamped with it (no clock in the core).
    now: OffsetDateTime,
    pub(crate) events: Vec<Event>,
}

impl Outputs {
    pub(crate) fn new(
        saga: &str,
        instance: &SagaId,
        record: &InstanceRecord,
        input: SagaInput<'_>,
        now: OffsetDateTime,
    ) -> Self {
        let (input_id, causation, depth, trace) = match input {
            SagaInput::Event { event, .. } => (
                event.id,
                event.id,
                event.depth,
                event
                    .traceparent
                    .unwrap_or_else(|| TraceParent::root_for(&event.id)),
            ),
            SagaInput::Timer { name, due_ms } => {
                let id = timer_input_id(saga, instance, name, due_ms);
                let last: EventId = record.last_event.parse().unwrap_or(id);
                let trace = record
                    .last_trace
                    .as_deref()
                    .and_then(|t| TraceParent::parse(t).ok())
                    .unwrap_or_else(|| TraceParent::root_for(&last));
                (id, last, record.last_depth, trace)
            }
        };
        let correlation = choreo_schemas::CorrelationId::new(record.correlation.as_str())
            .unwrap_or_else(|_| choreo_schemas::CorrelationId::generate());
        Self {
            source: format!("/sagas/{saga}"),
            prefix: output_prefix(saga, instance, &input_id),
            applied: record.applied,
            correlation,
            causation,
            depth,
            trace,
            saga: saga.to_owned(),
            instance: instance.to_string(),
            now,
            events: Vec::new(),
        }
    }

    /// Stamp one output; returns its id.
    pub(crate) fn push(&mut self, ty: EventType, data: Vec<u8>) -> EventId {
        let index = self.events.len();
        let id = output_id(&self.prefix, index);
        // A timer firing's later outputs are caused by its `timed_out` record.
        let (causation, depth) = match self.events.first() {
            Some(first) if first.ty.as_str() == lifecycle::SAGA_TIMED_OUT => {
                (first.id, first.depth)
            }
            _ => (self.causation, self.depth),
        };
        self.events.push(Event {
            id,
            source: self.source.clone(),
            ty,
            time: self.now,
            subject: Some(self.instance.clone()),
            correlation: self.correlation.clone(),
            causation,
            depth: depth.saturating_add(1),
            traceparent: Some(self.trace.child_for(&id)),
            tracestate: None,
            deadline: None,
            data,
        });
        id
    }

    pub(crate) fn lifecycle(&mut self, ty: &str, reason: Option<&str>, timer: Option<(&str, i64)>) {
        let payload = Lifecycle {
            saga: self.saga.clone(),
            instance: self.instance.clone(),
            reason: reason.map(str::to_owned),
            timer: timer.map(|(n, _)| n.to_owned()),
            due_ms: timer.map(|(_, d)| d),
            applied: self.applied,
        };
        let (Ok(ty), Ok(data)) = (EventType::new(ty), rmp_serde::to_vec_named(&payload)) else {
            return; // constant types and a plain struct: cannot fail
        };
        let _ = self.push(ty, data);
    }
}

/// The id prefix of every output of one input of one instance.
pub(crate) fn output_prefix(saga: &str, instance: &SagaId, input_id: &EventId) -> String {
    format!("saga/{saga}/{instance}/{input_id}")
}

/// The deterministic id of output `index` under `prefix`.
pub(crate) fn output_id(prefix: &str, index: usize) -> EventId {
    EventId::derive(&format!("{prefix}/{index}"))
}
