//! Deadlock detection over one correlation: pure, from the instances' records, the topology and
//! the types of the correlation's inputs in flight.
//!
//! Definitions (ARCHITECTURE.md, "Coordination"):
//! - an instance is **waiting** when it is running, has at least one wait and no pending timer;
//!   it is **active** when it can act without any awaited event: running with no wait, or with
//!   a pending timer, or compensating. Ended instances produce nothing.
//! - a type is **live** when it can still appear: it is external, or in flight, or emitted by
//!   an active instance, or (transitively) emitted by a reactor consuming a live type, by a
//!   waiting instance one of whose awaited types is live, or by a saga with no instance in the
//!   correlation whose start type is live.
//! - **stuck**: waiting, and none of its awaited types is live.
//! - a **deadlock** is a non-trivial strongly connected set K of stuck instances in the graph
//!   "i awaits a type that j's saga can produce (directly or through reactors)", that is
//!   closed: every awaited type of every member has at least one possible producer, and every
//!   possible producer (an unended instance of the correlation, or a saga with no instance in
//!   it) is a member of K. Anything else stuck is a stall (see `stall`), never a deadlock.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::topology::Topology;
use crate::model::{InstanceRecord, SagaStatus, Wait};

/// The most instances of one correlation the detector examines; past it, it does not decide
/// (no false positive) and says so in a debug log.
pub const MAX_INSTANCES_CHECKED: usize = 256;

/// What the detector needs of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceView {
    /// Saga name.
    pub saga: String,
    /// Instance id.
    pub instance: String,
    /// Status.
    pub status: SagaStatus,
    /// Its waits.
    pub waits: Vec<Wait>,
    /// Whether something will wake it without an awaited event: a pending timer, or a command
    /// it issued whose outcome is unknown (the runtime settles every effect: an answer, an
    /// expiry or a dead-letter notice, or its settle timer).
    pub timers: bool,
    /// Its watermark (the breaker fails it only if it has not moved since).
    pub watermark: u64,
}

impl InstanceView {
    /// The view of a stored record.
    pub fn of(r: &InstanceRecord) -> Self {
        Self {
            saga: r.saga.clone(),
            instance: r.instance.clone(),
            status: r.status,
            waits: r.waits.clone(),
            timers: !r.timers.is_empty()
                || r.effects
                    .iter()
                    .any(|e| e.state == crate::model::EffectState::Pending),
            watermark: r.watermark,
        }
    }

    fn waiting(&self) -> bool {
        self.status == SagaStatus::Running && !self.timers && !self.waits.is_empty()
    }

    /// It may emit without an awaited event: compensating, running and not waiting, or
    /// faulted (an operator's retry or compensation may run it again).
    fn active(&self) -> bool {
        matches!(self.status, SagaStatus::Compensating | SagaStatus::Faulted)
            || (self.status == SagaStatus::Running && !self.waiting())
    }

    fn awaited(&self) -> impl Iterator<Item = &String> {
        self.waits.iter().flat_map(|w| w.types.iter())
    }

    /// Sequence of its youngest wait.
    fn youngest_wait(&self) -> u64 {
        self.waits.iter().map(|w| w.since_seq).max().unwrap_or(0)
    }
}

/// One member of a deadlock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleMember {
    /// Saga name.
    pub saga: String,
    /// Instance id.
    pub instance: String,
    /// The types it awaits.
    pub awaits: Vec<String>,
    /// The actors that emit them directly (sagas of other members, reactors between).
    pub producers: Vec<String>,
    /// Sequence of its youngest wait.
    pub since_seq: u64,
    /// Its watermark when the cycle was found.
    pub watermark: u64,
}

/// A deadlock: its members, ordered by saga and instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cycle {
    /// The members.
    pub members: Vec<CycleMember>,
}

impl Cycle {
    /// The member to fail: the one with the youngest wait (the highest sequence), ties broken
    /// by the greatest (saga, instance). Deterministic, so any owner picks the same.
    pub fn victim(&self) -> Option<&CycleMember> {
        self.members.iter().max_by(|a, b| {
            (a.since_seq, &a.saga, &a.instance).cmp(&(b.since_seq, &b.saga, &b.instance))
        })
    }

