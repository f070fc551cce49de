//! A node: one process hosting reactors, connected to NATS.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use choreo_schemas::{ActorName, EventRegistry, EventType, Payload};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::bus::Bus;
use crate::config::BusConfig;
use crate::error::{ConfigError, NodeError};
use crate::metrics::Metrics;
use crate::reactor::driver::{DriverEnv, DriverSettings, Hosted, ReactorHost};
use crate::reactor::Reactor;
use crate::saga::decide::SagaMeta;
use crate::saga::driver::{HostedSaga, SagaEnv, SagaHost, SagaSettings};
use crate::saga::{outbox, timers, Saga, LIFECYCLE_TYPES};
use crate::store::Store;

/// Default largest group-commit batch of a saga partition.
pub const DEFAULT_SAGA_BATCH: usize = 256;

/// Default depth limit: an event deeper than this is a causal loop.
pub const DEFAULT_MAX_DEPTH: u32 = 64;
/// Default delivery limit: past it, nodes keep crashing on the input, so it is dead-lettered.
pub const DEFAULT_MAX_DELIVERIES: u64 = 5;

/// Builder for a [`Node`]; `build()` validates the whole topology.
pub struct NodeBuilder {
    bus: Option<BusConfig>,
    hosts: Vec<Arc<dyn Hosted>>,
    sagas: Vec<Arc<dyn HostedSaga>>,
    data_dir: Option<PathBuf>,
    saga_batch: usize,
    registry: EventRegistry,
    settings: DriverSettings,
    errors: Vec<String>,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        Self {
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
        let starts: BTreeSet<EventType> = saga.starts_on().into_iter().collect();
        let inputs: BTreeSet<EventType> =
            starts.iter().cloned().chain(saga.continues_on()).collect();
        let emits: BTreeSet<EventType> = saga.emits().into_iter().collect();
        self.sagas.push(Arc::new(SagaHost {
            retry: saga.retry_policy(),
            meta: Arc::new(SagaMeta {
                name: name.to_string(),
                starts,
                emits: Arc::new(emits),
            }),
            saga: Arc::new(saga),
            name,
            inputs: Arc::new(inputs),
        }));
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

    /// Connect (checking the server version and the partition count), provision the streams,
    /// create the consumers and start every reactor.
    pub async fn start(self) -> Result<RunningNode, NodeError> {
        let bus = Bus::connect(self.bus.clone()).await?;
        self.start_on(bus).await
    }

    /// Start on an existing bus connection (its config wins over the node's).
    pub async fn start_on(self, bus: Bus) -> Result<RunningNode, NodeError> {
        let metrics = Metrics::default();
        let (shutdown, rx) = watch::channel(false);
        let (stop_background, stop_rx) = watch::channel(false);
        let mut running = RunningNode {
            bus: bus.clone(),
            metrics: metrics.clone(),
            store: None,
            shutdown,
            stop_background,
            tasks: Vec::new(),
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
        rx: watch::Receiver<bool>,
        stop_rx: watch::Receiver<bool>,
        running: &mut RunningNode,
    ) -> Result<(), NodeError> {
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
        let outbox_notify = Arc::new(Notify::new());
        let timers_changed = Arc::new(Notify::new());
        let settings = SagaSettings {
            max_depth: self.settings.max_depth,
            max_deliveries: self.settings.max_deliveries,
            ack_wait: self.settings.ack_wait,
            batch: self.saga_batch,
        };
        let partitions = bus.config().partitions();
        let mut routes = HashMap::new();
        for saga in &self.sagas {
            // One node owns every partition; `owned` is where a partition assignment plugs in.
            let owned = 0..partitions;
            for p in owned {
                let (tx, timer_rx) = mpsc::channel(1024);
                routes.insert((saga.name().to_string(), p), tx);
                let env = SagaEnv {
                    bus: bus.clone(),
                    registry: Arc::clone(&self.registry),
                    store: store.clone(),
                    settings: settings.clone(),
                    counters: metrics.actor(saga.name().as_str()),
                    shutdown: rx.clone(),
                    outbox: Arc::clone(&outbox_notify),
                    timers_changed: Arc::clone(&timers_changed),
                };
                let task = saga.start_partition(env, p, timer_rx).await?;
                running.tasks.push((saga.name().clone(), task));
            }
            info!(saga = %saga.name(), partitions, "saga started");
        }
        #[cfg(feature = "otlp")]
        crate::telemetry::register_node_metrics(metrics, Some(store.clone()));
        running.background.push(tokio::spawn(outbox::run(
            store.clone(),
            bus.clone(),
            outbox_notify,
            stop_rx.clone(),
        )));
        running.background.push(tokio::spawn(timers::run(
            store,
            routes,
            partitions,
            timers_changed,
            stop_rx,
        )));
        Ok(())
    }
}

/// A started node. Dropping it without [`RunningNode::shutdown`] aborts nothing: tasks keep
/// running until the runtime stops; call `shutdown` for a graceful stop.
pub struct RunningNode {
    bus: Bus,
    metrics: Metrics,
    store: Option<Store>,
    shutdown: watch::Sender<bool>,
    stop_background: watch::Sender<bool>,
    tasks: Vec<(ActorName, JoinHandle<()>)>,
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

    /// The saga store, when the node hosts sagas.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Graceful stop: stop fetching, finish in-flight inputs (publish, ack), drain the saga
    /// outbox, flush the store, then return.
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
