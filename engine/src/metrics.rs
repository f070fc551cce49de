//! Per-actor metrics. Names are constants here; the OpenTelemetry exporter (a later feature)
//! reads the same counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Inputs handled successfully (outputs durable, input acked).
pub const ACTOR_HANDLED: &str = "choreo.actor.handled";
/// Handler attempts that failed.
pub const ACTOR_FAILED: &str = "choreo.actor.failed";
/// Retries scheduled after a transient failure.
pub const ACTOR_RETRIED: &str = "choreo.actor.retried";
/// Commands refused past their deadline (answered `choreo.command.expired`).
pub const ACTOR_EXPIRED: &str = "choreo.actor.expired";
/// Inputs a reactor skipped as copies of one it already answered (found on the log; see
/// "Copies past the duplicate window" in ARCHITECTURE.md).
pub const ACTOR_DUPLICATES: &str = "choreo.actor.duplicates";
/// Saga inputs that matched no instance (a continuing event for an instance that does not
/// exist, or no longer does), dropped with a warning.
pub const SAGA_UNMATCHED: &str = "choreo.saga.unmatched";
/// Inputs sent to the DLQ.
pub const ACTOR_DEAD_LETTERED: &str = "choreo.actor.dead_lettered";
/// Handler latency histogram (microseconds).
pub const ACTOR_HANDLER_LATENCY: &str = "choreo.actor.handler_latency_us";
/// Saga group-commit batches flushed.
pub const SAGA_BATCHES: &str = "choreo.saga.batches";
/// Inputs in saga group-commit batches (with [`SAGA_BATCHES`]: the mean batch size).
pub const SAGA_BATCH_INPUTS: &str = "choreo.saga.batch_inputs";
/// Saga store flush latency histogram (microseconds).
pub const SAGA_FLUSH_LATENCY: &str = "choreo.saga.flush_latency_us";
/// Saga instances by status (gauge, attribute `status`).
pub const SAGA_INSTANCES: &str = "choreo.saga.instances";
/// Pending saga timers (gauge).
pub const SAGA_TIMERS_PENDING: &str = "choreo.saga.timers_pending";
/// Saga outbox entries not yet acknowledged by JetStream (gauge).
pub const SAGA_OUTBOX_DEPTH: &str = "choreo.saga.outbox_depth";

/// Deadlocks detected (and broken) by this node's partitions.
pub const DEADLOCKS_DETECTED: &str = "choreo.coordination.deadlocks_detected";
/// Stalled waits reported by this node's partitions.
pub const STALLS_DETECTED: &str = "choreo.coordination.stalls_detected";
/// Deadlock checks run after commits (correlations with a waiting instance).
pub const DEADLOCK_CHECKS: &str = "choreo.coordination.checks";
/// Checks that had to read the log to know what is in flight (the expensive ones).
pub const DEADLOCK_LOG_READS: &str = "choreo.coordination.log_reads";

const BUCKETS: usize = 32;

fn bucket_of(d: Duration) -> usize {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    ((63 - us.leading_zeros()) as usize).min(BUCKETS - 1)
}

/// Counters of one actor.
#[derive(Debug, Default)]
pub(crate) struct ActorCounters {
    name: String,
    handled: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    expired: AtomicU64,
    duplicates: AtomicU64,
    unmatched: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    batches: AtomicU64,
    batch_inputs: AtomicU64,
    flush_latency: [AtomicU64; BUCKETS],
}

