//! The travel domain: events, and the deterministic behaviour of the simulated providers.

use choreo::{EventType, Payload};
use serde::{Deserialize, Serialize};

/// A trip to book (starts the saga).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripRequested {
    /// Trip id (also the correlation).
    pub trip: String,
    /// Position in the run: with the seed, decides how providers behave.
    pub index: u32,
    /// The run's seed.
    pub seed: u64,
    /// Total price.
    pub cents: u64,
}
impl Payload for TripRequested {
    const TYPE: &'static str = "trip.requested.v1";
}

/// A command to a provider or an answer from it (the same data for every step).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    /// Trip id.
    pub trip: String,
    /// Step (`flight`, `hotel`, `car`, `payment`).
    pub step: String,
    /// The trip's request, for providers to decide by.
    pub index: u32,
    /// The run's seed.
    pub seed: u64,
    /// Amount concerned.
    pub cents: u64,
    /// Provider reference or failure reason.
    pub note: String,
}

/// A step of the itinerary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Book a flight.
    Flight,
    /// Book a hotel.
    Hotel,
    /// Rent a car.
    Car,
    /// Charge the card (behind the policy gate).
    Payment,
}

/// What a message does for a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// The command (`<step>.book.v1`, `payment.charge.v1`).
    Request,
    /// Done (`<step>.booked.v1`, `payment.charged.v1`).
    Done,
    /// Refused (`<step>.failed.v1`).
    Failed,
    /// Undo (`<step>.cancel.v1`).
    Cancel,
    /// Undone (`<step>.cancelled.v1`).
    Cancelled,
}

impl Step {
    /// The bookable steps, in order, then payment.
    pub const ALL: [Step; 4] = [Step::Flight, Step::Hotel, Step::Car, Step::Payment];

    /// The step's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Flight => "flight",
            Step::Hotel => "hotel",
            Step::Car => "car",
            Step::Payment => "payment",
        }
    }

    fn type_name(self, verb: Verb) -> &'static str {
        use Step::*;
        use Verb::*;
        match (self, verb) {
            (Flight, Request) => "flight.book.v1",
            (Flight, Done) => "flight.booked.v1",
            (Flight, Failed) => "flight.failed.v1",
            (Flight, Cancel) => "flight.cancel.v1",
            (Flight, Cancelled) => "flight.cancelled.v1",
            (Hotel, Request) => "hotel.book.v1",
            (Hotel, Done) => "hotel.booked.v1",
            (Hotel, Failed) => "hotel.failed.v1",
            (Hotel, Cancel) => "hotel.cancel.v1",
            (Hotel, Cancelled) => "hotel.cancelled.v1",
            (Car, Request) => "car.book.v1",
            (Car, Done) => "car.booked.v1",
            (Car, Failed) => "car.failed.v1",
            (Car, Cancel) => "car.cancel.v1",
            (Car, Cancelled) => "car.cancelled.v1",
            (Payment, Request) => "payment.charge.v1",
            (Payment, Done) => "payment.charged.v1",
            (Payment, Failed) => "payment.failed.v1",
            (Payment, Cancel) => "payment.refund.v1",
            (Payment, Cancelled) => "payment.refunded.v1",
        }
    }

    /// The event type of `verb` for this step.
    pub fn ty(self, verb: Verb) -> EventType {
        match EventType::new(self.type_name(verb)) {
            Ok(t) => t,
            // Every name above is a valid constant; this arm cannot be reached by input.
            Err(e) => panic!("invalid constant event type: {e}"),
        }
    }

    /// The step an event type belongs to, and what it says.
    pub fn of(ty: &EventType) -> Option<(Step, Verb)> {
        use Verb::*;
        Step::ALL.into_iter().find_map(|s| {
            [Request, Done, Failed, Cancel, Cancelled]
                .into_iter()
                .find(|v| s.type_name(*v) == ty.as_str())
                .map(|v| (s, v))
        })
    }
}

/// How a provider answers one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Books it.
    Ok,
    /// Reports a failure.
    Fail,
    /// Never answers (the saga's step timer fires).
    Silent,
}

/// Percentages of provider requests that fail or stay silent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    /// Requests answered with a failure, in percent.
    pub fail_percent: u8,
    /// Requests never answered, in percent.
    pub silent_percent: u8,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            fail_percent: 8,
            silent_percent: 4,
        }
    }
}

fn mix(seed: u64, index: u32, salt: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.rotate_left(17);
    for b in index.to_le_bytes().iter().chain(salt.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ (h >> 29)
}

/// How the provider of `step` treats trip `index` of the run with `seed`.
pub fn behavior(seed: u64, index: u32, step: Step, faults: Faults) -> Behavior {
    if step == Step::Payment {
        return Behavior::Ok; // the payment provider is reliable; the policy gate is its risk
    }
    let roll = mix(seed, index, step.as_str()) % 100;
    if roll < u64::from(faults.fail_percent) {
        Behavior::Fail
    } else if roll < u64::from(faults.fail_percent) + u64::from(faults.silent_percent) {
        Behavior::Silent
    } else {
        Behavior::Ok
    }
}

/// The price of trip `index`: 400.00 to 3,400.00.
pub fn price(seed: u64, index: u32) -> u64 {
    40_000 + mix(seed, index, "price") % 300_000
}
