//! The stall watchdog's pure check: which waits of an instance are stalled now, and why.
//!
//! A wait of a running instance is **stalled** when it is not reported yet and either
//! - its deadline passed and the instance has no pending timer (no timeout handler will act):
//!   [`StallKind::DeadlinePassed`]; or
//! - none of its types is external, and for at least `grace` no live node has hosted an actor
//!   that emits any of them (the registry holds only live nodes): [`StallKind::NoLiveProducer`].
//!   The absence is measured from when the last producer left the registry (or the registry
//!   was first read), not from the wait, so a restart shorter than the grace reports nothing.
//!
//! Each stalled wait is reported once: the report is an input of the instance that marks the
//! wait (see `saga::operator`), so a new owner does not report it again.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::deadlock::InstanceView;
use super::topology::Topology;
use crate::cluster::NodeId;
use crate::model::{SagaStatus, StallKind};

/// A possible producer of an awaited type and where it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producer {
    /// Actor name.
    pub actor: String,
    /// Nodes whose registry entry lists it.
    pub nodes: Vec<String>,
    /// Those of them that are live members.
    pub live: Vec<String>,
}

/// One stalled wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StalledWait {
    /// Index of the wait in the instance's record.
    pub(crate) wait: usize,
    /// Why.
    pub(crate) kind: StallKind,
    /// Who could produce what it awaits.
    pub(crate) producers: Vec<Producer>,
}

/// The possible producers of `types`, with their live nodes.
pub(crate) fn producers_of(
    types: &[String],
    topo: &Topology,
    live: &BTreeSet<NodeId>,
) -> Vec<Producer> {
    let mut out: Vec<Producer> = Vec::new();
    for t in types {
        for a in topo.producers(t) {
            if out.iter().any(|p| p.actor == a.decl.name) {
                continue;
            }
            out.push(Producer {
                actor: a.decl.name.clone(),
                nodes: a.nodes.iter().map(|n| n.to_string()).collect(),
                live: a
                    .nodes
                    .iter()
                    .filter(|n| live.contains(*n))
                    .map(|n| n.to_string())
                    .collect(),
            });
        }
    }
    out
}

/// The waits of `v` that are stalled at `now_ms`. `absent_ms(t)`: how long no live node has
/// hosted a producer of `t`. `deadlines`: whether passed deadlines count now (not while the
/// answer may still be in the processor's backlog).
pub(crate) fn stalled_waits(
    v: &InstanceView,
    topo: &Topology,
    live: &BTreeSet<NodeId>,
    now_ms: i64,
    grace_ms: i64,
    deadlines: bool,
    absent_ms: &dyn Fn(&str) -> i64,
) -> Vec<StalledWait> {
    if v.status != SagaStatus::Running {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, w) in v.waits.iter().enumerate() {
        if w.stalled.is_some() {
            continue;
        }
        // The cheap tests first: this runs every second over every open wait.
        let passed = deadlines && w.deadline_ms.is_some_and(|d| d < now_ms) && !v.timers;
        let missing = !w.types.iter().any(|t| topo.is_external(t))
            && w.types.iter().all(|t| absent_ms(t) >= grace_ms);
        let kind = if passed {
            StallKind::DeadlinePassed
        } else if missing {
            StallKind::NoLiveProducer
        } else {
            continue;
        };
        out.push(StalledWait {
            wait: i,
            kind,
            producers: producers_of(&w.types, topo, live),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordination::topology::{ActorDecl, ActorKind, NodeTopology};
    use crate::model::Wait;

    fn wait(ty: &str, since_ms: i64, deadline_ms: Option<i64>) -> Wait {
        Wait {
            types: vec![ty.into()],
            since_seq: 1,
            since_ms,
            deadline_ms,
            stalled: None,
        }
    }

    fn view(waits: Vec<Wait>, timers: bool) -> InstanceView {
        InstanceView {
            saga: "s".into(),
            instance: "i".into(),
            status: SagaStatus::Running,
            waits,
            timers,
            watermark: 1,
        }
    }

    fn topo(producer_on: &str) -> Topology {
        Topology::from_nodes([&NodeTopology::new(
            NodeId::new(producer_on).expect("id"),
            vec![ActorDecl {
                name: "r".into(),
                kind: ActorKind::Reactor,
                consumes: ["cmd".to_string()].into(),
                starts: BTreeSet::new(),
                emits: ["done".to_string()].into(),
            }],
            ["human".to_string()].into(),
        )])
    }

    /// No producer has been missing.
    fn present(_: &str) -> i64 {
        0
    }

    #[test]
    fn deadline_passed_unless_a_timer_will_handle_it() {
        let t = topo("n1");
        let live: BTreeSet<NodeId> = [NodeId::new("n1").expect("id")].into();
        let v = view(vec![wait("done", 0, Some(100))], false);
        assert!(stalled_waits(&v, &t, &live, 100, 10_000, true, &present).is_empty());
        let s = stalled_waits(&v, &t, &live, 101, 10_000, true, &present);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].kind, StallKind::DeadlinePassed);
        assert_eq!(s[0].producers[0].live, ["n1"]);
        // Not while the answer may still be in the backlog.
        assert!(stalled_waits(&v, &t, &live, 101, 10_000, false, &present).is_empty());
        let with_timer = view(v.waits.clone(), true);
        assert!(stalled_waits(&with_timer, &t, &live, 101, 10_000, true, &present).is_empty());
        let mut reported = v.clone();
        reported.waits[0].stalled = Some(StallKind::DeadlinePassed);
        assert!(stalled_waits(&reported, &t, &live, 101, 10_000, true, &present).is_empty());
    }

    #[test]
    fn no_live_producer_once_missing_for_the_grace_and_never_for_external_types() {
        let t = topo("n1");
        let none: BTreeSet<NodeId> = BTreeSet::new();
        let missing = |ms: i64| move |_: &str| ms;
        let v = view(vec![wait("done", 0, None)], true);
        assert!(stalled_waits(&v, &t, &none, 5000, 1000, true, &missing(999)).is_empty());
        let s = stalled_waits(&v, &t, &none, 5000, 1000, true, &missing(1000));
        assert_eq!(s[0].kind, StallKind::NoLiveProducer);
        assert_eq!(s[0].producers[0].nodes, ["n1"]);
        // A wait declared long ago whose producer just left: not yet.
        assert!(stalled_waits(&v, &t, &none, 999_999, 1000, true, &missing(10)).is_empty());
        let human = view(vec![wait("human", 0, None)], false);
        assert!(stalled_waits(&human, &t, &none, 5000, 1000, true, &missing(9999)).is_empty());
        assert!(stalled_waits(&v, &t, &none, 5000, 1000, true, &present).is_empty());
    }
}
