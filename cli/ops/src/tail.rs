//! `choreo tail`: follow the log.

use choreo::{Bus, CorrelationId, EventType};
use clap::Args;
use futures::StreamExt;

use crate::format;
use crate::Conn;

/// `tail`: follow the log, one line per event.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Only this event type.
    #[arg(long = "type")]
    ty: Option<String>,
    /// Only this correlation.
    #[arg(long)]
    correlation: Option<String>,
    /// Start from the beginning of the log instead of new events only.
    #[arg(long)]
    from_start: bool,
    #[command(flatten)]
    conn: Conn,
}

pub(crate) async fn run(args: TailArgs) -> anyhow::Result<()> {
    let ty = args.ty.map(EventType::new).transpose()?;
    let correlation = args.correlation.map(CorrelationId::new).transpose()?;
    let bus = Bus::open(args.conn.bus_config()?).await?;
    let filter = bus.filter_for(correlation.as_ref(), ty.as_ref());
    let mut events = bus.follow_events(&filter, args.from_start).await?;
    println!(
        "{}",
        crate::style::paint(format::TAIL_HEADER, crate::style::Style::Header)
    );
    let result = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            next = events.next() => match next {
                None => break Err(anyhow::anyhow!("the connection to NATS closed")),
                Some(Err(e)) => break Err(e.into()),
                Some(Ok(stored)) => println!("{}", format::tail_line(&stored)),
            }
        }
    };
    // Delete the follow's consumer before exiting, rather than leave it to expire.
    drop(events);
    bus.close().await;
    result
}
