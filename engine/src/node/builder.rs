//! The node builder: what a node hosts and how, validated by `build()`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use choreo_schemas::{ActorName, EventRegistry, EventType, Payload};

use super::{
    Node, DEFAULT_MAX_DELIVERIES, DEFAULT_MAX_DEPTH, DEFAULT_RETENTION, DEFAULT_SAGA_BATCH,
    DEFAULT_STALL_GRACE,
};
use crate::cluster::{NodeId, DEFAULT_LEASE_TTL};
use crate::config::BusConfig;
use crate::error::ConfigError;
use crate::reactor::driver::{DriverSettings, Hosted, ReactorHost};
use crate::reactor::Reactor;
use crate::saga::host::{HostedSaga, SagaHost};
use crate::saga::{Saga, LIFECYCLE_TYPES};

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
    ignore_fencing: bool,
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
            ignore_fencing: false,
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
            start: reactor.start_position(),
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

    /// **Breaks the engine's central guarantee; for testing checkers only** (the chaos suite's
    /// `choreo node --bug ignore-fencing`): commits are not fenced on the partition's head, and
    /// a partition whose lease was lost or not renewed in time keeps its processor running.
    #[doc(hidden)]
    pub fn ignore_fencing_for_tests(mut self, on: bool) -> Self {
        self.ignore_fencing = on;
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
            ignore_fencing: self.ignore_fencing,
        })
    }
}
