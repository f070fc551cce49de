//! Why a benchmark run failed.

use thiserror::Error;

/// A benchmark run failed (a workload that did not complete is an error, not a figure).
#[derive(Debug, Error)]
pub enum BenchError {
    /// Invalid options.
    #[error("bench options: {0}")]
    Options(String),
    /// The nats-server could not be started.
    #[error("nats-server: {0}")]
    Server(#[from] choreo::ServerError),
    /// Connecting or provisioning failed.
    #[error("bus: {0}")]
    Bus(#[from] choreo::BusError),
    /// A node did not start or stop.
    #[error("node: {0}")]
    Node(#[from] choreo::NodeError),
    /// The engine rejected the topology.
    #[error("config: {0}")]
    Config(#[from] choreo::ConfigError),
    /// Reading the saga state changelog failed.
    #[error("changelog: {0}")]
    Changelog(#[from] choreo::ChangelogError),
    /// Reading a node's saga store failed.
    #[error("store: {0}")]
    Store(#[from] choreo::StoreError),
    /// A JetStream call made by the harness itself failed.
    #[error("{what}: {reason}")]
    Nats {
        /// What the harness was doing.
        what: String,
        /// The client's error.
        reason: String,
    },
    /// A workload did not complete in time: the harness counts every message.
    #[error("{workload}: {got} of {expected} {what} after {secs} s")]
    Incomplete {
        /// The workload.
        workload: String,
        /// What was counted.
        what: String,
        /// Counted.
        got: u64,
        /// Expected.
        expected: u64,
        /// Seconds waited.
        secs: u64,
    },
    /// The peer could not run.
    #[error("peer {peer}: {reason}")]
    Peer {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A local I/O error (temp dir, report file).
    #[error("{what}: {source}")]
    Io {
        /// What.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Encoding a payload or the report failed.
    #[error("encode: {0}")]
    Encode(String),
}

impl BenchError {
    pub(crate) fn nats(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        Self::Nats {
            what: what.into(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<choreo::CodecError> for BenchError {
    fn from(e: choreo::CodecError) -> Self {
        Self::Encode(e.to_string())
    }
}
