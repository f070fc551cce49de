//! The node's side of ownership: starts and stops partition processors when the ownership
//! driver says so, and reports their health.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use tracing::{error, warn};

use crate::cluster::PartitionHost;
use crate::partition::{self, Exit, PartitionEnv, ProcessorHandle};

/// Health of one owned partition, as reported by [`crate::RunningNode::health`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionHealth {
    /// The partition.
    pub partition: u16,
    /// The epoch this node owns it at.
    pub epoch: u64,
    /// Whether its processor is running.
    pub alive: bool,
    /// Unix ms of its last commit (0: none since it was taken over).
    pub last_commit_ms: i64,
    /// Why the processor ended, if it did.
    pub exit: Option<String>,
}

/// The processors of a node, by partition.
pub(crate) struct Processors {
    env: PartitionEnv,
    running: Mutex<BTreeMap<u16, ProcessorHandle>>,
    /// How long a graceful stop may take before the task is aborted (safe: commits are fenced).
    grace: Duration,
}

impl Processors {
    pub(crate) fn new(env: PartitionEnv, grace: Duration) -> Self {
        Self {
            env,
            running: Mutex::new(BTreeMap::new()),
            grace,
        }
    }

    pub(crate) fn health(&self) -> Vec<PartitionHealth> {
        let Ok(running) = self.running.lock() else {
            return Vec::new();
        };
        running
            .iter()
            .map(|(p, h)| PartitionHealth {
                partition: *p,
                epoch: h.epoch,
                alive: h.health.running.load(Ordering::SeqCst),
                last_commit_ms: h.health.last_commit_ms.load(Ordering::Relaxed),
                exit: h
                    .health
                    .exit
                    .lock()
                    .ok()
                    .and_then(|e| e.as_ref().map(|e| format!("{e:?}"))),
            })
            .collect()
    }

    /// Stop every processor (used when the node stops without its ownership driver).
    pub(crate) async fn stop_all(&self) {
        let all: Vec<u16> = match self.running.lock() {
            Ok(r) => r.keys().copied().collect(),
            Err(_) => Vec::new(),
        };
        futures::future::join_all(all.into_iter().map(|p| self.stop_one(p, false))).await;
    }

    /// Abort every processor (a simulated crash).
    pub(crate) fn abort_all(&self) {
        if let Ok(mut r) = self.running.lock() {
            for (p, h) in std::mem::take(&mut *r) {
                h.task.abort();
                self.env.routes.remove(p);
            }
        }
    }

    async fn stop_one(&self, p: u16, forget: bool) {
        let handle = match self.running.lock() {
            Ok(mut r) => r.remove(&p),
            Err(_) => None,
        };
        let Some(h) = handle else { return };
        let _ = h.stop.send(true);
        let abort = h.task.abort_handle();
        match tokio::time::timeout(self.grace, h.task).await {
            Ok(Ok(Exit::Stopped | Exit::Fenced)) => {}
            Ok(Ok(Exit::Failed(why))) => {
                warn!(partition = p, %why, "partition processor had failed")
            }
            Ok(Err(e)) => error!(partition = p, error = %e, "partition processor panicked"),
            Err(_) => {
                warn!(
                    partition = p,
                    "partition processor did not stop in time; aborted (its commits are fenced)"
                );
                abort.abort();
            }
        }
        // Whatever its state, the timers of a partition we no longer run must not fire here.
        self.env.routes.remove(p);
        if !forget {
            return;
        }
        if let Err(e) = self.env.store.drop_partition(p) {
            error!(partition = p, error = %e, "cannot drop a released partition's state");
        }
    }
}

impl PartitionHost for Processors {
    fn start(&self, p: u16, epoch: u64) {
        let handle = partition::spawn(self.env.clone(), p, epoch);
        if let Ok(mut r) = self.running.lock() {
            if let Some(old) = r.insert(p, handle) {
                old.task.abort();
            }
        }
    }

    fn stop(&self, p: u16, forget: bool) -> BoxFuture<'_, ()> {
        Box::pin(self.stop_one(p, forget))
    }

    fn alive(&self, p: u16) -> bool {
        self.running
            .lock()
            .ok()
            .and_then(|r| r.get(&p).map(|h| h.health.running.load(Ordering::SeqCst)))
            .unwrap_or(false)
    }
}

impl std::fmt::Debug for Processors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processors").finish_non_exhaustive()
    }
}

/// Abort processors left running when the set is dropped (a node dropped without shutdown).
impl Drop for Processors {
    fn drop(&mut self) {
        if let Ok(r) = self.running.lock() {
            for h in r.values() {
                h.task.abort();
            }
        }
    }
}
