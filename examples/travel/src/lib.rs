//! # The travel example
//!
//! A trip is a saga: book a flight, a hotel and a car, then charge the card behind a policy gate
//! (a card limit). Each booking pushes its cancellation; a provider failure, a veto or a provider
//! that never answers (a step timeout) cancels the booked steps in reverse order. The simulated
//! providers book through the idempotent ledger and fail or stay silent on a configurable
//! fraction of requests, decided by a seed, so a run shows completed, compensated, timed-out and
//! vetoed trips, and the same seed gives the same outcomes ([`predict`]).

mod domain;
mod providers;
mod run;
mod saga;

pub use domain::{behavior, price, Behavior, Booking, Faults, Step, TripRequested, Verb};
pub use providers::Provider;
pub use run::{classify, drive, node, predict, run, Bugs, Outcome, Summary, TravelOptions};
pub use saga::{TripSaga, TripState};
