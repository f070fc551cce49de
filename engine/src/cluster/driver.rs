//! The ownership driver: heartbeats, reads the members, plans the tick and carries it out
//! against the leases bucket and the [`PartitionHost`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Store as Kv, UpdateErrorKind};
use futures::StreamExt;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::plan::{plan, Action, Held};
use super::{assigned_to, Lease, Member, NodeId, PartitionHost, LEASES_BUCKET, MEMBERS_BUCKET};
use crate::bus::Bus;
use crate::error::BusError;

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

async fn bucket(bus: &Bus, name: String, ttl: Duration) -> Result<Kv, BusError> {
    crate::bus::kv_bucket(
        bus,
        kv::Config {
            bucket: name,
            description: "choreo cluster coordination".into(),
            history: 1,
            max_age: ttl,
            // A key expiring by age leaves a marker the watches see: a dead node's leases are
            // acted on when they expire, not at the next tick.
            limit_markers: Some(ttl),
            ..Default::default()
        },
    )
    .await
}

/// Every partition lease of the namespace with its revision, read-only (nothing is created).
pub async fn read_leases(bus: &Bus) -> Result<BTreeMap<u16, (Lease, u64)>, BusError> {
    let name = bus.config().bucket(LEASES_BUCKET);
    let Ok(kv) = bus.jetstream().get_key_value(name.as_str()).await else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    let mut keys = kv
        .keys()
        .await
        .map_err(|e| BusError::js(format!("keys of {name}"), e))?;
    while let Some(k) = keys.next().await {
        let Ok(k) = k else { continue };
        let Ok(p) = k.parse::<u16>() else { continue };
        if let Ok(Some(entry)) = kv.entry(k.as_str()).await {
            if let Ok(lease) = serde_json::from_slice::<Lease>(&entry.value) {
                out.insert(p, (lease, entry.revision));
            }
        }
    }
    Ok(out)
}

/// The next entry of a watch; `None` ends the watch (it is dropped, ticks go on).
async fn next_entry(watch: &mut Option<kv::Watch>) -> Option<kv::Entry> {
    let w = watch.as_mut()?;
    match w.next().await {
        Some(Ok(entry)) => Some(entry),
        _ => {
            *watch = None;
            None
        }
    }
}

/// The ownership loop of one node.
pub(crate) struct Ownership {
    me: NodeId,
    partitions: u16,
    ttl: Duration,
    members: Kv,
    leases: Kv,
    host: Arc<dyn PartitionHost>,
    held: BTreeMap<u16, Held>,
    started_ms: i64,
    /// Test-only: a lost or expired lease does not stop the partition's processor.
    ignore_lease_loss: bool,
}

impl Ownership {
    /// Open (creating if needed) the buckets.
    pub(crate) async fn open(
        bus: &Bus,
        me: NodeId,
        ttl: Duration,
        host: Arc<dyn PartitionHost>,
    ) -> Result<Self, BusError> {
        let cfg = bus.config();
        Ok(Self {
            members: bucket(bus, cfg.bucket(MEMBERS_BUCKET), ttl).await?,
            leases: bucket(bus, cfg.bucket(LEASES_BUCKET), ttl).await?,
            partitions: cfg.partitions(),
            me,
            ttl,
            host,
            held: BTreeMap::new(),
            started_ms: now_ms(),
            ignore_lease_loss: false,
        })
    }

    /// **Test-only** (`NodeBuilder::ignore_fencing_for_tests`): keep processing partitions
    /// whose lease was lost or not renewed in time.
    pub(crate) fn ignoring_lease_loss_for_tests(mut self, on: bool) -> Self {
        self.ignore_lease_loss = on;
        self
    }

    async fn lose(&mut self, p: u16) {
        self.held.remove(&p);
        if self.ignore_lease_loss {
            error!(
                partition = p,
                "lease lost, processor kept running (ignore_fencing_for_tests)"
            );
        } else {
            self.host.stop(p, true).await;
        }
    }

