//! The outbox publisher: drains committed outbox entries to the log, in commit order.
//! Entries are removed only after JetStream acknowledged them; ids are deterministic, so a
//! re-drain after a crash is deduplicated by JetStream.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tracing::{debug, error, warn};

use crate::bus::Bus;
use crate::store::Store;

const BATCH: usize = 512;
const IDLE_RECHECK: Duration = Duration::from_secs(5);

/// Run until `stop` turns true, then drain once more and return.
pub(crate) async fn run(
    store: Store,
    bus: Bus,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pause = Duration::from_millis(50);
    loop {
        let stopping = *stop.borrow();
        loop {
            match drain_once(&store, &bus).await {
                Ok(0) => break,
                Ok(n) => {
                    debug!(published = n, "outbox drained");
                    pause = Duration::from_millis(50);
                }
                Err(e) => {
                    warn!(error = %e, "outbox publish failed; retrying");
                    if stopping {
                        error!(
                            pending = store.outbox_len(),
                            "stopping with outbox entries; they are published at the next start"
                        );
                        return;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = stop.changed() => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        if stopping {
            return;
        }
        tokio::select! {
            () = notify.notified() => {}
            _ = stop.changed() => {}
            () = tokio::time::sleep(IDLE_RECHECK) => {}
        }
    }
}

/// Publish one batch; returns how many entries were published.
async fn drain_once(store: &Store, bus: &Bus) -> Result<usize, String> {
    let batch = store.outbox_batch(BATCH).map_err(|e| e.to_string())?;
    if batch.is_empty() {
        return Ok(0);
    }
    let (keys, events): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    bus.publish_all(&events).await.map_err(|e| e.to_string())?;
    store.outbox_remove(&keys).map_err(|e| e.to_string())?;
    Ok(keys.len())
}
