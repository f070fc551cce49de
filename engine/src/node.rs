//! A node: one process hosting reactors, connected to NATS.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use choreo_schemas::{ActorName, EventRegistry, Payload};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::bus::Bus;
use crate::config::BusConfig;
use crate::error::{ConfigError, NodeError};
use crate::metrics::Metrics;
use crate::reactor::driver::{DriverEnv, DriverSettings, Hosted, ReactorHost};
use crate::reactor::Reactor;

/// Default depth limit: an event deeper than this is a causal loop.
pub const DEFAULT_MAX_DEPTH: u32 = 64;
/// Default delivery limit: past it, nodes keep crashing on the input, so it is dead-lettered.
pub const DEFAULT_MAX_DELIVERIES: u64 = 5;

/// Builder for a [`Node`]; `build()` validates the whole topology.
pub struct NodeBuilder {
    bus: Option<BusConfig>,
    hosts: Vec<Arc<dyn Hosted>>,
    registry: EventRegistry,
    settings: DriverSettings,
    errors: Vec<String>,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        Self {
            bus: None,
            hosts: Vec::new(),
            registry: EventRegistry::new(),
            settings: DriverSettings {
                lanes: 16,
                max_depth: DEFAULT_MAX_DEPTH,
                max_deliveries: DEFAULT_MAX_DELIVERIES,
                ack_wait: Duration::from_secs(30),
                fetch_batch: 64,
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
            reactor: Arc::new(reactor),
            name,
            consumes: Arc::new(consumes),
            emits: Arc::new(emits),
        }));
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
        let mut names = BTreeSet::new();
        for h in &self.hosts {
            if !names.insert(h.name().clone()) {
                return Err(ConfigError::new(format!(
                    "two reactors are named {:?}; names identify durable consumers and must be unique",
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
            registry: Arc::new(self.registry),
            settings: self.settings,
        })
    }
}

/// A validated node, ready to start.
pub struct Node {
    bus: BusConfig,
    hosts: Vec<Arc<dyn Hosted>>,
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
        let mut tasks = Vec::new();
        for host in &self.hosts {
            let env = DriverEnv {
                bus: bus.clone(),
                registry: Arc::clone(&self.registry),
                settings: self.settings.clone(),
                counters: metrics.actor(host.name().as_str()),
                shutdown: rx.clone(),
            };
            match host.start(env).await {
                Ok(handle) => tasks.push((host.name().clone(), handle)),
                Err(e) => {
                    let _ = shutdown.send(true);
                    for (_, t) in tasks {
                        let _ = t.await;
                    }
                    return Err(e);
                }
            }
            info!(actor = %host.name(), "reactor started");
        }
        Ok(RunningNode {
            bus,
            metrics,
            shutdown,
            tasks,
        })
    }
}

/// A started node. Dropping it without [`RunningNode::shutdown`] aborts nothing: tasks keep
/// running until the runtime stops; call `shutdown` for a graceful stop.
pub struct RunningNode {
    bus: Bus,
    metrics: Metrics,
    shutdown: watch::Sender<bool>,
    tasks: Vec<(ActorName, JoinHandle<()>)>,
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

    /// Graceful stop: stop fetching, finish in-flight inputs (publish, ack), then return.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.shutdown.send(true);
        let mut failed = Vec::new();
        for (name, task) in self.tasks {
            if let Err(e) = task.await {
                failed.push(format!("{name}: {e}"));
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
