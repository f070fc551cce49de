//! The topology registry: a KV bucket with one key per node holding what it hosts
//! ([`NodeTopology`]). A node puts its entry at start and again every third of the registry's
//! TTL; an entry not refreshed expires (with a marker the watches see), so the registry holds
//! exactly the live nodes. Every node watches it into a [`SharedView`] the partition
//! processors read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

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
    /// Whether the registry was read at least once (until then nothing is reported stalled).
    pub(crate) loaded: bool,
    /// Bumped on every change (the processors re-check their suspects when it moves).
    pub(crate) version: u64,
}

impl View {
    /// Live nodes: those with an entry.
    pub(crate) fn live(&self) -> &BTreeSet<NodeId> {
        &self.live
    }

    fn rebuild(&mut self) {
        self.live = self.nodes.values().map(|n| n.node.clone()).collect();
        self.topology = Arc::new(Topology::from_nodes(self.nodes.values()));
        self.version = self.version.wrapping_add(1);
    }
}

/// The view shared by a node's processors.
pub(crate) type SharedView = Arc<RwLock<View>>;

async fn open(bus: &Bus) -> Result<Kv, BusError> {
    let name = bus.config().bucket(TOPOLOGY_BUCKET);
    let js = bus.jetstream();
    if let Ok(kv) = js.get_key_value(name.as_str()).await {
        return Ok(kv);
    }
    js.create_key_value(kv::Config {
        bucket: name.clone(),
        description: "choreo topology registry: what each node's actors consume and emit".into(),
        history: 1,
        max_age: TOPOLOGY_TTL,
        limit_markers: Some(TOPOLOGY_TTL),
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: bus.config().replicas.count(),
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::js(format!("create bucket {name}"), e))
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

/// Keep `view` current until `stop`: watch the registry (re-opening a watch that ends), and
/// refresh `own` every third of the TTL.
pub(crate) async fn run(
    bus: Bus,
    own: NodeTopology,
    view: SharedView,
    mut stop: signal::Receiver<bool>,
) {
    let mut refresh = tokio::time::interval(TOPOLOGY_TTL / 3);
    loop {
        let watch = async {
            let kv = open(&bus).await?;
            kv.watch_with_history(">")
                .await
                .map_err(|e| BusError::js("watch the registry", e))
        };
        let mut watch = match watch.await {
            Ok(w) => w,
            Err(e) => {
                debug!(error = %e, "topology watch not open; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        // A re-opened watch replays the current values: start from nothing.
        {
            let mut v = view.write().unwrap_or_else(|p| p.into_inner());
            v.nodes.clear();
        }
        loop {
            let entry = tokio::select! {
                e = watch.next() => e,
                _ = refresh.tick() => {
                    if let Err(e) = publish(&bus, &own).await {
                        warn!(error = %e, "cannot refresh this node's topology entry");
                    }
                    continue;
                }
                _ = stop.changed() => return,
            };
            let Some(Ok(entry)) = entry else {
                break; // ended or failed: re-open
            };
            let mut v = view.write().unwrap_or_else(|p| p.into_inner());
            if entry.operation == kv::Operation::Put {
                match serde_json::from_slice::<NodeTopology>(&entry.value) {
                    Ok(n) => {
                        v.nodes.insert(entry.key.clone(), n);
                    }
                    Err(e) => {
                        warn!(key = %entry.key, error = %e, "unreadable topology entry ignored")
                    }
                }
            } else {
                v.nodes.remove(&entry.key);
            }
            // The history is replayed (its last entry has delta 0); this node's own entry is
            // in it, since it was put before the watch opened.
            if entry.delta == 0 && v.nodes.contains_key(own.node.as_str()) {
                v.loaded = true;
            }
            v.rebuild();
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}
