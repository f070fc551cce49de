//! Operator actions on a faulted instance, as events on the log: `choreo.saga.compensate` runs
//! its compensation stack, `choreo.saga.retry` applies the input that faulted it again (after a
//! fix). They travel on the instance's correlation, so the partition's owner applies them in log
//! order like any input, fenced, and a replay sees them too. A saga may also compensate on
//! fault by itself ([`OnFault::Compensate`]).

use choreo_schemas::{CorrelationId, Event, EventType};
use serde::{Deserialize, Serialize};

use super::decide::{input_time, transition, Decision, SagaInput, SagaMeta, Skip};
use super::outputs::Outputs;
use super::settle;
use crate::coordination::{Coordination, DEADLOCK_DETECTED, STALL_DETECTED};
use crate::model::{FaultedBy, InstanceRecord, SagaStatus};

/// Event type: run a faulted instance's compensation stack.
pub const SAGA_COMPENSATE: &str = "choreo.saga.compensate";
/// Event type: apply the input that faulted an instance again.
pub const SAGA_RETRY: &str = "choreo.saga.retry";

/// What a saga does when one of its instances faults (a handler error past the retries, a state
/// that does not decode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFault {
    /// Stay faulted, effects kept, until an operator compensates or retries it.
    #[default]
    Hold,
    /// Run the compensation stack at once (the instance goes Compensating, then Compensated),
    /// and keep the reason; the faulting input is still dead-lettered.
    Compensate,
}

/// The data of an operator action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRequest {
    /// Saga name.
    pub saga: String,
    /// Instance id.
    pub instance: String,
    /// Who asked (free text, recorded in the reason).
    pub by: String,
}

/// The two actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Compensate,
    Retry,
}

impl OperatorRequest {
    /// The event asking `op` for `record`'s instance, on its correlation.
    pub(crate) fn event(
        record: &InstanceRecord,
        op: Operation,
        by: &str,
    ) -> Result<Event, crate::error::BusError> {
        let ty = match op {
            Operation::Compensate => SAGA_COMPENSATE,
            Operation::Retry => SAGA_RETRY,
        };
        let bad = |e: String| crate::error::BusError::js("operator request", e);
        let correlation =
            CorrelationId::new(record.correlation.as_str()).map_err(|e| bad(e.to_string()))?;
        let ty = EventType::new(ty).map_err(|e| bad(e.to_string()))?;
        let data = rmp_serde::to_vec_named(&Self {
            saga: record.saga.clone(),
            instance: record.instance.clone(),
            by: by.to_owned(),
        })
        .map_err(|e| bad(e.to_string()))?;
        Ok(Event::root_raw("/choreo/operator", correlation, ty, data))
    }
}

/// The operator action an event asks for, if it is one (and its data decodes).
pub(crate) fn operation(event: &Event) -> Option<(Operation, OperatorRequest)> {
    let op = match event.ty.as_str() {
        SAGA_COMPENSATE => Operation::Compensate,
        SAGA_RETRY => Operation::Retry,
        _ => return None,
    };
    let req: OperatorRequest = rmp_serde::from_slice(&event.data).ok()?;
    Some((op, req))
}

/// The saga and instance an event addresses by name (an operator action, a coordination
/// event), if it is one; `Some(None)` for such a type whose data does not decode (it changes
/// nothing).
pub(crate) fn addressed(event: &Event) -> Option<Option<(String, String)>> {
    match event.ty.as_str() {
        SAGA_COMPENSATE | SAGA_RETRY => Some(operation(event).map(|(_, r)| (r.saga, r.instance))),
        DEADLOCK_DETECTED | STALL_DETECTED => Some(Coordination::of(event).map(|c| {
            let (s, i) = c.target();
            (s.to_owned(), i.to_owned())
        })),
        _ => None,
    }
}

