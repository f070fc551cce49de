//! The built-in scenario: the travel example's trips, its steps' types, its replay, and the
//! providers' ledger as the world the invariants are finally about.

use std::collections::BTreeMap;
use std::time::Duration;

use choreo::{CorrelationId, Event, EventType, InstanceRecord, Payload, SagaId, SagaStatus};
use choreo_example_travel::{price, Step, TripRequested, TripSaga, Verb};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::checker::{Anomaly, EffectTypes, Expectations, Invariant, LogView};
use crate::error::ChaosError;
use crate::workload::Workload;

/// The providers' ledger bucket.
pub const LEDGER: &str = "TRAVEL_LEDGER";

/// Trips of the travel example, with the seed deciding how providers behave.
#[derive(Clone, Debug)]
pub struct Trips {
    /// The providers' seed (in each trip request).
    pub seed: u64,
}

impl Workload for Trips {
    fn saga(&self) -> &str {
        "trip"
    }
    fn start_type(&self) -> EventType {
        TripRequested::event_type()
    }
    fn start(&self, index: u32, run: &str) -> Result<Event, ChaosError> {
        let trip = format!("trip-{index}-{run}");
        let corr =
            CorrelationId::new(trip.as_str()).map_err(|e| ChaosError::Scenario(e.to_string()))?;
        Event::root(
            "/chaos/travel",
            corr,
            &TripRequested {
                trip,
                index,
                seed: self.seed,
                cents: price(self.seed, index),
            },
        )
        .map_err(|e| ChaosError::Scenario(e.to_string()))
    }
}

/// The travel saga's types, replay and repeatable compensations.
pub fn expectations(step_timeout: Duration) -> Expectations {
    let effects = Step::ALL
        .iter()
        .map(|s| EffectTypes {
            request: s.ty(Verb::Request),
            confirmed: s.ty(Verb::Done),
            compensate: s.ty(Verb::Cancel),
            compensated: s.ty(Verb::Cancelled),
        })
        .collect();
    let repeatable = Step::ALL
        .iter()
        .flat_map(|s| [s.ty(Verb::Cancel), s.ty(Verb::Cancelled)])
        .collect();
    let saga = TripSaga::new(step_timeout);
    Expectations {
        saga: "trip".into(),
        effects,
        repeatable,
        replay: Some(Box::new(move |bus, record: &InstanceRecord| {
            let saga = saga.clone();
            let record = record.clone();
            async move {
                let id = SagaId::new(record.instance.as_str())
                    .map_err(|e| ChaosError::Scenario(e.to_string()))?;
                match choreo::replay_against(&saga, bus, Some(record), &id).await {
                    Ok(r) if r.is_identical() => Ok(None),
                    Ok(r) => Ok(Some(r.to_string())),
                    // A replay that could not read the log is not a divergence.
                    Err(choreo::ReplayError::Bus(e)) => Err(ChaosError::Bus(e)),
                    Err(e) => Ok(Some(format!("replay failed: {e}"))),
                }
            }
            .boxed()
        })),
        replay_budget: Duration::from_secs(60),
    }
}

/// The providers' ledger: what really happened in the world.
pub struct LedgerInvariant;

impl Invariant for LedgerInvariant {
    fn name(&self) -> &str {
        "ledger"
    }
    fn describe(&self) -> &str {
        "the providers' ledger: no booking or cancellation applied twice; every booking of a trip that did not complete cancelled; nothing of a completed trip cancelled"
    }
    fn check<'a>(&'a self, view: &'a LogView) -> BoxFuture<'a, Result<Vec<Anomaly>, ChaosError>> {
        async move {
            let ledger = choreo_services::Ledger::open(&view.bus, LEDGER)
                .await
                .map_err(|e| ChaosError::nats("open the ledger", e))?;
            let entries = ledger
                .entries()
                .await
                .map_err(|e| ChaosError::nats("read the ledger", e))?;
            let status: BTreeMap<&str, SagaStatus> = view
                .records
                .iter()
                .filter(|r| r.saga == "trip")
                .map(|r| (r.correlation.as_str(), r.status))
                .collect();
            Ok(ledger_anomalies(&entries, &status))
        }
        .boxed()
    }
}

/// The ledger's anomalies, given each trip's final status: a booking or cancellation applied
/// twice; a booking of a trip that did not complete (or has no instance) left uncancelled; a
/// cancellation of a completed trip.
pub fn ledger_anomalies(
    entries: &[choreo_services::LedgerEntry],
    status: &BTreeMap<&str, SagaStatus>,
) -> Vec<Anomaly> {
    let mut by: BTreeMap<(String, String), (u32, u32)> = BTreeMap::new();
    for e in entries {
        if let Some((step, trip)) = e
            .effect
            .strip_prefix("book a ")
            .and_then(|r| r.split_once(" for "))
        {
            by.entry((trip.to_owned(), step.to_owned())).or_default().0 += 1;
        } else if let Some((step, trip)) = e
            .effect
            .strip_prefix("cancel the ")
            .and_then(|r| r.split_once(" of "))
        {
            by.entry((trip.to_owned(), step.to_owned())).or_default().1 += 1;
        }
    }
    let mut out = Vec::new();
    for ((trip, step), (booked, cancelled)) in by {
        let mut bad = |d: String| out.push(Anomaly::new("ledger", Some(&trip), d));
        if booked > 1 || cancelled > 1 {
            bad(format!("{step}: booked {booked}×, cancelled {cancelled}×"));
        }
        match status.get(trip.as_str()).copied() {
            Some(SagaStatus::Completed) if cancelled > 0 => {
                bad(format!("completed, yet its {step} was cancelled"))
            }
            Some(SagaStatus::Completed) => {}
            Some(s) if booked > cancelled => {
                bad(format!("{s}: its {step} is booked and was never cancelled"))
            }
            None if booked > cancelled => bad(format!("no instance, yet its {step} is booked")),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_services::LedgerEntry;

    fn entry(effect: &str) -> LedgerEntry {
        LedgerEntry {
            key: effect.to_owned(),
            effect: effect.to_owned(),
            data: Vec::new(),
        }
    }

    #[test]
    fn the_ledger_names_what_was_applied_twice_kept_or_wrongly_undone() {
        let entries = [
            entry("book a flight for t1"),
            entry("book a flight for t2"),
            entry("book a flight for t2"),
            entry("cancel the flight of t2"),
            entry("book a hotel for t3"),
            entry("cancel the hotel of t3"),
            entry("book a car for t4"),
            entry("cancel the car of t4"),
            entry("book a car for t5"),
        ];
        let status = BTreeMap::from([
            ("t1", SagaStatus::Completed),
            ("t2", SagaStatus::Compensated),
            ("t3", SagaStatus::Compensated),
            ("t4", SagaStatus::Completed),
        ]);
        let got: Vec<String> = ledger_anomalies(&entries, &status)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "[ledger] t2: flight: booked 2×, cancelled 1×",
                "[ledger] t2: compensated: its flight is booked and was never cancelled",
                "[ledger] t4: completed, yet its car was cancelled",
                "[ledger] t5: no instance, yet its car is booked",
            ]
        );
    }
}
