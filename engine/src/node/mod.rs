//! A node: one process hosting reactors and the processors of the saga partitions it owns,
//! connected to NATS.

mod host;
mod operator;
mod quarantine;
mod watch;

pub use host::PartitionHealth;
pub use operator::{request_compensation, request_retry};
pub use watch::run_to_end;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use choreo_schemas::{ActorName, EventRegistry, EventType, Payload};
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::bus::Bus;
use crate::changelog::Changelog;
use crate::cluster::{NodeId, Ownership, DEFAULT_LEASE_TTL};
use crate::config::BusConfig;
use crate::error::{ConfigError, NodeError};
use crate::metrics::Metrics;
use crate::partition::{timers, PartitionEnv, ProcessorSettings, TimerRoutes};
use crate::reactor::driver::{DriverEnv, DriverSettings, Hosted, ReactorHost};
use crate::reactor::Reactor;
use crate::saga::host::{HostedSaga, SagaHost};
use crate::saga::{Saga, LIFECYCLE_TYPES};
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

/// Builder for a [`Node`]; `build()` validates the whole topology.
pub struct NodeBuilder {
    bus: Option<BusConfig>,
    hosts: Vec<Arc<dyn Hosted>>,
    sagas: Vec<Arc<dyn HostedSaga>>,
    data_dir: Option<PathBuf>,
    saga_batch: usize,
    registry: EventRegistry,
    settings: DriverSettings,
    node_id: Option<NodeId>,
    lease_ttl: Duration,
    retention: Duration,
    external: BTreeSet<String>,
    coordination: bool,
    stall_grace: Duration,
    errors: Vec<String>,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        Self {
            node_id: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            retention: DEFAULT_RETENTION,
            external: BTreeSet::new(),
            coordination: true,
            stall_grace: DEFAULT_STALL_GRACE,
            bus: None,
            hosts: Vec::new(),
            sagas: Vec::new(),
            data_dir: None,
            saga_batch: DEFAULT_SAGA_BATCH,
            registry: EventRegistry::new(),
            settings: DriverSettings {
                lanes: 16,
                max_depth: DEFAULT_MAX_DEPTH,
                max_deliveries: DEFAULT_MAX_DELIVERIES,
                ack_wait: Duration::from_secs(30),
                fetch_batch: 64,
                dry_run: false,
            },
            errors: Vec::new(),
        }
    }
}

impl NodeBuilder {
    /// Where NATS is and the shape of the log (default: [`BusConfig::builder`]`().build()`).
    pub fn bus(mut self, config: BusConfig) -> Self {
        self.bus = Some(config);
        self
    }

    /// Host a reactor.
    pub fn reactor<R: Reactor>(mut self, reactor: R) -> Self {
        let name = match ActorName::new(reactor.name()) {
            Ok(n) => n,
            Err(e) => {
                self.errors.push(format!("reactor name: {e}"));
                return self;
            }
        };
        let consumes: BTreeSet<_> = reactor.consumes().into_iter().collect();
        let emits: BTreeSet<_> = reactor.emits().into_iter().collect();
        self.hosts.push(Arc::new(ReactorHost {
            retry: reactor.retry_policy(),
            atomic: reactor.atomic_outputs(),
            reactor: Arc::new(reactor),
            name,
            consumes: Arc::new(consumes),
            emits: Arc::new(emits),
        }));
        self
    }

    /// Host a saga (needs [`NodeBuilder::data_dir`]).
    pub fn saga<S: Saga>(mut self, saga: S) -> Self {
        let name = match ActorName::new(saga.name()) {
            Ok(n) => n,
            Err(e) => {
                self.errors.push(format!("saga name: {e}"));
                return self;
            }
        };
        self.sagas.push(Arc::new(SagaHost::new(saga, name)));
        self
    }

    /// This node's id in the cluster (default: a fresh `node-<uuid>` per start). Ids must be
    /// unique among running nodes.
    pub fn node_id(mut self, id: &str) -> Self {
        match NodeId::new(id) {
            Ok(id) => self.node_id = Some(id),
            Err(e) => self.errors.push(e.to_string()),
        }
        self
    }

    /// Lease TTL of partition ownership (default 5 s): a dead node's partitions move after
    /// about this long; a graceful stop hands them over at once. Fixed per namespace by the
    /// first node that creates the buckets.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How long an ended saga instance (completed, compensated, faulted) is kept after its last
    /// change: then it is gone from the changelog (a per-message TTL) and the store. Default
    /// 7 days; zero keeps ended instances forever. Running instances are never purged.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Declare an event type that may come from outside the system (a person through
    /// `choreo approve`, an ingress producer): the deadlock detector never counts a wait for
    /// it as part of a deadlock (it can still stall). Published in the topology registry.
    pub fn external(mut self, ty: EventType) -> Self {
        self.external.insert(ty.to_string());
        self
    }

    /// Deadlock detection and the stall watchdog (default on): the node publishes its actors
    /// in the topology registry and its partitions check their correlations' waits.
    pub fn coordination(mut self, on: bool) -> Self {
        self.coordination = on;
        self
    }

