//! The timer loop: finds due timers in the store and hands each to its partition task, which
//! applies it in the instance's serial order. Firing removes the timer in the same transaction
//! as the state change, so each timer fires once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use choreo_schemas::{partition_of, CorrelationId};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::{error, warn};

use super::driver::TimerJob;
use crate::store::Store;

const MAX_SLEEP: Duration = Duration::from_secs(1);
const SCAN: usize = 1024;

/// Where the due timers of (saga, partition) go.
pub(crate) type Routes = HashMap<(String, u16), mpsc::Sender<TimerJob>>;

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
        let mut waiting = Vec::new();
        for entry in due {
            if !hosted.contains(&entry.saga) {
                if warned.insert(entry.saga.clone()) {
                    warn!(saga = %entry.saga, "due timers of a saga this node does not host are left pending");
                }
                continue;
            }
            let p = CorrelationId::new(entry.correlation.as_str())
                .map(|c| partition_of(&c, partitions))
                .unwrap_or(0);
            let Some(route) = routes.get(&(entry.saga.clone(), p)) else {
                continue;
            };
            let (done, rx) = oneshot::channel();
            if route.send(TimerJob { entry, done }).await.is_ok() {
                waiting.push(rx);
            }
        }
        if !waiting.is_empty() {
            for rx in waiting {
                tokio::select! {
                    _ = rx => {}
                    _ = stop.changed() => return,
                }
            }
            continue;
        }
        let sleep = match store.next_timer_due() {
            Ok(Some(next)) if next > now => {
                Duration::from_millis(u64::try_from(next - now).unwrap_or(0)).min(MAX_SLEEP)
            }
            _ => MAX_SLEEP,
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = changed.notified() => {}
            _ = stop.changed() => return,
        }
    }
}
