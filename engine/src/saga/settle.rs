//! Settling a saga's effects: the bookkeeping that makes "no confirmed effect of a saga that did
//! not complete survives without its compensation" hold whatever order answers, timeouts and
//! expiries arrive in. Pure, like `decide`, which calls it.
//!
//! - While the instance runs, an answer settles the effect its command declared: a
//!   confirmation pushes the compensation on the stack.
//! - When it fails, the stack is sent in reverse and the instance is `compensating` until every
//!   compensation is confirmed and every issued command is settled: answered, expired, or
//!   compensated unconfirmed once its deadline and grace passed (a timer).
//! - After it ended, a confirmation still compensates (once); a completed instance keeps none.

use choreo_schemas::{Event, EventType, SagaId};

use super::decide::{input_time, transition, Decision, SagaInput, SagaMeta, Skip};
use super::lifecycle;
use super::outputs::Outputs;
use crate::delivery::{
    CommandDeadLettered, CommandExpired, COMMAND_DEAD_LETTERED, COMMAND_EXPIRED,
};
use crate::model::{Answer, Compensation, EffectState, InstanceRecord, PendingUndo, SagaStatus};

/// Prefix of the timer that settles an unanswered effect of a failed instance.
pub(crate) const EFFECT_TIMER: &str = "effect:";

/// The effect `event` answers, with what it says: the effect whose command caused it (or
/// caused the command that expired), else the oldest pending effect awaiting its type.
pub(crate) fn match_effect(record: &InstanceRecord, event: &Event) -> Option<(usize, Answer)> {
    let causation = event.causation.to_string();
    if event.ty.as_str() == COMMAND_EXPIRED {
        let data: CommandExpired = event.decode_as().ok()?;
        let i = record
            .effects
            .iter()
            .position(|e| e.command == causation || e.command == data.command_cause)?;
        let answer = if data.maybe_ran() {
            Answer::ExpiredMaybeRan
        } else {
            Answer::Expired
        };
        return Some((i, answer));
    }
    if event.ty.as_str() == COMMAND_DEAD_LETTERED {
        // Given up on by its service: it may have partly run; undo it unconfirmed.
        let data: CommandDeadLettered = event.decode_as().ok()?;
        let i = record
            .effects
            .iter()
            .position(|e| e.command == causation || e.command == data.command_cause)?;
        return Some((i, Answer::ExpiredMaybeRan));
    }
    let ty = event.ty.as_str();
    if let Some(i) = record.effects.iter().position(|e| e.command == causation) {
        if let Some(a) = record.effects.get(i).and_then(|e| e.answered_by(ty)) {
            return Some((i, a));
        }
    }
    // No causation link (the answer came through a forwarding reactor, or from a producer
    // that sets none): the oldest pending effect awaiting the type, else any effect awaiting
    // it (a confirmation of an effect already undone unconfirmed must still be compensated).
    let by_type = |pending: bool| {
        record
            .effects
            .iter()
            .enumerate()
            .filter(|(_, e)| !pending || e.state == EffectState::Pending)
            .find_map(|(i, e)| e.answered_by(ty).map(|a| (i, a)))
    };
    by_type(true).or_else(|| by_type(false))
}

fn match_undo(record: &InstanceRecord, event: &Event) -> Option<usize> {
    let causation = event.causation.to_string();
    if let Some(data) = dead_lettered(event) {
        // A compensation its service gave up on: visibly failed (in the DLQ), not awaited.
        return record
            .undoing
            .iter()
            .position(|u| u.command == causation || u.command == data.command_cause);
    }
    let ty = event.ty.as_str();
    let confirms = |u: &PendingUndo| u.confirmed_by.iter().any(|t| t == ty);
    record
        .undoing
        .iter()
        .position(|u| u.command == causation && confirms(u))
        .or_else(|| record.undoing.iter().position(confirms))
}

/// The data of a dead-letter notice, if `event` is one.
fn dead_lettered(event: &Event) -> Option<CommandDeadLettered> {
    (event.ty.as_str() == COMMAND_DEAD_LETTERED)
        .then(|| event.decode_as().ok())
        .flatten()
}

/// While running: settle the effect an event answers, before the handler sees the event.
pub(crate) fn settle_running(record: &mut InstanceRecord, event: &Event) {
    if let Some((i, answer)) = match_effect(record, event) {
        onto_stack(record, i, answer);
    }
}

