//! The saga's pure core: `decide(record, input) -> decision`. No I/O, no clock.

use std::collections::BTreeSet;
use std::sync::Arc;

use choreo_schemas::{Event, EventId, EventType, SagaId};
use time::OffsetDateTime;

use super::context::{self, Outcome, SagaContext};
use super::lifecycle;
use super::operator::{self, OnFault};
use super::outputs::Outputs;
use super::settle;
use super::{Saga, SagaError};
use crate::model::{EffectState, FaultedBy, InstanceRecord, PendingEffect, SagaStatus, Wait};
pub(crate) use crate::model::{TimerChange, Transition};

/// One input of an instance.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SagaInput<'a> {
    /// An event from the log, with its stream sequence and the time JetStream stored it
    /// (Unix ms): the saga's clock, never the producer's `ce-time`.
    Event {
        event: &'a Event,
        seq: u64,
        at_ms: i64,
    },
    /// A timer that is due.
    Timer { name: &'a str, due_ms: i64 },
}

/// Why an input changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Skip {
    /// A continuing event for an instance that does not exist (choreography is noisy).
    NoInstance,
    /// At or below the instance's watermark, or a copy of an input it applied: already applied.
    Duplicate,
    /// The instance already ended.
    Terminal,
    /// The timer was cancelled or rescheduled since it was read.
    StaleTimer,
    /// An operator action for an instance that is not faulted (or a retry of one that no
    /// event faulted).
    NotFaulted,
    /// A coordination event about a state the instance has left (or whose data does not
    /// decode).
    Stale,
    /// A start event stored before the saga's start position (see `delivery::start`).
    BeforeStart,
}

/// The decision for one input.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Decision {
    Skip(Skip),
    Commit(Transition),
    /// The handler failed transiently: retry, or fault past the limit.
    Retry(String),
    /// The instance cannot continue: commit the faulted record, dead-letter the input.
    Fault {
        transition: Transition,
        reason: String,
    },
}

/// Static facts about a saga the core needs.
pub(crate) struct SagaMeta {
    pub(crate) name: String,
    pub(crate) starts: BTreeSet<EventType>,
    pub(crate) emits: Arc<BTreeSet<EventType>>,
    /// Every type the saga consumes (starts, continues, `choreo.command.expired`, the
    /// operator actions).
    pub(crate) inputs: BTreeSet<EventType>,
    /// What a fault does.
    pub(crate) on_fault: OnFault,
}

impl SagaMeta {
    pub(crate) fn of<S: Saga>(saga: &S, name: &str) -> Self {
        let starts: BTreeSet<EventType> = saga.starts_on().into_iter().collect();
        Self {
            name: name.to_owned(),
            inputs: saga_inputs(saga),
            starts,
            emits: Arc::new(saga.emits().into_iter().collect()),
            on_fault: saga.on_fault(),
        }
    }
}

/// What a saga consumes: its start and continue types, and the expiry of its commands.
pub(crate) fn saga_inputs<S: Saga>(saga: &S) -> BTreeSet<EventType> {
    let mut inputs: BTreeSet<EventType> = saga
        .starts_on()
        .into_iter()
        .chain(saga.continues_on())
        .collect();
    for t in [
        crate::delivery::COMMAND_EXPIRED,
        crate::delivery::COMMAND_DEAD_LETTERED,
    ] {
        if let Ok(t) = EventType::new(t) {
            inputs.insert(t);
        }
    }
    inputs.extend(operator::operator_types());
    inputs.extend(crate::coordination::coordination_types());
    inputs
}

fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn seed_of(id: &EventId) -> u64 {
    let b = id.as_uuid().as_bytes();
    u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])
}

/// Whether `input` is a start event stored before the saga's start (it starts no instance).
pub(crate) fn before_start(
    meta: &SagaMeta,
    start: &crate::delivery::SagaStart,
    existing: Option<&InstanceRecord>,
    input: SagaInput<'_>,
) -> bool {
    match (existing, input) {
        (None, SagaInput::Event { event, seq, at_ms }) => {
            meta.starts.contains(&event.ty) && !start.admits(seq, at_ms)
        }
        _ => false,
    }
}

