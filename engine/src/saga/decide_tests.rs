//! Tests of the saga decision core (`decide`), driven with a routing slip: inputs applied
//! before (watermark and copies), an unreadable state, deterministic output ids.

use super::*;
use crate::saga::{RoutingSlip, SlipStep};
use choreo_schemas::CorrelationId;
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
    SagaMeta::of(s, "trip")
}

fn event(t: &str) -> Event {
    Event::root_raw(
        "urn:t",
        CorrelationId::new("t1").expect("valid"),
        ty(t),
        vec![0x90],
    )
}

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
                at_ms: 1_000,
            },
        )
    }
}

#[test]
fn inputs_applied_before_are_skipped() {
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
            at_ms: 1_000,
        },
    );
    assert_eq!(again, Decision::Skip(Skip::Duplicate));
    // The same event (same id) stored again far past the watermark, as a producer's
    // retry under a new message id past the duplicate window would be.
    let copy = decide(
        &s,
        &m,
        run.record.clone(),
        &id,
        SagaInput::Event {
            event: &start,
            seq: 1_000,
            at_ms: 1_000,
        },
    );
    assert_eq!(copy, Decision::Skip(Skip::Duplicate));
    let mut r = run.record.clone().expect("a record");
    let first = start.id;
    assert!(r.has_applied(&first));
    for _ in 0..crate::model::RECENT_INPUTS {
        r.remember_input(choreo_schemas::EventId::new_root());
        let orphan = decide(
            &s,
            &m,
            None,
            &id,
            SagaInput::Event {
                event: &event("hotel.booked.v1"),
                seq: 9,
                at_ms: 1_000,
            },
        );
        assert_eq!(orphan, Decision::Skip(Skip::NoInstance));
    }

    assert!(!r.has_applied(&first));
    assert_eq!(r.recent_inputs.len(), crate::model::RECENT_INPUTS);
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
            assert!(transition.record.timers.is_empty() && transition.timers_removed.len() == 1);
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
            at_ms: 1_000,
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
            at_ms: 1_000,
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
