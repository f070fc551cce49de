//! A node: one process hosting reactors and the processors of the saga partitions it owns,
//! connected to NATS.

mod builder;
mod host;
mod operator;
mod quarantine;
mod watch;

pub use builder::NodeBuilder;
pub use host::PartitionHealth;
pub use operator::{request_compensation, request_retry};
pub use watch::run_to_end;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use choreo_schemas::{ActorName, EventRegistry, EventType};
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::bus::Bus;
use crate::changelog::Changelog;
use crate::cluster::{NodeId, Ownership};
use crate::config::BusConfig;
use crate::error::NodeError;
use crate::metrics::Metrics;
use crate::partition::{timers, PartitionEnv, ProcessorSettings, TimerRoutes};
use crate::reactor::driver::{DriverEnv, DriverSettings, Hosted};
use crate::saga::host::HostedSaga;
use crate::saga::LIFECYCLE_TYPES;
use crate::store::Store;
use host::Processors;

/// Default largest group-commit batch of a saga partition.
pub const DEFAULT_SAGA_BATCH: usize = 256;

/// Default depth limit: an event deeper than this is a causal loop.
pub const DEFAULT_MAX_DEPTH: u32 = 64;
/// Default delivery limit: past it, nodes keep crashing on the input, so it is dead-lettered.
pub const DEFAULT_MAX_DELIVERIES: u64 = 5;
/// Default [`NodeBuilder::stall_grace`]: 10 s.
pub const DEFAULT_STALL_GRACE: Duration = Duration::from_secs(10);
/// Default [`NodeBuilder::retention`] of ended saga instances: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A validated node, ready to start.
pub struct Node {
    bus: BusConfig,
    hosts: Vec<Arc<dyn Hosted>>,
    sagas: Vec<Arc<dyn HostedSaga>>,
    data_dir: Option<PathBuf>,
    saga_batch: usize,
    registry: Arc<EventRegistry>,
    settings: DriverSettings,
    node_id: Option<NodeId>,
    lease_ttl: Duration,
    retention: Duration,
    external: BTreeSet<String>,
    coordination: bool,
    stall_grace: Duration,
    ignore_fencing: bool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("bus", &self.bus)
            .field(
                "reactors",
                &self
                    .hosts
                    .iter()
                    .map(|h| h.name().as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Node {
    /// Start building a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// What this node hosts, as the topology registry holds it: a saga emits its lifecycle
    /// events too.
    fn topology(&self, node: &NodeId) -> crate::coordination::NodeTopology {
        use crate::coordination::{ActorDecl, ActorKind, NodeTopology};
        let names = |ts: &BTreeSet<EventType>| ts.iter().map(|t| t.to_string()).collect();
        let mut actors: Vec<ActorDecl> = self
            .hosts
            .iter()
            .map(|h| {
                // The runtime answers a command it cannot run with a notice, for any reactor.
                let mut emits: BTreeSet<String> = names(h.emits());
                emits.extend(
                    [
                        crate::delivery::COMMAND_EXPIRED,
                        crate::delivery::COMMAND_DEAD_LETTERED,
                    ]
                    .map(str::to_owned),
                );
                ActorDecl {
                    name: h.name().to_string(),
                    kind: ActorKind::Reactor,
                    consumes: names(h.consumes()),
                    starts: BTreeSet::new(),
                    emits,
                }
            })
            .collect();
        for s in &self.sagas {
            let mut emits: BTreeSet<String> = names(s.emits());
            emits.extend(LIFECYCLE_TYPES.iter().map(|t| (*t).to_owned()));
            actors.push(ActorDecl {
                name: s.name().to_string(),
                kind: ActorKind::Saga,
                consumes: names(s.inputs()),
                starts: names(s.starts()),
                emits,
            });
        }
        NodeTopology::new(node.clone(), actors, self.external.clone())
    }

    /// Connect (checking the server version and the partition count), provision the streams,
    /// create the consumers and start every reactor.
    pub async fn start(self) -> Result<RunningNode, NodeError> {
        let bus = Bus::connect(self.bus.clone()).await?;
        self.start_on(bus).await
    }

    /// Start on an existing bus connection (its config wins over the node's).
    pub async fn start_on(self, bus: Bus) -> Result<RunningNode, NodeError> {
        let metrics = Metrics::default();
        let (shutdown, rx) = signal::channel(false);
        let (stop_background, stop_rx) = signal::channel(false);
        let node_id = self.node_id.clone().unwrap_or_else(NodeId::generate);
        let mut running = RunningNode {
            bus: bus.clone(),
            metrics: metrics.clone(),
            changelog: Changelog::new(&bus)
                .with_retention(self.retention)
                .unfenced_for_tests(self.ignore_fencing),
            node_id,
            store: None,
            processors: None,
            shutdown,
            stop_background,
            tasks: Vec::new(),
            ownership: None,
            background: Vec::new(),
        };
        if let Err(e) = self
            .spawn_all(&bus, &metrics, rx, stop_rx, &mut running)
            .await
        {
            if let Err(stop_err) = running.shutdown_inner().await {
                warn!(error = %stop_err, "stopping after a failed start");
            }
            return Err(e);
        }
        Ok(running)
    }

    async fn spawn_all(
        &self,
        bus: &Bus,
        metrics: &Metrics,
        rx: signal::Receiver<bool>,
        stop_rx: signal::Receiver<bool>,
        running: &mut RunningNode,
    ) -> Result<(), NodeError> {
        running.background.push(tokio::spawn(quarantine::run(
            bus.clone(),
            metrics.clone(),
            stop_rx.clone(),
        )));
        // Every node publishes what it hosts (nodes that check nothing are producers too);
        // only a node with coordination on watches the registry and checks waits.
        let own = self.topology(&running.node_id);
        if let Err(e) = crate::coordination::registry::publish(bus, &own).await {
            warn!(error = %e, "cannot publish this node's topology (retried every few seconds)");
        }
        running
            .background
            .push(tokio::spawn(crate::coordination::registry::refresh(
                bus.clone(),
                own,
                stop_rx.clone(),
            )));
        let topology = if self.coordination {
            let view = crate::coordination::registry::SharedView::default();
            running
                .background
                .push(tokio::spawn(crate::coordination::registry::watch(
                    bus.clone(),
                    running.node_id.clone(),
                    Arc::clone(&view),
                    stop_rx.clone(),
                )));
            Some(view)
        } else {
            None
        };
        for host in &self.hosts {
            let env = DriverEnv {
                bus: bus.clone(),
                registry: Arc::clone(&self.registry),
                settings: self.settings.clone(),
                counters: metrics.actor(host.name().as_str()),
                shutdown: rx.clone(),
            };
            running
                .tasks
                .push((host.name().clone(), host.start(env).await?));
            info!(actor = %host.name(), "reactor started");
        }
        let Some(dir) = self.data_dir.as_ref().filter(|_| !self.sagas.is_empty()) else {
            #[cfg(feature = "otlp")]
            crate::telemetry::register_node_metrics(metrics, None);
            return Ok(());
        };
        for saga in &self.sagas {
            let start =
                crate::saga::start::register(bus, saga.name(), saga.start_position()).await?;
            saga.set_start(start);
        }
        let store = Store::open(dir)?;
        running.store = Some(store.clone());
        let routes = TimerRoutes::default();
        let counters = self
            .sagas
            .iter()
            .map(|s| (s.name().clone(), metrics.actor(s.name().as_str())))
            .collect::<HashMap<_, _>>();
        let env = PartitionEnv {
            bus: bus.clone(),
            changelog: running.changelog.clone(),
            store: store.clone(),
            registry: Arc::clone(&self.registry),
            sagas: Arc::new(self.sagas.clone()),
            counters: Arc::new(counters),
            settings: ProcessorSettings {
                max_depth: self.settings.max_depth,
                batch: self.saga_batch,
                idle_mark: Duration::from_millis(500),
                retention: self.retention,
                stall_grace: self.stall_grace,
            },
            node: running.node_id.clone(),
            routes: routes.clone(),
            topology: topology.clone(),
            coordination: metrics.coordination_counters(),
        };
        let processors = Arc::new(Processors::new(env, self.lease_ttl));
        running.processors = Some(Arc::clone(&processors));
        let ownership = Ownership::open(
            bus,
            running.node_id.clone(),
            self.lease_ttl,
            Arc::clone(&processors) as Arc<dyn crate::cluster::PartitionHost>,
        )
        .await?
        .ignoring_lease_loss_for_tests(self.ignore_fencing);
        let (stop_ownership, ownership_rx) = signal::channel(false);
        running.ownership = Some((stop_ownership, tokio::spawn(ownership.run(ownership_rx))));
        info!(
            node = %running.node_id,
            sagas = self.sagas.len(),
            partitions = bus.config().partitions(),
            "saga partitions: claiming this node's share"
        );
        #[cfg(feature = "otlp")]
        crate::telemetry::register_node_metrics(metrics, Some(store.clone()));
        running
            .background
            .push(tokio::spawn(timers::run(store, routes, stop_rx)));
        Ok(())
    }
}

/// A started node. Dropping it without [`RunningNode::shutdown`] aborts nothing: tasks keep
/// running until the runtime stops; call `shutdown` for a graceful stop.
pub struct RunningNode {
    bus: Bus,
    metrics: Metrics,
    changelog: Changelog,
    node_id: NodeId,
    store: Option<Store>,
    processors: Option<Arc<Processors>>,
    shutdown: signal::Sender<bool>,
    stop_background: signal::Sender<bool>,
    tasks: Vec<(ActorName, JoinHandle<()>)>,
    ownership: Option<(signal::Sender<bool>, JoinHandle<()>)>,
    background: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("bus", &self.bus)
            .finish()
    }
}

impl RunningNode {
    /// The node's bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The saga store (this node's materialisation of the partitions it owns), when the node
    /// hosts sagas.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// The saga state changelog (every instance, whichever node owns it).
    pub fn changelog(&self) -> &Changelog {
        &self.changelog
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The partitions this node owns, with their processors' health.
    pub fn health(&self) -> Vec<PartitionHealth> {
        self.processors
            .as_ref()
            .map(|p| p.health())
            .unwrap_or_default()
    }

    /// Wait until this node owns `n` partitions with running processors that finished their
    /// takeover (or `timeout` passes). Returns the partitions owned.
    pub async fn wait_owned(&self, n: usize, timeout: Duration) -> Result<Vec<u16>, NodeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let owned: Vec<u16> = self
                .health()
                .iter()
                .filter(|h| h.alive)
                .map(|h| h.partition)
                .collect();
            let ready = match self.store() {
                Some(s) => owned
                    .iter()
                    .filter(|p| s.head_seq(**p).ok().flatten().is_some())
                    .count(),
                None => 0,
            };
            if ready >= n {
                return Ok(owned);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::NotOwned {
                    owned: ready,
                    wanted: n,
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop every task at once without committing, releasing or leaving: what a crash (kill -9)
    /// looks like to the rest of the cluster, whose nodes take the partitions over after the
    /// lease TTL. For failover tests and benchmarks.
    pub fn abort(mut self) {
        for (_, t) in self.tasks.drain(..) {
            t.abort();
        }
        if let Some((_, t)) = self.ownership.take() {
            t.abort();
        }
        if let Some(p) = self.processors.take() {
            p.abort_all();
        }
        for t in self.background.drain(..) {
            t.abort();
        }
    }

    /// Graceful stop: stop fetching, finish in-flight inputs (publish, ack), commit and release
    /// every owned partition (the next owners need not wait for the lease TTL), then return.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        self.shutdown_inner().await
    }

    async fn shutdown_inner(&mut self) -> Result<(), NodeError> {
        let _ = self.shutdown.send(true);
        let mut failed = Vec::new();
        for (name, task) in self.tasks.drain(..) {
            if let Err(e) = task.await {
                failed.push(format!("{name}: {e}"));
            }
        }
        if let Some((stop, task)) = self.ownership.take() {
            let _ = stop.send(true);
            if let Err(e) = task.await {
                failed.push(format!("ownership: {e}"));
            }
        }
        if let Some(p) = &self.processors {
            p.stop_all().await;
        }
        let _ = self.stop_background.send(true);
        for task in self.background.drain(..) {
            if let Err(e) = task.await {
                failed.push(format!("background task: {e}"));
            }
        }
        if let Some(store) = &self.store {
            if let Err(e) = store.flush().await {
                failed.push(format!("store flush: {e}"));
            }
        }
        // Make sure acks sent by the lanes reach the server before the caller exits.
        let _ = self.bus.client().flush().await;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(NodeError::Task(failed.join("; ")))
        }
    }
}
