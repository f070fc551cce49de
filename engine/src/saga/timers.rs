//! The timer loop: finds due timers in the store and hands each to its partition task, which
//! applies it in the instance's serial order. Firing removes the timer in the same transaction
//! as the state change, so each fires once.
//!
//! The loop does not wait for the partitions to commit what it handed over: it remembers what is
//! in flight (so it does not send it again) and goes on scanning, sleeping until the next due
//! instant. Handing a timer over twice is harmless anyway: the partition skips a timer its
//! instance no longer holds.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use choreo_schemas::{partition_of, CorrelationId};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{error, warn};

use super::driver::TimerJob;
use crate::store::Store;

const MAX_SLEEP: Duration = Duration::from_secs(1);
/// While timers are in flight, re-scan at least this often (partitions also wake the loop).
const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(20);
const SCAN: usize = 4096;
/// A timer handed over but still due after this long is handed over again (its partition may
/// have failed to commit it).
const RESEND_AFTER: Duration = Duration::from_secs(5);

/// Where the due timers of (saga, partition) go.
pub(crate) type Routes = HashMap<(String, u16), mpsc::Sender<TimerJob>>;

type TimerKey = (String, String, String, i64);

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// Run until `stop` turns true.
pub(crate) async fn run(
    store: Store,
    routes: Routes,
    partitions: u16,
    changed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let hosted: BTreeSet<String> = routes.keys().map(|(s, _)| s.clone()).collect();
    let mut warned = BTreeSet::new();
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
        for entry in due {
            if !hosted.contains(&entry.saga) {
                if warned.insert(entry.saga.clone()) {
                    warn!(saga = %entry.saga, "due timers of a saga this node does not host are left pending");
                }
                continue;
            }
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
            let p = CorrelationId::new(entry.correlation.as_str())
                .map(|c| partition_of(&c, partitions))
                .unwrap_or(0);
            let Some(route) = routes.get(&(entry.saga.clone(), p)) else {
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
        let sleep = if in_flight.is_empty() {
            match store.next_timer_due() {
                Ok(Some(next)) if next > now => {
                    Duration::from_millis(u64::try_from(next - now).unwrap_or(0)).min(MAX_SLEEP)
                }
                Ok(Some(_)) => IN_FLIGHT_RECHECK, // due but not routable here
                _ => MAX_SLEEP,
            }
        } else {
            IN_FLIGHT_RECHECK
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = changed.notified() => {}
            _ = stop.changed() => return,
        }
    }
}
