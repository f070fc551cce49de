//! `choreo replay`: rebuild a saga instance from the log and compare.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use choreo::{Replayable, SagaId, Store};
use clap::Args;

use crate::Conn;

/// Arguments of `choreo replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Saga name (must be registered in this binary).
    saga: String,
    /// Instance id.
    id: String,
    /// The node's data directory, to compare the final state with the stored one.
    #[arg(long, env = "CHOREO_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    conn: Conn,
}

pub(crate) async fn run(args: ReplayArgs, sagas: &[Arc<dyn Replayable>]) -> anyhow::Result<()> {
    let Some(saga) = sagas.iter().find(|s| s.saga_name() == args.saga) else {
        let known: Vec<&str> = sagas.iter().map(|s| s.saga_name()).collect();
        bail!(
            "saga {} is not registered in this binary (registered: {}); replay needs the saga's code: mount choreo_cli::Operator in your own binary with .saga(..)",
            args.saga,
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        );
    };
    let instance = SagaId::new(args.id.as_str())?;
    let store = match &args.data_dir {
        Some(dir) => {
            if !dir.join("conf").is_file() {
                bail!("no saga store in {}", dir.display());
            }
            Some(Store::open(dir).context(
                "open the store (stop the node, or omit --data-dir to compare with the log only)",
            )?)
        }
        None => None,
    };
    let bus = args.conn.bus().await?;
    let report = saga
        .replay_instance(&bus, store.as_ref(), &instance)
        .await?;
    println!("{report}");
    if !report.is_identical() {
        bail!("replay diverged");
    }
    Ok(())
}
