//! The chaos suite checks itself: a correct run passes, and each deliberately broken actor
//! (`choreo node --bug …`) makes a run fail with the right invariant named. Every run is
//! `choreo chaos run` as a user runs it (real servers, nodes as child processes).

use std::collections::BTreeSet;
use std::process::Output;

use anyhow::{Context as _, Result};
use tokio::process::Command;

/// Run `choreo chaos run` with `args` and a JSON report; returns its output and the names of
/// the invariants it found violated.
async fn chaos(args: &[&str]) -> Result<(Output, BTreeSet<String>, serde_json::Value)> {
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_choreo"))
        .args(["chaos", "run", "--quiet", "--json"])
        .arg(&json)
        .args(args)
        .env_remove("CHOREO_NATS_URL")
        .kill_on_drop(true)
        .output()
        .await?;
    let text = std::fs::read_to_string(&json).with_context(|| {
        format!(
            "no report; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let report: serde_json::Value = serde_json::from_str(&text)?;
    let violated = report["verdict"]["anomalies"]
        .as_array()
        .context("anomalies")?
        .iter()
        .filter_map(|a| a["invariant"].as_str().map(str::to_owned))
        .collect();
    Ok((out, violated, report))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A short run on one server and two nodes, no faults, nodes with `bug`.
async fn control_with(bug: &str) -> Result<(Output, BTreeSet<String>, serde_json::Value)> {
    let arg = format!("--node-arg=--bug={bug}");
    chaos(&[
        "--servers",
        "1",
        "--nodes",
        "2",
        "--kinds",
        "none",
        "--duration",
        "8",
        "--seed",
        "11",
        &arg,
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_applies_an_effect_twice_fails_the_run_on_the_ledger() -> Result<()> {
    let (out, violated, _) = control_with("double-apply").await?;
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        violated.contains("ledger"),
        "{violated:?}\n{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("booked 2×"),
        "the anomaly says what was applied twice: {}",
        stdout(&out)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_that_forgets_a_compensation_fails_the_run_as_leaked() -> Result<()> {
    let (out, violated, _) = control_with("forget-compensation").await?;
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        violated.contains("leaked"),
        "{violated:?}\n{}",
        stdout(&out)
    );
    assert!(violated.contains("ledger"), "{violated:?}");
    assert!(
        stdout(&out).contains("hotel.booked.v1") && stdout(&out).contains("no hotel.cancelled.v1"),
        "{}",
        stdout(&out)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_faults_and_injections_on_one_server_leave_every_invariant_holding() -> Result<()> {
    let (out, violated, report) = chaos(&[
        "--servers",
        "1",
        "--nodes",
        "2",
        "--kinds",
        "kill-node,pause-node,duplicate,poison,clock-skew",
        "--duration",
        "25",
        "--seed",
        "5",
    ])
    .await?;
    assert!(
        out.status.success() && violated.is_empty(),
        "{violated:?}\n{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let applied: BTreeSet<&str> = report["applied"]
        .as_array()
        .context("applied")?
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert_eq!(
        applied,
        BTreeSet::from([
            "kill-node",
            "pause-node",
            "duplicate",
            "poison",
            "clock-skew"
        ])
    );
    // The poison reached the DLQ and nothing else did; the copies were caught by event id.
    let poison = report["injected"]["poison"].as_u64().unwrap_or(0);
    assert!(poison >= 3, "{}", stdout(&out));
    assert_eq!(report["verdict"]["sizes"][2].as_u64(), Some(poison));
    assert!(report["injected"]["duplicates"].as_u64().unwrap_or(0) > 0);
    assert!(report["outcomes"]["completed"].as_u64().unwrap_or(0) > 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_ignores_fencing_fails_the_run_on_fencing() -> Result<()> {
    // Paused or cut off past its lease, the node wakes up still processing its partitions and
    // commits unfenced over the new owner's commits.
    let (out, violated, _) = chaos(&[
        "--servers",
        "1",
        "--nodes",
        "2",
        "--kinds",
        "pause-node,cut",
        "--per-kind",
        "2",
        "--duration",
        "24",
        "--seed",
        "9",
        "--node-arg=--bug=ignore-fencing",
    ])
    .await?;
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        violated.contains("fencing"),
        "{violated:?}\n{}",
        stdout(&out)
    );
    Ok(())
}
