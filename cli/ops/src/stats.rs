//! `choreo stats`: queue lengths and sizes from JetStream, and one row per saga (its instances
//! by status; its partitions collapsed into one line: `choreo partitions` has them one by one).

use std::collections::{BTreeMap, BTreeSet};

use choreo::{Bus, Changelog};
use clap::Args;
use serde_json::{json, Value};

use crate::partitions;
use crate::table::{Align, Table};
use crate::Conn;

/// The statuses counted per saga, in column order.
const STATUSES: [&str; 5] = [
    "running",
    "compensating",
    "faulted",
    "completed",
    "compensated",
];

/// Instances of one saga by status, and the partitions they are on.
#[derive(Default)]
struct SagaRow {
    by_status: BTreeMap<String, u64>,
    partitions: BTreeSet<u16>,
}

async fn sagas(bus: &Bus) -> anyhow::Result<BTreeMap<String, SagaRow>> {
    let mut out: BTreeMap<String, SagaRow> = BTreeMap::new();
    for r in Changelog::new(bus).list(None, None).await? {
        let row = out.entry(r.saga.clone()).or_default();
        *row.by_status.entry(r.status.to_string()).or_default() += 1;
        row.partitions.insert(r.partition);
    }
    Ok(out)
}

/// The partitions in one line's worth of figures.
struct PartitionSummary {
    count: usize,
    owned: usize,
    nodes: usize,
    events_after_applied: u64,
    /// The partition furthest behind, and by how much (none when none is behind).
    furthest: Option<(u16, u64)>,
}

fn summarise(rows: &[partitions::Row]) -> PartitionSummary {
    let nodes: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r.lease.as_ref().map(|(l, _)| l.owner.to_string()))
        .collect();
    PartitionSummary {
        count: rows.len(),
        owned: rows.iter().filter(|r| r.lease.is_some()).count(),
        nodes: nodes.len(),
        events_after_applied: rows
            .iter()
            .fold(0u64, |n, r| n.saturating_add(r.events_after_applied)),
        furthest: rows
            .iter()
            .filter(|r| r.events_after_applied > 0)
            .max_by_key(|r| r.events_after_applied)
            .map(|r| (r.partition, r.events_after_applied)),
    }
}

/// Arguments of `choreo stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

pub(crate) async fn run(args: StatsArgs) -> anyhow::Result<()> {
    let bus = args.conn.bus().await?;
    let s = bus.stats().await?;
    let sagas = sagas(&bus).await?;
    let parts = summarise(&partitions::rows(&bus).await?);
    if args.json {
        let mut v = serde_json::to_value(&s)?;
        if let Value::Object(map) = &mut v {
            let sagas: serde_json::Map<String, Value> = sagas
                .iter()
                .map(|(name, row)| {
                    let mut counts: serde_json::Map<String, Value> = STATUSES
                        .iter()
                        .map(|st| {
                            (
                                (*st).to_owned(),
                                json!(row.by_status.get(*st).copied().unwrap_or(0)),
                            )
                        })
                        .collect();
                    counts.insert("partitions".to_owned(), json!(row.partitions.len()));
                    (name.clone(), Value::Object(counts))
                })
                .collect();
            map.insert("sagas".to_owned(), Value::Object(sagas));
            map.insert(
                "partitions".to_owned(),
                json!({
                    "count": parts.count,
                    "owned": parts.owned,
                    "nodes": parts.nodes,
                    "events_after_applied": parts.events_after_applied,
                    "furthest_behind": parts.furthest.map(|(p, n)| json!({"partition": p, "events": n})),
                }),
            );
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "nats-server {} at {}",
        bus.server_version(),
        bus.config().url()
    );
    let mut streams = Table::new(&[
        ("STREAM", Align::Left),
        ("MESSAGES", Align::Right),
        ("BYTES", Align::Right),
        ("FIRST", Align::Right),
        ("LAST", Align::Right),
    ]);
    for st in [&s.events, &s.dlq] {
        streams.row(vec![
            st.name.clone(),
            st.messages.to_string(),
            st.bytes.to_string(),
            st.first_sequence.to_string(),
            st.last_sequence.to_string(),
        ]);
    }
    streams.print();
    println!();
    let mut consumers = Table::new(&[
        ("CONSUMER", Align::Left),
        ("PENDING", Align::Right),
        ("ACK-PENDING", Align::Right),
        ("REDELIVERED", Align::Right),
        ("WAITING", Align::Right),
    ]);
    for c in &s.consumers {
        consumers.row(vec![
            c.name.clone(),
            c.pending.to_string(),
            c.ack_pending.to_string(),
            c.redelivered.to_string(),
            c.waiting.to_string(),
        ]);
    }
    consumers.print();
    println!();
    let mut columns = vec![("SAGA", Align::Left)];
    let upper: Vec<String> = STATUSES.iter().map(|s| s.to_ascii_uppercase()).collect();
    columns.extend(upper.iter().map(|s| (s.as_str(), Align::Right)));
    columns.push(("PARTITIONS", Align::Right));
    let mut t = Table::new(&columns);
    for (name, row) in &sagas {
        let mut cells = vec![name.clone()];
        cells.extend(
            STATUSES
                .iter()
                .map(|st| row.by_status.get(*st).copied().unwrap_or(0).to_string()),
        );
        cells.push(row.partitions.len().to_string());
        t.row(cells);
    }
    if sagas.is_empty() {
        println!("no saga instances in the changelog");
    } else {
        t.print();
    }
    println!(
        "{} partition(s), {} owned by {} node(s); {} event(s) after the applied sequences{} (`choreo partitions` shows each)",
        parts.count,
        parts.owned,
        parts.nodes,
        parts.events_after_applied,
        parts
            .furthest
            .map(|(p, n)| format!(", most on partition {p} ({n})"))
            .unwrap_or_default()
    );
    println!();
    let mut letters = Table::new(&[
        ("DLQ REASON", Align::Left),
        ("ACTOR", Align::Left),
        ("COUNT", Align::Right),
    ]);
    for (reason, actors) in &s.dead_letters {
        for (actor, n) in actors {
            letters.row(vec![reason.clone(), actor.clone(), n.to_string()]);
        }
    }
    letters.print();
    Ok(())
}
