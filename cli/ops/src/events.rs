//! `choreo events` and `choreo trace`: a correlation's history.

use choreo::{CorrelationId, History};
use clap::{Args, ValueEnum};
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use crate::format::padded;
use crate::style::{paint, Style};
use crate::Conn;

/// Arguments of `choreo events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The correlation id.
    correlation: String,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Output formats of `choreo trace`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum TraceFormat {
    Tree,
    Dot,
    Mermaid,
}

/// Arguments of `choreo trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The correlation id.
    correlation: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TraceFormat::Tree)]
    format: TraceFormat,
    #[command(flatten)]
    conn: Conn,
}

async fn load(conn: &Conn, correlation: &str) -> anyhow::Result<History> {
    let c = CorrelationId::new(correlation)?;
    let history = conn.bus().await?.correlation_history(&c).await?;
    if history.events.is_empty() {
        let (letters, unreadable) = (history.dead_letters.len(), history.undecodable.len());
        if letters == 0 && unreadable == 0 {
            anyhow::bail!("no events for correlation {c}");
        }
        anyhow::bail!(
            "no valid events for correlation {c}: {letters} dead letter(s) (`choreo dlq list`), \
             {unreadable} stored message(s) that are not choreo events{}",
            history
                .undecodable
                .first()
                .map(|(seq, why)| format!(" (first: #{seq}, {why})"))
                .unwrap_or_default()
        );
    }
    Ok(history)
}

pub(crate) async fn run_events(args: EventsArgs) -> anyhow::Result<()> {
    let h = load(&args.conn, &args.correlation).await?;
    if args.json {
        let rows: Vec<_> = h
            .events
            .iter()
            .map(|e| {
                json!({
                    "seq": e.sequence,
                    "time": e.event.time.format(&Rfc3339).unwrap_or_default(),
                    "type": e.event.ty.as_str(),
                    "source": e.event.source,
                    "id": e.event.id.to_string(),
                    "causation": e.event.causation.to_string(),
                    "depth": e.event.depth,
                    "redriven_from": e.redriven_from,
                    "redriven_to": e.redriven_to,
                })
            })
            .collect();
        let letters: Vec<_> = h
            .dead_letters
            .iter()
            .map(|l| json!({"dlq_seq": l.dlq_sequence, "actor": l.actor, "reason": l.reason, "detail": l.detail}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"events": rows, "dead_letters": letters}))?
        );
        return Ok(());
    }
    let header = format!(
        "{:>6}  {:<30}  {:<26}  {:<18}  {:<36}  {:<36}  {:>5}",
        "SEQ", "TIME", "TYPE", "SOURCE", "ID", "CAUSATION", "DEPTH"
    );
    println!("{}", paint(&header, Style::Header));
    for e in &h.events {
        let ev = &e.event;
        println!(
            "{:>6}  {:<30}  {}  {:<18}  {:<36}  {:<36}  {:>5}{}",
            e.sequence,
            ev.time.format(&Rfc3339).unwrap_or_default(),
            padded(ev.ty.as_str(), 26, Style::Type),
            ev.source,
            ev.id.to_string(),
            if ev.is_root() {
                "-".to_owned()
            } else {
                ev.causation.to_string()
            },
            ev.depth,
            e.redriven_from
                .map(|s| format!("  (redriven from DLQ #{s})"))
                .unwrap_or_default()
        );
    }
    for l in &h.dead_letters {
        let line = format!(
            "  DLQ #{} by {}: {} — {}",
            l.dlq_sequence, l.actor, l.reason, l.detail
        );
        println!("{}", paint(&line, Style::Bad));
    }
    for (seq, why) in &h.undecodable {
        let line = format!("  seq {seq}: not a choreo event ({why})");
        println!("{}", paint(&line, Style::Bad));
    }
    Ok(())
}

pub(crate) async fn run_trace(args: TraceArgs) -> anyhow::Result<()> {
    let h = load(&args.conn, &args.correlation).await?;
    let tree = h.tree();
    match args.format {
        TraceFormat::Tree => print!("{}", tree.to_text()),
        TraceFormat::Dot => print!("{}", tree.to_dot(&args.correlation)),
        TraceFormat::Mermaid => print!("{}", tree.to_mermaid()),
    }
    Ok(())
}
