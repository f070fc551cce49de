//! Sagas survive SIGKILL at each crash point: a child node is killed at the failpoint,
//! restarted on the same data dir, and every trip still ends in its expected terminal state with
//! each command, compensation and timer firing exactly once on the log.
//!
//! The child is this test binary re-executed with `--ignored --exact saga_child`.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use choreo::{BusConfig, Changelog, Node, SagaStatus, SAGA_COMPENSATED, SAGA_COMPLETED};
use common::trip::{trip, ty, Agency, Scenario, TripSaga};
use common::{history_types, wait_events, Harness, WAIT};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const ENV_URL: &str = "CHOREO_SAGA_CHILD_URL";
const ENV_DIR: &str = "CHOREO_SAGA_CHILD_DIR";
const ENV_POINT: &str = "CHOREO_SAGA_CHILD_FAILPOINT";
const MARKER: &str = "CHOREO-FAILPOINT-HIT";
const CAR_TIMEOUT: Duration = Duration::from_millis(1500);

fn saga_node(url: &str, dir: &Path) -> Result<Node> {
    Ok(Node::builder()
        .bus(BusConfig::builder().url(url).partitions(1).build()?)
        .data_dir(dir)
        .node_id("crash-child")
        .ack_wait(Duration::from_secs(2))
        // The trips are on the log before the saga first runs (a backlog to crash in).
        .saga(TripSaga::new("trip", CAR_TIMEOUT).starting(choreo::StartPosition::All))
        .build()?)
}

/// Child role only: a saga node that blocks forever at the named failpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "child process of the saga crash tests"]
async fn saga_child() -> Result<()> {
    let (Ok(url), Ok(dir)) = (std::env::var(ENV_URL), std::env::var(ENV_DIR)) else {
        bail!("{ENV_URL} / {ENV_DIR} not set: this test is the child of another test");
    };
    if let Ok(point) = std::env::var(ENV_POINT) {
        fail::cfg_callback(point, || {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{MARKER}");
            let _ = out.flush();
            loop {
                std::thread::park();
            }
        })
        .map_err(anyhow::Error::msg)?;
    }
    let _node = saga_node(&url, Path::new(&dir))?.start().await?;
    std::future::pending::<()>().await;
    Ok(())
}

fn spawn_child(url: &str, dir: &Path, point: Option<&str>) -> Result<Child> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "saga_child",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ENV_URL, url)
    .env(ENV_DIR, dir)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .kill_on_drop(true);
    match point {
        Some(p) => cmd.env(ENV_POINT, p),
        None => cmd.env_remove(ENV_POINT),
    };
    Ok(cmd.spawn()?)
}

async fn wait_marker(child: &mut Child) -> Result<()> {
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await? {
            if line.contains(MARKER) {
                return Ok(());
            }
        }
        bail!("child exited before reaching the failpoint")
    })
    .await
    .context("timed out waiting for the failpoint")?
}

const TRIPS: [(&str, Scenario); 5] = [
    ("ok-1", Scenario::Ok),
    ("ok-2", Scenario::Ok),
    ("ok-3", Scenario::Ok),
    ("hotel-1", Scenario::HotelFails),
    ("car-1", Scenario::CarSilent),
];

async fn crash_at(point: &str) -> Result<()> {
    let h = Harness::with_partitions(1).await?;
    let services = Node::builder()
        .bus(h.config()?)
        .reactor(Agency)
        .build()?
        .start()
        .await?;
    let dir = tempfile::tempdir()?;
    let trips: Vec<_> = TRIPS.iter().map(|(id, s)| trip(id, *s)).collect();
    h.bus.publish_all(&trips).await?;

    let mut first = spawn_child(&h.server.url(), dir.path(), Some(point))?;
    wait_marker(&mut first).await?;
    first.kill().await?; // SIGKILL at the failpoint

    let mut second = spawn_child(&h.server.url(), dir.path(), None)?;
    let s = h.bus.subjects();
    wait_events(&h.bus, &s.type_filter(&ty(SAGA_COMPLETED)), 3).await?;
    wait_events(&h.bus, &s.type_filter(&ty(SAGA_COMPENSATED)), 2).await?;
    second.kill().await?;
    services.shutdown().await?;

    let expected_tail: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        ("ok", vec!["car.booked.v1", "choreo.saga.completed"]),
        ("hotel", vec!["flight.cancel.v1", "choreo.saga.compensated"]),
        (
            "car",
            vec![
                "hotel.cancel.v1",
                "flight.cancel.v1",
                "choreo.saga.compensated",
            ],
        ),
    ]);
    for (id, _) in TRIPS {
        let types = history_types(&h.bus, id).await?;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &types {
            *counts.entry(t.as_str()).or_default() += 1;
        }
        let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            repeated.is_empty(),
            "{point}: {id} has repeated events {repeated:?} in {types:?}"
        );
        let kind = id.split('-').next().unwrap_or_default();
        let tail = &expected_tail[kind];
        let got: Vec<&str> = types
            .iter()
            .rev()
            .take(tail.len())
            .rev()
            .map(String::as_str)
            .collect();
        assert_eq!(&got, tail, "{point}: {id} history {types:?}");
        let fired = counts.get("choreo.saga.timed_out").copied().unwrap_or(0);
        assert_eq!(
            fired,
            usize::from(kind == "car"),
            "{point}: {id} timer firings"
        );
    }
    // The changelog is the durable truth (sled is a cache the child never flushed).
    let log = Changelog::new(&h.bus);
    for (id, scenario) in TRIPS {
        let r = log
            .find("trip", id, None)
            .await?
            .with_context(|| format!("{id} in the changelog"))?;
        let want = if scenario == Scenario::Ok {
            SagaStatus::Completed
        } else {
            SagaStatus::Compensated
        };
        assert_eq!(r.status, want, "{point}: {id}");
        assert!(
            r.timers.is_empty(),
            "{point}: {id} timers left {:?}",
            r.timers
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_commit_before_ack() -> Result<()> {
    crash_at("saga-after-commit-before-ack").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_ack_before_outbox_publish() -> Result<()> {
    crash_at("saga-after-ack-before-outbox").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_in_the_middle_of_a_batch() -> Result<()> {
    crash_at("saga-mid-batch").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_a_timer_fires() -> Result<()> {
    crash_at("saga-timer-fire").await
}
