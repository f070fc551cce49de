//! `choreo sagas`: inspect saga instances in a node's store.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use choreo::{InstanceRecord, SagaStatus, Store};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Arguments of `choreo sagas`.
#[derive(Debug, Args)]
pub struct SagasArgs {
    #[command(subcommand)]
    command: SagasCommand,
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// The node's data directory (its sled store).
    #[arg(long, env = "CHOREO_DATA_DIR", default_value = ".choreo/node")]
    data_dir: PathBuf,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum SagasCommand {
    /// List instances.
    List {
        /// Only this saga.
        #[arg(long)]
        saga: Option<String>,
        /// Only this status: running, completed, compensated, faulted.
        #[arg(long)]
        status: Option<SagaStatus>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show one instance: state, status, compensations, timers, watermark.
    Show {
        /// Saga name.
        saga: String,
        /// Instance id.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn open(dir: &Path) -> anyhow::Result<Store> {
    // Never create a store where there is none: sled would.
    if !dir.join("conf").is_file() {
        bail!(
            "no saga store in {} (give the node's --data-dir)",
            dir.display()
        );
    }
    Ok(Store::open(dir)?)
}

pub(crate) fn run(args: SagasArgs) -> anyhow::Result<()> {
    match args.command {
        SagasCommand::List {
            saga,
            status,
            store,
        } => {
            let s = open(&store.data_dir)?;
            let records = s.list(saga.as_deref(), status)?;
            if store.json {
                let list: Vec<Value> = records.iter().map(summary_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<16} {:<24} {:<12} {:>7} {:>6} {:<25} REASON",
                    "SAGA", "INSTANCE", "STATUS", "APPLIED", "TIMERS", "UPDATED"
                );
                for r in &records {
                    println!(
                        "{:<16} {:<24} {:<12} {:>7} {:>6} {:<25} {}",
                        r.saga,
                        r.instance,
                        r.status,
                        r.applied,
                        r.timers.len(),
                        time_of(r.updated_ms),
                        r.reason.as_deref().unwrap_or("")
                    );
                }
                println!("{} instance(s)", records.len());
            }
        }
        SagasCommand::Show { saga, id, store } => {
            let s = open(&store.data_dir)?;
            let r = s.get(&saga, &id)?.with_context(|| {
                format!(
                    "no instance {id} of saga {saga} in {}",
                    store.data_dir.display()
                )
            })?;
            let detail = detail_json(&r);
            if store.json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            } else {
                println!("saga:        {}", r.saga);
                println!("instance:    {}", r.instance);
                println!("correlation: {}", r.correlation);
                println!(
                    "status:      {}{}",
                    r.status,
                    r.reason
                        .as_ref()
                        .map(|x| format!(" ({x})"))
                        .unwrap_or_default()
                );
                println!(
                    "applied:     {} input(s), last applied stream seq {}",
                    r.applied, r.watermark
                );
                println!("created:     {}", time_of(r.created_ms));
                println!("updated:     {}", time_of(r.updated_ms));
                println!(
                    "awaits:      {}",
                    if r.waits.is_empty() {
                        "-".to_owned()
                    } else {
                        r.waits.join(", ")
                    }
                );
                println!("timers:");
                for (name, due) in &r.timers {
                    println!("  {name:<20} due {}", time_of(*due));
                }
                println!("compensation stack (emitted last-first on failure):");
                for c in r.compensations.iter().rev() {
                    println!("  {} {}", c.ty, msgpack_json(&c.data));
                }
                println!("state (schema v{}):", r.state_version);
                println!("{}", serde_json::to_string_pretty(&detail["state"])?);
            }
        }
    }
    Ok(())
}

fn time_of(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// msgpack bytes as JSON, or a note saying why not.
fn msgpack_json(bytes: &[u8]) -> Value {
    rmp_serde::from_slice::<Value>(bytes)
        .unwrap_or_else(|e| json!({ "undecodable": e.to_string(), "bytes": bytes.len() }))
}

fn summary_json(r: &InstanceRecord) -> Value {
    json!({
        "saga": r.saga,
        "instance": r.instance,
        "correlation": r.correlation,
        "status": r.status,
        "applied": r.applied,
        "timers": r.timers.len(),
        "updated": time_of(r.updated_ms),
        "reason": r.reason,
    })
}

fn detail_json(r: &InstanceRecord) -> Value {
    let mut v = summary_json(r);
    v["state_version"] = json!(r.state_version);
    v["state"] = msgpack_json(&r.state);
    v["last_applied_sequence"] = json!(r.watermark);
    v["created"] = json!(time_of(r.created_ms));
    v["awaits"] = json!(r.waits);
    v["timers"] = Value::Array(
        r.timers
            .iter()
            .map(|(name, due)| json!({ "name": name, "due": time_of(*due), "due_ms": due }))
            .collect(),
    );
    v["compensations"] = Value::Array(
        r.compensations
            .iter()
            .map(|c| json!({ "type": c.ty, "data": msgpack_json(&c.data) }))
            .collect(),
    );
    v
}
