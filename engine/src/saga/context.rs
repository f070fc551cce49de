//! The context a saga decides through: it only records decisions; the runtime carries them out.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use choreo_schemas::{encode_data, EventType, Payload};
use time::OffsetDateTime;

use super::Effect;
use crate::model::Compensation;
use crate::reactor::EmitError;

/// How the instance ends, if this input ends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Complete,
    Fail(String),
}

/// Handed to [`crate::Saga::handle`] and [`crate::Saga::on_timeout`]. Pure: time and randomness
/// come from the input, so a replay decides the same.
#[derive(Debug)]
pub struct SagaContext {
    saga: String,
    now: OffsetDateTime,
    seed: u64,
    emits: Arc<BTreeSet<EventType>>,
    pub(crate) emitted: Vec<(EventType, Vec<u8>, Option<Effect>)>,
    pub(crate) pushed: Vec<Compensation>,
    pub(crate) scheduled: Vec<(String, OffsetDateTime)>,
    pub(crate) cancelled: Vec<String>,
    pub(crate) awaits: Vec<(Vec<EventType>, Option<Duration>)>,
    pub(crate) unawaited: Vec<EventType>,
    pub(crate) outcome: Option<Outcome>,
}

impl SagaContext {
    pub(crate) fn new(
        saga: &str,
        now: OffsetDateTime,
        seed: u64,
        emits: Arc<BTreeSet<EventType>>,
    ) -> Self {
        Self {
            saga: saga.to_owned(),
            now,
            seed,
            emits,
            emitted: Vec::new(),
            pushed: Vec::new(),
            scheduled: Vec::new(),
            cancelled: Vec::new(),
            awaits: Vec::new(),
            unawaited: Vec::new(),
            outcome: None,
        }
    }

    /// The input's time on the log: when JetStream stored the event (not the producer's
    /// `ce-time`), or the timer's due time.
    pub fn now(&self) -> OffsetDateTime {
        self.now
    }

    /// A seed derived from the input's id: the only randomness a saga may use.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Emit a command or event.
    pub fn emit<P: Payload>(&mut self, payload: &P) -> Result<(), EmitError> {
        let ty = P::event_type();
        self.check(&ty)?;
        self.emitted.push((ty, encode_data(payload)?, None));
        Ok(())
    }

    /// Emit with already-encoded msgpack data.
    pub fn emit_raw(&mut self, ty: EventType, data: Vec<u8>) -> Result<(), EmitError> {
        self.check(&ty)?;
        self.emitted.push((ty, data, None));
        Ok(())
    }

    /// Issue a command whose effect the runtime tracks (see [`Effect`]): its answers settle
    /// it, and its compensation is sent whenever it turns out to have taken effect after the
    /// instance failed. The answer types (and the compensation's confirmation) must be among
    /// the saga's inputs.
    pub fn issue<P: Payload>(&mut self, command: &P, effect: Effect) -> Result<(), EmitError> {
        self.issue_raw(P::event_type(), encode_data(command)?, effect)
    }

    /// [`SagaContext::issue`] with already-encoded data.
    pub fn issue_raw(
        &mut self,
        ty: EventType,
        data: Vec<u8>,
        effect: Effect,
    ) -> Result<(), EmitError> {
        self.check(&ty)?;
        if let Some(c) = &effect.compensation {
            let cty = EventType::new(c.ty.as_str()).map_err(|e| EmitError::Undeclared {
                actor: self.saga.clone(),
                ty: format!("{}: {e}", c.ty),
            })?;
            self.check(&cty)?;
        }
        self.emitted.push((ty, data, Some(effect)));
        Ok(())
    }

    /// Push the command that undoes the step just done. On failure, pushed commands are
    /// emitted in reverse order.
    pub fn push_compensation<P: Payload>(&mut self, payload: &P) -> Result<(), EmitError> {
        let ty = P::event_type();
        self.push_compensation_raw(ty, encode_data(payload)?)
    }

