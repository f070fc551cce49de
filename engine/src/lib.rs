//! # choreo
//!
//! A durable-workflow hybrid engine on NATS JetStream. Actors never call each other: they
//! react to CloudEvents on a durable log and emit events back onto it.
//!
//! This crate holds the [`Bus`] (connection, stream provisioning, publish, history reads),
//! the [`Reactor`] runtime (durable pull consumers, keyed serial lanes, retries with backoff,
//! dead letters), [`Saga`]s (process managers with compensations and durable timers in a sled
//! [`Store`], group commit, an outbox) and [`RoutingSlip`]s, the [`Node`] that hosts them, and
//! [`NatsServer`] to run a local nats-server for development and tests. The wire types come from [`choreo_schemas`] and are
//! re-exported here.
//!
//! ```no_run
//! use choreo::{BusConfig, CorrelationId, Event, EventType, Node, Payload, ReactContext, ReactError, Reactor};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Ping { n: u32 }
//! impl Payload for Ping { const TYPE: &'static str = "ping.v1"; }
//! #[derive(Serialize, Deserialize)]
//! struct Pong { n: u32 }
//! impl Payload for Pong { const TYPE: &'static str = "pong.v1"; }
//!
//! struct Ponger;
//! impl Reactor for Ponger {
//!     fn name(&self) -> &str { "ponger" }
//!     fn consumes(&self) -> Vec<EventType> { vec![Ping::event_type()] }
//!     fn emits(&self) -> Vec<EventType> { vec![Pong::event_type()] }
//!     async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
//!         let ping: Ping = e.decode()?;
//!         ctx.emit(&Pong { n: ping.n })?;
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::builder()
//!     .bus(BusConfig::builder().url("nats://127.0.0.1:4222").build()?)
//!     .register::<Ping>()
//!     .reactor(Ponger)
//!     .build()?
//!     .start()
//!     .await?;
//! let ping = Event::root("urn:example", CorrelationId::new("game-1")?, &Ping { n: 1 })?;
//! node.bus().publish(&ping).await?;
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

mod bus;
mod changelog;
mod cluster;
mod config;
mod coordination;
mod delivery;
mod error;
mod history;
#[cfg(feature = "logging")]
pub mod logging;
pub mod metrics;
mod model;
mod node;
mod partition;
mod reactor;
mod retry;
mod saga;
mod server;
mod store;
mod telemetry;

pub use bus::wire;
pub use bus::wire::event_headers as headers_of;
pub use bus::{
    unreadable_headers, Bus, ConsumerStats, DeadLetter, DlqReason, LogStats, Published,
    Quarantined, Redriven, StoredEvent, StreamStats, BODY_REFERENCE, BODY_TRUNCATED, DLQ_ACTOR,
    DLQ_ATTEMPTS, DLQ_BODY, DLQ_BODY_LEN, DLQ_DETAIL, DLQ_RAW_HEADERS, DLQ_REASON, DLQ_STREAM_SEQ,
    DLQ_SUBJECT, DLQ_TIME, MIN_SERVER_VERSION, PARTITIONS_METADATA_KEY,
    PARTITION_HASH_METADATA_KEY, QUARANTINE_ACTOR, RAW_HEADERS_KEEP, REDRIVEN_FROM,
};
pub use changelog::{Changelog, ChangelogEntry, ChangelogError, Snapshot as ChangelogSnapshot};
pub use cluster::{
    read_leases, Lease, Member, NodeId, DEFAULT_LEASE_TTL, LEASES_BUCKET, MEMBERS_BUCKET,
};
pub use config::{
    Auth, BusConfig, BusConfigBuilder, Replicas, Tls, DEFAULT_EVENTS_MAX_AGE, DEFAULT_NATS_URL,
    ENV_NATS_URL, MIN_DUPLICATE_WINDOW,
};
pub use coordination::{
    find_deadlocks, read_topology, ActorDecl, ActorKind, Cycle, CycleMember, DeadlockDetected,
    HostedActor, InstanceView, NodeTopology, Producer, StallDetected, Topology, DEADLOCK_DETECTED,
    MAX_INSTANCES_CHECKED, STALL_DETECTED, TOPOLOGY_BUCKET, TOPOLOGY_TTL, VICTIM_RULE,
};
pub use delivery::{
    CommandDeadLettered, CommandExpired, StartPosition, COMMAND_DEAD_LETTERED, COMMAND_EXPIRED,
};
pub use error::{BusError, ConfigError, NodeError, ServerError};
pub use history::{CausalTree, History, HistoryEntry, NodeKind, TreeNode};
pub use metrics::{ActorMetrics, CoordinationMetrics, Metrics, SagaGauges};
pub use model::{
    EffectState, FaultedBy, PartitionHead, PendingEffect, PendingEvent, PendingUndo, StallKind,
    Wait, RECENT_INPUTS,
};
pub use node::{
    request_compensation, request_retry, run_to_end, Node, NodeBuilder, PartitionHealth,
    RunningNode, DEFAULT_MAX_DELIVERIES, DEFAULT_MAX_DEPTH, DEFAULT_RETENTION, DEFAULT_SAGA_BATCH,
    DEFAULT_STALL_GRACE,
};
pub use reactor::{EmitError, ReactContext, ReactError, Reactor};
pub use retry::{RetryPolicy, RetryPolicyBuilder};
pub use saga::{
    assert_replays, replay, replay_against, Compensation, Divergence, Effect, InstanceRecord,
    Lifecycle, OnFault, OperatorRequest, ReplayError, ReplayReport, Replayable, RoutingSlip,
    RoutingSlipBuilder, Saga, SagaContext, SagaError, SagaStatus, SlipState, SlipStep,
    DEFAULT_EFFECT_GRACE, LIFECYCLE_TYPES, SAGA_COMPENSATE, SAGA_COMPENSATED, SAGA_COMPENSATING,
    SAGA_COMPLETED, SAGA_FAILED, SAGA_FAULTED, SAGA_RETRY, SAGA_STARTED, SAGA_TIMED_OUT,
};
pub use server::{
    free_port, ClusterOptions, NatsCluster, NatsServer, ServerBinary, ServerOptions,
    ENV_NATS_SERVER, PROJECT_LOCAL_SERVER,
};
pub use store::{Store, StoreError, TimerEntry};
#[cfg(feature = "otlp")]
pub use telemetry::{register_node_metrics, Telemetry, TelemetryError};

pub use choreo_schemas as schemas;
pub use choreo_schemas::{
    ActorName, CodecError, CorrelationId, DataFormat, EnvelopeError, Event, EventId, EventRegistry,
    EventType, Payload, SagaId, Subjects, TraceParent,
};
