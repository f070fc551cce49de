//! The head of a partition in the changelog: written first in every commit of the partition,
//! with the expected last sequence of its subject, so only one owner at a time can commit.

use serde::{Deserialize, Serialize};

/// The latest head of one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionHead {
    /// The partition.
    pub partition: u16,
    /// The owner's epoch: the revision of the lease it took the partition with.
    pub epoch: u64,
    /// The owning node's id.
    pub owner: String,
    /// Commits of the partition so far (a takeover head keeps the count of the last commit).
    pub commit: u64,
    /// Highest commit whose decided events are known to be on the log: a new owner
    /// re-publishes those of `commit` when this is lower.
    #[serde(default)]
    pub published: u64,
    /// Highest events-stream sequence of an input applied in the partition: a new owner
    /// consumes after it.
    pub applied_seq: u64,
    /// True for the head a new owner writes when it takes the partition over.
    pub takeover: bool,
    /// Wall-clock time of the write (Unix ms, informational).
    pub written_ms: i64,
}
