//! The topology registry: a KV bucket with one key per node holding what it hosts
//! ([`NodeTopology`]). A node puts its entry at start and again every third of the registry's
//! TTL; an entry not refreshed expires (with a marker the watches see), so the registry holds
//! exactly the live nodes. Every node watches it into a [`SharedView`] the partition
//! processors read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Store as Kv};
use futures::StreamExt;
use tokio::sync::watch as signal;
use tracing::{debug, warn};

use super::topology::{NodeTopology, Topology};
use crate::bus::Bus;
use crate::cluster::NodeId;
use crate::error::BusError;

/// Bucket (suffix) of the topology registry.
pub const TOPOLOGY_BUCKET: &str = "TOPOLOGY";
/// How long an entry lives without a refresh (fixed by the node that creates the bucket).
pub const TOPOLOGY_TTL: Duration = Duration::from_secs(15);

/// What a node knows of the cluster's topology.
#[derive(Debug, Default)]
pub(crate) struct View {
    nodes: BTreeMap<String, NodeTopology>,
    live: BTreeSet<NodeId>,
    /// The union of the entries.
    pub(crate) topology: Arc<Topology>,
    /// Whether the view is current (the registry was replayed; false again while a watch is
    /// re-opened): until then nothing is decided or reported.
    pub(crate) loaded: bool,
    /// When the view was first current.
    loaded_at: Option<Instant>,
    /// Types that had a producer and lost it, with when.
    missing_since: HashMap<String, Instant>,
    /// Bumped on every change (the processors re-check their suspects when it moves).
    pub(crate) version: u64,
}

impl View {
    /// Live nodes: those with an entry.
    pub(crate) fn live(&self) -> &BTreeSet<NodeId> {
        &self.live
    }

