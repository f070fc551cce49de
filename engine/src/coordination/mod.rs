//! Coordination correctness: deadlocks among the waiting instances of a correlation, and waits
//! that stall. The cores ([`deadlock`], [`stall`]) are pure; the [`registry`] publishes and
//! watches what every node hosts; the partition processor runs both checks (it owns every
//! instance of its correlations) and puts what it finds on the log as events, which the same
//! processor then applies like any input: fenced, in log order, seen by replay.

pub(crate) mod deadlock;
pub(crate) mod registry;
pub(crate) mod stall;
mod topology;

use choreo_schemas::{CorrelationId, Event, EventId, EventType};
use serde::{Deserialize, Serialize};

pub use deadlock::{find_deadlocks, Cycle, CycleMember, InstanceView, MAX_INSTANCES_CHECKED};
pub use registry::{read_topology, TOPOLOGY_BUCKET, TOPOLOGY_TTL};
pub use stall::Producer;
pub use topology::{ActorDecl, ActorKind, HostedActor, NodeTopology, Topology};

use crate::model::{InstanceRecord, StallKind};

/// Event type: a deadlock was found; its data ([`DeadlockDetected`]) names the cycle and the
/// victim, which the partition's owner fails (compensates) when it applies the event.
pub const DEADLOCK_DETECTED: &str = "choreo.deadlock.detected";
/// Event type: a wait stalled ([`StallDetected`]); applying it marks the wait reported.
pub const STALL_DETECTED: &str = "choreo.stall.detected";
/// The documented rule that picks a deadlock's victim.
pub const VICTIM_RULE: &str = "youngest wait";

/// The data of `choreo.deadlock.detected`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadlockDetected {
    /// The cycle.
    pub cycle: Cycle,
    /// The member failed to break it.
    pub victim: CycleMember,
    /// How the victim was chosen ([`VICTIM_RULE`]).
    pub rule: String,
    /// The node that found it.
    pub detected_by: String,
}

/// The data of `choreo.stall.detected`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallDetected {
    /// Saga name.
    pub saga: String,
    /// Instance id.
    pub instance: String,
    /// The wait's types.
    pub awaits: Vec<String>,
    /// The wait's `since_seq` (identifies it with `awaits`).
    pub since_seq: u64,
    /// Its deadline, if any (Unix ms).
    pub deadline_ms: Option<i64>,
    /// Why it stalled.
    pub kind: StallKind,
    /// Who could produce what it awaits, and on which live nodes.
    pub producers: Vec<Producer>,
    /// The node that found it.
    pub detected_by: String,
}

/// Whether `ty` is one of the two coordination types (inputs of every saga).
pub(crate) fn coordination_types() -> impl Iterator<Item = EventType> {
    [DEADLOCK_DETECTED, STALL_DETECTED]
        .into_iter()
        .filter_map(|t| EventType::new(t).ok())
}

/// A coordination event on `record`'s correlation, caused by its last applied event, with an id
/// derived from `key` (a re-detection after a failover gets the same id: JetStream drops it).
fn event_for<T: Serialize>(
    record: &InstanceRecord,
    ty: &str,
    key: &str,
    data: &T,
    max_depth: u32,
) -> Option<Event> {
    let correlation = CorrelationId::new(record.correlation.as_str()).ok()?;
    let ty = EventType::new(ty).ok()?;
    let data = rmp_serde::to_vec_named(data).ok()?;
    let mut e = Event::root_raw("/choreo/coordination", correlation, ty, data);
    e.id = EventId::derive(key);
    if let Ok(cause) = record.last_event.parse::<EventId>() {
        e.causation = cause;
        // Never deeper than the limit: a report must be applied, not dead-lettered.
        e.depth = record.last_depth.saturating_add(1).min(max_depth);
    }
    Some(e)
}

impl DeadlockDetected {
    /// The event, on the victim's correlation, caused by the victim's last input.
    pub(crate) fn event(&self, victim: &InstanceRecord, max_depth: u32) -> Option<Event> {
        let key = format!(
            "deadlock/{}/{}",
            victim.correlation,
            self.cycle
                .members
                .iter()
                .map(|m| format!("{}/{}@{}", m.saga, m.instance, m.watermark))
                .collect::<Vec<_>>()
                .join(",")
        );
        event_for(victim, DEADLOCK_DETECTED, &key, self, max_depth)
    }

    /// The failure reason the victim gets.
    pub fn reason(&self) -> String {
        format!(
            "deadlock ({} of {} member(s), rule: {}): {}",
            if self.cycle.members.len() == 1 {
                "it is the only one"
            } else {
                "victim"
            },
            self.cycle.members.len(),
            self.rule,
            self.cycle.describe()
        )
    }
}

impl StallDetected {
    /// The event, on the instance's correlation.
    pub(crate) fn event(&self, record: &InstanceRecord, max_depth: u32) -> Option<Event> {
        let key = format!(
            "stall/{}/{}/{}/{}/{}",
            self.saga,
            self.instance,
            self.since_seq,
            self.awaits.join("|"),
            self.kind
        );
        event_for(record, STALL_DETECTED, &key, self, max_depth)
    }
}

/// The coordination event an input is, decoded: the processor routes and applies these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Coordination {
    Deadlock(DeadlockDetected),
    Stall(StallDetected),
}

impl Coordination {
    /// Decode an event of one of the two types (`None`: another type, or data that does not
    /// decode, which then changes nothing).
    pub(crate) fn of(event: &Event) -> Option<Self> {
        match event.ty.as_str() {
            DEADLOCK_DETECTED => rmp_serde::from_slice(&event.data).ok().map(Self::Deadlock),
            STALL_DETECTED => rmp_serde::from_slice(&event.data).ok().map(Self::Stall),
            _ => None,
        }
    }

    /// The saga and instance it is for.
    pub(crate) fn target(&self) -> (&str, &str) {
        match self {
            Self::Deadlock(d) => (&d.victim.saga, &d.victim.instance),
            Self::Stall(s) => (&s.saga, &s.instance),
        }
    }
}
