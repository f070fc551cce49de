//! The simulated providers (flight, hotel, car rental, payment): each a reactor that books
//! through the idempotent ledger, and answers, fails or stays silent as [`behavior`] says.

use std::time::Duration;

use choreo::{Event, EventType, ReactContext, ReactError, Reactor, RetryPolicy};
use choreo_services::{dry_run_type, emit_dry_run, Ledger};

use crate::domain::{behavior, Behavior, Booking, Faults, Step, Verb};

/// One provider.
#[derive(Clone, Debug)]
pub struct Provider {
    step: Step,
    faults: Faults,
    ledger: Ledger,
    name: String,
    double_apply: bool,
}

impl Provider {
    /// The provider of `step`, recording its effects in `ledger`.
    pub fn new(step: Step, faults: Faults, ledger: Ledger) -> Self {
        Self {
            step,
            faults,
            ledger,
            name: format!("{}-provider", step.as_str()),
            double_apply: false,
        }
    }

    /// A deliberate bug for the chaos suite's own tests: every booking is applied twice (the
    /// second time under a key of its own, as a provider keyed by delivery would).
    pub fn applying_twice(mut self) -> Self {
        self.double_apply = true;
        self
    }
}

fn encode(b: &Booking) -> Result<Vec<u8>, ReactError> {
    rmp_serde::to_vec_named(b).map_err(ReactError::permanent)
}

impl Reactor for Provider {
    fn name(&self) -> &str {
        &self.name
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![self.step.ty(Verb::Request), self.step.ty(Verb::Cancel)]
    }
    fn emits(&self) -> Vec<EventType> {
        let mut e = vec![
            self.step.ty(Verb::Done),
            self.step.ty(Verb::Failed),
            self.step.ty(Verb::Cancelled),
        ];
        for v in [Verb::Request, Verb::Cancel] {
            if let Ok(t) = dry_run_type(&self.step.ty(v)) {
                e.push(t);
            }
        }
        e
    }
    /// Ride out a NATS failover (a stream leader election takes seconds): a cancellation that
    /// is dead-lettered leaves its trip compensating until an operator acts.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::builder()
            .max_attempts(10)
            .initial_delay(Duration::from_millis(200))
            .max_delay(Duration::from_secs(5))
            .build()
            .unwrap_or_default()
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let mut b: Booking = e.decode_as()?;
        let step = self.step.as_str();
        let cancel = e.ty == self.step.ty(Verb::Cancel);
        if !cancel {
            match behavior(b.seed, b.index, self.step, self.faults) {
                Behavior::Silent => return Ok(()),
                Behavior::Fail => {
                    b.note = format!("no {step} available");
                    ctx.emit_raw(self.step.ty(Verb::Failed), encode(&b)?)?;
                    return Ok(());
                }
                Behavior::Ok => {}
            }
        }
        let what = if cancel {
            format!("cancel the {step} of {}", b.trip)
        } else {
            format!("book a {step} for {}", b.trip)
        };
        if ctx.dry_run() {
            return emit_dry_run(ctx, e, &what);
        }
        // Keyed by the business operation (a trip books and cancels each step at most once),
        // not by the command: a second cancellation of one booking finds it applied, and a
        // cancellation of a booking that does not exist (a saga compensating a step whose
        // outcome it never learned) records nothing, so a booking that still comes is undone
        // by the cancellation its late confirmation triggers.
        let key = |verb: &str| format!("{}/{verb}/{}", self.name, b.trip);
        if cancel
            && self
                .ledger
                .get(&key("book"))
                .await
                .map_err(ReactError::transient)?
                .is_none()
        {
            b.note = format!("nothing to cancel: no {step} booked for {}", b.trip);
            ctx.emit_raw(self.step.ty(Verb::Cancelled), encode(&b)?)?;
            return Ok(());
        }
        let op = if cancel { key("cancel") } else { key("book") };
        self.ledger
            .apply(&op, &what, &e.data)
            .await
            .map_err(ReactError::transient)?;
        if self.double_apply && !cancel {
            self.ledger
                .apply(&format!("{op}/{}", e.id), &what, &e.data)
                .await
                .map_err(ReactError::transient)?;
        }
        b.note = format!("{}-{}", step.to_uppercase(), b.trip);
        let answer = if cancel { Verb::Cancelled } else { Verb::Done };
        ctx.emit_raw(self.step.ty(answer), encode(&b)?)?;
        Ok(())
    }
}
