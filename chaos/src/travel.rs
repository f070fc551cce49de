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
            let mut by: BTreeMap<(String, String), (u32, u32)> = BTreeMap::new();
            for e in &entries {
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
                let st = status.get(trip.as_str()).copied();
                let mut bad = |d: String| out.push(Anomaly::new("ledger", Some(&trip), d));
                if booked > 1 || cancelled > 1 {
                    bad(format!("{step}: booked {booked}×, cancelled {cancelled}×"));
                }
                match st {
                    Some(SagaStatus::Completed) if cancelled > 0 => {
                        bad(format!("completed, yet its {step} was cancelled"))
                    }
                    Some(SagaStatus::Completed) => {}
                    Some(s) if booked > cancelled => {
                        bad(format!("{s}: its {step} is booked and was never cancelled"))
                    }
                    None if booked > cancelled => {
                        bad(format!("no instance, yet its {step} is booked"))
                    }
                    _ => {}
                }
            }
            Ok(out)
        }
        .boxed()
    }
}
