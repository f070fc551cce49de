//! `choreo stats`: queue lengths and sizes from JetStream.

use clap::Args;

use crate::Conn;

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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "nats-server {} at {}",
        bus.server_version(),
        bus.config().url()
    );
    println!(
        "{:<16} {:>10} {:>12} {:>10} {:>10}",
        "STREAM", "MESSAGES", "BYTES", "FIRST", "LAST"
    );
    for st in [&s.events, &s.dlq] {
        println!(
            "{:<16} {:>10} {:>12} {:>10} {:>10}",
            st.name, st.messages, st.bytes, st.first_sequence, st.last_sequence
        );
    }
    println!();
    println!(
        "{:<28} {:>10} {:>12} {:>12} {:>8}",
        "CONSUMER", "PENDING", "ACK-PENDING", "REDELIVERED", "WAITING"
    );
    for c in &s.consumers {
        println!(
            "{:<28} {:>10} {:>12} {:>12} {:>8}",
            c.name, c.pending, c.ack_pending, c.redelivered, c.waiting
        );
    }
    println!();
    println!("{:<18} {:<20} {:>6}", "DLQ REASON", "ACTOR", "COUNT");
    for (reason, actors) in &s.dead_letters {
        for (actor, n) in actors {
            println!("{reason:<18} {actor:<20} {n:>6}");
        }
    }
    Ok(())
}
