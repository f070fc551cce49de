//! A counter with a target that can be awaited (woken by the hits, no polling).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Counts hits; [`Tally::wait`] returns once `target` is reached.
#[derive(Debug)]
pub struct Tally {
    count: AtomicU64,
    target: u64,
    notify: Notify,
}

impl Tally {
    /// A tally waiting for `target` hits.
    pub fn new(target: u64) -> Arc<Self> {
        Arc::new(Self {
            count: AtomicU64::new(0),
            target,
            notify: Notify::new(),
        })
    }

    /// One more.
    pub fn hit(&self) {
        let n = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.target {
            self.notify.notify_waiters();
        }
    }

    /// Hits so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// The target.
    pub fn target(&self) -> u64 {
        self.target
    }

    /// Wait for the target; `Err(count)` after `timeout`.
    pub async fn wait(&self, timeout: Duration) -> Result<(), u64> {
        let wait = async {
            loop {
                let notified = self.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.count() >= self.target {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| self.count())
    }
}
