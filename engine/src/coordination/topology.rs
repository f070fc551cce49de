//! Who can produce what: every node's actors with what they consume and emit, as the topology
//! registry holds them (see `registry`). Pure data; the union over nodes answers "who can
//! produce type T, on which nodes".

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cluster::NodeId;

/// Saga or reactor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A saga (process manager): its instances keep state, waits and timers.
    Saga,
    /// A reactor: stateless, it may emit its `emits` whenever one of its `consumes` arrives.
    Reactor,
}

/// One actor as a node declares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorDecl {
    /// Actor name.
    pub name: String,
    /// Saga or reactor.
    pub kind: ActorKind,
    /// Event types it consumes.
    pub consumes: BTreeSet<String>,
    /// Of those, the types that start a saga instance (empty for reactors).
    #[serde(default)]
    pub starts: BTreeSet<String>,
    /// Event types it may emit (a saga's lifecycle events included).
    pub emits: BTreeSet<String>,
}

/// What one node hosts: its registry entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTopology {
    /// The node.
    pub node: NodeId,
    /// Its actors.
    pub actors: Vec<ActorDecl>,
    /// Event types that may come from outside the system (people, ingress producers): never
    /// part of a deadlock.
    #[serde(default)]
    pub external: BTreeSet<String>,
    /// A hash of the above: a node re-publishes only when it changes.
    pub version: u64,
}

impl NodeTopology {
    /// A node's entry, versioned by its content.
    pub fn new(node: NodeId, mut actors: Vec<ActorDecl>, external: BTreeSet<String>) -> Self {
        actors.sort_by(|a, b| a.name.cmp(&b.name));
        let mut t = Self {
            node,
            actors,
            external,
            version: 0,
        };
        t.version = t.content_hash();
        t
    }

    /// FNV-1a over the JSON of the content (stable across processes, unlike `Hash`).
    fn content_hash(&self) -> u64 {
        let body = serde_json::to_vec(&(&self.actors, &self.external)).unwrap_or_default();
        body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
    }
}

/// An actor in the union of the registry, with the nodes that host it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostedActor {
    /// The declaration (the union of what its nodes declare: during a rolling deploy two
    /// versions may differ, and the union is the cautious view).
    pub decl: ActorDecl,
    /// Nodes whose entry lists it.
    pub nodes: BTreeSet<NodeId>,
}

/// The union of every node's entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    actors: BTreeMap<String, HostedActor>,
    external: BTreeSet<String>,
    /// Each saga's reach, computed once (the detector asks on every check).
    reach: BTreeMap<String, BTreeSet<String>>,
    /// Reactor inputs no actor emits, computed once.
    unproduced: BTreeSet<String>,
}

