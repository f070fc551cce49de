//! Partition processors: for each partition a node owns, one task that applies the inputs of
//! every hosted saga in that partition in log order through the pure cores, commits the batch to
//! the changelog (fenced by the partition's head), materialises it in sled, then publishes what
//! it decided. Timers of the partition's instances are inputs of the same task.
//!
//! Who owns a partition is decided elsewhere (`cluster`); a processor only knows its epoch and
//! trusts the fence, not the lease.

mod batch;
mod inputs;
mod processor;
mod takeover;
pub(crate) mod timers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use choreo_schemas::{ActorName, EventRegistry};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::bus::Bus;
use crate::changelog::Changelog;
use crate::cluster::NodeId;
use crate::metrics::ActorCounters;
use crate::saga::host::HostedSaga;
use crate::store::Store;

pub(crate) use timers::TimerRoutes;

/// Settings of every processor of a node.
#[derive(Clone, Debug)]
pub(crate) struct ProcessorSettings {
    pub(crate) max_depth: u32,
    /// Largest batch of inputs applied before one commit.
    pub(crate) batch: usize,
    /// After a commit whose events were published, mark them published in the head if no other
    /// commit came within this long.
    pub(crate) idle_mark: Duration,
    /// Ended instances older than this leave the store (zero: never).
    pub(crate) retention: Duration,
    /// A wait whose every producer is missing is reported stalled after this long.
    pub(crate) stall_grace: Duration,
}

/// What every processor of a node shares.
#[derive(Clone)]
pub(crate) struct PartitionEnv {
    pub(crate) bus: Bus,
    pub(crate) changelog: Changelog,
    pub(crate) store: Store,
    pub(crate) registry: Arc<EventRegistry>,
    pub(crate) sagas: Arc<Vec<Arc<dyn HostedSaga>>>,
    pub(crate) counters: Arc<HashMap<ActorName, Arc<ActorCounters>>>,
    pub(crate) settings: ProcessorSettings,
    pub(crate) node: NodeId,
    pub(crate) routes: TimerRoutes,
    /// The topology registry's view (none: deadlock detection and the stall watchdog are off).
    pub(crate) topology: Option<crate::coordination::registry::SharedView>,
    pub(crate) coordination: Arc<crate::metrics::CoordinationCounters>,
}

/// Why a processor ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Asked to stop; everything decided is committed.
    Stopped,
    /// Another owner committed the partition: nothing more was committed or published.
    Fenced,
    /// Infrastructure trouble; the partition can be started again (a takeover of itself).
    Failed(String),
}

/// Health of one processor, readable while it runs.
#[derive(Debug, Default)]
pub(crate) struct ProcessorHealth {
    pub(crate) running: AtomicBool,
    /// Unix ms of the last successful commit (0: none yet).
    pub(crate) last_commit_ms: AtomicI64,
    pub(crate) exit: Mutex<Option<Exit>>,
}

/// A running processor.
pub(crate) struct ProcessorHandle {
    pub(crate) epoch: u64,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) task: JoinHandle<Exit>,
    pub(crate) health: Arc<ProcessorHealth>,
}

/// Start the processor of `partition` at `epoch`.
pub(crate) fn spawn(env: PartitionEnv, partition: u16, epoch: u64) -> ProcessorHandle {
    let (stop, stop_rx) = watch::channel(false);
    let (timers_tx, timers_rx) = mpsc::channel(1024);
    env.routes.insert(partition, timers_tx);
    let health = Arc::new(ProcessorHealth::default());
    health.running.store(true, Ordering::SeqCst);
    let h = Arc::clone(&health);
    let task = tokio::spawn(async move {
        let routes = env.routes.clone();
        let exit = processor::Processor::new(env, partition, epoch, Arc::clone(&h))
            .run(stop_rx, timers_rx)
            .await;
        routes.remove(partition);
        h.running.store(false, Ordering::SeqCst);
        if let Ok(mut e) = h.exit.lock() {
            *e = Some(exit.clone());
        }
        exit
    });
    ProcessorHandle {
        epoch,
        stop,
        task,
        health,
    }
}
