//! The operator library stays lean: with its default features it depends on no workspace crate
//! but the engine (and the schemas under it), so a team mounting it pulls in no benches,
//! agents, services, chaos suite or examples. Read from `cargo tree` (offline: the lock file's
//! graph, for this package's features alone).

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// The workspace packages (path dependencies) in the normal-dependency tree of choreo-ops.
fn workspace_deps(features: &[&str]) -> Result<BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["tree", "--offline", "-p", "choreo-ops", "-e", "normal"])
        .args(["--prefix", "none", "-f", "{p}", "--manifest-path", manifest]);
    for f in features {
        cmd.args(["--features", f]);
    }
    let out = cmd.output().context("run cargo tree")?;
    if !out.status.success() {
        bail!("cargo tree: {}", String::from_utf8_lossy(&out.stderr));
    }
    // A path dependency prints as `name vX.Y.Z (/its/dir)`; registry crates have no path.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" (/"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "choreo-ops")
        .map(str::to_owned)
        .collect())
}

#[test]
fn the_operator_library_depends_on_the_engine_only() -> Result<()> {
    let lean = workspace_deps(&[])?;
    assert_eq!(
        lean,
        BTreeSet::from(["choreo".to_owned(), "choreo-schemas".to_owned()]),
        "choreo-ops pulls in workspace crates beyond the engine"
    );
    // The check sees a workspace crate when one is there: `approvals` adds choreo-services.
    let with_approvals = workspace_deps(&["approvals"])?;
    assert!(
        with_approvals.contains("choreo-services"),
        "{with_approvals:?}"
    );
    Ok(())
}
