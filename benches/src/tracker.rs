//! Completion tracking: one slot per item (sequence number), the time its latency is measured
//! from, whether it completed, and a waiter that is woken by completions (no polling).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

use crate::latency::LatencyHistogram;
use crate::schedule::latency_ns;

const UNSET: u64 = u64::MAX;

/// Counts of a finished tracker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Items completed once.
    pub completed: u64,
    /// Completions seen again for an item already completed.
    pub duplicates: u64,
    /// Completions that named no known item.
    pub unknown: u64,
}

/// Tracks `n` items: sent (with a latency origin) and completed (once each).
#[derive(Debug)]
pub struct Tracker {
    epoch: Instant,
    origin: Vec<AtomicU64>,
    done: Vec<AtomicBool>,
    completed: AtomicU64,
    duplicates: AtomicU64,
    unknown: AtomicU64,
    first_origin: AtomicU64,
    last_completion: AtomicU64,
    hist: Mutex<LatencyHistogram>,
    notify: Notify,
    window: Option<Semaphore>,
}

impl Tracker {
    /// A tracker of `n` items; with `window`, at most that many are in flight (closed loop).
    pub fn new(epoch: Instant, n: u64, window: Option<usize>) -> Arc<Self> {
        let len = usize::try_from(n).unwrap_or(usize::MAX);
        Arc::new(Self {
            epoch,
            origin: (0..len).map(|_| AtomicU64::new(UNSET)).collect(),
            done: (0..len).map(|_| AtomicBool::new(false)).collect(),
            completed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            first_origin: AtomicU64::new(UNSET),
            last_completion: AtomicU64::new(0),
            hist: Mutex::new(LatencyHistogram::new()),
            notify: Notify::new(),
            window: window.map(Semaphore::new),
        })
    }

    /// Items tracked.
    pub fn len(&self) -> u64 {
        self.origin.len() as u64
    }

    /// True when tracking nothing.
    pub fn is_empty(&self) -> bool {
        self.origin.is_empty()
    }

    /// Nanoseconds since the run's epoch.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(UNSET - 1)
    }

    /// The epoch offsets are measured from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Closed loop: wait for a free slot in the window (no-op without a window).
    pub async fn acquire(&self) {
        if let Some(w) = &self.window {
            if let Ok(permit) = w.acquire().await {
                permit.forget();
            }
        }
    }

    /// Item `seq` is being sent; its latency is measured from `origin_ns`.
    pub fn sent(&self, seq: u64, origin_ns: u64) {
        if let Some(slot) = self.slot(seq) {
            self.origin[slot].store(origin_ns, Ordering::Release);
            self.first_origin.fetch_min(origin_ns, Ordering::Relaxed);
        }
    }

    /// Item `seq` completed now. Returns true the first time.
    pub fn complete(&self, seq: u64) -> bool {
        self.complete_at(seq, self.now_ns())
    }

    /// Item `seq` completed at `now_ns`. Returns true the first time.
    pub fn complete_at(&self, seq: u64, now_ns: u64) -> bool {
        let Some(slot) = self.slot(seq) else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        if self.done[slot].swap(true, Ordering::AcqRel) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let origin = self.origin[slot].load(Ordering::Acquire);
        if origin != UNSET {
            if let Ok(mut h) = self.hist.lock() {
                h.record_ns(latency_ns(origin, now_ns));
            }
        }
        self.last_completion.fetch_max(now_ns, Ordering::Relaxed);
        let n = self.completed.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(w) = &self.window {
            w.add_permits(1);
        }
        if n >= self.len() || n % 64 == 0 {
            self.notify.notify_waiters();
        }
        true
    }

    /// A completion that names no item of this tracker.
    pub fn unknown(&self) {
        self.unknown.fetch_add(1, Ordering::Relaxed);
    }

    /// Items completed so far.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// Completed, duplicate and unknown counts.
    pub fn counts(&self) -> Counts {
        Counts {
            completed: self.completed(),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            unknown: self.unknown.load(Ordering::Relaxed),
        }
    }

    /// From the first latency origin to the last completion (zero before any).
    pub fn span(&self) -> Duration {
        let first = self.first_origin.load(Ordering::Relaxed);
        let last = self.last_completion.load(Ordering::Relaxed);
        if first == UNSET || last <= first {
            return Duration::ZERO;
        }
        Duration::from_nanos(last - first)
    }

    /// The latency histogram so far.
    pub fn histogram(&self) -> LatencyHistogram {
        self.hist.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Wait until `target` items completed; `Err(completed)` after `timeout`.
    pub async fn wait_for(&self, target: u64, timeout: Duration) -> Result<(), u64> {
        let wait = async {
            loop {
                let notified = self.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.completed() >= target {
                    return;
                }
                // Woken every 64 completions and at the end; a target in between is checked
                // at the next wake-up, at the latest when the last item completes.
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| self.completed())
    }

    /// Wait until every item completed; `Err(completed)` after `timeout`.
    pub async fn wait_all(&self, timeout: Duration) -> Result<(), u64> {
        self.wait_for(self.len(), timeout).await
    }

    fn slot(&self, seq: u64) -> Option<usize> {
        usize::try_from(seq).ok().filter(|s| *s < self.origin.len())
    }
}