    /// [`SagaContext::push_compensation`] with already-encoded data.
    pub fn push_compensation_raw(&mut self, ty: EventType, data: Vec<u8>) -> Result<(), EmitError> {
        self.check(&ty)?;
        self.pushed.push(Compensation {
            ty: ty.to_string(),
            data,
            confirmed_by: Vec::new(),
        });
        Ok(())
    }

    /// Schedule (or re-schedule) the named timer, due `after` the input's time (a due time
    /// past the calendar's end is clamped to it: such a timer never fires).
    pub fn schedule(&mut self, name: impl Into<String>, after: Duration) {
        let due = later(self.now, after);
        let name = name.into();
        self.cancelled.retain(|n| n != &name);
        self.scheduled.retain(|(n, _)| n != &name);
        self.scheduled.push((name, due));
    }

    /// Cancel the named timer (no effect if it is not pending).
    pub fn cancel(&mut self, name: impl Into<String>) {
        let name = name.into();
        self.scheduled.retain(|(n, _)| n != &name);
        self.cancelled.push(name);
    }

    /// Declare that the instance now awaits an event type on its correlation, with no
    /// deadline. Waits are what the deadlock detector and the stall watchdog read: declare
    /// every type that would make the instance act (the detector trusts the declaration). An
    /// event of that type ends the wait; so does the instance ending.
    pub fn awaits(&mut self, ty: EventType) {
        self.awaits_any([ty], None);
    }

    /// [`SagaContext::awaits`] with a deadline `within` the input's time: past it, with no
    /// timer of the instance pending, the stall watchdog reports the wait once
    /// (`choreo.stall.detected`).
    pub fn awaits_within(&mut self, ty: EventType, within: Duration) {
        self.awaits_any([ty], Some(within));
    }

    /// One wait ended by any of `types` (a confirmation or its failure, say). Declaring a wait
    /// the instance already has keeps the first declaration (and its deadline).
    pub fn awaits_any(
        &mut self,
        types: impl IntoIterator<Item = EventType>,
        within: Option<Duration>,
    ) {
        let mut types: Vec<EventType> = types.into_iter().collect();
        types.sort();
        types.dedup();
        if types.is_empty() {
            return;
        }
        self.unawaited.retain(|t| !types.contains(t));
        if !self.awaits.iter().any(|(t, _)| *t == types) {
            self.awaits.push((types, within));
        }
    }

    /// End every wait that an event of type `ty` would end, without that event.
    pub fn stops_awaiting(&mut self, ty: EventType) {
        self.awaits.retain(|(t, _)| !t.contains(&ty));
        self.unawaited.push(ty);
    }

    /// End the instance as `Completed` after this input.
    pub fn complete(&mut self) {
        self.outcome = Some(Outcome::Complete);
    }

    /// Fail: after this input, emit the compensations in reverse order; the instance is
    /// `compensating` until they are confirmed and its issued commands settled, then
    /// `compensated`.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.outcome = Some(Outcome::Fail(reason.into()));
    }

    fn check(&self, ty: &EventType) -> Result<(), EmitError> {
        if self.emits.contains(ty) {
            Ok(())
        } else {
            Err(EmitError::Undeclared {
                actor: self.saga.clone(),
                ty: ty.to_string(),
            })
        }
    }
}

/// `t + after`, clamped to the last representable instant instead of overflowing.
pub(crate) fn later(t: OffsetDateTime, after: Duration) -> OffsetDateTime {
    time::Duration::try_from(after)
        .ok()
        .and_then(|d| t.checked_add(d))
        .unwrap_or_else(|| time::PrimitiveDateTime::MAX.assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_time_past_the_calendar_is_clamped_not_a_panic() {
        let end = time::PrimitiveDateTime::MAX.assume_utc();
        assert_eq!(later(end, Duration::from_secs(60)), end);
        assert_eq!(later(OffsetDateTime::UNIX_EPOCH, Duration::MAX), end);
        let t = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(
            later(t, Duration::from_secs(60)),
            t + time::Duration::seconds(60)
        );
    }
}