impl Topology {
    /// The union of node entries.
    pub fn from_nodes<'a>(nodes: impl IntoIterator<Item = &'a NodeTopology>) -> Self {
        let mut t = Self::default();
        for n in nodes {
            t.external.extend(n.external.iter().cloned());
            for a in &n.actors {
                let e = t
                    .actors
                    .entry(a.name.clone())
                    .or_insert_with(|| HostedActor {
                        decl: ActorDecl {
                            name: a.name.clone(),
                            kind: a.kind,
                            consumes: BTreeSet::new(),
                            starts: BTreeSet::new(),
                            emits: BTreeSet::new(),
                        },
                        nodes: BTreeSet::new(),
                    });
                e.decl.consumes.extend(a.consumes.iter().cloned());
                e.decl.starts.extend(a.starts.iter().cloned());
                e.decl.emits.extend(a.emits.iter().cloned());
                e.nodes.insert(n.node.clone());
            }
        }
        let sagas: Vec<String> = t
            .actors
            .values()
            .filter(|a| a.decl.kind == ActorKind::Saga)
            .map(|a| a.decl.name.clone())
            .collect();
        for s in sagas {
            let r = t.closure(t.actors[&s].decl.emits.iter().cloned());
            t.reach.insert(s, r);
        }
        let emitted: BTreeSet<&String> = t.actors.values().flat_map(|a| &a.decl.emits).collect();
        t.unproduced = t
            .actors
            .values()
            .filter(|a| a.decl.kind == ActorKind::Reactor)
            .flat_map(|a| a.decl.consumes.iter())
            .filter(|c| !emitted.contains(c))
            .cloned()
            .collect();
        t
    }

    /// Every actor.
    pub fn actors(&self) -> impl Iterator<Item = &HostedActor> {
        self.actors.values()
    }

    /// One actor by name.
    pub fn actor(&self, name: &str) -> Option<&HostedActor> {
        self.actors.get(name)
    }

    /// The types that may come from outside the system.
    pub fn external(&self) -> &BTreeSet<String> {
        &self.external
    }

    /// Types some reactor consumes that no actor emits: something outside the registry
    /// produces them (an ingress, a person, a service not written with choreo).
    pub fn unproduced_reactor_inputs(&self) -> &BTreeSet<String> {
        &self.unproduced
    }

    /// Whether `ty` may come from outside the system.
    pub fn is_external(&self, ty: &str) -> bool {
        self.external.contains(ty)
    }

    /// Actors that emit `ty` directly.
    pub fn producers<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = &'a HostedActor> + 'a {
        self.actors
            .values()
            .filter(move |a| a.decl.emits.contains(ty))
    }

    /// Reactors consuming `ty`.
    pub fn reactors_consuming<'a>(
        &'a self,
        ty: &'a str,
    ) -> impl Iterator<Item = &'a HostedActor> + 'a {
        self.actors
            .values()
            .filter(move |a| a.decl.kind == ActorKind::Reactor && a.decl.consumes.contains(ty))
    }

    /// What a saga's emits lead to: its emits and everything reactors turn them into,
    /// transitively. Empty for an unknown saga.
    pub fn reach(&self, saga: &str) -> BTreeSet<String> {
        self.reach_of(saga).cloned().unwrap_or_default()
    }

    /// [`Topology::reach`] without a copy (`None`: no such saga).
    pub fn reach_of(&self, saga: &str) -> Option<&BTreeSet<String>> {
        self.reach.get(saga)
    }

    /// `types` and everything reactors turn them into, transitively.
    pub fn closure(&self, types: impl IntoIterator<Item = String>) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        let mut todo: Vec<String> = types.into_iter().collect();
        while let Some(t) = todo.pop() {
            if !out.insert(t.clone()) {
                continue;
            }
            for r in self.reactors_consuming(&t) {
                todo.extend(r.decl.emits.iter().filter(|e| !out.contains(*e)).cloned());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(name: &str, kind: ActorKind, consumes: &[&str], emits: &[&str]) -> ActorDecl {
        ActorDecl {
            name: name.into(),
            kind,
            consumes: consumes.iter().map(|s| s.to_string()).collect(),
            starts: BTreeSet::new(),
            emits: emits.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_union_knows_producers_reach_and_hosts() {
        let n1 = NodeTopology::new(
            NodeId::new("n1").expect("id"),
            vec![
                decl("a", ActorKind::Saga, &["t1"], &["t2"]),
                decl("r", ActorKind::Reactor, &["t2"], &["t3"]),
            ],
            BTreeSet::new(),
        );
        let n2 = NodeTopology::new(
            NodeId::new("n2").expect("id"),
            vec![decl("r", ActorKind::Reactor, &["t2"], &["t4"])],
            ["ext".to_string()].into(),
        );
        let t = Topology::from_nodes([&n1, &n2]);
        assert_eq!(
            t.reach("a"),
            ["t2", "t3", "t4"].map(String::from).into_iter().collect()
        );
        assert_eq!(t.actor("r").map(|r| r.nodes.len()), Some(2));
        assert_eq!(t.producers("t3").count(), 1);
        assert!(t.is_external("ext") && !t.is_external("t1"));
        assert!(t.reach("nobody").is_empty());
        // The version is the content's: equal content, equal version; a change changes it.
        let again = NodeTopology::new(n1.node.clone(), n1.actors.clone(), BTreeSet::new());
        assert_eq!(again.version, n1.version);
        assert_ne!(n1.version, n2.version);
    }
}