/// Decide what one input does to one instance.
pub(crate) fn decide<S: Saga>(
    saga: &S,
    meta: &SagaMeta,
    existing: Option<InstanceRecord>,
    instance: &SagaId,
    input: SagaInput<'_>,
) -> Decision {
    if let SagaInput::Event { event, .. } = input {
        if let Some((op, req)) = operator::operation(event) {
            return operator::decide(meta, existing, input, op, &req);
        }
        if let Some(c) = crate::coordination::Coordination::of(event) {
            return operator::coordinate(meta, existing, input, &c);
        }
        if operator::addressed(event).is_some() {
            return Decision::Skip(Skip::Stale); // an addressed type whose data does not decode
        }
    }
    let mut started = false;
    let mut record = match (existing, input) {
        (Some(r), SagaInput::Event { seq, event, .. })
            if seq <= r.watermark || r.has_applied(&event.id) =>
        {
            return Decision::Skip(Skip::Duplicate)
        }
        (Some(r), _) if r.status.has_ended() => return settle::settle(meta, r, instance, input),
        (Some(r), SagaInput::Timer { name, due_ms }) => {
            if r.timers.get(name) != Some(&due_ms) {
                return Decision::Skip(Skip::StaleTimer);
            }
            r
        }
        (Some(r), SagaInput::Event { .. }) => r,
        (None, SagaInput::Timer { .. }) => return Decision::Skip(Skip::StaleTimer),
        (None, SagaInput::Event { event, at_ms, .. }) => {
            if !meta.starts.contains(&event.ty) {
                return Decision::Skip(Skip::NoInstance);
            }
            started = true;
            new_record(saga, meta, instance, event, at_ms)
        }
    };

    // The saga's own state.
    let mut state: S::State = if started {
        S::State::default()
    } else if record.state_version == saga.state_version() {
        match rmp_serde::from_slice(&record.state) {
            Ok(s) => s,
            Err(e) => {
                return fault(
                    saga,
                    meta,
                    Some(record),
                    instance,
                    input,
                    format!("state does not decode: {e}"),
                )
            }
        }
    } else {
        match saga.upcast(record.state_version, &record.state) {
            Some(s) => s,
            None => {
                let reason = format!(
                    "state has schema version {} and this saga reads version {} with no upcaster",
                    record.state_version,
                    saga.state_version()
                );
                return fault(saga, meta, Some(record), instance, input, reason);
            }
        }
    };

    if let SagaInput::Event { event, .. } = input {
        settle::settle_running(&mut record, event);
    }
    let now = input_time(input);
    let seed = match input {
        SagaInput::Event { event, .. } => seed_of(&event.id),
        SagaInput::Timer { name, due_ms } => {
            seed_of(&timer_input_id(&meta.name, instance, name, due_ms))
        }
    };
    let mut ctx = SagaContext::new(&meta.name, now, seed, Arc::clone(&meta.emits));
    let result = match input {
        SagaInput::Event { event, .. } => saga.handle(&mut state, event, &mut ctx),
        SagaInput::Timer { name, .. } => saga.on_timeout(&mut state, name, &mut ctx),
    };
    match result {
        Ok(()) => {}
        Err(SagaError::Transient(e)) => return Decision::Retry(e),
        Err(SagaError::Permanent(e)) => {
            return fault(
                saga,
                meta,
                Some(record),
                instance,
                input,
                format!("handler error: {e}"),
            );
        }
    }
    let state_bytes = match rmp_serde::to_vec_named(&state) {
        Ok(b) => b,
        Err(e) => {
            return fault(
                saga,
                meta,
                Some(record),
                instance,
                input,
                format!("state does not encode: {e}"),
            )
        }
    };

    let mut out = Outputs::new(&meta.name, instance, &record, input, now);
    let before_timers = record.timers.clone();
    if started {
        out.lifecycle(lifecycle::SAGA_STARTED, None, None);
    }
    if let SagaInput::Timer { name, due_ms } = input {
        record.timers.remove(name);
        out.lifecycle(lifecycle::SAGA_TIMED_OUT, None, Some((name, due_ms)));
    }
    for (ty, data, effect) in ctx.emitted {
        let command = ty.to_string();
        let id = out.push(ty, data);
        let Some(effect) = effect else { continue };
        if let Some(t) = effect
            .answer_types()
            .find(|t| !meta.inputs.contains(*t))
            .map(|t| t.to_string())
            .or_else(|| {
                effect
                    .compensation
                    .iter()
                    .flat_map(|c| c.confirmed_by.iter())
                    .find(|t| !meta.inputs.iter().any(|i| i.as_str() == t.as_str()))
                    .cloned()
            })
        {
            let reason = format!(
                "command {command} declares answer type {t}, which is not among the saga's inputs (continues_on)"
            );
            return fault(saga, meta, Some(record), instance, input, reason);
        }
        let deadline = effect.deadline.map(|d| context::later(now, d));
        let settle_by = deadline.map(|d| ms(context::later(d, effect.grace)));
        if let Some(e) = out.events.last_mut() {
            e.deadline = deadline;
        }
        record.effects.push(PendingEffect {
            command: id.to_string(),
            ty: command,
            confirmed_by: effect.confirmed_by.iter().map(|t| t.to_string()).collect(),
            failed_by: effect.failed_by.iter().map(|t| t.to_string()).collect(),
            compensation: effect.compensation,
            deadline_ms: deadline.map(ms),
            settle_by_ms: settle_by,
            state: EffectState::Pending,
        });
    }
    record.compensations.extend(ctx.pushed);
    for name in &ctx.cancelled {
        record.timers.remove(name);
    }
    for (name, due) in ctx.scheduled {
        record.timers.insert(name, ms(due));
    }
    if let SagaInput::Event { event, .. } = input {
        record.waits.retain(|w| !w.ends_on(event.ty.as_str()));
    }
    for ty in &ctx.unawaited {
        record.waits.retain(|w| !w.ends_on(ty.as_str()));
    }
    let since_seq = match input {
        SagaInput::Event { seq, .. } => seq,
        SagaInput::Timer { .. } => record.watermark,
    };
    for (types, within) in ctx.awaits {
        let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
        if !record.waits.iter().any(|w| w.types == types) {
            record.waits.push(Wait {
                types,
                since_seq,
                since_ms: ms(now),
                deadline_ms: within.map(|d| ms(context::later(now, d))),
                stalled: None,
            });
        }
    }
    match ctx.outcome {
        None => {}
        Some(Outcome::Complete) => {
            record.status = SagaStatus::Completed;
            out.lifecycle(lifecycle::SAGA_COMPLETED, None, None);
            // The effects of a completed saga are wanted: nothing to settle any more.
            record.timers.clear();
            record.compensations.clear();
            record.effects.clear();
        }
        Some(Outcome::Fail(reason)) => {
            if let Err(reason) = settle::begin_compensation(&mut record, &mut out, &reason) {
                return fault(saga, meta, Some(record), instance, input, reason);
            }
        }
    }
    if record.status.has_ended() {
        record.waits.clear();
    }
    record.state = state_bytes;
    record.state_version = saga.state_version();
    Decision::Commit(transition(record, out, input, now, &before_timers))
}

