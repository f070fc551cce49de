//! The timer loop of a node: finds due timers in the store and hands each to the processor of
//! its partition, which applies it in the partition's serial order. A fired timer leaves the
//! instance's record in the same commit as the state change, so each fires once.
//!
//! The loop does not wait for the processors to commit what it handed over: it remembers what
//! is in flight (so it does not send it again) and goes on scanning, sleeping until the next due
//! instant. Handing a timer over twice is harmless: the processor skips a timer its instance no
//! longer holds. Timers of partitions this node does not own have no route and are left alone
//! (they leave the store with their partition).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Notify};
use tracing::error;

use crate::store::{Store, TimerEntry};

const MAX_SLEEP: Duration = Duration::from_secs(1);
/// While timers are in flight, re-scan at least this often (processors also wake the loop).
const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(20);
const SCAN: usize = 4096;
/// A timer handed over but still due after this long is handed over again (its processor may
/// have been restarted).
const RESEND_AFTER: Duration = Duration::from_secs(5);

/// A due timer handed to its partition's processor.
#[derive(Debug)]
pub(crate) struct TimerJob {
    pub(crate) entry: TimerEntry,
}

/// Where the due timers of each owned partition go; processors add and remove themselves.
#[derive(Clone, Default)]
pub(crate) struct TimerRoutes {
    inner: Arc<Mutex<HashMap<u16, mpsc::Sender<TimerJob>>>>,
    /// Woken when timers may have changed (a commit, a takeover).
    pub(crate) changed: Arc<Notify>,
}

impl TimerRoutes {
    pub(crate) fn insert(&self, partition: u16, tx: mpsc::Sender<TimerJob>) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(partition, tx);
        }
        self.changed.notify_one();
    }

    pub(crate) fn remove(&self, partition: u16) {
        if let Ok(mut m) = self.inner.lock() {
            m.remove(&partition);
        }
    }

    fn get(&self, partition: u16) -> Option<mpsc::Sender<TimerJob>> {
        self.inner.lock().ok()?.get(&partition).cloned()
    }
}

type TimerKey = (String, String, String, i64);

pub(crate) fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// Run until `stop` turns true.
pub(crate) async fn run(store: Store, routes: TimerRoutes, mut stop: watch::Receiver<bool>) {
    let mut in_flight: HashMap<TimerKey, Instant> = HashMap::new();
    loop {
        if *stop.borrow() {
            return;
        }
        let now = now_ms();
        let due = match store.due_timers(now, SCAN) {
            Ok(d) => d,
            Err(e) => {
                error!(error = %e, "cannot scan timers");
                Vec::new()
            }
        };
        let mut still_due = HashSet::with_capacity(due.len());
        let mut unroutable = false;
        for entry in due {
            let key: TimerKey = (
                entry.saga.clone(),
                entry.instance.clone(),
                entry.name.clone(),
                entry.due_ms,
            );
            still_due.insert(key.clone());
            if in_flight
                .get(&key)
                .is_some_and(|sent| sent.elapsed() < RESEND_AFTER)
            {
                continue;
            }
            let Some(route) = routes.get(entry.partition) else {
                unroutable = true;
                continue;
            };
            tokio::select! {
                sent = route.send(TimerJob { entry }) => if sent.is_ok() {
                    in_flight.insert(key, Instant::now());
                },
                _ = stop.changed() => return,
            }
        }
        // Fired timers left the store: forget them.
        in_flight.retain(|k, _| still_due.contains(k));
        let sleep = if !in_flight.is_empty() {
            IN_FLIGHT_RECHECK
        } else if unroutable {
            MAX_SLEEP // due, but its partition is not (yet) running here
        } else {
            match store.next_timer_due() {
                Ok(Some(next)) if next > now => {
                    Duration::from_millis(u64::try_from(next - now).unwrap_or(0)).min(MAX_SLEEP)
                }
                Ok(Some(_)) => IN_FLIGHT_RECHECK,
                _ => MAX_SLEEP,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = routes.changed.notified() => {}
            _ = stop.changed() => return,
        }
    }
}