    /// How long a wait whose every possible producer is missing from the registry (no live
    /// node hosts one) may last before it is reported stalled (default 10 s).
    pub fn stall_grace(mut self, grace: Duration) -> Self {
        self.stall_grace = grace;
        self
    }

    /// Directory of the node's saga store (sled). One node process per directory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Largest group-commit batch of a saga partition (default 256): inputs applied, one flush,
    /// then acked together.
    pub fn saga_batch(mut self, n: usize) -> Self {
        self.saga_batch = n;
        self
    }

    /// Register a typed payload: inputs of its type are validated by decoding them.
    pub fn register<P: Payload>(mut self) -> Self {
        if let Err(e) = self.registry.register::<P>() {
            self.errors
                .push(format!("payload {}: {e}", std::any::type_name::<P>()));
        }
        self
    }

    /// Keyed serial lanes per reactor: how many correlations are handled at once (default 16).
    pub fn concurrency(mut self, lanes: usize) -> Self {
        self.settings.lanes = lanes;
        self
    }

    /// Depth limit (default 64).
    pub fn max_depth(mut self, depth: u32) -> Self {
        self.settings.max_depth = depth;
        self
    }

    /// Delivery limit before an input is dead-lettered as poison (default 5).
    pub fn max_deliveries(mut self, n: u64) -> Self {
        self.settings.max_deliveries = n;
        self
    }

    /// JetStream ack wait of the reactor consumers (default 30 s); in-progress acks extend it
    /// while a handler runs or backs off. After a crash, inputs are redelivered after it.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.settings.ack_wait = wait;
        self
    }

    /// Dry-run mode: services with external effects do not perform them and emit
    /// `<type>.dry_run` instead (see [`crate::ReactContext::dry_run`]); agents and sagas run
    /// normally.
    pub fn dry_run(mut self, on: bool) -> Self {
        self.settings.dry_run = on;
        self
    }

    /// Messages pulled per request (default 64).
    pub fn fetch_batch(mut self, n: usize) -> Self {
        self.settings.fetch_batch = n;
        self
    }

    /// Validate and build.
    pub fn build(mut self) -> Result<Node, ConfigError> {
        if let Some(first) = self.errors.first() {
            return Err(ConfigError::new(first.clone()));
        }
        let s = &self.settings;
        if s.lanes == 0 || s.fetch_batch == 0 {
            return Err(ConfigError::new(
                "concurrency and fetch_batch must be at least 1",
            ));
        }
        if s.max_deliveries == 0 {
            return Err(ConfigError::new("max_deliveries must be at least 1"));
        }
        if s.ack_wait < Duration::from_millis(500) {
            return Err(ConfigError::new("ack_wait must be at least 500 ms"));
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(ConfigError::new("lease_ttl must be at least 1 s"));
        }
        if self.saga_batch == 0 {
            return Err(ConfigError::new("saga_batch must be at least 1"));
        }
        if !self.sagas.is_empty() && self.data_dir.is_none() {
            return Err(ConfigError::new(
                "sagas need a data directory for their store: call data_dir()",
            ));
        }
        let mut names = BTreeSet::new();
        for s in &self.sagas {
            if !names.insert(s.name().clone()) {
                return Err(ConfigError::new(format!(
                    "two actors are named {:?}; names identify durable consumers and must be unique",
                    s.name().as_str()
                )));
            }
            if s.inputs().is_empty() {
                return Err(ConfigError::new(format!(
                    "saga {} consumes no event types",
                    s.name()
                )));
            }
            for ty in s.inputs().iter().chain(s.emits()) {
                self.registry.register_opaque(ty.clone());
            }
        }
        for ty in LIFECYCLE_TYPES {
            if let Ok(t) = EventType::new(ty) {
                self.registry.register_opaque(t);
            }
        }
        for h in &self.hosts {
            if !names.insert(h.name().clone()) {
                return Err(ConfigError::new(format!(
                    "two actors are named {:?}; names identify durable consumers and must be unique",
                    h.name().as_str()
                )));
            }
            if h.consumes().is_empty() {
                return Err(ConfigError::new(format!(
                    "reactor {} consumes no event types",
                    h.name()
                )));
            }
            // Types nobody registered a payload for are known, with opaque data.
            for ty in h.consumes().iter().chain(h.emits()) {
                self.registry.register_opaque(ty.clone());
            }
        }
        let bus = match self.bus {
            Some(b) => b,
            None => BusConfig::builder().build()?,
        };
        Ok(Node {
            bus,
            hosts: self.hosts,
            sagas: self.sagas,
            data_dir: self.data_dir,
            saga_batch: self.saga_batch,
            registry: Arc::new(self.registry),
            settings: self.settings,
            node_id: self.node_id,
            lease_ttl: self.lease_ttl,
            retention: self.retention,
            external: self.external,
            coordination: self.coordination,
            stall_grace: self.stall_grace,
        })
    }
}

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
            changelog: Changelog::new(&bus).with_retention(self.retention),
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
        .await?;
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