    /// How long no live node has hosted an actor emitting `ty` (zero while one does; since the
    /// view was first current for a type never produced).
    pub(crate) fn absent_for(&self, ty: &str) -> Duration {
        if self.topology.producers(ty).next().is_some() {
            return Duration::ZERO;
        }
        self.missing_since
            .get(ty)
            .copied()
            .or(self.loaded_at)
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    fn rebuild(&mut self) {
        let before: BTreeSet<String> = self
            .topology
            .actors()
            .flat_map(|a| a.decl.emits.iter().cloned())
            .collect();
        self.live = self.nodes.values().map(|n| n.node.clone()).collect();
        self.topology = Arc::new(Topology::from_nodes(self.nodes.values()));
        let now = Instant::now();
        for t in before {
            if self.topology.producers(&t).next().is_none() {
                self.missing_since.entry(t).or_insert(now);
            }
        }
        let topology = Arc::clone(&self.topology);
        self.missing_since
            .retain(|t, _| topology.producers(t).next().is_none());
        if self.loaded && self.loaded_at.is_none() {
            self.loaded_at = Some(now);
        }
        self.version = self.version.wrapping_add(1);
    }
}

/// The view shared by a node's processors.
pub(crate) type SharedView = Arc<RwLock<View>>;

async fn open(bus: &Bus) -> Result<Kv, BusError> {
    crate::bus::kv_bucket(
        bus,
        kv::Config {
            bucket: bus.config().bucket(TOPOLOGY_BUCKET),
            description: "choreo topology registry: what each node's actors consume and emit"
                .into(),
            history: 1,
            max_age: TOPOLOGY_TTL,
            limit_markers: Some(TOPOLOGY_TTL),
            ..Default::default()
        },
    )
    .await
}

/// Put this node's entry (the registry is created if needed).
pub(crate) async fn publish(bus: &Bus, entry: &NodeTopology) -> Result<(), BusError> {
    let kv = open(bus).await?;
    let body = serde_json::to_vec(entry).map_err(|e| BusError::js("encode topology", e))?;
    kv.put(entry.node.as_str(), body.into())
        .await
        .map_err(|e| BusError::js("put topology", e))?;
    Ok(())
}

/// The registry's topology (the live nodes'), read once; nothing is created.
pub async fn read_topology(bus: &Bus) -> Result<Topology, BusError> {
    let mut nodes = Vec::new();
    let name = bus.config().bucket(TOPOLOGY_BUCKET);
    if let Ok(kv) = bus.jetstream().get_key_value(name.as_str()).await {
        for (_, v) in read_all(&kv).await? {
            if let Ok(t) = serde_json::from_slice::<NodeTopology>(&v) {
                nodes.push(t);
            }
        }
    }
    Ok(Topology::from_nodes(nodes.iter()))
}

async fn read_all(kv: &Kv) -> Result<Vec<(String, bytes::Bytes)>, BusError> {
    let mut out = Vec::new();
    let mut keys = kv
        .keys()
        .await
        .map_err(|e| BusError::js("registry keys", e))?;
    while let Some(k) = keys.next().await {
        let Ok(k) = k else { continue };
        if let Ok(Some(v)) = kv.get(k.as_str()).await {
            out.push((k, v));
        }
    }
    Ok(out)
}

/// Refresh this node's entry every third of the TTL until `stop` (also while the watch is
/// down: a live node's entry must not expire).
pub(crate) async fn refresh(bus: Bus, own: NodeTopology, mut stop: signal::Receiver<bool>) {
    let mut every = tokio::time::interval(TOPOLOGY_TTL / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                if let Err(e) = publish(&bus, &own).await {
                    warn!(error = %e, "cannot refresh this node's topology entry");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Keep `view` current until `stop`, re-opening a watch that ends. A (re-)opened watch replays
/// the registry into a fresh map, swapped in once it is current: until then the view is not
/// `loaded`, and the processors decide nothing. A refresh that changes nothing changes
/// nothing in the view either.
pub(crate) async fn watch(
    bus: Bus,
    own: NodeId,
    view: SharedView,
    mut stop: signal::Receiver<bool>,
) {
    loop {
        let opened = async {
            let kv = open(&bus).await?;
            kv.watch_with_history(">")
                .await
                .map_err(|e| BusError::js("watch the registry", e))
        };
        let mut w = match opened.await {
            Ok(w) => w,
            Err(e) => {
                debug!(error = %e, "topology watch not open; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        view.write().unwrap_or_else(|p| p.into_inner()).loaded = false;
        let mut fresh: Option<BTreeMap<String, NodeTopology>> = Some(BTreeMap::new());
        loop {
            let entry = tokio::select! {
                e = w.next() => e,
                _ = stop.changed() => return,
            };
            let Some(Ok(entry)) = entry else {
                break; // ended or failed: re-open
            };
            let value = match entry.operation {
                kv::Operation::Put => match serde_json::from_slice::<NodeTopology>(&entry.value) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        warn!(key = %entry.key, error = %e, "unreadable topology entry ignored");
                        continue;
                    }
                },
                kv::Operation::Delete | kv::Operation::Purge => None,
            };
            let current = entry.delta == 0 || entry.seen_current;
            if let Some(map) = fresh.as_mut() {
                match value {
                    Some(n) => map.insert(entry.key.clone(), n),
                    None => map.remove(&entry.key),
                };
                // Swap the replayed registry in once it is current and holds this node.
                if current && map.contains_key(own.as_str()) {
                    let mut v = view.write().unwrap_or_else(|p| p.into_inner());
                    v.nodes = fresh.take().unwrap_or_default();
                    v.loaded = true;
                    v.rebuild();
                }
                continue;
            }
            let mut v = view.write().unwrap_or_else(|p| p.into_inner());
            let changed = match value {
                Some(n) => {
                    let same = v
                        .nodes
                        .get(&entry.key)
                        .is_some_and(|old| old.version == n.version);
                    v.nodes.insert(entry.key.clone(), n);
                    !same
                }
                None => v.nodes.remove(&entry.key).is_some(),
            };
            if changed {
                v.rebuild();
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}
