//! The suite's errors: a run that could not be carried out (not an anomaly it found).

use crate::proxy::ProxyError;

/// Why a run could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A nats-server of the topology.
    #[error("nats-server: {0}")]
    Server(#[from] choreo::ServerError),
    /// The log.
    #[error("the log: {0}")]
    Bus(#[from] choreo::BusError),
    /// The changelog.
    #[error("the changelog: {0}")]
    Changelog(#[from] choreo::ChangelogError),
    /// A proxy.
    #[error("proxy: {0}")]
    Proxy(#[from] ProxyError),
    /// A NATS request of the suite's own (an injection, a watch).
    #[error("{what}: {reason}")]
    Nats {
        /// What was being done.
        what: String,
        /// What the server or client said.
        reason: String,
    },
    /// A file or a process.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Nodes or servers did not behave as a topology must (did not start, did not stop).
    #[error("topology: {0}")]
    Topology(String),
    /// The scenario is not valid.
    #[error("scenario: {0}")]
    Scenario(String),
}

impl ChaosError {
    pub(crate) fn nats(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Self::Nats {
            what: what.into(),
            reason: err.to_string(),
        }
    }

    pub(crate) fn io(what: String, source: std::io::Error) -> Self {
        Self::Io { what, source }
    }
}
