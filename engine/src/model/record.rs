//! What the changelog and the store keep per saga instance. Owned by the framework: always
//! decodable, while the saga's own `state` bytes inside may need an upcaster.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{PendingEffect, PendingUndo, Wait};

/// Where a saga instance is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Started, not finished.
    Running,
    /// Failed or timed out; its compensations are sent and it waits until every one is
    /// confirmed and every command it issued is answered or expired.
    Compensating,
    /// Ended by `complete()`.
    Completed,
    /// Failed or timed out, and every effect it caused is undone: its compensations were
    /// emitted in reverse order and confirmed, and no command it issued is unanswered.
    Compensated,
    /// Cannot continue (undecodable state, handler errors past the retry limit); the input that
    /// faulted it is in the DLQ.
    Faulted,
}

impl SagaStatus {
    /// Completed, Compensated or Faulted.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Running | Self::Compensating)
    }

    /// No longer running its handler (Compensating or terminal).
    pub fn has_ended(self) -> bool {
        !matches!(self, Self::Running)
    }

    /// Lower-case name (`running`, `compensating`, `completed`, `compensated`, `faulted`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Faulted => "faulted",
        }
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SagaStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "running" => Ok(Self::Running),
            "compensating" => Ok(Self::Compensating),
            "completed" => Ok(Self::Completed),
            "compensated" => Ok(Self::Compensated),
            "faulted" => Ok(Self::Faulted),
            other => Err(format!(
                "unknown status {other:?} (running, compensating, completed, compensated, faulted)"
            )),
        }
    }
}

/// A command that undoes a completed step, pushed by the saga and emitted on failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compensation {
    /// Event type of the compensating command.
    pub ty: String,
    /// Its msgpack data.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Answer types by which its service confirms it (empty: done once published).
    #[serde(default)]
    pub confirmed_by: Vec<String>,
}

/// The input that faulted an instance, and what the fault cleared, so `choreo sagas retry` can
/// apply it again to the instance as it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultedBy {
    /// Stream sequence of the faulting event.
    pub seq: u64,
    /// The instance's watermark before it.
    pub watermark: u64,
    /// Its timers before it (a fault clears them).
    #[serde(default)]
    pub timers: BTreeMap<String, i64>,
    /// Its waits before it.
    #[serde(default)]
    pub waits: Vec<Wait>,
}

/// How many applied input ids a record keeps to recognise copies of its inputs.
pub const RECENT_INPUTS: usize = 64;

/// The stored record of one saga instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Saga name.
    pub saga: String,
    /// Instance id.
    pub instance: String,
    /// Correlation of the instance (from its first input).
    pub correlation: String,
    /// Status.
    pub status: SagaStatus,
    /// Schema version of `state`.
    pub state_version: u32,
    /// The saga's state, msgpack.
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
    /// Compensation stack, oldest first.
    pub compensations: Vec<Compensation>,
    /// Commands issued whose outcome is not known yet (or that expired unexecuted).
    #[serde(default)]
    pub effects: Vec<PendingEffect>,
    /// Compensations sent and not yet confirmed.
    #[serde(default)]
    pub undoing: Vec<PendingUndo>,
    /// Pending timers: name → due time (Unix ms).
    pub timers: BTreeMap<String, i64>,
    /// What the instance declared it awaits (see [`Wait`]).
    pub waits: Vec<Wait>,
    /// Stream sequence of the last applied input: inputs at or below it are skipped.
    pub watermark: u64,
    /// Ids of the last [`RECENT_INPUTS`] events applied, oldest first: a copy of one of them
    /// stored later under another message id (past the watermark) is skipped too.
    #[serde(default)]
    pub recent_inputs: Vec<choreo_schemas::EventId>,
    /// Inputs applied (events and timers).
    pub applied: u64,
    /// Why it failed or faulted.
    pub reason: Option<String>,
    /// The event that faulted it (none when a timer did, or it is not faulted).
    #[serde(default)]
    pub faulted_by: Option<FaultedBy>,
    /// Id, depth and trace of the last applied event: timer firings are caused by it.
    pub last_event: String,
    /// Depth of the last applied event.
    pub last_depth: u32,
    /// W3C traceparent of the last applied event.
    pub last_trace: Option<String>,
    /// Created (Unix ms, from the first input's time).
    pub created_ms: i64,
    /// Last change (Unix ms, from the input's time).
    pub updated_ms: i64,
    /// The partition the instance lives in (of its correlation).
    #[serde(default)]
    pub partition: u16,
    /// Number of the partition commit that wrote this record.
    #[serde(default)]
    pub commit: u64,
    /// Epoch of the owner that wrote it (the fence it committed under).
    #[serde(default)]
    pub epoch: u64,
    /// Node id of the owner that wrote it.
    #[serde(default)]
    pub owner: String,
    /// Events this record's commit decided, in order: published after the commit. A new owner
    /// re-publishes those of the partition's last commit (their ids deduplicate).
    #[serde(default)]
    pub outbox: Vec<PendingEvent>,
}

impl InstanceRecord {
    /// Whether event `id` was applied to this instance (among its last [`RECENT_INPUTS`]).
    pub fn has_applied(&self, id: &choreo_schemas::EventId) -> bool {
        self.recent_inputs.contains(id)
    }

    /// Remember that event `id` was applied (keeping the last [`RECENT_INPUTS`]).
    pub(crate) fn remember_input(&mut self, id: choreo_schemas::EventId) {
        if self.recent_inputs.len() >= RECENT_INPUTS {
            let excess = self.recent_inputs.len() + 1 - RECENT_INPUTS;
            self.recent_inputs.drain(..excess);
        }
        self.recent_inputs.push(id);
    }
}

/// An event decided by a saga and not yet known to be on the log: its CloudEvents headers and
/// data, as stored in the changelog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvent {
    /// `ce-*` headers (binary content mode).
    pub headers: Vec<(String, String)>,
    /// The data.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl PendingEvent {
    /// The stored form of an event.
    pub fn of(event: &choreo_schemas::Event) -> Self {
        Self {
            headers: choreo_schemas::headers::to_headers(event)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            data: event.data.clone(),
        }
    }

    /// The event back.
    pub fn event(&self) -> Result<choreo_schemas::Event, choreo_schemas::EnvelopeError> {
        choreo_schemas::headers::from_headers(
            self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &self.data,
        )
    }
}