/// Settle effect `i` without sending anything (a running or faulted instance): a confirmation
/// (or a maybe-ran expiry) puts its compensation on the stack; a failure or an expiry is kept.
fn onto_stack(record: &mut InstanceRecord, i: usize, answer: Answer) {
    match answer {
        Answer::Confirmed | Answer::ExpiredMaybeRan => {
            let effect = record.effects.remove(i);
            record.compensations.extend(effect.compensation);
        }
        Answer::Failed | Answer::Expired => {
            if let Some(e) = record.effects.get_mut(i) {
                if e.state == EffectState::Pending {
                    e.state = negative(answer);
                }
            }
        }
    }
}

/// The state a failure or an expiry leaves an effect in.
fn negative(answer: Answer) -> EffectState {
    if answer == Answer::Failed {
        EffectState::Failed
    } else {
        EffectState::Expired
    }
}

/// Send one compensation; await its confirmation if it has one.
fn undo(record: &mut InstanceRecord, out: &mut Outputs, c: &Compensation) -> Result<(), String> {
    let ty = EventType::new(c.ty.as_str()).map_err(|e| format!("stored compensation: {e}"))?;
    let id = out.push(ty, c.data.clone());
    if !c.confirmed_by.is_empty() {
        record.undoing.push(PendingUndo {
            command: id.to_string(),
            ty: c.ty.clone(),
            confirmed_by: c.confirmed_by.clone(),
        });
    }
    Ok(())
}

/// The instance failed: send the stack in reverse, keep waiting for what is unsettled.
pub(crate) fn begin_compensation(
    record: &mut InstanceRecord,
    out: &mut Outputs,
    reason: &str,
) -> Result<(), String> {
    record.status = SagaStatus::Compensating;
    record.timers.clear();
    out.lifecycle(lifecycle::SAGA_FAILED, Some(reason), None);
    out.lifecycle(lifecycle::SAGA_COMPENSATING, None, None);
    let stack = std::mem::take(&mut record.compensations);
    for c in stack.iter().rev() {
        undo(record, out, c)?;
    }
    for e in &record.effects {
        if let (EffectState::Pending, Some(at)) = (e.state, e.settle_by_ms) {
            record
                .timers
                .insert(format!("{EFFECT_TIMER}{}", e.command), at);
        }
    }
    record.reason = Some(reason.to_owned());
    finish_if_settled(record, out);
    Ok(())
}

/// Compensating with nothing left to wait for: compensated. Compensated with a late
/// compensation to confirm: compensating again.
fn finish_if_settled(record: &mut InstanceRecord, out: &mut Outputs) {
    let outstanding = !record.undoing.is_empty()
        || record
            .effects
            .iter()
            .any(|e| e.state == EffectState::Pending);
    match (record.status, outstanding) {
        (SagaStatus::Compensating, false) => {
            record.status = SagaStatus::Compensated;
            out.lifecycle(lifecycle::SAGA_COMPENSATED, None, None);
        }
        (SagaStatus::Compensated, true) => {
            record.status = SagaStatus::Compensating;
            out.lifecycle(lifecycle::SAGA_COMPENSATING, None, None);
        }
        _ => {}
    }
}

/// An input for an instance that no longer runs its handler.
pub(crate) fn settle(
    meta: &SagaMeta,
    mut record: InstanceRecord,
    instance: &SagaId,
    input: SagaInput<'_>,
) -> Decision {
    let now = input_time(input);
    let mut out = Outputs::new(&meta.name, instance, &record, input, now);
    let before = record.timers.clone();
    let result = match input {
        SagaInput::Timer { name, due_ms } => {
            if record.timers.get(name) != Some(&due_ms) {
                return Decision::Skip(Skip::StaleTimer);
            }
            record.timers.remove(name);
            out.lifecycle(lifecycle::SAGA_TIMED_OUT, None, Some((name, due_ms)));
            match name.strip_prefix(EFFECT_TIMER) {
                Some(command) => unanswered(&mut record, &mut out, command),
                None => Ok(true),
            }
        }
        SagaInput::Event { event, .. } => {
            if let Some((i, answer)) = match_effect(&record, event) {
                answered(&mut record, &mut out, i, answer)
            } else if let Some(i) = match_undo(&record, event) {
                let undo = record.undoing.remove(i);
                if let Some(d) = dead_lettered(event) {
                    let note = format!(
                        "compensation {} dead-lettered by {} ({}): see the DLQ",
                        undo.ty, d.actor, d.reason
                    );
                    record.reason = Some(match record.reason.take() {
                        Some(r) => format!("{r}; {note}"),
                        None => note,
                    });
                }
                Ok(true)
            } else {
                Ok(false)
            }
        }
    };
    match result {
        Ok(true) => {}
        Ok(false) => return Decision::Skip(Skip::Terminal),
        Err(reason) => return super::decide::fault_record(meta, record, input, reason),
    }
    if record.status != SagaStatus::Faulted {
        finish_if_settled(&mut record, &mut out);
    }
    Decision::Commit(transition(record, out, input, now, &before))
}

