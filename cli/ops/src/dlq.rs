//! `choreo dlq`: list, show, redrive, purge dead letters.

use std::collections::BTreeMap;

use anyhow::bail;
use choreo::{ActorName, DeadLetter};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::Conn;

/// Arguments of `choreo dlq`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Counts by reason and actor, then the entries.
    List {
        /// Only this actor's dead letters.
        #[arg(long)]
        actor: Option<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// One dead letter, with the original event.
    Show {
        /// DLQ sequence.
        seq: u64,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Republish the original event to its actor (only), then remove the entry.
    Redrive {
        /// DLQ sequence.
        seq: Option<u64>,
        /// Every entry (of `--actor`, if given).
        #[arg(long, conflicts_with = "seq")]
        all: bool,
        /// With `--all`: only this actor's.
        #[arg(long, requires = "all")]
        actor: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete dead letters for good.
    Purge {
        /// DLQ sequence.
        seq: Option<u64>,
        /// Every entry (of `--actor`, if given).
        #[arg(long, conflicts_with = "seq")]
        all: bool,
        /// With `--all`: only this actor's.
        #[arg(long, requires = "all")]
        actor: Option<String>,
        /// Confirm: purging cannot be undone.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

fn entry_json(l: &DeadLetter) -> Value {
    let (event, data) = match &l.event {
        Ok(e) => (
            json!({
                "id": e.id.to_string(),
                "type": e.ty.as_str(),
                "correlation": e.correlation.as_str(),
                "causation": e.causation.to_string(),
                "source": e.source,
                "depth": e.depth,
            }),
            rmp_serde::from_slice::<Value>(&e.data).unwrap_or(Value::Null),
        ),
        Err(err) => (json!({ "undecodable": err.to_string() }), Value::Null),
    };
    json!({
        "seq": l.dlq_sequence,
        "actor": l.actor,
        "reason": l.reason,
        "detail": l.detail,
        "attempts": l.attempts,
        "original_seq": l.original_sequence,
        "original_subject": l.original_subject,
        "event": event,
        "data": data,
        "body_bytes": l.body.len(),
    })
}

fn actor_of(a: Option<String>) -> anyhow::Result<Option<ActorName>> {
    Ok(a.map(ActorName::new).transpose()?)
}

pub(crate) async fn run(args: DlqArgs) -> anyhow::Result<()> {
    match args.command {
        DlqCommand::List { actor, json, conn } => {
            let actor = actor_of(actor)?;
            let letters = conn
                .bus()
                .await?
                .dead_letters_of_actor(actor.as_ref())
                .await?;
            let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
            for l in &letters {
                *counts
                    .entry((l.reason.clone(), l.actor.clone()))
                    .or_default() += 1;
            }
            if json {
                let c: Vec<Value> = counts
                    .iter()
                    .map(|((r, a), n)| json!({"reason": r, "actor": a, "count": n}))
                    .collect();
                let e: Vec<Value> = letters.iter().map(entry_json).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"counts": c, "entries": e}))?
                );
                return Ok(());
            }
            println!("{:<18} {:<20} {:>6}", "REASON", "ACTOR", "COUNT");
            for ((r, a), n) in &counts {
                println!("{r:<18} {a:<20} {n:>6}");
            }
            println!();
            println!(
                "{:>6}  {:<20} {:<18} {:>8}  {:<26} {:<20} DETAIL",
                "SEQ", "ACTOR", "REASON", "ATTEMPTS", "TYPE", "CORRELATION"
            );
            for l in &letters {
                let (ty, corr) = match &l.event {
                    Ok(e) => (e.ty.to_string(), e.correlation.to_string()),
                    Err(_) => ("?".to_owned(), "?".to_owned()),
                };
                println!(
                    "{:>6}  {:<20} {:<18} {:>8}  {:<26} {:<20} {}",
                    l.dlq_sequence, l.actor, l.reason, l.attempts, ty, corr, l.detail
                );
            }
            println!("{} dead letter(s)", letters.len());
        }
        DlqCommand::Show { seq, json, conn } => {
            let Some(l) = conn.bus().await?.dead_letter(seq).await? else {
                bail!("no dead letter #{seq}");
            };
            let v = entry_json(&l);
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("dead letter #{seq}");
                println!("  actor:    {}", l.actor);
                println!("  reason:   {} ({})", l.reason, l.detail);
                println!("  attempts: {}", l.attempts);
                println!(
                    "  original: seq {} on {}",
                    l.original_sequence, l.original_subject
                );
                println!("  event:    {}", serde_json::to_string(&v["event"])?);
                println!("  data:     {}", serde_json::to_string(&v["data"])?);
            }
        }
        DlqCommand::Redrive {
            seq,
            all,
            actor,
            conn,
        } => {
            let bus = conn.bus().await?;
            let seqs: Vec<u64> = match (seq, all) {
                (Some(s), false) => vec![s],
                (None, true) => {
                    let actor = actor_of(actor)?;
                    bus.dead_letters_of_actor(actor.as_ref())
                        .await?
                        .iter()
                        .map(|l| l.dlq_sequence)
                        .collect()
                }
                _ => bail!("give a DLQ sequence or --all"),
            };
            for s in &seqs {
                let r = bus.redrive(*s).await?;
                println!(
                    "redrove #{} to {} (events seq {})",
                    r.dlq_sequence, r.actor, r.published.stream_sequence
                );
            }
            println!("{} redriven", seqs.len());
        }
        DlqCommand::Purge {
            seq,
            all,
            actor,
            yes,
            conn,
        } => {
            if !yes {
                bail!("purging cannot be undone: add --yes");
            }
            let bus = conn.bus().await?;
            match (seq, all) {
                (Some(s), false) => {
                    if !bus.purge_dead_letter(s).await? {
                        bail!("no dead letter #{s}");
                    }
                    println!("purged #{s}");
                }
                (None, true) => {
                    let actor = actor_of(actor)?;
                    let n = bus.purge_dead_letters(actor.as_ref()).await?;
                    println!("purged {n} dead letter(s)");
                }
                _ => bail!("give a DLQ sequence or --all"),
            }
        }
    }
    Ok(())
}