    /// `saga/instance awaits T (from P) -> ...`, one line.
    pub fn describe(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "{}/{} awaits {} (from {})",
                    m.saga,
                    m.instance,
                    m.awaits.join(" | "),
                    m.producers.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Which instances could be woken, given `in_flight` (the types of the correlation's inputs
/// still to be consumed somewhere). Returns the indexes of the stuck instances.
fn stuck(views: &[InstanceView], topo: &Topology, in_flight: &BTreeSet<String>) -> Vec<usize> {
    let present: BTreeSet<&str> = views.iter().map(|v| v.saga.as_str()).collect();
    let mut live: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = Vec::new();
    let add = |t: &String, live: &mut BTreeSet<String>, todo: &mut Vec<String>| {
        if live.insert(t.clone()) {
            todo.push(t.clone());
        }
    };
    // External types may come at any time: live, and so is everything they lead to. So may a
    // reactor input no actor emits (a producer outside the registry feeds it).
    for t in in_flight
        .iter()
        .chain(topo.external())
        .chain(topo.unproduced_reactor_inputs())
    {
        add(t, &mut live, &mut todo);
    }
    for v in views {
        if v.active() {
            if let Some(a) = topo.actor(&v.saga) {
                for t in &a.decl.emits {
                    add(t, &mut live, &mut todo);
                }
            }
        }
    }
    let mut woken = vec![false; views.len()];
    let mut started: BTreeSet<&str> = BTreeSet::new();
    while let Some(u) = todo.pop() {
        let mut emits: Vec<String> = Vec::new();
        for r in topo.reactors_consuming(&u) {
            emits.extend(r.decl.emits.iter().cloned());
        }
        for (i, v) in views.iter().enumerate() {
            if !woken[i] && v.waiting() && v.awaited().any(|t| *t == u) {
                woken[i] = true;
                if let Some(a) = topo.actor(&v.saga) {
                    emits.extend(a.decl.emits.iter().cloned());
                }
            }
        }
        for a in topo.actors() {
            let name = a.decl.name.as_str();
            if a.decl.starts.contains(&u) && !present.contains(name) && started.insert(name) {
                emits.extend(a.decl.emits.iter().cloned());
            }
        }
        for t in &emits {
            add(t, &mut live, &mut todo);
        }
    }
    (0..views.len())
        .filter(|&i| views[i].waiting() && !woken[i])
        .collect()
}

/// The deadlocks of one correlation (usually none). `views` are all its instances, ended ones
/// included (they tell which sagas already have an instance here).
pub fn find_deadlocks(
    views: &[InstanceView],
    topo: &Topology,
    in_flight: &BTreeSet<String>,
) -> Vec<Cycle> {
    if views.len() > MAX_INSTANCES_CHECKED {
        return Vec::new();
    }
    let stuck = stuck(views, topo, in_flight);
    if stuck.is_empty() {
        return Vec::new();
    }
    let present: BTreeSet<&str> = views.iter().map(|v| v.saga.as_str()).collect();
    // Sagas with no instance here that could produce a type: possible producers outside any
    // cycle.
    let dormant: Vec<&BTreeSet<String>> = topo
        .actors()
        .filter(|a| {
            a.decl.kind == super::ActorKind::Saga && !present.contains(a.decl.name.as_str())
        })
        .filter_map(|a| topo.reach_of(&a.decl.name))
        .collect();
    let dormant_can = |t: &str| dormant.iter().any(|r| r.contains(t));
    let can_produce =
        |j: usize, t: &str| topo.reach_of(&views[j].saga).is_some_and(|r| r.contains(t));
    // Edges among the stuck.
    let n = stuck.len();
    let mut edge = vec![vec![false; n]; n];
    for (a, &i) in stuck.iter().enumerate() {
        for (b, &j) in stuck.iter().enumerate() {
            edge[a][b] = views[i].awaited().any(|t| can_produce(j, t));
        }
    }
    // Transitive closure (n is small: the stuck instances of one correlation).
    let mut path = edge;
    for k in 0..n {
        let via = path[k].clone();
        for row in path.iter_mut() {
            if row[k] {
                for (cell, &through) in row.iter_mut().zip(&via) {
                    *cell |= through;
                }
            }
        }
    }
    let mut seen = vec![false; n];
    let mut out = Vec::new();
    for a in 0..n {
        if seen[a] || !path[a][a] {
            continue;
        }
        let comp: Vec<usize> = (0..n).filter(|&b| path[a][b] && path[b][a]).collect();
        for &b in &comp {
            seen[b] = true;
        }
        let members: BTreeSet<usize> = comp.iter().map(|&b| stuck[b]).collect();
        let closed = members.iter().all(|&i| {
            views[i].awaited().all(|t| {
                let producers: Vec<usize> = (0..views.len())
                    .filter(|&j| {
                        (views[j].status == SagaStatus::Faulted || !views[j].status.is_terminal())
                            && can_produce(j, t)
                    })
                    .collect();
                !producers.is_empty()
                    && producers.iter().all(|j| members.contains(j))
                    && !dormant_can(t)
            })
        });
        if closed {
            out.push(cycle(views, topo, &members));
        }
    }
    out
}

fn cycle(views: &[InstanceView], topo: &Topology, members: &BTreeSet<usize>) -> Cycle {
    let mut ms: Vec<CycleMember> = members
        .iter()
        .map(|&i| {
            let v = &views[i];
            let awaits: BTreeSet<String> = v.awaited().cloned().collect();
            let producers: BTreeSet<String> = awaits
                .iter()
                .flat_map(|t| topo.producers(t).map(|a| a.decl.name.clone()))
                .collect();
            CycleMember {
                saga: v.saga.clone(),
                instance: v.instance.clone(),
                awaits: awaits.into_iter().collect(),
                producers: producers.into_iter().collect(),
                since_seq: v.youngest_wait(),
                watermark: v.watermark,
            }
        })
        .collect();
    ms.sort_by(|a, b| (&a.saga, &a.instance).cmp(&(&b.saga, &b.instance)));
    Cycle { members: ms }
}

#[cfg(test)]
#[path = "deadlock_tests.rs"]
mod tests;