/// An effect of an ended instance stayed unanswered past its deadline and grace: compensate it
/// unconfirmed (it may have happened; compensations tolerate a step that did not).
fn unanswered(
    record: &mut InstanceRecord,
    out: &mut Outputs,
    command: &str,
) -> Result<bool, String> {
    let Some(i) = record
        .effects
        .iter()
        .position(|e| e.command == command && e.state == EffectState::Pending)
    else {
        return Ok(true);
    };
    let compensation = record.effects.get(i).and_then(|e| e.compensation.clone());
    if let Some(e) = record.effects.get_mut(i) {
        e.state = EffectState::Undone;
    }
    if let Some(c) = compensation {
        undo(record, out, &c)?;
    }
    Ok(true)
}

/// An answer for an effect of an instance that no longer runs its handler.
fn answered(
    record: &mut InstanceRecord,
    out: &mut Outputs,
    i: usize,
    answer: Answer,
) -> Result<bool, String> {
    let Some(effect) = record.effects.get(i).cloned() else {
        return Ok(false);
    };
    let timer = format!("{EFFECT_TIMER}{}", effect.command);
    if record.status == SagaStatus::Faulted {
        // Nothing is sent for a faulted instance: the stack waits for `sagas compensate`.
        onto_stack(record, i, answer);
        return Ok(true);
    }
    match (answer, effect.state) {
        // It happened after all (or may have): undo it. An effect undone unconfirmed is undone
        // again on a confirmation, since that compensation may have run first.
        (Answer::Confirmed, _) | (Answer::ExpiredMaybeRan, EffectState::Pending) => {
            record.effects.remove(i);
            record.timers.remove(&timer);
            if let Some(c) = &effect.compensation {
                undo(record, out, c)?;
            }
            if answer == Answer::ExpiredMaybeRan {
                // Keep it: a confirmation may still come from the delivery that ran.
                let mut kept = effect;
                kept.state = EffectState::Undone;
                record.effects.push(kept);
            }
            Ok(true)
        }
        (Answer::ExpiredMaybeRan, _) => Ok(false),
        (Answer::Failed | Answer::Expired, EffectState::Pending) => {
            if let Some(e) = record.effects.get_mut(i) {
                e.state = negative(answer);
            }
            record.timers.remove(&timer);
            Ok(true)
        }
        (Answer::Failed | Answer::Expired, _) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use choreo_schemas::CorrelationId;
    use proptest::prelude::*;

    use super::super::decide::decide;
    use super::super::{RoutingSlip, SlipStep};
    use super::*;

    const STEPS: [&str; 3] = ["flight", "hotel", "car"];

    fn ty(s: &str) -> EventType {
        EventType::new(s).expect("valid type")
    }

    fn slip() -> RoutingSlip {
        let mut b = RoutingSlip::builder("trip", ty("trip.requested.v1"));
        for s in STEPS {
            b = b.step(
                SlipStep::new(
                    s,
                    ty(&format!("{s}.book.v1")),
                    ty(&format!("{s}.booked.v1")),
                    ty(&format!("{s}.failed.v1")),
                )
                .compensate_with_confirmation(
                    ty(&format!("{s}.cancel.v1")),
                    ty(&format!("{s}.cancelled.v1")),
                )
                .timeout(Duration::from_secs(30)),
            );
        }
        b.build().expect("valid slip")
    }

    /// What the world may deliver to the instance, in any order, any number of times.
    #[derive(Clone, Debug)]
    enum Input {
        /// The service executed step i's command and answers.
        Booked(usize),
        /// The same, through a forwarding reactor: the answer's causation is not the command.
        BookedViaGate(usize),
        Failed(usize),
        /// The reactor runtime refused step i's command past its deadline.
        Expired(usize, bool),
        /// The service confirms the compensation of step i.
        Cancelled(usize),
        /// The earliest pending timer fires.
        Tick,
    }

    fn arb_input() -> impl Strategy<Value = Input> {
        prop_oneof![
            (0usize..3).prop_map(Input::Booked),
            (0usize..3).prop_map(Input::BookedViaGate),
            (0usize..3).prop_map(Input::Failed),
            ((0usize..3), any::<bool>()).prop_map(|(i, r)| Input::Expired(i, r)),
            (0usize..3).prop_map(Input::Cancelled),
            Just(Input::Tick),
        ]
    }

    struct World {
        meta: SagaMeta,
        slip: RoutingSlip,
        record: Option<InstanceRecord>,
        seq: u64,
        /// Every event the instance emitted.
        out: Vec<Event>,
        /// Steps whose command the service executed (it answered booked).
        booked: BTreeMap<usize, usize>,
    }

    impl World {
        fn new() -> Self {
            let s = slip();
            Self {
                meta: SagaMeta::of(&s, "trip"),
                slip: s,
                record: None,
                seq: 0,
                out: Vec::new(),
                booked: BTreeMap::new(),
            }
        }
    }

    impl World {
        fn command(&self, i: usize) -> Option<&Event> {
            let t = format!("{}.book.v1", STEPS[i]);
            self.out.iter().find(|e| e.ty.as_str() == t)
        }

        fn last_of(&self, t: &str) -> Option<&Event> {
            self.out.iter().rev().find(|e| e.ty.as_str() == t)
        }

        fn answer(&self, t: &str, cause: &Event, data: Vec<u8>) -> Event {
            let mut e = Event::root_raw(
                "urn:svc",
                CorrelationId::new("t1").expect("valid"),
                ty(t),
                data,
            );
            e.causation = cause.id;
            e.depth = cause.depth.saturating_add(1);
            e
        }

        fn apply(&mut self, input: SagaInput<'_>) {
            let id = SagaId::new("t1").expect("valid");
            match decide(&self.slip, &self.meta, self.record.clone(), &id, input) {
                Decision::Commit(t) | Decision::Fault { transition: t, .. } => {
                    self.out.extend(t.outbox);
                    self.record = Some(t.record);
                }
                Decision::Skip(_) | Decision::Retry(_) => {}
            }
        }

        fn send(&mut self, e: &Event) {
            self.seq += 1;
            let at_ms = i64::try_from(self.seq).unwrap_or(0) * 1_000;
            self.apply(SagaInput::Event {
                event: e,
                seq: self.seq,
                at_ms,
            });
        }

        fn tick(&mut self) -> bool {
            let Some((name, due)) = self.record.as_ref().and_then(|r| {
                r.timers
                    .iter()
                    .min_by_key(|(_, d)| **d)
                    .map(|(n, d)| (n.clone(), *d))
            }) else {
                return false;
            };
            self.apply(SagaInput::Timer {
                name: &name,
                due_ms: due,
            });
            true
        }

        fn deliver(&mut self, input: &Input) {
            match input {
                Input::Booked(i) | Input::BookedViaGate(i) | Input::Failed(i) => {
                    let Some(mut cmd) = self.command(*i).cloned() else {
                        return; // never issued: no service can answer it
                    };
                    let booked = !matches!(input, Input::Failed(_));
                    if matches!(input, Input::BookedViaGate(_)) {
                        cmd.id = choreo_schemas::EventId::derive(&format!("gate/{}", cmd.id));
                    }
                    let verb = if booked { "booked" } else { "failed" };
                    let e = self.answer(&format!("{}.{verb}.v1", STEPS[*i]), &cmd, vec![0x90]);
                    if booked {
                        *self.booked.entry(*i).or_default() += 1;
                    }
                    self.send(&e);
                }
                Input::Expired(i, redelivered) => {
                    let Some(cmd) = self.command(*i).cloned() else {
                        return;
                    };
                    let data = CommandExpired {
                        actor: "svc".into(),
                        command_type: cmd.ty.to_string(),
                        command_cause: cmd.causation.to_string(),
                        deadline: String::new(),
                        delivered: if *redelivered { 2 } else { 1 },
                    };
                    let bytes = rmp_serde::to_vec_named(&data).expect("encodes");
                    let e = self.answer(COMMAND_EXPIRED, &cmd, bytes);
                    self.send(&e);
                }
                Input::Cancelled(i) => {
                    let Some(cancel) = self.last_of(&format!("{}.cancel.v1", STEPS[*i])).cloned()
                    else {
                        return;
                    };
                    let e =
                        self.answer(&format!("{}.cancelled.v1", STEPS[*i]), &cancel, vec![0x90]);
                    self.send(&e);
                }
                Input::Tick => {
                    self.tick();
                }
            }
        }

        fn count(&self, t: &str) -> usize {
            self.out.iter().filter(|e| e.ty.as_str() == t).count()
        }
    }

    proptest! {
        /// Any interleaving of answers, late answers, expiries, timeouts and compensation
        /// confirmations: once the world goes quiet (timers fired, compensations confirmed),
        /// the instance is terminal, and unless it completed, every step a service executed is
        /// compensated; no command is issued twice.
        #[test]
        fn no_confirmed_step_of_a_failed_saga_stays_uncompensated(
            inputs in proptest::collection::vec(arb_input(), 0..24)
        ) {
            let mut w = World::new();
            w.send(&Event::root_raw("urn:t", CorrelationId::new("t1").expect("valid"), ty("trip.requested.v1"), vec![0x90]));
            for input in &inputs {
                w.deliver(input);
            }
            // Quiescence: timers fire, outstanding compensations are confirmed.
            for _ in 0..50 {
                let r = w.record.clone().expect("started");
                if let Some(u) = r.undoing.first() {
                    let i = STEPS.iter().position(|s| u.ty.starts_with(s)).expect("a step");
                    w.deliver(&Input::Cancelled(i));
                } else if !w.tick() {
                    break;
                }
            }
            let r = w.record.clone().expect("started");
            prop_assert!(r.status.is_terminal(), "{:?} after {:?}: {:?}", r.status, inputs, r);
            prop_assert!(r.timers.is_empty() && r.undoing.is_empty());
            for (i, step) in STEPS.iter().enumerate() {
                let issued = w.count(&format!("{}.book.v1", step));
                prop_assert!(issued <= 1);
                let cancels = w.count(&format!("{}.cancel.v1", step));
                if r.status == SagaStatus::Completed {
                    prop_assert_eq!(cancels, 0);
                } else if w.booked.contains_key(&i) {
                    prop_assert!(cancels >= 1, "step {} executed and never cancelled: {:?}", step, inputs);
                }
            }
            if r.status != SagaStatus::Completed {
                // Compensations in reverse order of their steps.
                let order: Vec<usize> = w.out.iter()
                    .filter(|e| e.ty.as_str().ends_with(".cancel.v1"))
                    .filter_map(|e| STEPS.iter().position(|s| e.ty.as_str().starts_with(s)))
                    .collect();
                let first_pass: Vec<usize> = order.iter().copied().take_while({
                    let mut last = usize::MAX;
                    move |i| { let ok = *i < last; last = *i; ok }
                }).collect();
                prop_assert!(first_pass.windows(2).all(|w| w[0] > w[1]));
            }
        }
    }

    #[test]
    fn a_confirmation_after_a_timeout_compensates_once() {
        let mut w = World::new();
        w.send(&Event::root_raw(
            "urn:t",
            CorrelationId::new("t1").expect("valid"),
            ty("trip.requested.v1"),
            vec![0x90],
        ));
        w.deliver(&Input::Booked(0)); // flight booked, hotel requested
        assert!(w.tick()); // the hotel step times out
        let r = w.record.clone().expect("started");
        assert_eq!(r.status, SagaStatus::Compensating, "{r:?}");
        assert_eq!(w.count("flight.cancel.v1"), 1);
        // The hotel answers after the timeout: its booking is cancelled, once.
        w.deliver(&Input::Booked(1));
        w.deliver(&Input::Booked(1));
        assert_eq!(w.count("hotel.cancel.v1"), 1);
        w.deliver(&Input::Cancelled(0));
        assert_eq!(
            w.record.as_ref().map(|r| r.status),
            Some(SagaStatus::Compensating)
        );
        w.deliver(&Input::Cancelled(1));
        assert_eq!(
            w.record.as_ref().map(|r| r.status),
            Some(SagaStatus::Compensated)
        );
        assert_eq!(w.count(lifecycle::SAGA_COMPENSATED), 1);
    }
}
