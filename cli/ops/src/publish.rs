//! `choreo publish`: publish one event from the command line.

use anyhow::Context as _;
use choreo::{Bus, CorrelationId, Event, EventType};
use clap::Args;

use crate::Conn;

/// `publish`: one event, data given as JSON.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Event type, e.g. `order.placed.v1`.
    #[arg(long = "type")]
    ty: String,
    /// Correlation id (ASCII letters, digits, `-`, `_`).
    #[arg(long)]
    correlation: String,
    /// Data as JSON; stored as msgpack.
    #[arg(long, default_value = "null")]
    data: String,
    /// CloudEvents source.
    #[arg(long, default_value = "/cli")]
    source: String,
    #[command(flatten)]
    conn: Conn,
}

pub(crate) async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let ty = EventType::new(args.ty)?;
    let correlation = CorrelationId::new(args.correlation)?;
    let value: serde_json::Value =
        serde_json::from_str(&args.data).context("--data is not valid JSON")?;
    let data = rmp_serde::to_vec_named(&value).context("encode --data as msgpack")?;
    let event = Event::root_raw(args.source, correlation, ty, data);
    let bus = Bus::connect(args.conn.bus_config()?).await?;
    let published = bus.publish(&event).await?;
    println!(
        "published {} {} on {} (stream seq {}{})",
        event.ty,
        event.id,
        bus.subject_of(&event),
        published.stream_sequence,
        if published.duplicate {
            ", duplicate"
        } else {
            ""
        }
    );
    Ok(())
}
