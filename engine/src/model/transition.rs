//! What one applied input changes, and a pending timer as indexed.

use choreo_schemas::Event;
use serde::{Deserialize, Serialize};

use super::InstanceRecord;

/// A timer by (name, due Unix ms).
pub(crate) type TimerChange = (String, i64);

/// What one input does to one instance: the new record, the events it decided and its timer
/// changes. Committed with the rest of its batch.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Transition {
    pub(crate) record: InstanceRecord,
    pub(crate) outbox: Vec<Event>,
    /// Timers to delete.
    pub(crate) timers_removed: Vec<TimerChange>,
    /// Timers to insert.
    pub(crate) timers_added: Vec<TimerChange>,
}

/// A pending timer as indexed by the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerEntry {
    /// Saga name.
    pub saga: String,
    /// Instance id.
    pub instance: String,
    /// Correlation of the instance.
    pub correlation: String,
    /// Partition of the instance.
    #[serde(default)]
    pub partition: u16,
    /// Timer name.
    pub name: String,
    /// Due (Unix ms).
    pub due_ms: i64,
}