impl ActorCounters {
    pub(crate) fn handled(&self) {
        self.handled.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn expired(&self) {
        self.expired.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn unmatched(&self) {
        self.unmatched.fetch_add(1, Ordering::Relaxed);
    }
    /// Record a handler latency in a power-of-two microsecond bucket.
    pub(crate) fn latency(&self, d: Duration) {
        self.latency[bucket_of(d)].fetch_add(1, Ordering::Relaxed);
        crate::telemetry::record_handler_latency(&self.name, d);
    }

    /// Record one flushed group-commit batch.
    pub(crate) fn batch(&self, inputs: usize, flush: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_inputs
            .fetch_add(u64::try_from(inputs).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.flush_latency[bucket_of(flush)].fetch_add(1, Ordering::Relaxed);
        crate::telemetry::record_flush_latency(&self.name, flush);
    }

    fn snapshot(&self) -> ActorMetrics {
        let buckets: Vec<u64> = self
            .latency
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        ActorMetrics {
            handled: self.handled.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            unmatched: self.unmatched.load(Ordering::Relaxed),
            latency_buckets: buckets,
            batches: self.batches.load(Ordering::Relaxed),
            batch_inputs: self.batch_inputs.load(Ordering::Relaxed),
            flush_latency_buckets: self
                .flush_latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// A snapshot of one actor's metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActorMetrics {
    /// [`ACTOR_HANDLED`]
    pub handled: u64,
    /// [`ACTOR_FAILED`]
    pub failed: u64,
    /// [`ACTOR_RETRIED`]
    pub retried: u64,
    /// [`ACTOR_DEAD_LETTERED`]
    pub dead_lettered: u64,
    /// [`ACTOR_EXPIRED`]
    pub expired: u64,
    /// [`ACTOR_DUPLICATES`]
    pub duplicates: u64,
    /// [`SAGA_UNMATCHED`]
    pub unmatched: u64,
    /// [`ACTOR_HANDLER_LATENCY`]: count per bucket; bucket `i` holds latencies in
    /// `[2^i, 2^(i+1))` microseconds.
    pub latency_buckets: Vec<u64>,
    /// [`SAGA_BATCHES`] (sagas only).
    pub batches: u64,
    /// [`SAGA_BATCH_INPUTS`] (sagas only).
    pub batch_inputs: u64,
    /// [`SAGA_FLUSH_LATENCY`] buckets, like `latency_buckets` (sagas only).
    pub flush_latency_buckets: Vec<u64>,
}

impl ActorMetrics {
    /// Handler invocations recorded in the latency histogram.
    pub fn latency_count(&self) -> u64 {
        self.latency_buckets.iter().sum()
    }

    /// Upper bound of the bucket holding quantile `q` (0..=1) of handler latency, in µs.
    pub fn latency_quantile_us(&self, q: f64) -> Option<u64> {
        quantile(&self.latency_buckets, q)
    }

    /// Upper bound of the bucket holding quantile `q` of saga flush latency, in µs.
    pub fn flush_quantile_us(&self, q: f64) -> Option<u64> {
        quantile(&self.flush_latency_buckets, q)
    }

    /// Mean inputs per group-commit batch (sagas).
    pub fn mean_batch(&self) -> Option<f64> {
        (self.batches > 0).then(|| self.batch_inputs as f64 / self.batches as f64)
    }
}

fn quantile(buckets: &[u64], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(1u64 << (i + 1).min(63));
        }
    }
    None
}

/// Saga store gauges, read on demand from the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SagaGauges {
    /// [`SAGA_INSTANCES`]: (saga, status) → instances.
    pub instances: BTreeMap<(String, String), u64>,
    /// [`SAGA_TIMERS_PENDING`]
    pub timers_pending: u64,
    /// [`SAGA_OUTBOX_DEPTH`]
    pub outbox_depth: u64,
}

/// The metrics registry of a node.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    actors: Arc<Mutex<BTreeMap<String, Arc<ActorCounters>>>>,
    coordination: Arc<CoordinationCounters>,
}

/// Counters of the deadlock detector and the stall watchdog of a node.
#[derive(Debug, Default)]
pub(crate) struct CoordinationCounters {
    pub(crate) deadlocks: AtomicU64,
    pub(crate) stalls: AtomicU64,
    pub(crate) checks: AtomicU64,
    pub(crate) log_reads: AtomicU64,
}

/// A snapshot of [`CoordinationCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoordinationMetrics {
    /// [`DEADLOCKS_DETECTED`]
    pub deadlocks: u64,
    /// [`STALLS_DETECTED`]
    pub stalls: u64,
    /// [`DEADLOCK_CHECKS`]
    pub checks: u64,
    /// [`DEADLOCK_LOG_READS`]
    pub log_reads: u64,
}

impl Metrics {
    pub(crate) fn actor(&self, name: &str) -> Arc<ActorCounters> {
        let mut map = match self.actors.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(map.entry(name.to_owned()).or_insert_with(|| {
            Arc::new(ActorCounters {
                name: name.to_owned(),
                ..ActorCounters::default()
            })
        }))
    }

    pub(crate) fn coordination_counters(&self) -> Arc<CoordinationCounters> {
        Arc::clone(&self.coordination)
    }

    /// The deadlock detector's and the stall watchdog's counters.
    pub fn coordination(&self) -> CoordinationMetrics {
        let c = &self.coordination;
        CoordinationMetrics {
            deadlocks: c.deadlocks.load(Ordering::Relaxed),
            stalls: c.stalls.load(Ordering::Relaxed),
            checks: c.checks.load(Ordering::Relaxed),
            log_reads: c.log_reads.load(Ordering::Relaxed),
        }
    }

    /// A snapshot of one actor's metrics (zeros if it never ran).
    pub fn snapshot(&self, actor: &str) -> ActorMetrics {
        self.actor(actor).snapshot()
    }

    /// Snapshots of every actor.
    pub fn all(&self) -> BTreeMap<String, ActorMetrics> {
        let map = match self.actors.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.iter().map(|(k, v)| (k.clone(), v.snapshot())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets() {
        let m = Metrics::default();
        let a = m.actor("a");
        a.handled();
        a.retried();
        a.latency(Duration::from_micros(3));
        a.latency(Duration::from_millis(5));
        let s = m.snapshot("a");
        assert_eq!(
            (s.handled, s.retried, s.failed, s.latency_count()),
            (1, 1, 0, 2)
        );
        assert_eq!(s.latency_quantile_us(0.5), Some(4));
        assert_eq!(s.latency_quantile_us(1.0), Some(8192));
        assert_eq!(m.snapshot("never").latency_quantile_us(0.5), None);
    }
}
