//! Public error types of the engine.

use thiserror::Error;

/// A configuration that cannot work, caught by a builder's `build()`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub(crate) String);

impl ConfigError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Talking to NATS / JetStream failed.
#[derive(Debug, Error)]
pub enum BusError {
    /// The connection could not be established.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The server is older than the minimum choreo supports.
    #[error("nats-server {found} is too old: choreo needs >= {required} (older servers silently ignore multi-filter consumers); run scripts/install-nats-server or set CHOREO_NATS_SERVER")]
    ServerTooOld {
        /// The version the server reported.
        found: String,
        /// The minimum version.
        required: String,
    },
    /// The log was created with another partition count.
    #[error("the log in stream {stream} was created with {log} partitions, but this node is configured with {configured}; the partition count is fixed when the log is created (configure {log}, or use a new namespace)")]
    PartitionMismatch {
        /// The events stream.
        stream: String,
        /// Partition count recorded in the stream.
        log: u16,
        /// Partition count this node was configured with.
        configured: u16,
    },
    /// [`crate::Bus::open`]: the namespace has no events stream (nothing created it yet).
    #[error("namespace {namespace:?} has no choreo log at {url} (stream {stream} does not exist): nothing to read; a node, `choreo dev` or `choreo publish` creates it (check --namespace)")]
    NoNamespace {
        /// The namespace asked for.
        namespace: String,
        /// The NATS URL.
        url: String,
        /// Its events stream's name.
        stream: String,
    },
    /// A stream exists but was not created by choreo, or differs in an incompatible way.
    #[error("stream {stream} is not usable by choreo: {reason}")]
    IncompatibleStream {
        /// The stream name.
        stream: String,
        /// What is wrong.
        reason: String,
    },
    /// A JetStream request (stream, consumer, info) failed.
    #[error("JetStream request failed ({what}): {reason}")]
    JetStream {
        /// What was being done.
        what: String,
        /// The client's error.
        reason: String,
    },
    /// Publishing failed or was not acknowledged.
    #[error("publish to {subject} failed: {reason}")]
    Publish {
        /// Subject published to.
        subject: String,
        /// Why it failed.
        reason: String,
    },
    /// Encoding the event failed.
    #[error(transparent)]
    Codec(#[from] choreo_schemas::CodecError),
}

impl BusError {
    pub(crate) fn js(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Self::JetStream {
            what: what.into(),
            reason: err.to_string(),
        }
    }
}

/// Starting or running a node failed.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The node's configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The saga store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The saga state changelog failed.
    #[error(transparent)]
    Changelog(#[from] crate::changelog::ChangelogError),
    /// A runtime task ended abnormally.
    #[error("node task failed: {0}")]
    Task(String),
    /// The node did not come to own (and restore) the partitions waited for in time.
    #[error("the node owns {owned} of the {wanted} partitions waited for after {waited:?}")]
    NotOwned {
        /// Partitions owned and restored.
        owned: usize,
        /// Partitions waited for.
        wanted: usize,
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// An operator action named an instance the changelog does not hold.
    #[error("no instance {instance} of saga {saga} in the changelog")]
    NoInstance {
        /// Saga name.
        saga: String,
        /// Instance id.
        instance: String,
    },
    /// An operator action needs a faulted instance (retry: one faulted by an event).
    #[error("instance {instance} of saga {saga} is {status}: {what}")]
    NotFaulted {
        /// Saga name.
        saga: String,
        /// Instance id.
        instance: String,
        /// Its status.
        status: String,
        /// What the action needs.
        what: &'static str,
    },
    /// Waiting for saga instances to end took longer than allowed.
    #[error("{ended} of {total} saga instances ended within {waited:?}")]
    Deadline {
        /// Instances that ended.
        ended: usize,
        /// Instances waited for.
        total: usize,
        /// How long it waited.
        waited: std::time::Duration,
    },
}

/// Locating, starting or stopping a nats-server process failed.
#[derive(Debug, Error)]
pub enum ServerError {
    /// No usable nats-server binary was found.
    #[error("no nats-server >= 2.12 found ({0}); run scripts/install-nats-server, or set CHOREO_NATS_SERVER to a nats-server binary")]
    NotFound(String),
    /// The binary is older than supported.
    #[error("{path} is nats-server {version}, older than the required 2.12 (it silently ignores multi-filter consumers); run scripts/install-nats-server or set CHOREO_NATS_SERVER")]
    TooOld {
        /// The binary.
        path: String,
        /// The version it reports.
        version: String,
    },
    /// An I/O error while managing the process or its directories.
    #[error("nats-server {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not become ready in time.
    #[error(
        "nats-server did not accept connections on port {port} within {secs} s; its log: {log}"
    )]
    NotReady {
        /// The port.
        port: u16,
        /// Seconds waited.
        secs: u64,
        /// Tail of the server's output.
        log: String,
    },
    /// The server exited while starting; `cause` is the line of its log that says why.
    #[error("nats-server could not start on port {port}: {cause}")]
    Exited {
        /// The port.
        port: u16,
        /// Its last fatal or error line.
        cause: String,
    },
    /// The server has no running process (it was killed or stopped).
    #[error("nats-server on port {port} is not running")]
    NotRunning {
        /// The port.
        port: u16,
    },
    /// A cluster has no server with this index.
    #[error("the cluster has no server {index} (it has {len})")]
    NoSuchServer {
        /// The index asked for.
        index: usize,
        /// Number of servers in the cluster.
        len: usize,
    },
    /// A cluster did not become usable (JetStream meta leader, replicated streams) in time.
    #[error("nats-server cluster of {servers} did not become ready within {secs} s: {reason}; logs: {log}")]
    ClusterNotReady {
        /// Number of servers in the cluster.
        servers: usize,
        /// Seconds waited.
        secs: u64,
        /// The last failure seen.
        reason: String,
        /// Tail of the servers' output.
        log: String,
    },
}
