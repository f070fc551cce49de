//! `choreo approve`: answer a pending approval request.

use choreo::CorrelationId;
use clap::Args;

use crate::Conn;

/// Arguments of `choreo approve`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The correlation waiting for approval.
    correlation: String,
    /// Deny instead of granting.
    #[arg(long)]
    deny: bool,
    /// Why.
    #[arg(long)]
    reason: Option<String>,
    /// Who answers (default: $USER).
    #[arg(long, env = "USER", default_value = "operator")]
    by: String,
    #[command(flatten)]
    conn: Conn,
}

pub(crate) async fn run(args: ApproveArgs) -> anyhow::Result<()> {
    let c = CorrelationId::new(args.correlation)?;
    let bus = args.conn.bus().await?;
    let answer = choreo_services::answer(&bus, &c, !args.deny, &args.by, args.reason).await?;
    println!(
        "{} {c} as {} ({}, caused by {})",
        if args.deny { "denied" } else { "approved" },
        args.by,
        answer.ty,
        answer.causation
    );
    Ok(())
}
