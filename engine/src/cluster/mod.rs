//! Membership and partition ownership on NATS KV. Nodes heartbeat keys in a members bucket
//! (expiring after the lease TTL); every node computes the same assignment of partitions over
//! the live members ([`assignment`]) and claims its partitions with leases in a leases bucket:
//! created only if absent, renewed by compare-and-set on the revision, expiring after the TTL
//! when not renewed. The creating revision is the owner's epoch.
//!
//! This module decides who *should* own what and tells a [`PartitionHost`] to start or stop a
//! partition; it knows nothing of processors or sagas. Exclusivity does not rest on it: every
//! commit is fenced in the changelog.

mod assignment;
mod driver;
mod plan;

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

pub(crate) use assignment::assigned_to;
pub use driver::read_leases;
pub(crate) use driver::Ownership;

/// Bucket (suffix) of the members' heartbeats.
pub const MEMBERS_BUCKET: &str = "MEMBERS";
/// Bucket (suffix) of the partition leases.
pub const LEASES_BUCKET: &str = "LEASES";
/// Default lease TTL.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// A node's identity in the cluster (a KV key and a subject token).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// A node id: 1 to 64 characters of `[A-Za-z0-9_-]`.
    pub fn new(id: impl Into<String>) -> Result<Self, ConfigError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(id))
        } else {
            Err(ConfigError::new(format!(
                "node id {id:?} must be 1 to 64 characters of [A-Za-z0-9_-]"
            )))
        }
    }

    /// A fresh random id (`node-<uuid v7>`).
    pub fn generate() -> Self {
        Self(format!("node-{}", uuid::Uuid::now_v7().simple()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for NodeId {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<NodeId> for String {
    fn from(n: NodeId) -> Self {
        n.0
    }
}

/// A lease's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The holder.
    pub owner: NodeId,
    /// Revision the lease was created with: the owner's epoch for the partition.
    pub epoch: u64,
}

/// A member's heartbeat value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node.
    pub node: NodeId,
    /// When it started (Unix ms).
    pub started_ms: i64,
}

/// What the ownership driver asks of the node.
pub(crate) trait PartitionHost: Send + Sync + 'static {
    /// Start the processor of a partition just acquired at `epoch` (returns at once; the
    /// takeover runs in the processor).
    fn start(&self, partition: u16, epoch: u64);
    /// Stop a partition's processor gracefully (finish the batch, commit) and wait for it.
    /// `forget`: drop its local state too (another node owns it next); a node that stops keeps
    /// it (it is rebuilt from the changelog at the next takeover anyway).
    fn stop(&self, partition: u16, forget: bool) -> BoxFuture<'_, ()>;
    /// Whether the partition's processor is still running.
    fn alive(&self, partition: u16) -> bool;
}