/// The transition an applied input makes: `record` advanced past `input`, the events `out`
/// decided, the timers changed since `before`.
pub(crate) fn transition(
    mut record: InstanceRecord,
    out: Outputs,
    input: SagaInput<'_>,
    now: OffsetDateTime,
    before: &std::collections::BTreeMap<String, i64>,
) -> Transition {
    advance(&mut record, input, now);
    let (timers_removed, timers_added) = timer_diff(before, &record.timers);
    Transition {
        record,
        outbox: out.events,
        timers_removed,
        timers_added,
    }
}

/// The faulted version of a record, for when the handler cannot go on. With no record yet
/// (a starting input whose handler keeps failing), the instance is created faulted.
pub(crate) fn fault<S: Saga>(
    saga: &S,
    meta: &SagaMeta,
    existing: Option<InstanceRecord>,
    instance: &SagaId,
    input: SagaInput<'_>,
    reason: String,
) -> Decision {
    let record = match (existing, input) {
        (Some(r), _) => r,
        (None, SagaInput::Event { event, at_ms, .. }) => {
            new_record(saga, meta, instance, event, at_ms)
        }
        (None, SagaInput::Timer { .. }) => return Decision::Skip(Skip::StaleTimer),
    };
    fault_record(meta, record, input, reason)
}

