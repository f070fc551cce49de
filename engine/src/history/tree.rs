//! The causal tree of a correlation: every event under the event that caused it.

use std::collections::{BTreeMap, BTreeSet};

use choreo_schemas::EventId;

use super::History;

/// What a tree node stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// An event on the log.
    Event,
    /// A saga lifecycle decision (`choreo.saga.*`).
    SagaDecision,
    /// A `choreo.deadlock.detected` report: the cycle (one line) and the victim.
    Deadlock {
        /// Each member, what it awaits and from whom.
        cycle: String,
        /// `saga/instance` failed to break it.
        victim: String,
    },
    /// A `choreo.stall.detected` report.
    Stall {
        /// `saga/instance awaits T (why)`.
        detail: String,
    },
    /// A dead letter: `actor` gave up on its parent event.
    DeadLetter {
        /// The actor.
        actor: String,
        /// Reason code.
        reason: String,
    },
}

/// One node of a [`CausalTree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeNode {
    /// Event id (dead letters: the dead-lettered event's id).
    pub id: EventId,
    /// Stream sequence (events) or DLQ sequence (dead letters).
    pub sequence: u64,
    /// Event type.
    pub ty: String,
    /// Event source.
    pub source: String,
    /// Depth of the event.
    pub depth: u32,
    /// Kind.
    pub kind: NodeKind,
    /// Indices of the children in [`CausalTree::nodes`], in log order.
    pub children: Vec<usize>,
    /// Whether this is a redriven copy of an earlier event.
    pub redriven: bool,
}

/// Events arranged by causation. Roots are events that caused themselves or whose cause is not
/// in the history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CausalTree {
    /// All nodes, events in log order, then dead letters.
    pub nodes: Vec<TreeNode>,
    /// Indices of the roots.
    pub roots: Vec<usize>,
}

impl CausalTree {
    pub(crate) fn build(h: &History) -> Self {
        let mut nodes = Vec::new();
        let mut index: BTreeMap<EventId, usize> = BTreeMap::new();
        let mut roots = Vec::new();
        for e in &h.events {
            let i = nodes.len();
            let ev = &e.event;
            let parent = (!ev.is_root())
                .then(|| index.get(&ev.causation).copied())
                .flatten();
            nodes.push(TreeNode {
                id: ev.id,
                sequence: e.sequence,
                ty: ev.ty.to_string(),
                source: ev.source.clone(),
                depth: ev.depth,
                kind: kind_of(e),
                children: Vec::new(),
                redriven: e.redriven_from.is_some(),
            });
            // A redriven copy hangs under the original's cause, like the original.
            match parent {
                Some(p) => nodes[p].children.push(i),
                None => roots.push(i),
            }
            index.entry(ev.id).or_insert(i);
        }
        for l in &h.dead_letters {
            let Ok(ev) = &l.event else { continue };
            let i = nodes.len();
            nodes.push(TreeNode {
                id: ev.id,
                sequence: l.dlq_sequence,
                ty: ev.ty.to_string(),
                source: format!("dlq/{}", l.actor),
                depth: ev.depth,
                kind: NodeKind::DeadLetter {
                    actor: l.actor.clone(),
                    reason: l.reason.clone(),
                },
                children: Vec::new(),
                redriven: false,
            });
            match index.get(&ev.id) {
                Some(&p) => nodes[p].children.push(i),
                None => roots.push(i),
            }
        }
        Self { nodes, roots }
    }

    /// Every (parent, child) edge.
    pub fn edges(&self) -> Vec<(usize, usize)> {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(p, n)| n.children.iter().map(move |c| (p, *c)))
            .collect()
    }

    /// Whether every node is reachable from a root exactly once.
    pub fn is_well_formed(&self) -> bool {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = self.roots.clone();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                return false;
            }
            if let Some(n) = self.nodes.get(i) {
                stack.extend(&n.children);
            }
        }
        seen.len() == self.nodes.len()
    }
}

/// What a history entry is in the tree: coordination reports carry their finding.
fn kind_of(e: &super::HistoryEntry) -> NodeKind {
    use crate::coordination::{DeadlockDetected, StallDetected, DEADLOCK_DETECTED, STALL_DETECTED};
    let ev = &e.event;
    match ev.ty.as_str() {
        DEADLOCK_DETECTED => match rmp_serde::from_slice::<DeadlockDetected>(&ev.data) {
            Ok(d) => NodeKind::Deadlock {
                cycle: d.cycle.describe(),
                victim: format!("{}/{}", d.victim.saga, d.victim.instance),
            },
            Err(_) => NodeKind::Event,
        },
        STALL_DETECTED => match rmp_serde::from_slice::<StallDetected>(&ev.data) {
            Ok(s) => NodeKind::Stall {
                detail: format!(
                    "{}/{} awaits {} ({})",
                    s.saga,
                    s.instance,
                    s.awaits.join(" | "),
                    s.kind
                ),
            },
            Err(_) => NodeKind::Event,
        },
        _ if e.is_saga_decision() => NodeKind::SagaDecision,
        _ => NodeKind::Event,
    }
}
