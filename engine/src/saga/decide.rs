//! The saga's pure core: `decide(record, input) -> decision`. No I/O, no clock.

use std::collections::BTreeSet;
use std::sync::Arc;

use choreo_schemas::{Event, EventId, EventType, SagaId};
use time::OffsetDateTime;

use super::context::{Outcome, SagaContext};
use super::lifecycle;
use super::outputs::Outputs;
use super::{Saga, SagaError};
use crate::model::{InstanceRecord, SagaStatus};
pub(crate) use crate::model::{TimerChange, Transition};

/// One input of an instance.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SagaInput<'a> {
    /// An event from the log, with its stream sequence.
    Event { event: &'a Event, seq: u64 },
    /// A timer that is due.
    Timer { name: &'a str, due_ms: i64 },
}

/// Why an input changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Skip {
    /// A continuing event for an instance that does not exist (choreography is noisy).
    NoInstance,
    /// At or below the instance's watermark: already applied.
    Duplicate,
    /// The instance already ended.
    Terminal,
    /// The timer was cancelled or rescheduled since it was read.
    StaleTimer,
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
}

fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn seed_of(id: &EventId) -> u64 {
    let b = id.as_uuid().as_bytes();
    u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])
}

/// Decide what one input does to one instance.
pub(crate) fn decide<S: Saga>(
    saga: &S,
    meta: &SagaMeta,
    existing: Option<InstanceRecord>,
    instance: &SagaId,
    input: SagaInput<'_>,
) -> Decision {
    let mut started = false;
    let mut record = match (existing, input) {
        (Some(r), SagaInput::Event { seq, .. }) if seq <= r.watermark => {
            return Decision::Skip(Skip::Duplicate)
        }
        (Some(r), _) if r.status.is_terminal() => return Decision::Skip(Skip::Terminal),
        (Some(r), SagaInput::Timer { name, due_ms }) => {
            if r.timers.get(name) != Some(&due_ms) {
                return Decision::Skip(Skip::StaleTimer);
            }
            r
        }
        (Some(r), SagaInput::Event { .. }) => r,
        (None, SagaInput::Timer { .. }) => return Decision::Skip(Skip::StaleTimer),
        (None, SagaInput::Event { event, .. }) => {
            if !meta.starts.contains(&event.ty) {
                return Decision::Skip(Skip::NoInstance);
            }
            started = true;
            new_record(saga, meta, instance, event)
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
    for (ty, data) in ctx.emitted {
        out.push(ty, data);
    }
    record.compensations.extend(ctx.pushed);
    for name in &ctx.cancelled {
        record.timers.remove(name);
    }
    for (name, due) in ctx.scheduled {
        record.timers.insert(name, ms(due));
    }
    if let SagaInput::Event { event, .. } = input {
        record.waits.retain(|w| w != event.ty.as_str());
    }
    for w in ctx.awaits {
        if !record.waits.iter().any(|x| x == w.as_str()) {
            record.waits.push(w.to_string());
        }
    }
    match ctx.outcome {
        None => {}
        Some(Outcome::Complete) => {
            record.status = SagaStatus::Completed;
            out.lifecycle(lifecycle::SAGA_COMPLETED, None, None);
        }
        Some(Outcome::Fail(reason)) => {
            record.status = SagaStatus::Compensated;
            out.lifecycle(lifecycle::SAGA_FAILED, Some(&reason), None);
            out.lifecycle(lifecycle::SAGA_COMPENSATING, None, None);
            for c in record.compensations.iter().rev() {
                match EventType::new(c.ty.as_str()) {
                    Ok(ty) => out.push(ty, c.data.clone()),
                    Err(e) => {
                        let reason = format!("stored compensation: {e}");
                        return fault(saga, meta, Some(record), instance, input, reason);
                    }
                }
            }
            out.lifecycle(lifecycle::SAGA_COMPENSATED, None, None);
            record.reason = Some(reason);
        }
    }
    if record.status.is_terminal() {
        record.timers.clear();
        record.waits.clear();
        record.compensations.clear();
    }
    record.state = state_bytes;
    record.state_version = saga.state_version();
    advance(&mut record, input, now);
    let (timers_removed, timers_added) = timer_diff(&before_timers, &record.timers);
    Decision::Commit(Transition {
        record,
        outbox: out.events,
        timers_removed,
        timers_added,
    })
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
    let mut record = match (existing, input) {
        (Some(r), _) => r,
        (None, SagaInput::Event { event, .. }) => new_record(saga, meta, instance, event),
        (None, SagaInput::Timer { .. }) => return Decision::Skip(Skip::StaleTimer),
    };
    let now = input_time(input);
    let mut out = Outputs::new(&meta.name, instance, &record, input, now);
    out.lifecycle(lifecycle::SAGA_FAULTED, Some(&reason), None);
    let before = record.timers.clone();
    record.status = SagaStatus::Faulted;
    record.reason = Some(reason.clone());
    record.timers.clear();
    record.waits.clear();
    advance(&mut record, input, now);
    let (timers_removed, timers_added) = timer_diff(&before, &record.timers);
    Decision::Fault {
        transition: Transition {
            record,
            outbox: out.events,
            timers_removed,
            timers_added,
        },
        reason,
    }
}

fn input_time(input: SagaInput<'_>) -> OffsetDateTime {
    match input {
        SagaInput::Event { event, .. } => event.time,
        SagaInput::Timer { due_ms, .. } => {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(due_ms) * 1_000_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        }
    }
}

fn new_record<S: Saga>(
    saga: &S,
    meta: &SagaMeta,
    instance: &SagaId,
    event: &Event,
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
        applied: 0,
        reason: None,
        last_event: event.id.to_string(),
        last_depth: event.depth,
        last_trace: event.traceparent.map(|t| t.to_string()),
        created_ms: ms(event.time),
        updated_ms: ms(event.time),
        partition: 0,
        commit: 0,
        outbox: Vec::new(),
        epoch: 0,
        owner: String::new(),
    }
}

fn advance(record: &mut InstanceRecord, input: SagaInput<'_>, now: OffsetDateTime) {
    if let SagaInput::Event { event, seq } = input {
        record.watermark = seq;
        record.last_event = event.id.to_string();
        record.last_depth = event.depth;
        record.last_trace = event.traceparent.map(|t| t.to_string());
    }
    record.applied += 1;
    record.updated_ms = ms(now);
}

fn timer_diff(
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
mod tests {
    use super::*;
    use crate::saga::{RoutingSlip, SlipStep};
    use choreo_schemas::CorrelationId;
    use proptest::prelude::*;
    use std::time::Duration;

    fn ty(s: &str) -> EventType {
        EventType::new(s).expect("valid type")
    }

    fn slip() -> RoutingSlip {
        let mut b = RoutingSlip::builder("trip", ty("trip.requested.v1"));
        for s in ["flight", "hotel", "car"] {
            b = b.step(
                SlipStep::new(
                    s,
                    ty(&format!("{s}.book.v1")),
                    ty(&format!("{s}.booked.v1")),
                    ty(&format!("{s}.failed.v1")),
                )
                .compensate_with(ty(&format!("{s}.cancel.v1")))
                .timeout(Duration::from_secs(30)),
            );
        }
        b.build().expect("valid slip")
    }

    fn meta(s: &RoutingSlip) -> SagaMeta {
        SagaMeta {
            name: "trip".into(),
            starts: s.starts_on().into_iter().collect(),
            emits: Arc::new(s.emits().into_iter().collect()),
        }
    }

    fn event(t: &str) -> Event {
        Event::root_raw(
            "urn:t",
            CorrelationId::new("t1").expect("valid"),
            ty(t),
            vec![0x90],
        )
    }

    /// Step answers and timer firings, by step index.
    #[derive(Clone, Debug)]
    enum Input {
        Booked(usize),
        Failed(usize),
        Timer(usize),
        StaleTimer(usize),
    }

    fn arb_input() -> impl Strategy<Value = Input> {
        prop_oneof![
            (0usize..3).prop_map(Input::Booked),
            (0usize..3).prop_map(Input::Failed),
            (0usize..3).prop_map(Input::Timer),
            (0usize..3).prop_map(Input::StaleTimer),
        ]
    }

    const STEPS: [&str; 3] = ["flight", "hotel", "car"];

    struct Run {
        record: Option<InstanceRecord>,
        emitted: Vec<String>,
        seq: u64,
    }

    impl Run {
        fn apply(&mut self, s: &RoutingSlip, m: &SagaMeta, input: SagaInput<'_>) -> Decision {
            let id = SagaId::new("t1").expect("valid");
            let d = decide(s, m, self.record.clone(), &id, input);
            if let Decision::Commit(t) | Decision::Fault { transition: t, .. } = &d {
                self.emitted
                    .extend(t.outbox.iter().map(|e| e.ty.to_string()));
                self.record = Some(t.record.clone());
            }
            d
        }

        fn send(&mut self, s: &RoutingSlip, m: &SagaMeta, e: &Event) -> Decision {
            self.seq += 1;
            self.apply(
                s,
                m,
                SagaInput::Event {
                    event: e,
                    seq: self.seq,
                },
            )
        }
    }

    proptest! {
        #[test]
        fn any_interleaving_ends_in_one_terminal_state_with_reverse_compensations(
            inputs in proptest::collection::vec(arb_input(), 0..14)
        ) {
            let s = slip();
            let m = meta(&s);
            let mut run = Run { record: None, emitted: Vec::new(), seq: 0 };
            run.send(&s, &m, &event("trip.requested.v1"));
            for input in &inputs {
                let was_terminal = run.record.as_ref().is_some_and(|r| r.status.is_terminal());
                let d = match input {
                    Input::Booked(i) => run.send(&s, &m, &event(&format!("{}.booked.v1", STEPS[*i]))),
                    Input::Failed(i) => run.send(&s, &m, &event(&format!("{}.failed.v1", STEPS[*i]))),
                    Input::Timer(i) | Input::StaleTimer(i) => {
                        let name = format!("step-{i}");
                        let pending = run.record.as_ref().and_then(|r| r.timers.get(&name).copied());
                        let due = match (input, pending) {
                            (Input::Timer(_), Some(d)) => d,
                            (_, Some(d)) => d + 1,
                            (_, None) => 42,
                        };
                        run.apply(&s, &m, SagaInput::Timer { name: &name, due_ms: due })
                    }
                };
                if was_terminal {
                    prop_assert!(matches!(d, Decision::Skip(_)), "a terminal instance changed: {d:?}");
                }
            }
            // Whatever happened, the current step's timer eventually fires.
            if let Some(r) = run.record.clone().filter(|r| !r.status.is_terminal()) {
                let (name, due) = r.timers.iter().next().map(|(k, v)| (k.clone(), *v)).expect("a running slip has a step timer");
                run.apply(&s, &m, SagaInput::Timer { name: &name, due_ms: due });
            }
            let record = run.record.clone().expect("started");
            prop_assert!(record.status.is_terminal());
            prop_assert!(record.timers.is_empty());
            let terminal: Vec<&String> = run.emitted.iter()
                .filter(|t| [SAGA_COMPLETED_T, SAGA_COMPENSATED_T, SAGA_FAULTED_T].contains(&t.as_str()))
                .collect();
            prop_assert_eq!(terminal.len(), 1, "{:?}", run.emitted);
            let commands: Vec<&String> = run.emitted.iter().filter(|t| t.ends_with(".book.v1")).collect();
            let completed = commands.len() - usize::from(record.status != SagaStatus::Completed);
            let compensations: Vec<String> = run.emitted.iter().filter(|t| t.ends_with(".cancel.v1")).cloned().collect();
            let expected: Vec<String> = STEPS[..completed].iter().rev().map(|s| format!("{s}.cancel.v1")).collect();
            match record.status {
                SagaStatus::Completed => {
                    prop_assert_eq!(commands.len(), 3);
                    prop_assert!(compensations.is_empty());
                }
                SagaStatus::Compensated => prop_assert_eq!(compensations, expected),
                other => prop_assert!(false, "unexpected terminal status {other:?}"),
            }
            // Each command at most once.
            let unique: BTreeSet<&&String> = commands.iter().collect();
            prop_assert_eq!(unique.len(), commands.len());
        }
    }

    const SAGA_COMPLETED_T: &str = lifecycle::SAGA_COMPLETED;
    const SAGA_COMPENSATED_T: &str = lifecycle::SAGA_COMPENSATED;
    const SAGA_FAULTED_T: &str = lifecycle::SAGA_FAULTED;

    #[test]
    fn inputs_at_or_below_the_watermark_are_skipped() {
        let s = slip();
        let m = meta(&s);
        let mut run = Run {
            record: None,
            emitted: Vec::new(),
            seq: 0,
        };
        let start = event("trip.requested.v1");
        assert!(matches!(run.send(&s, &m, &start), Decision::Commit(_)));
        let id = SagaId::new("t1").expect("valid");
        let again = decide(
            &s,
            &m,
            run.record.clone(),
            &id,
            SagaInput::Event {
                event: &start,
                seq: 1,
            },
        );
        assert_eq!(again, Decision::Skip(Skip::Duplicate));
        let orphan = decide(
            &s,
            &m,
            None,
            &id,
            SagaInput::Event {
                event: &event("hotel.booked.v1"),
                seq: 9,
            },
        );
        assert_eq!(orphan, Decision::Skip(Skip::NoInstance));
    }

    #[test]
    fn an_unreadable_state_faults_the_instance() {
        let s = slip();
        let m = meta(&s);
        let mut run = Run {
            record: None,
            emitted: Vec::new(),
            seq: 0,
        };
        run.send(&s, &m, &event("trip.requested.v1"));
        let mut broken = run.record.clone().expect("started");
        broken.state_version = 7;
        run.record = Some(broken);
        match run.send(&s, &m, &event("flight.booked.v1")) {
            Decision::Fault { transition, reason } => {
                assert_eq!(transition.record.status, SagaStatus::Faulted);
                assert!(reason.contains("schema version 7"), "{reason}");
                assert!(
                    transition.record.timers.is_empty() && transition.timers_removed.len() == 1
                );
            }
            other => panic!("expected a fault, got {other:?}"),
        }
    }

    #[test]
    fn outputs_have_deterministic_ids_and_causation() {
        let s = slip();
        let m = meta(&s);
        let id = SagaId::new("t1").expect("valid");
        let start = event("trip.requested.v1");
        let a = decide(
            &s,
            &m,
            None,
            &id,
            SagaInput::Event {
                event: &start,
                seq: 1,
            },
        );
        let b = decide(
            &s,
            &m,
            None,
            &id,
            SagaInput::Event {
                event: &start,
                seq: 1,
            },
        );
        let (Decision::Commit(a), Decision::Commit(b)) = (a, b) else {
            panic!("both commit")
        };
        let ids = |t: &Transition| t.outbox.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        let types: Vec<&str> = a.outbox.iter().map(|e| e.ty.as_str()).collect();
        assert_eq!(types, ["choreo.saga.started", "flight.book.v1"]);
        assert!(a
            .outbox
            .iter()
            .all(|e| e.causation == start.id && e.depth == 1));
        assert_eq!(a.timers_added.len(), 1);
    }
}
