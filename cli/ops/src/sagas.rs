//! `choreo sagas`: inspect saga instances, read from the state changelog through NATS (works
//! while nodes run), or from a node's local store with the deprecated `--data-dir`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use choreo::{ActorName, Changelog, InstanceRecord, SagaId, SagaStatus, Store};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::table::{Align, Table};
use crate::Conn;

/// Arguments of `choreo sagas`.
#[derive(Debug, Args)]
pub struct SagasArgs {
    #[command(subcommand)]
    command: SagasCommand,
}

#[derive(Debug, Args)]
struct SourceArgs {
    /// Deprecated (removed in the next release): read a stopped node's local store in this
    /// directory instead of the changelog. Not taken from CHOREO_DATA_DIR or choreo.toml.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Subcommand)]
enum SagasCommand {
    /// List instances (from the changelog).
    List {
        /// Only this saga.
        #[arg(long)]
        saga: Option<String>,
        /// Only this status: running, compensating, completed, compensated, faulted.
        #[arg(long)]
        status: Option<SagaStatus>,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Show one instance: state, status, compensations, timers, watermark.
    Show {
        /// Saga name.
        saga: String,
        /// Instance id.
        id: String,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Run a faulted instance's compensation stack (its owner applies it; it goes compensating,
    /// then compensated once every compensation is confirmed).
    Compensate {
        /// Saga name.
        saga: String,
        /// Instance id.
        id: String,
        #[command(flatten)]
        action: ActionArgs,
    },
    /// Apply the input that faulted an instance again, after a fix of its handler or data.
    Retry {
        /// Saga name.
        saga: String,
        /// Instance id.
        id: String,
        #[command(flatten)]
        action: ActionArgs,
    },
}

#[derive(Debug, Args)]
struct ActionArgs {
    /// Who asks (recorded in the instance's reason); default $USER.
    #[arg(long)]
    by: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// Open a stopped node's store for the deprecated `--data-dir`.
pub(crate) fn open_store(dir: &Path) -> anyhow::Result<Store> {
    eprintln!(
        "warning: --data-dir is deprecated and will be removed: saga state is read from the \
         changelog through --nats, also while nodes run"
    );
    // Never create a store where there is none: sled would.
    if !dir.join("conf").is_file() {
        bail!(
            "no saga store in {} (give the node's --data-dir, or omit it to read the changelog)",
            dir.display()
        );
    }
    Store::open(dir)
        .context("open the store (stop the node, or omit --data-dir to read the changelog)")
}

fn saga_name(saga: &str) -> anyhow::Result<ActorName> {
    ActorName::new(saga).with_context(|| format!("invalid saga name {saga:?}"))
}

pub(crate) async fn run(args: SagasArgs) -> anyhow::Result<()> {
    match args.command {
        SagasCommand::List {
            saga,
            status,
            source,
        } => {
            if let Some(s) = &saga {
                saga_name(s)?;
            }
            let records = match &source.data_dir {
                Some(dir) => open_store(dir)?.list(saga.as_deref(), status)?,
                None => {
                    let bus = source.conn.bus().await?;
                    Changelog::new(&bus).list(saga.as_deref(), status).await?
                }
            };
            if source.json {
                let list: Vec<Value> = records.iter().map(summary_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_list(&records);
            }
        }
        SagasCommand::Show { saga, id, source } => {
            saga_name(&saga)?;
            SagaId::new(id.as_str()).with_context(|| format!("invalid instance id {id:?}"))?;
            let found = match &source.data_dir {
                Some(dir) => open_store(dir)?.get(&saga, &id)?,
                None => {
                    let bus = source.conn.bus().await?;
                    Changelog::new(&bus).find(&saga, &id, None).await?
                }
            };
            let r = found.with_context(|| match &source.data_dir {
                Some(dir) => format!("no instance {id} of saga {saga} in {}", dir.display()),
                None => format!("no instance {id} of saga {saga} in the changelog"),
            })?;
            let detail = detail_json(&r);
            if source.json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            } else {
                print_detail(&r, &detail)?;
            }
        }
        SagasCommand::Compensate { saga, id, action } => {
            operator(&saga, &id, action, "compensation").await?;
        }
        SagasCommand::Retry { saga, id, action } => {
            operator(&saga, &id, action, "retry").await?;
        }
    }
    Ok(())
}

/// Publish an operator action for a faulted instance.
async fn operator(saga: &str, id: &str, action: ActionArgs, what: &str) -> anyhow::Result<()> {
    saga_name(saga)?;
    SagaId::new(id).with_context(|| format!("invalid instance id {id:?}"))?;
    let by = action
        .by
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "operator".into());
    let bus = action.conn.bus().await?;
    let published = if what == "retry" {
        choreo::request_retry(&bus, saga, id, &by).await?
    } else {
        choreo::request_compensation(&bus, saga, id, &by).await?
    };
    println!(
        "{what} of {saga}/{id} requested (log #{}); its owner applies it: follow with `choreo sagas show {saga} {id}`",
        published.stream_sequence
    );
    Ok(())
}

fn print_list(records: &[InstanceRecord]) {
    let mut t = Table::new(&[
        ("SAGA", Align::Left),
        ("INSTANCE", Align::Left),
        ("STATUS", Align::Left),
        ("PARTITION", Align::Right),
        ("APPLIED", Align::Right),
        ("TIMERS", Align::Right),
        ("UPDATED", Align::Left),
        ("REASON", Align::Left),
    ])
    .style_column(2, crate::style::of_status);
    for r in records {
        t.row(vec![
            r.saga.clone(),
            r.instance.clone(),
            r.status.to_string(),
            r.partition.to_string(),
            r.applied.to_string(),
            r.timers.len().to_string(),
            time_of(r.updated_ms),
            r.reason.clone().unwrap_or_default(),
        ]);
    }
    t.print();
    println!("{} instance(s)", records.len());
}

fn print_detail(r: &InstanceRecord, detail: &Value) -> anyhow::Result<()> {
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
        "partition:   {} (written by commit {})",
        r.partition, r.commit
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
            r.waits
                .iter()
                .map(|w| match w.deadline_ms {
                    Some(d) => format!("{w} (by {})", time_of(d)),
                    None => w.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
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
    Ok(())
}

pub(crate) fn time_of(ms: i64) -> String {
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
        "partition": r.partition,
        "commit": r.commit,
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
    v["awaits"] = json!(r
        .waits
        .iter()
        .flat_map(|w| w.types.iter())
        .collect::<Vec<_>>());
    v["waits"] = json!(r.waits);
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
