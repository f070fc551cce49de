//! Running the travel swarm: N trips against a node hosting the saga, the providers and the
//! policy gate; each trip's outcome is read from the saga store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use choreo::{
    Bus, BusConfig, CorrelationId, Event, EventId, InstanceRecord, Node, RunningNode, SagaStatus,
    Store,
};
use choreo_services::{Ledger, PolicyGate, Rule};
use serde::Serialize;

use crate::domain::{behavior, price, Behavior, Faults, Step, TripRequested, Verb};
use crate::providers::Provider;
use crate::saga::TripSaga;

/// How a trip ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every step booked and paid.
    Completed,
    /// A provider failed; booked steps were cancelled.
    Compensated,
    /// A provider never answered; booked steps were cancelled.
    TimedOut,
    /// The policy gate vetoed the payment; booked steps were cancelled.
    Vetoed,
    /// The instance faulted (a bug, not a business outcome).
    Faulted,
}

impl Outcome {
    /// Lower-case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Compensated => "compensated",
            Outcome::TimedOut => "timed out",
            Outcome::Vetoed => "vetoed",
            Outcome::Faulted => "faulted",
        }
    }
}

/// Options of a run.
#[derive(Clone, Debug)]
pub struct TravelOptions {
    /// Number of trips.
    pub trips: u32,
    /// Seed: the same seed gives the same outcome for every trip.
    pub seed: u64,
    /// Provider faults.
    pub faults: Faults,
    /// Step timeout.
    pub step_timeout: Duration,
    /// The policy gate's card limit.
    pub card_limit_cents: u64,
    /// The node's store.
    pub data_dir: PathBuf,
    /// Dry-run mode (providers do not book).
    pub dry_run: bool,
    /// Give up waiting after this long.
    pub deadline: Duration,
    /// The node's id in the cluster (default: generated).
    pub node_id: Option<String>,
    /// Lease TTL of partition ownership.
    pub lease_ttl: Duration,
    /// Retention of ended instances (zero: forever).
    pub retention: Duration,
    /// Deadlock detection and the stall watchdog (default on).
    pub coordination: bool,
    /// Deliberate bugs, for the chaos suite's own tests (default: none).
    pub bugs: Bugs,
}

/// Deliberate bugs the chaos suite must catch (`choreo node --bug …`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Providers apply every booking twice.
    pub double_apply: bool,
    /// The saga issues the hotel step without its compensation.
    pub forget_compensation: bool,
    /// The node commits unfenced and keeps partitions whose lease it lost.
    pub ignore_fencing: bool,
}

impl TravelOptions {
    /// Defaults for `trips` trips with `seed`, storing in `data_dir`.
    pub fn new(trips: u32, seed: u64, data_dir: PathBuf) -> Self {
        Self {
            trips,
            seed,
            faults: Faults::default(),
            step_timeout: Duration::from_secs(2),
            card_limit_cents: 275_000,
            data_dir,
            dry_run: false,
            deadline: Duration::from_secs(120),
            node_id: None,
            lease_ttl: choreo::DEFAULT_LEASE_TTL,
            retention: choreo::DEFAULT_RETENTION,
            coordination: true,
            bugs: Bugs::default(),
        }
    }
}

/// What happens to trip `index`, computed from the seed alone (the run must agree).
pub fn predict(opts: &TravelOptions, index: u32) -> Outcome {
    for step in [Step::Flight, Step::Hotel, Step::Car] {
        match behavior(opts.seed, index, step, opts.faults) {
            Behavior::Fail => return Outcome::Compensated,
            Behavior::Silent => return Outcome::TimedOut,
            Behavior::Ok => {}
        }
    }
    if price(opts.seed, index) > opts.card_limit_cents {
        Outcome::Vetoed
    } else {
        Outcome::Completed
    }
}

