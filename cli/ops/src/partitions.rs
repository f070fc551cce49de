//! `choreo partitions`: who owns each partition, how far its changelog is, how many instances it
//! holds and how many events wait after its applied sequence. Read-only: leases, changelog heads
//! and records, and a count from the events stream (no bucket is created).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use choreo::{Bus, Changelog, ChangelogEntry, Lease, PartitionHead};
use clap::Args;
use futures::future::try_join_all;
use serde_json::{json, Value};

use crate::sagas::time_of;
use crate::table::{Align, Table};
use crate::Conn;

/// Arguments of `choreo partitions`.
#[derive(Debug, Args)]
pub struct PartitionsArgs {
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// What is known of one partition.
pub(crate) struct Row {
    pub(crate) partition: u16,
    /// The lease and its KV revision.
    pub(crate) lease: Option<(Lease, u64)>,
    head: Option<ChangelogEntry<PartitionHead>>,
    instances: u64,
    /// Events on the partition's subjects after the head's applied sequence (all of them when
    /// there is no head).
    pub(crate) events_after_applied: u64,
}

impl Row {
    fn json(&self) -> Value {
        json!({
            "partition": self.partition,
            "owner": self.lease.as_ref().map(|(l, _)| l.owner.to_string()),
            "epoch": self.lease.as_ref().map(|(l, _)| l.epoch),
            "lease_revision": self.lease.as_ref().map(|(_, rev)| rev),
            "commit": self.head.as_ref().map(|h| h.value.commit),
            "applied_seq": self.head.as_ref().map(|h| h.value.applied_seq),
            "head": self.head.as_ref().map(|h| json!({
                "sequence": h.sequence,
                "owner": h.value.owner,
                "epoch": h.value.epoch,
                "commit": h.value.commit,
                "published": h.value.published,
                "applied_seq": h.value.applied_seq,
                "takeover": h.value.takeover,
                "written": time_of(h.value.written_ms),
            })),
            "instances": self.instances,
            "events_after_applied": self.events_after_applied,
        })
    }
}

/// Events of `partition` after `applied_seq` (every event of it for 0): the pending count of a
/// short-lived ephemeral consumer, deleted right after.
async fn events_after(
    bus: &Bus,
    stream: &async_nats::jetstream::stream::Stream<()>,
    partition: u16,
    applied_seq: u64,
) -> anyhow::Result<u64> {
    let consumer = stream
        .create_consumer(pull::Config {
            description: Some("choreo partitions: events after applied".to_owned()),
            filter_subject: bus.subjects().partition_filter(partition),
            deliver_policy: match applied_seq {
                0 => DeliverPolicy::All,
                s => DeliverPolicy::ByStartSequence {
                    start_sequence: s.saturating_add(1),
                },
            },
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .with_context(|| format!("count the events of partition {partition}"))?;
    let info = consumer.cached_info();
    // Best effort: the server drops it after the inactive threshold anyway.
    let _ = stream.delete_consumer(&info.name).await;
    Ok(info.num_pending)
}

pub(crate) async fn rows(bus: &Bus) -> anyhow::Result<Vec<Row>> {
    let count = bus.config().partitions();
    let mut leases = choreo::read_leases(bus).await?;
    let changelog = Changelog::new(bus);
    let mut heads: BTreeMap<u16, ChangelogEntry<PartitionHead>> = changelog
        .heads()
        .await?
        .into_iter()
        .map(|h| (h.value.partition, h))
        .collect();
    let mut instances: BTreeMap<u16, u64> = BTreeMap::new();
    for r in changelog.list(None, None).await? {
        *instances.entry(r.partition).or_default() += 1;
    }
    let name = bus.config().events_stream();
    let stream = bus
        .jetstream()
        .get_stream_no_info(&name)
        .await
        .with_context(|| format!("get stream {name}"))?;
    let lags = try_join_all((0..count).map(|p| {
        let applied = heads.get(&p).map_or(0, |h| h.value.applied_seq);
        events_after(bus, &stream, p, applied)
    }))
    .await?;
    Ok((0..count)
        .zip(lags)
        .map(|(p, events_after_applied)| Row {
            partition: p,
            lease: leases.remove(&p),
            head: heads.remove(&p),
            instances: instances.get(&p).copied().unwrap_or(0),
            events_after_applied,
        })
        .collect())
}

pub(crate) async fn run(args: PartitionsArgs) -> anyhow::Result<()> {
    let bus = args.conn.bus().await?;
    let rows = rows(&bus).await?;
    if args.json {
        let list: Vec<Value> = rows.iter().map(Row::json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let dash = || "-".to_owned();
    let mut t = Table::new(&[
        ("PARTITION", Align::Right),
        ("OWNER", Align::Left),
        ("EPOCH", Align::Right),
        ("COMMIT", Align::Right),
        ("APPLIED-SEQ", Align::Right),
        ("INSTANCES", Align::Right),
        ("EVENTS-AFTER-APPLIED", Align::Right),
    ]);
    for r in &rows {
        t.row(vec![
            r.partition.to_string(),
            r.lease
                .as_ref()
                .map_or_else(dash, |(l, _)| l.owner.to_string()),
            r.lease
                .as_ref()
                .map_or_else(dash, |(l, _)| l.epoch.to_string()),
            r.head
                .as_ref()
                .map_or_else(dash, |h| h.value.commit.to_string()),
            r.head
                .as_ref()
                .map_or_else(dash, |h| h.value.applied_seq.to_string()),
            r.instances.to_string(),
            r.events_after_applied.to_string(),
        ]);
    }
    t.print();
    let owners: std::collections::BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r.lease.as_ref().map(|(l, _)| l.owner.to_string()))
        .collect();
    println!(
        "{} partition(s), {} owned by {} node(s), {} instance(s)",
        rows.len(),
        rows.iter().filter(|r| r.lease.is_some()).count(),
        owners.len(),
        rows.iter().map(|r| r.instances).sum::<u64>()
    );
    println!(
        "EVENTS-AFTER-APPLIED counts every event on the partition's subjects after the head's \
         applied sequence, saga inputs or not (the saga's own outputs included)."
    );
    Ok(())
}
