//! A producer and a consumer in another language: `examples/python/trip.py` (nats-py only)
//! publishes trip requests through the ingress to a travel node as structured JSON and as binary mode with JSON
//! data, and reads each trip's outcome from the log. `scripts/test` installs nats-py first
//! (`scripts/install-python-deps`).

mod common;

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use choreo::NatsServer;
use common::{NodeProc, WAIT};
use tokio::process::Command;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where nats-py is: `CHOREO_PYTHONPATH`, else the project-local copy.
fn python_path() -> Result<PathBuf> {
    let path = std::env::var_os("CHOREO_PYTHONPATH")
        .map_or_else(|| workspace().join(".tools/pylib"), PathBuf::from);
    if !path.join("nats").is_dir() {
        bail!(
            "nats-py is not installed in {}: run scripts/install-python-deps (scripts/test does)",
            path.display()
        );
    }
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_producer_starts_trips_and_reads_their_outcome() -> Result<()> {
    let pythonpath = python_path()?;
    let server = NatsServer::start_temp().await?;
    let dir = tempfile::tempdir()?;
    // The node writes JSON data, so the consumer reads it with no msgpack.
    let node = NodeProc::start_with(
        &server.url(),
        dir.path(),
        "n1",
        3000,
        1,
        &["--data-format", "json"],
    )
    .await?;
    for (trip, mode) in [
        ("trip-py-structured", "structured"),
        ("trip-py-binary", "binary"),
    ] {
        let out = tokio::time::timeout(
            WAIT,
            Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
                .arg(workspace().join("examples/python/trip.py"))
                .args(["--nats", &server.url(), "--trip", trip, "--mode", mode])
                .args(["--timeout", "60"])
                .env("PYTHONPATH", &pythonpath)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .context("the Python example did not finish")??;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode}: {stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("trip {trip}: completed"))
                || stdout.contains(&format!("trip {trip}: compensated")),
            "{mode}: {stdout}"
        );
        // Published through the ingress: the script knows no partition.
        assert!(
            stdout.contains(&format!("on choreo.in.{trip}.trip.requested.v1")),
            "{mode}: {stdout}"
        );
        // The consumer saw the saga's commands too, not just its end, with their JSON data.
        let book = stdout
            .lines()
            .find(|l| l.trim_start().starts_with("flight.book.v1 "))
            .with_context(|| format!("{mode}: no flight.book.v1 line: {stdout}"))?;
        let data: serde_json::Value = serde_json::from_str(
            book.trim_start()
                .trim_start_matches("flight.book.v1")
                .trim(),
        )
        .with_context(|| format!("{mode}: JSON data: {book}"))?;
        assert_eq!(data["trip"], trip, "{book}");
        // The request went in as JSON from Python; the node's own events are JSON too.
        assert!(!stdout.contains("application/msgpack"), "{mode}: {stdout}");
    }
    node.stop().await?;
    Ok(())
}
