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
    /// Data as JSON (written as `--data-format`).
    #[arg(long, default_value = "null")]
    data: String,
    /// CloudEvents source.
    #[arg(long, default_value = "/cli")]
    source: String,
    /// Write the data as `msgpack` (default) or as `json` (`ce-datacontenttype:
    /// application/json`).
    #[arg(long, env = "CHOREO_DATA_FORMAT", default_value = "msgpack", value_parser = crate::parse_data_format)]
    data_format: choreo::DataFormat,
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
    let config = args.conn.bus_config_builder().data_format(args.data_format);
    let bus = Bus::connect(config.build()?).await?;
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
