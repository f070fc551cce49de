//! The workload: start events published open-loop at a rate (one task per publish, so a
//! stalled server does not slow the arrivals), and the saga ends followed on the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use choreo::{Bus, Event, EventType, SAGA_COMPENSATED, SAGA_COMPLETED, SAGA_FAULTED};
use futures::StreamExt;

use crate::error::ChaosError;
use crate::nemesis::Skew;

/// Publishes that may wait for their ack at once; arrivals past it are counted as refused.
const MAX_IN_FLIGHT: usize = 512;
/// How long one publish may wait for its ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What a run starts: one event per operation, each starting one saga instance.
pub trait Workload: Send + Sync + 'static {
    /// The saga the start events start (its lifecycle events end an operation).
    fn saga(&self) -> &str;
    /// The start events' type (poison is published on its subjects).
    fn start_type(&self) -> EventType;
    /// The `index`th start event of run `run` (its correlation must be unique to it).
    fn start(&self, index: u32, run: &str) -> Result<Event, ChaosError>;
}

/// How a publish went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ack {
    /// Not answered yet.
    Pending,
    /// JetStream acked it: it must be on the log and handled.
    Ok,
    /// Refused or timed out: it may or may not be on the log.
    Failed,
}

/// One operation of the workload.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Op {
    /// Its correlation.
    pub correlation: String,
    /// The start event's id.
    pub root: String,
    /// When it was published (ms from the start of the run).
    pub sent_ms: u64,
    /// Its publish.
    pub ack: Ack,
    /// When its saga ended (ms from the start of the run).
    pub ended_ms: Option<u64>,
    /// How it ended (`choreo.saga.completed` …).
    pub outcome: Option<String>,
}

/// The operations so far, shared by the generator, the end follower and the reporter.
#[derive(Clone, Default)]
pub struct Ops {
    inner: Arc<Mutex<OpsInner>>,
}

#[derive(Default)]
struct OpsInner {
    ops: Vec<Op>,
    by_correlation: HashMap<String, usize>,
}

impl Ops {
    /// A copy of every operation.
    pub fn snapshot(&self) -> Vec<Op> {
        self.inner.lock().map(|g| g.ops.clone()).unwrap_or_default()
    }

    fn push(&self, op: Op) -> usize {
        match self.inner.lock() {
            Ok(mut g) => {
                let i = g.ops.len();
                g.by_correlation.insert(op.correlation.clone(), i);
                g.ops.push(op);
                i
            }
            Err(_) => 0,
        }
    }

    fn set_ack(&self, i: usize, ack: Ack) {
        if let Ok(mut g) = self.inner.lock() {
            if let Some(op) = g.ops.get_mut(i) {
                op.ack = ack;
            }
        }
    }

    /// Record that the saga of `correlation` ended; false when it is not an operation of
    /// this run or already ended.
    fn end(&self, correlation: &str, at_ms: u64, outcome: &str) -> bool {
        let Ok(mut g) = self.inner.lock() else {
            return false;
        };
        let Some(&i) = g.by_correlation.get(correlation) else {
            return false;
        };
        match g.ops.get_mut(i) {
            Some(op) if op.ended_ms.is_none() => {
                op.ended_ms = Some(at_ms);
                op.outcome = Some(outcome.to_owned());
                true
            }
            _ => false,
        }
    }

    /// (published, acked, ended) so far.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.inner
            .lock()
            .map(|g| {
                let acked = g.ops.iter().filter(|o| o.ack == Ack::Ok).count();
                let ended = g.ops.iter().filter(|o| o.ended_ms.is_some()).count();
                (g.ops.len(), acked, ended)
            })
            .unwrap_or_default()
    }
}

fn ms_since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Follow the saga's lifecycle ends into `ops` until the task is aborted.
pub async fn follow_ends(
    bus: Bus,
    saga: String,
    ops: Ops,
    t0: Instant,
) -> Result<tokio::task::JoinHandle<()>, ChaosError> {
    let filters = [SAGA_COMPLETED, SAGA_COMPENSATED, SAGA_FAULTED]
        .iter()
        .filter_map(|t| EventType::new(*t).ok())
        .map(|t| bus.subjects().type_filter(&t))
        .collect();
    let mut ends = bus.follow_events_matching(filters, true).await?;
    let source = format!("/sagas/{saga}");
    Ok(tokio::spawn(async move {
        while let Some(next) = ends.next().await {
            let Ok(stored) = next else { continue };
            let Ok(e) = stored.event else { continue };
            if e.source == source {
                ops.end(e.correlation.as_str(), ms_since(t0), e.ty.as_str());
            }
        }
    }))
}

/// The open-loop generator of one run.
pub struct Generator {
    /// A bus connected directly to the servers.
    pub bus: Bus,
    /// What to start.
    pub workload: Arc<dyn Workload>,
    /// Start events per second.
    pub rate: f64,
    /// The run's id (part of every correlation).
    pub run: String,
    /// Where operations are recorded.
    pub ops: Ops,
    /// The producer's clock skew, shifting each start event's `time`.
    pub skew: Skew,
    /// The start of the run.
    pub t0: Instant,
}

impl Generator {
    /// Publish at the rate until `stop` turns true, then wait for the publishes in flight.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<(), ChaosError> {
        let Self {
            bus,
            workload,
            rate,
            run,
            ops,
            skew,
            t0,
        } = self;
        let period = Duration::from_secs_f64(1.0 / rate.clamp(0.1, 10_000.0));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let mut index = 0u32;
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = stop.wait_for(|s| *s) => { let _ = r; break; }
            }
            let mut e = workload.start(index, &run)?;
            index = index.saturating_add(1);
            let secs = skew.get();
            if secs != 0 {
                e.time = e.time.saturating_add(time::Duration::seconds(secs));
            }
            let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                continue;
            };
            let i = ops.push(Op {
                correlation: e.correlation.to_string(),
                root: e.id.to_string(),
                sent_ms: ms_since(t0),
                ack: Ack::Pending,
                ended_ms: None,
                outcome: None,
            });
            let (bus, ops) = (bus.clone(), ops.clone());
            tasks.spawn(async move {
                let ack = match tokio::time::timeout(ACK_TIMEOUT, bus.publish(&e)).await {
                    Ok(Ok(_)) => Ack::Ok,
                    _ => Ack::Failed,
                };
                ops.set_ack(i, ack);
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}
