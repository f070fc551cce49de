//! The trip saga: flight → hotel → car → payment (behind the policy gate). Each request is
//! issued as an [`Effect`] with its cancellation (a refund for the payment) and a deadline of
//! one step timeout; a failure, a veto, an expiry or a step timeout cancels the booked steps in
//! reverse, and an answer that comes after that is cancelled too.

use std::time::Duration;

use choreo::{
    CommandExpired, Effect, Event, EventType, OnFault, Payload, Saga, SagaContext, SagaError,
    COMMAND_EXPIRED,
};
use choreo_services::{gated_type, Vetoed};
use serde::{Deserialize, Serialize};

use crate::domain::{Booking, Step, TripRequested, Verb};

/// The saga. `step_timeout` bounds every provider's answer.
#[derive(Clone, Debug)]
pub struct TripSaga {
    /// How long a provider may take.
    pub step_timeout: Duration,
    /// A deliberate bug for the chaos suite's own tests: this step is issued without its
    /// compensation, so a trip that fails after it keeps the booking.
    pub forget_compensation_of: Option<Step>,
}

impl TripSaga {
    /// The saga with `step_timeout` per step.
    pub fn new(step_timeout: Duration) -> Self {
        Self {
            step_timeout,
            forget_compensation_of: None,
        }
    }
}

/// Saga state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripState {
    /// The request.
    pub trip: Option<TripRequested>,
    /// Index into [`Step::ALL`] of the step in progress.
    pub step: usize,
}

fn encode(b: &Booking) -> Result<Vec<u8>, SagaError> {
    rmp_serde::to_vec_named(b).map_err(|e| SagaError::Permanent(e.to_string()))
}

impl TripSaga {
    fn request(&self, state: &TripState, ctx: &mut SagaContext) -> Result<(), SagaError> {
        let (Some(trip), Some(step)) = (&state.trip, Step::ALL.get(state.step)) else {
            return Err(SagaError::Permanent("no trip or step".into()));
        };
        let booking = Booking {
            trip: trip.trip.clone(),
            step: step.as_str().to_owned(),
            index: trip.index,
            seed: trip.seed,
            cents: trip.cents,
            note: String::new(),
        };
        let data = encode(&booking)?;
        let ty = self.command(*step)?;
        let mut undo = booking;
        undo.note = format!("cancel {}-{}", step.as_str().to_uppercase(), undo.trip);
        let mut effect = Effect::confirmed_by(step.ty(Verb::Done)).failed_by(step.ty(Verb::Failed));
        if self.forget_compensation_of != Some(*step) {
            effect = effect.compensate_with_raw(
                step.ty(Verb::Cancel),
                encode(&undo)?,
                Some(step.ty(Verb::Cancelled)),
            );
        }
        let mut effect = effect.deadline(self.step_timeout);
        if *step == Step::Payment {
            effect = effect.failed_by(Vetoed::event_type());
        }
        ctx.issue_raw(ty, data, effect)?;
        ctx.schedule(step.as_str(), self.step_timeout);
        ctx.awaits(step.ty(Verb::Done));
        Ok(())
    }
}

impl TripSaga {
    /// The command a step is requested with (the payment goes through the policy gate).
    fn command(&self, step: Step) -> Result<EventType, SagaError> {
        if step == Step::Payment {
            gated_type(&step.ty(Verb::Request)).map_err(|e| SagaError::Permanent(e.to_string()))
        } else {
            Ok(step.ty(Verb::Request))
        }
    }
}

impl Saga for TripSaga {
    type State = TripState;

    fn name(&self) -> &str {
        "trip"
    }
    fn starts_on(&self) -> Vec<EventType> {
        vec![TripRequested::event_type()]
    }
    fn continues_on(&self) -> Vec<EventType> {
        Step::ALL
            .iter()
            .flat_map(|s| [s.ty(Verb::Done), s.ty(Verb::Failed), s.ty(Verb::Cancelled)])
            .chain(std::iter::once(Vetoed::event_type()))
            .collect()
    }
    /// A trip that faults (an answer it cannot read) still undoes what it booked.
    fn on_fault(&self) -> OnFault {
        OnFault::Compensate
    }
    fn emits(&self) -> Vec<EventType> {
        let mut e: Vec<EventType> = [Step::Flight, Step::Hotel, Step::Car]
            .iter()
            .flat_map(|s| [s.ty(Verb::Request), s.ty(Verb::Cancel)])
            .chain(std::iter::once(Step::Payment.ty(Verb::Cancel)))
            .collect();
        if let Ok(g) = gated_type(&Step::Payment.ty(Verb::Request)) {
            e.push(g);
        }
        e
    }

    fn handle(
        &self,
        state: &mut TripState,
        e: &Event,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        if e.ty == TripRequested::event_type() {
            if state.trip.is_none() {
                state.trip = Some(e.decode()?);
                return self.request(state, ctx);
            }
            return Ok(());
        }
        let Some(current) = Step::ALL.get(state.step).copied() else {
            return Ok(());
        };
        if e.ty.as_str() == COMMAND_EXPIRED {
            let x: CommandExpired = e.decode_as()?;
            if self.command(current)?.as_str() == x.command_type
                || current.ty(Verb::Request).as_str() == x.command_type
            {
                ctx.cancel(current.as_str());
                ctx.fail(format!("{} expired unexecuted", current.as_str()));
            }
            return Ok(());
        }
        if e.ty == Vetoed::event_type() {
            let v: Vetoed = e.decode()?;
            if current == Step::Payment {
                ctx.cancel(current.as_str());
                ctx.fail(format!("payment vetoed by rule {}: {}", v.rule, v.reason));
            }
            return Ok(());
        }
        match Step::of(&e.ty) {
            Some((step, Verb::Done)) if step == current => {
                // A confirmation that is not a booking is not one: the trip faults (and, by
                // `on_fault`, compensates).
                let _: Booking = e.decode_as()?;
                ctx.cancel(step.as_str());
                if step == Step::Payment {
                    ctx.complete();
                    return Ok(());
                }
                // Its cancellation is on the stack already: declared with the request.
                state.step += 1;
                self.request(state, ctx)
            }
            Some((step, Verb::Failed)) if step == current => {
                let b: Booking = e.decode_as()?;
                ctx.cancel(step.as_str());
                ctx.fail(format!("{} failed: {}", step.as_str(), b.note));
                Ok(())
            }
            // A late or early answer for another step: not this step's business.
            _ => Ok(()),
        }
    }

    fn on_timeout(
        &self,
        state: &mut TripState,
        timer: &str,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        if Step::ALL
            .get(state.step)
            .is_some_and(|s| s.as_str() == timer)
        {
            ctx.fail(format!("{timer} timed out"));
        }
        Ok(())
    }
}
