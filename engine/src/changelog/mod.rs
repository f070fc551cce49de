//! The saga state changelog, `<NS>_STATE`: one subject per instance
//! (`<ns>.state.<p>.<saga>.<instance>`) and one head per partition (`<ns>.state.<p>.head`),
//! one message kept per subject. It is the durable truth of every saga instance; a node's sled
//! store only materialises the partitions it owns.
//!
//! A commit is one JetStream atomic batch: the records the commit changed, then the partition's
//! new head, carrying `Nats-Expected-Last-Subject-Sequence` = the head sequence the committer
//! last saw. Another owner's head in between fails the whole batch: that is the fence. The head
//! goes last so that any replica holding a head holds its commit's records: a snapshot read
//! from one replica is consistent up to its head, and the fence tells whether it is current.
//! Nothing here decides who owns what (see `cluster`).

mod commit;
mod read;

use std::time::Duration;

use thiserror::Error;

use crate::bus::Bus;
use crate::error::BusError;

pub(crate) use commit::MAX_RECORDS_PER_COMMIT;
pub use read::{ChangelogEntry, Snapshot};

/// A changelog operation failed.
#[derive(Debug, Error)]
pub enum ChangelogError {
    /// Another owner wrote the partition's head since this committer last saw it.
    #[error("partition {partition} was committed by another owner (expected head sequence {expected}): fenced")]
    Fenced {
        /// The partition.
        partition: u16,
        /// The head sequence the committer expected.
        expected: u64,
    },
    /// JetStream did not answer or refused for another reason: the commit may or may not be
    /// stored (read the head to know).
    #[error("changelog commit of partition {partition} is unknown: {reason}")]
    Unknown {
        /// The partition.
        partition: u16,
        /// Why.
        reason: String,
    },
    /// A stored value does not decode.
    #[error("changelog value at {subject} does not decode: {reason}")]
    Corrupt {
        /// Its subject.
        subject: String,
        /// Why.
        reason: String,
    },
    /// A value does not encode.
    #[error("changelog value does not encode: {0}")]
    Encode(String),
    /// Reading failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// A handle on the changelog stream. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Changelog {
    bus: Bus,
    stream: String,
    root: String,
    timeout: Duration,
    /// How long the record of an ended instance is kept (per-message TTL); `None`: forever.
    ended_ttl: Option<Duration>,
    /// Test-only: commit without the head's expected sequence (see
    /// `NodeBuilder::ignore_fencing_for_tests`).
    unfenced: bool,
}

impl Changelog {
    /// The changelog of the bus's namespace.
    pub fn new(bus: &Bus) -> Self {
        Self {
            stream: bus.config().state_stream(),
            root: bus.subjects().root().to_owned(),
            timeout: bus.config().request_timeout,
            ended_ttl: None,
            unfenced: false,
            bus: bus.clone(),
        }
    }

    /// **Test-only**: commits no longer check the partition's head, so a fenced owner's
    /// commit lands (what the chaos suite's fencing invariant must catch).
    #[doc(hidden)]
    pub fn unfenced_for_tests(mut self, on: bool) -> Self {
        self.unfenced = on;
        self
    }

    /// Keep the record of an ended instance `retention` after its last change, then let
    /// JetStream delete it (`Nats-TTL`); zero keeps it forever.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.ended_ttl = (!retention.is_zero()).then_some(retention);
        self
    }

    /// The stream's name (`CHOREO_STATE`).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub(crate) fn head_subject(&self, partition: u16) -> String {
        format!("{}.state.{partition}.head", self.root)
    }

    pub(crate) fn instance_subject(&self, partition: u16, saga: &str, instance: &str) -> String {
        format!("{}.state.{partition}.{saga}.{instance}", self.root)
    }
}