/// The faulted version of an existing record. Its effects and compensation stack are kept:
/// late confirmations still push onto the stack, for `choreo sagas compensate`.
pub(crate) fn fault_record(
    meta: &SagaMeta,
    mut record: InstanceRecord,
    input: SagaInput<'_>,
    reason: String,
) -> Decision {
    let instance = match SagaId::new(record.instance.as_str()) {
        Ok(i) => i,
        Err(_) => return Decision::Skip(Skip::NoInstance),
    };
    let instance = &instance;
    let now = input_time(input);
    let mut out = Outputs::new(&meta.name, instance, &record, input, now);
    out.lifecycle(lifecycle::SAGA_FAULTED, Some(&reason), None);
    let before = record.timers.clone();
    record.status = SagaStatus::Faulted;
    record.reason = Some(reason.clone());
    record.faulted_by = match input {
        SagaInput::Event { seq, .. } => Some(FaultedBy {
            seq,
            watermark: record.watermark,
            timers: record.timers.clone(),
            waits: record.waits.clone(),
        }),
        SagaInput::Timer { .. } => None,
    };
    record.timers.clear();
    record.waits.clear();
    if meta.on_fault == OnFault::Compensate {
        let why = format!("{reason} (compensated on fault)");
        let mut attempt = record.clone();
        if settle::begin_compensation(&mut attempt, &mut out, &why).is_ok() {
            attempt.faulted_by = None;
            record = attempt;
        }
    }
    Decision::Fault {
        transition: transition(record, out, input, now, &before),
        reason,
    }
}

pub(crate) fn input_time(input: SagaInput<'_>) -> OffsetDateTime {
    let at = match input {
        SagaInput::Event { at_ms, .. } => at_ms,
        SagaInput::Timer { due_ms, .. } => due_ms,
    };
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at).saturating_mul(1_000_000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn new_record<S: Saga>(
    saga: &S,
    meta: &SagaMeta,
    instance: &SagaId,
    event: &Event,
    at_ms: i64,
) -> InstanceRecord {
    InstanceRecord {
        saga: meta.name.clone(),
        instance: instance.to_string(),
        correlation: event.correlation.to_string(),
        status: SagaStatus::Running,
        state_version: saga.state_version(),
        state: Vec::new(),
        compensations: Vec::new(),
        timers: Default::default(),
        waits: Vec::new(),
        watermark: 0,
        recent_inputs: Vec::new(),
        applied: 0,
        reason: None,
        faulted_by: None,
        last_event: event.id.to_string(),
        last_depth: event.depth,
        last_trace: event.traceparent.map(|t| t.to_string()),
        effects: Vec::new(),
        undoing: Vec::new(),
        created_ms: at_ms,
        updated_ms: at_ms,
        partition: 0,
        commit: 0,
        outbox: Vec::new(),
        epoch: 0,
        owner: String::new(),
    }
}

pub(crate) fn advance(record: &mut InstanceRecord, input: SagaInput<'_>, now: OffsetDateTime) {
    if let SagaInput::Event { event, seq, .. } = input {
        record.watermark = seq;
        record.remember_input(event.id);
        record.last_event = event.id.to_string();
        record.last_depth = event.depth;
        record.last_trace = event.traceparent.map(|t| t.to_string());
    }
    record.applied += 1;
    record.updated_ms = ms(now);
}

pub(crate) fn timer_diff(
    before: &std::collections::BTreeMap<String, i64>,
    after: &std::collections::BTreeMap<String, i64>,
) -> (Vec<TimerChange>, Vec<TimerChange>) {
    let removed = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let added = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    (removed, added)
}

/// The id standing for a timer firing (timers are inputs without an event).
pub(crate) fn timer_input_id(saga: &str, instance: &SagaId, name: &str, due_ms: i64) -> EventId {
    EventId::derive(&format!("timer/{saga}/{instance}/{name}/{due_ms}"))
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