/// Apply a coordination event to the instance it names. A deadlock's victim is failed (its
/// compensations run) only if it has not moved since the cycle was found; a stall marks its
/// wait reported. Either is skipped as stale otherwise.
pub(crate) fn coordinate(
    meta: &SagaMeta,
    existing: Option<InstanceRecord>,
    input: SagaInput<'_>,
    c: &Coordination,
) -> Decision {
    let Some(mut record) = existing else {
        return Decision::Skip(Skip::NoInstance);
    };
    let SagaInput::Event { seq, .. } = input else {
        return Decision::Skip(Skip::Stale);
    };
    if seq <= record.watermark {
        return Decision::Skip(Skip::Duplicate);
    }
    if record.status != SagaStatus::Running {
        return Decision::Skip(Skip::Stale);
    }
    let Ok(instance) = choreo_schemas::SagaId::new(record.instance.as_str()) else {
        return Decision::Skip(Skip::NoInstance);
    };
    let now = input_time(input);
    let mut out = Outputs::new(&meta.name, &instance, &record, input, now);
    let before = record.timers.clone();
    match c {
        Coordination::Deadlock(d) => {
            if record.watermark != d.victim.watermark {
                return Decision::Skip(Skip::Stale);
            }
            if let Err(why) = settle::begin_compensation(&mut record, &mut out, &d.reason()) {
                return super::decide::fault_record(meta, record, input, why);
            }
            record.waits.clear();
        }
        Coordination::Stall(s) => {
            let Some(w) = record
                .waits
                .iter_mut()
                .find(|w| w.stalled.is_none() && w.since_seq == s.since_seq && w.types == s.awaits)
            else {
                return Decision::Skip(Skip::Stale);
            };
            w.stalled = Some(s.kind);
        }
    }
    Decision::Commit(transition(record, out, input, now, &before))
}

/// Both operator types, inputs of every saga.
pub(crate) fn operator_types() -> impl Iterator<Item = EventType> {
    [SAGA_COMPENSATE, SAGA_RETRY]
        .into_iter()
        .filter_map(|t| EventType::new(t).ok())
}

/// Decide an operator action on `existing`. A retry reaching the pure core was not prepared by
/// the runtime (it needs the original input from the log): it changes nothing.
pub(crate) fn decide(
    meta: &SagaMeta,
    existing: Option<InstanceRecord>,
    input: SagaInput<'_>,
    op: Operation,
    req: &OperatorRequest,
) -> Decision {
    let Some(mut record) = existing else {
        return Decision::Skip(Skip::NoInstance);
    };
    if record.status != SagaStatus::Faulted {
        return Decision::Skip(Skip::NotFaulted);
    }
    if op == Operation::Retry {
        return Decision::Skip(Skip::NotFaulted);
    }
    let Ok(instance) = choreo_schemas::SagaId::new(record.instance.as_str()) else {
        return Decision::Skip(Skip::NoInstance);
    };
    let now = input_time(input);
    let mut out = Outputs::new(&meta.name, &instance, &record, input, now);
    let before = record.timers.clone();
    let reason = format!(
        "{} (compensation requested by {})",
        record.reason.as_deref().unwrap_or("faulted"),
        req.by
    );
    if let Err(why) = settle::begin_compensation(&mut record, &mut out, &reason) {
        return super::decide::fault_record(meta, record, input, why);
    }
    record.faulted_by = None;
    Decision::Commit(transition(record, out, input, now, &before))
}

/// The faulting event as a retry applies it: itself (type, data, causation: answers still
/// match their commands), under the retry request's id, so what the retry decides gets ids of
/// its own (the faulted attempt's outputs were derived from the original id: the same ids
/// would be dropped as duplicates) and is caused, in the history, by the request.
pub(crate) fn retried(mut original: Event, request: &Event) -> Event {
    original.id = request.id;
    original
}

/// After a retry decided (under the request's sequence, so the watermark moves past the
/// request): a fault again still points at the original input, for the next retry.
pub(crate) fn after_retry(record: &mut InstanceRecord, request_seq: u64, by: &FaultedBy) {
    if let Some(f) = record.faulted_by.as_mut() {
        if f.seq == request_seq {
            *f = by.clone();
        }
    }
}

/// The record a retry re-applies the faulting input to: running again, its watermark back to
/// before that input. `None` when the instance is not faulted by an event.
pub(crate) fn reopened(record: &InstanceRecord) -> Option<(InstanceRecord, FaultedBy)> {
    if record.status != SagaStatus::Faulted {
        return None;
    }
    let by = record.faulted_by.clone()?;
    let mut r = record.clone();
    r.status = SagaStatus::Running;
    r.reason = None;
    r.watermark = by.watermark;
    r.timers = by.timers.clone();
    r.waits = by.waits.clone();
    r.faulted_by = None;
    Some((r, by))
}
