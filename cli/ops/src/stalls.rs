//! `choreo stalls`: the waits the stall watchdog reported that are still open, with what they
//! wait for and who could produce it (from the topology registry). Read-only.

use anyhow::Context as _;
use choreo::{Changelog, InstanceRecord, SagaStatus, Topology};
use clap::Args;
use serde_json::{json, Value};

use crate::sagas::time_of;
use crate::table::{Align, Table};
use crate::Conn;

/// Arguments of `choreo stalls`.
#[derive(Debug, Args)]
pub struct StallsArgs {
    /// Only this saga.
    #[arg(long)]
    saga: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// One open stalled wait.
struct Row<'a> {
    record: &'a InstanceRecord,
    wait: &'a choreo::Wait,
}

fn producers(topo: &Topology, types: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in types {
        for a in topo.producers(t) {
            let hosts: Vec<String> = a.nodes.iter().map(|n| n.to_string()).collect();
            let p = format!("{} on {}", a.decl.name, hosts.join(","));
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

pub(crate) async fn run(args: StallsArgs) -> anyhow::Result<()> {
    let bus = args.conn.bus().await?;
    let records = Changelog::new(&bus)
        .list(args.saga.as_deref(), Some(SagaStatus::Running))
        .await?;
    let topo = choreo::read_topology(&bus)
        .await
        .context("read the topology registry")?;
    let rows: Vec<Row<'_>> = records
        .iter()
        .flat_map(|r| {
            r.waits
                .iter()
                .filter(|w| w.stalled.is_some())
                .map(move |w| Row { record: r, wait: w })
        })
        .collect();
    if args.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|row| {
                json!({
                    "saga": row.record.saga,
                    "instance": row.record.instance,
                    "correlation": row.record.correlation,
                    "awaits": row.wait.types,
                    "kind": row.wait.stalled.map(|k| k.as_str()),
                    "since": time_of(row.wait.since_ms),
                    "deadline": row.wait.deadline_ms.map(time_of),
                    "producers": producers(&topo, &row.wait.types),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no stalled waits");
        return Ok(());
    }
    let mut t = Table::new(&[
        ("SAGA", Align::Left),
        ("INSTANCE", Align::Left),
        ("AWAITS", Align::Left),
        ("WHY", Align::Left),
        ("SINCE", Align::Left),
        ("DEADLINE", Align::Left),
        ("PRODUCERS (LIVE NODES)", Align::Left),
    ]);
    for row in &rows {
        let p = producers(&topo, &row.wait.types);
        t.row(vec![
            row.record.saga.clone(),
            row.record.instance.clone(),
            row.wait.to_string(),
            row.wait
                .stalled
                .map_or_else(String::new, |k| k.as_str().to_owned()),
            time_of(row.wait.since_ms),
            row.wait.deadline_ms.map_or_else(|| "-".to_owned(), time_of),
            if p.is_empty() {
                "none hosted".to_owned()
            } else {
                p.join("; ")
            },
        ]);
    }
    for line in t.lines() {
        println!("{line}");
    }
    Ok(())
}
