//! `choreo replay`: rebuild a saga instance from the log and compare with the log and the
//! instance's record in the state changelog.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use choreo::{Changelog, Replayable, SagaId};
use clap::Args;

use crate::Conn;

/// Arguments of `choreo replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Saga name (must be registered in this binary).
    saga: String,
    /// Instance id.
    id: String,
    /// Deprecated (removed in the next release): compare with a stopped node's local store in
    /// this directory instead of the changelog. Not taken from CHOREO_DATA_DIR or choreo.toml.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    conn: Conn,
}

pub(crate) async fn run(args: ReplayArgs, sagas: &[Arc<dyn Replayable>]) -> anyhow::Result<()> {
    let Some(saga) = sagas.iter().find(|s| s.saga_name() == args.saga) else {
        let known: Vec<&str> = sagas.iter().map(|s| s.saga_name()).collect();
        bail!(
            "saga {} is not registered in this binary (registered: {}); replay needs the saga's code: mount choreo_ops::Operator in your own binary with .saga(..)",
            args.saga,
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        );
    };
    let instance = SagaId::new(args.id.as_str())?;
    let bus = args.conn.bus().await?;
    let stored = match &args.data_dir {
        Some(dir) => crate::sagas::open_store(dir)?
            .get(saga.saga_name(), instance.as_str())
            .context("read the store (stop the node, or omit --data-dir to read the changelog)")?,
        None => Changelog::new(&bus)
            .find(saga.saga_name(), instance.as_str(), None)
            .await
            .context("read the instance's record from the changelog")?,
    };
    let log_only = stored.is_none();
    let report = saga
        .replay_instance_against(&bus, stored, &instance)
        .await?;
    println!("{report}");
    if log_only {
        eprintln!(
            "note: no record of {} / {instance} {}: compared with the log only",
            saga.saga_name(),
            if args.data_dir.is_some() {
                "in the store"
            } else {
                "in the changelog"
            }
        );
    }
    if !report.is_identical() {
        bail!("replay diverged");
    }
    Ok(())
}