    /// Tick every third of the TTL until `stop`, then leave: stop every processor gracefully,
    /// release the leases and the membership, so the next owners need not wait for the TTL.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let every = (self.ttl / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A released lease or a member leaving is acted on at once, not at the next tick.
        // Heartbeats and renewals are puts of known keys: they change nothing.
        let mut changes = self.leases.watch_all().await.ok();
        let mut members = self.members.watch_all().await.ok();
        let mut known: BTreeSet<String> = BTreeSet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => self.tick().await,
                Some(entry) = next_entry(&mut changes) => {
                    if matches!(entry.operation, kv::Operation::Delete | kv::Operation::Purge) {
                        self.tick().await;
                    }
                }
                Some(entry) = next_entry(&mut members) => {
                    let changed = match entry.operation {
                        kv::Operation::Put => known.insert(entry.key),
                        kv::Operation::Delete | kv::Operation::Purge => known.remove(&entry.key),
                    };
                    if changed {
                        self.tick().await;
                    }
                }
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        self.leave().await;
    }

    async fn heartbeat(&self) -> bool {
        let member = Member {
            node: self.me.clone(),
            started_ms: self.started_ms,
        };
        let Ok(value) = serde_json::to_vec(&member) else {
            return false;
        };
        match self.members.put(self.me.as_str(), value.into()).await {
            Ok(_) => true,
            Err(e) => {
                warn!(node = %self.me, error = %e, "membership heartbeat failed");
                false
            }
        }
    }

    async fn live_members(&self) -> Option<Vec<NodeId>> {
        let mut keys = match self.members.keys().await {
            Ok(k) => k,
            Err(e) => {
                warn!(error = %e, "cannot list members");
                return None;
            }
        };
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            match k {
                Ok(k) => {
                    if let Ok(id) = NodeId::new(k) {
                        out.push(id);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot list members");
                    return None;
                }
            }
        }
        if !out.contains(&self.me) {
            out.push(self.me.clone());
        }
        out.sort();
        Some(out)
    }

    async fn tick(&mut self) {
        let alive = self.heartbeat().await;
        let members = if alive {
            self.live_members().await
        } else {
            None
        };
        // Without a view of the members, keep what is held (renewing it) and take nothing new.
        let desired: BTreeSet<u16> = match &members {
            Some(m) => assigned_to(&self.me, m, self.partitions)
                .into_iter()
                .collect(),
            None => self.held.keys().copied().collect(),
        };
        let dead: BTreeSet<u16> = self
            .held
            .keys()
            .copied()
            .filter(|p| !self.host.alive(*p))
            .collect();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let actions = plan(&desired, &self.held, &dead, now_ms(), ttl_ms);
        let mut releases = Vec::new();
        for action in actions {
            match action {
                Action::Drop(p) => {
                    warn!(
                        partition = p,
                        "lease not renewed within its TTL; stopping the partition"
                    );
                    self.lose(p).await;
                }
                Action::Release(p) => releases.push(p),
                Action::Renew(p) => self.renew(p).await,
                Action::Restart(p) => {
                    self.renew(p).await;
                    if let Some(h) = self.held.get(&p) {
                        error!(partition = p, "partition processor stopped; restarting it");
                        self.host.start(p, h.epoch);
                    }
                }
                Action::Acquire(p) => {
                    if members.is_some() {
                        self.acquire(p).await;
                    }
                }
            }
        }
        // Graceful handovers run together: each processor finishes its batch first.
        let stops = releases.iter().map(|p| self.host.stop(*p, true));
        futures::future::join_all(stops).await;
        for p in releases {
            self.release(p).await;
        }
    }

    fn lease_value(&self, epoch: u64) -> bytes::Bytes {
        let lease = Lease {
            owner: self.me.clone(),
            epoch,
        };
        serde_json::to_vec(&lease).unwrap_or_default().into()
    }

    /// A lease still held under this node's id belongs to an earlier run of this node (ids are
    /// unique among running nodes): take it back at once instead of waiting for its TTL.
    async fn reclaim(&self, p: u16) -> Option<u64> {
        let entry = self.leases.entry(p.to_string()).await.ok()??;
        let lease: Lease = serde_json::from_slice(&entry.value).ok()?;
        if lease.owner != self.me {
            return None;
        }
        let r = self
            .leases
            .update(p.to_string(), self.lease_value(0), entry.revision)
            .await
            .ok()?;
        info!(
            partition = p,
            "reclaimed the lease of this node's previous run"
        );
        Some(r)
    }

    async fn acquire(&mut self, p: u16) {
        let created = match self.leases.create(p.to_string(), self.lease_value(0)).await {
            Ok(r) => Ok(r),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => match self.reclaim(p).await {
                Some(r) => Ok(r),
                None => Err(e),
            },
            Err(e) => Err(e),
        };
        match created {
            Ok(created) => {
                // The revision the lease was created with is the epoch; the value names it.
                let epoch = created;
                let revision = match self
                    .leases
                    .update(p.to_string(), self.lease_value(epoch), created)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(partition = p, error = %e, "lease created but not stamped; retrying next tick");
                        return;
                    }
                };
                info!(partition = p, epoch, "partition acquired");
                self.held.insert(
                    p,
                    Held {
                        revision,
                        epoch,
                        renewed_ms: now_ms(),
                    },
                );
                self.host.start(p, epoch);
            }
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                debug!(partition = p, "partition still leased by another node");
            }
            Err(e) => warn!(partition = p, error = %e, "cannot acquire the lease"),
        }
    }

    async fn renew(&mut self, p: u16) {
        let Some(h) = self.held.get(&p).copied() else {
            return;
        };
        match self
            .leases
            .update(p.to_string(), self.lease_value(h.epoch), h.revision)
            .await
        {
            Ok(revision) => {
                self.held.insert(
                    p,
                    Held {
                        revision,
                        renewed_ms: now_ms(),
                        ..h
                    },
                );
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                warn!(
                    partition = p,
                    "lease lost to another node; stopping the partition"
                );
                self.lose(p).await;
            }
            Err(e) => warn!(partition = p, error = %e, "lease renewal failed; retrying"),
        }
    }

    async fn release(&mut self, p: u16) {
        let Some(h) = self.held.remove(&p) else {
            return;
        };
        match self
            .leases
            .delete_expect_revision(p.to_string(), Some(h.revision))
            .await
        {
            Ok(()) => info!(partition = p, "partition released"),
            Err(e) => {
                warn!(partition = p, error = %e, "cannot release the lease; it expires after its TTL")
            }
        }
    }

    async fn leave(&mut self) {
        let all: Vec<u16> = self.held.keys().copied().collect();
        let stops = all.iter().map(|p| self.host.stop(*p, false));
        futures::future::join_all(stops).await;
        for p in all {
            self.release(p).await;
        }
        if let Err(e) = self.members.delete(self.me.as_str()).await {
            warn!(error = %e, "cannot delete the membership; it expires after its TTL");
        }
        info!(node = %self.me, "left the cluster");
    }
}