/// How a finished trip's record reads as an outcome.
pub fn classify(record: &InstanceRecord) -> Outcome {
    let reason = record.reason.as_deref().unwrap_or_default();
    match record.status {
        SagaStatus::Completed => Outcome::Completed,
        SagaStatus::Compensated if reason.contains("timed out") || reason.contains("expired") => {
            Outcome::TimedOut
        }
        SagaStatus::Compensated if reason.contains("vetoed") => Outcome::Vetoed,
        SagaStatus::Compensated => Outcome::Compensated,
        SagaStatus::Faulted | SagaStatus::Running | SagaStatus::Compensating => Outcome::Faulted,
    }
}

/// The result of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Outcome per trip correlation, in trip order.
    pub trips: Vec<(String, Outcome)>,
    /// Trips per outcome.
    pub counts: BTreeMap<Outcome, usize>,
}

/// Build the travel node: saga, providers, policy gate.
pub async fn node(cfg: BusConfig, opts: &TravelOptions) -> anyhow::Result<RunningNode> {
    let bus = choreo::Bus::connect(cfg.clone()).await?;
    let ledger = Ledger::open(&bus, "TRAVEL_LEDGER").await?;
    let gate = PolicyGate::new("payment-policy").policy(
        Step::Payment.ty(Verb::Request),
        vec![(
            "card-limit".into(),
            Rule::MaxAmount {
                field: "cents".into(),
                max: opts.card_limit_cents as f64,
            },
        )],
    )?;
    let mut b = Node::builder()
        .bus(cfg)
        .data_dir(&opts.data_dir)
        .lease_ttl(opts.lease_ttl)
        .retention(opts.retention)
        .coordination(opts.coordination)
        .ignore_fencing_for_tests(opts.bugs.ignore_fencing)
        .dry_run(opts.dry_run)
        .register::<TripRequested>()
        .saga(TripSaga {
            forget_compensation_of: opts.bugs.forget_compensation.then_some(Step::Hotel),
            ..TripSaga::new(opts.step_timeout)
        })
        .reactor(gate);
    if let Some(id) = &opts.node_id {
        b = b.node_id(id);
    }
    for step in Step::ALL {
        let p = Provider::new(step, opts.faults, ledger.clone());
        b = b.reactor(if opts.bugs.double_apply {
            p.applying_twice()
        } else {
            p
        });
    }
    Ok(b.build()?.start_on(bus).await?)
}

/// Run `opts.trips` trips on a node of this process; `progress(correlation, outcome, done,
/// total)` is called as each ends.
pub async fn run(
    cfg: BusConfig,
    opts: &TravelOptions,
    progress: impl FnMut(&str, Outcome, usize, usize),
) -> anyhow::Result<Summary> {
    let node = node(cfg, opts).await?;
    let summary = drive(node.bus(), node.store(), opts, progress).await;
    node.shutdown().await?;
    summary
}

/// Publish `opts.trips` trips and wait for their outcomes, wherever the saga runs (this
/// process, or `choreo node` processes on the same NATS).
pub async fn drive(
    bus: &Bus,
    store: Option<&Store>,
    opts: &TravelOptions,
    mut progress: impl FnMut(&str, Outcome, usize, usize),
) -> anyhow::Result<Summary> {
    let run_id: String = EventId::new_root()
        .to_string()
        .chars()
        .rev()
        .take(6)
        .collect();
    let trips: Vec<Event> = (0..opts.trips)
        .map(|i| {
            let id = format!("trip-{i}-{run_id}");
            Event::root(
                "/examples/travel",
                CorrelationId::new(id.as_str())?,
                &TripRequested {
                    trip: id,
                    index: i,
                    seed: opts.seed,
                    cents: price(opts.seed, i),
                },
            )
            .map_err(anyhow::Error::from)
        })
        .collect::<anyhow::Result<_>>()?;
    let records = choreo::run_to_end(
        bus,
        store,
        "trip",
        &trips,
        opts.deadline,
        |r, done, total| progress(&r.correlation, classify(r), done, total),
    )
    .await?;
    let trips: Vec<(String, Outcome)> = records
        .iter()
        .map(|r| (r.correlation.clone(), classify(r)))
        .collect();
    let mut counts = BTreeMap::new();
    for (_, o) in &trips {
        *counts.entry(*o).or_default() += 1;
    }
    Ok(Summary { trips, counts })
}
