//! `choreo sagas list/show` and `choreo partitions` read the changelog and the leases through
//! NATS while a node runs; the deprecated `--data-dir` still reads a stopped node's store.

use std::time::Duration;

use anyhow::{Context as _, Result};
use choreo::{
    Bus, BusConfig, CorrelationId, Event, EventType, NatsServer, Node, Payload, Saga, SagaContext,
    SagaError,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

#[derive(Serialize, Deserialize)]
struct Hello {
    who: String,
}
impl Payload for Hello {
    const TYPE: &'static str = "hello.v1";
}
#[derive(Serialize, Deserialize)]
struct Bye;
impl Payload for Bye {
    const TYPE: &'static str = "bye.v1";
}
#[derive(Serialize, Deserialize)]
struct Undo {
    who: String,
}
impl Payload for Undo {
    const TYPE: &'static str = "hello.undo.v1";
}

#[derive(Default, Serialize, Deserialize)]
struct Greeting {
    who: String,
    greeted: u32,
}

/// Greets, waits for a bye (reminder timer meanwhile), completes. `by` is how much a hello
/// counts (1; another value is a changed handler whose state diverges).
struct Greeter {
    by: u32,
}
impl Saga for Greeter {
    type State = Greeting;
    fn name(&self) -> &str {
        "greeter"
    }
    fn starts_on(&self) -> Vec<EventType> {
        vec![Hello::event_type()]
    }
    fn continues_on(&self) -> Vec<EventType> {
        vec![Bye::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![Undo::event_type()]
    }
    fn handle(&self, s: &mut Greeting, e: &Event, ctx: &mut SagaContext) -> Result<(), SagaError> {
        if e.ty == Hello::event_type() {
            s.who = e.decode::<Hello>()?.who;
            s.greeted += self.by;
            ctx.push_compensation(&Undo { who: s.who.clone() })?;
            ctx.schedule("remind", Duration::from_secs(3600));
            ctx.awaits(Bye::event_type());
        } else {
            ctx.complete();
        }
        Ok(())
    }
    fn on_timeout(&self, _: &mut Greeting, _: &str, _: &mut SagaContext) -> Result<(), SagaError> {
        Ok(())
    }
}

const WAIT: Duration = Duration::from_secs(30);

fn choreo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_choreo"));
    c.env_remove("CHOREO_NATS_URL")
        .env_remove("CHOREO_DATA_DIR")
        .kill_on_drop(true);
    c
}

/// Run the binary; (success, stdout, stderr).
async fn run(args: &[&str]) -> Result<(bool, String, String)> {
    let out = choreo().args(args).output().await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Run the binary, expect success and JSON on stdout.
async fn run_json(args: &[&str]) -> Result<serde_json::Value> {
    let (ok, out, err) = run(args).await?;
    anyhow::ensure!(ok, "{args:?} failed: {err}");
    serde_json::from_str(&out).with_context(|| format!("{args:?} prints JSON: {out}"))
}

/// The byte offset of every column of `header` (names without spaces) in `line`'s layout: the
/// start of each name in the header.
fn column_starts(header: &str) -> Vec<usize> {
    header
        .match_indices(|c: char| c != ' ')
        .filter(|(i, _)| *i == 0 || header.as_bytes().get(i - 1) == Some(&b' '))
        .map(|(i, _)| i)
        .collect()
}

/// A left-aligned cell starts at its column; a right-aligned one ends where its header ends.
fn assert_aligned(header: &str, line: &str, left: &[usize], right: &[usize]) {
    let starts = column_starts(header);
    let ends: Vec<usize> = starts
        .iter()
        .map(|s| s + header[*s..].find(' ').unwrap_or(header.len() - s))
        .collect();
    for &c in left {
        let at = starts[c];
        assert!(
            line.len() > at
                && line.as_bytes()[at] != b' '
                && (at == 0 || line.as_bytes()[at - 1] == b' '),
            "column {c} of {line:?} starts under {header:?}"
        );
    }
    for &c in right {
        let end = ends[c];
        assert!(
            line.len() >= end
                && line.as_bytes()[end - 1] != b' '
                && line.as_bytes().get(end).is_none_or(|b| *b == b' '),
            "column {c} of {line:?} ends under {header:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_and_partitions_read_the_changelog_while_the_node_runs() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let url = server.url();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let node = Node::builder()
        .bus(BusConfig::builder().url(url.clone()).build()?)
        .data_dir(&data)
        .node_id("node-a")
        // Nobody hosts a producer of `bye`: no stall report may change the counts read here.
        .stall_grace(Duration::from_secs(3600))
        .saga(Greeter { by: 1 })
        .build()?
        .start()
        .await?;
    let bus = node.bus().clone();
    let lifecycle =
        |t: &str| -> Result<String> { Ok(bus.subjects().type_filter(&EventType::new(t)?)) };
    let mut started = bus
        .follow_events(&lifecycle(choreo::SAGA_STARTED)?, true)
        .await?;
    let mut completed = bus
        .follow_events(&lifecycle(choreo::SAGA_COMPLETED)?, true)
        .await?;
    let a = CorrelationId::new("g-1")?;
    let b = CorrelationId::new("g-2")?;
    bus.publish(&Event::root(
        "urn:t",
        a.clone(),
        &Hello { who: "ada".into() },
    )?)
    .await?;
    bus.publish(&Event::root("urn:t", b, &Hello { who: "bob".into() })?)
        .await?;
    let bye = bus.publish(&Event::root("urn:t", a.clone(), &Bye)?).await?;
    // Lifecycle events are published after their commit: both records are in the changelog.
    for _ in 0..2 {
        tokio::time::timeout(WAIT, started.next())
            .await
            .context("both instances start")?
            .context("stream")??;
    }
    tokio::time::timeout(WAIT, completed.next())
        .await
        .context("g-1 completes")?
        .context("stream")??;

    // The node runs: read through NATS.
    let nats = ["--nats", url.as_str()];
    let rows = run_json(&[&["sagas", "list", "--json"][..], &nats].concat()).await?;
    let statuses: Vec<(&str, &str)> = rows
        .as_array()
        .context("array")?
        .iter()
        .map(|r| {
            (
                r["instance"].as_str().unwrap_or(""),
                r["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(statuses, [("g-1", "completed"), ("g-2", "running")]);
    let p1 = choreo::schemas::partition_of(&a, bus.config().partitions());
    assert_eq!(rows[0]["partition"], p1);
    assert!(rows[0]["commit"].as_u64().is_some_and(|c| c >= 1), "{rows}");

    let (ok, text, err) =
        run(&[&["sagas", "list", "--status", "running"][..], &nats].concat()).await?;
    assert!(ok, "{err}");
    assert!(
        text.contains("g-2") && !text.contains("g-1") && text.contains("1 instance(s)"),
        "{text}"
    );
    let (ok, text, err) =
        run(&[&["sagas", "list", "--saga", "greeter"][..], &nats].concat()).await?;
    assert!(ok, "{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("SAGA "), "{text}");
    assert_eq!(lines.len(), 4, "{text}");
    for line in &lines[1..3] {
        // SAGA, INSTANCE, STATUS, UPDATED left; PARTITION, APPLIED, TIMERS right.
        assert_aligned(lines[0], line, &[0, 1, 2, 6], &[3, 4, 5]);
    }
    let (ok, _, err) = run(&[&["sagas", "list", "--saga", "a.b"][..], &nats].concat()).await?;
    assert!(!ok && err.contains("invalid saga name"), "{err}");

    let d = run_json(&[&["sagas", "show", "greeter", "g-2", "--json"][..], &nats].concat()).await?;
    assert_eq!(d["state"], serde_json::json!({"who": "bob", "greeted": 1}));
    assert_eq!(d["status"], "running");
    assert_eq!(d["timers"][0]["name"], "remind");
    assert_eq!(d["compensations"][0]["type"], "hello.undo.v1");
    assert_eq!(d["compensations"][0]["data"]["who"], "bob");
    assert_eq!(d["awaits"], serde_json::json!(["bye.v1"]));
    assert!(d["last_applied_sequence"].as_u64().is_some_and(|s| s > 0));
    let (ok, human, err) = run(&[&["sagas", "show", "greeter", "g-2"][..], &nats].concat()).await?;
    assert!(ok, "{err}");
    assert!(
        human.contains("remind")
            && human.contains("\"who\": \"bob\"")
            && human.contains("partition:"),
        "{human}"
    );
    let (ok, _, err) = run(&[&["sagas", "show", "greeter", "nope"][..], &nats].concat()).await?;
    assert!(
        !ok && err.starts_with("error: no instance nope of saga greeter in the changelog"),
        "{err}"
    );

    // Partitions: every one owned by node-a, the instances where their correlations are.
    let parts = run_json(&[&["partitions", "--json"][..], &nats].concat()).await?;
    let parts = parts.as_array().context("array")?;
    assert_eq!(parts.len(), usize::from(bus.config().partitions()));
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["partition"], i);
        assert_eq!(p["owner"], "node-a", "{p}");
        assert!(p["epoch"].as_u64().is_some_and(|e| e > 0), "{p}");
        assert!(p["head"].is_object(), "a takeover head at least: {p}");
    }
    let total: u64 = parts.iter().filter_map(|p| p["instances"].as_u64()).sum();
    assert_eq!(total, 2);
    let row = &parts[usize::from(p1)];
    assert!(row["instances"].as_u64().is_some_and(|n| n >= 1), "{row}");
    let applied = row["applied_seq"].as_u64().context("applied_seq")?;
    assert!(applied >= bye.stream_sequence, "{row}");
    assert!(row["commit"].as_u64().is_some_and(|c| c >= 1), "{row}");
    let after = bus
        .read_events(&bus.subjects().partition_filter(p1))
        .await?
        .iter()
        .filter(|e| e.sequence > applied)
        .count();
    assert_eq!(row["events_after_applied"], after, "{row}");

    let (ok, text, err) = run(&[&["partitions"][..], &nats].concat()).await?;
    assert!(ok, "{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("PARTITION") && lines[0].contains("EVENTS-AFTER-APPLIED"),
        "{text}"
    );
    for line in &lines[1..=parts.len()] {
        assert!(line.contains("node-a"), "{text}");
        // OWNER left; the numbers right.
        assert_aligned(lines[0], line, &[1], &[0, 2, 3, 4, 5, 6]);
    }
    assert!(
        text.contains("16 partition(s), 16 owned by 1 node(s), 2 instance(s)"),
        "{text}"
    );

    // Replay compares with the changelog's record, while the node runs: a handler that now
    // counts differently decides the same events but not the same final state.
    let replay = |by: u32, id: &'static str| {
        let url = url.clone();
        let run = std::thread::spawn(move || {
            let code = choreo_ops::Operator::new()
                .saga(Greeter { by })
                .main_from(["choreo", "replay", "greeter", id, "--nats", &url]);
            format!("{code:?}")
        });
        async move {
            tokio::task::spawn_blocking(move || run.join())
                .await?
                .map_err(|_| anyhow::anyhow!("replay panicked"))
        }
    };
    let ok = format!("{:?}", std::process::ExitCode::SUCCESS);
    let failed = format!("{:?}", std::process::ExitCode::FAILURE);
    assert_eq!(replay(1, "g-1").await?, ok);
    assert_eq!(replay(1, "g-2").await?, ok);
    assert_eq!(replay(2, "g-2").await?, failed);

    // The deprecated --data-dir reads the store, which the node holds: a clear refusal.
    let (ok, _, err) = run(&[
        "sagas",
        "list",
        "--data-dir",
        data.to_str().context("utf-8")?,
    ])
    .await?;
    assert!(!ok && err.contains("locked by another process"), "{err}");
    assert!(err.contains("deprecated"), "{err}");

    let store = node.store().context("store")?.clone();
    node.shutdown().await?;
    drop(store);

    // No node: the changelog still has every instance; the leases are released.
    let rows = run_json(&[&["sagas", "list", "--json"][..], &nats].concat()).await?;
    assert_eq!(rows.as_array().map(Vec::len), Some(2));
    let parts = run_json(&[&["partitions", "--json"][..], &nats].concat()).await?;
    let parts = parts.as_array().context("array")?;
    assert!(parts.iter().all(|p| p["owner"].is_null()), "{parts:?}");
    assert_eq!(
        parts
            .iter()
            .filter_map(|p| p["instances"].as_u64())
            .sum::<u64>(),
        2
    );
    let (ok, text, _) = run(&[&["partitions"][..], &nats].concat()).await?;
    assert!(
        ok && text.contains("16 partition(s), 0 owned by 0 node(s)"),
        "{text}"
    );

    // The deprecated --data-dir still reads a stopped node's store, and never creates one.
    let rows = run_json(&[
        "sagas",
        "list",
        "--json",
        "--data-dir",
        data.to_str().context("utf-8")?,
    ])
    .await?;
    assert_eq!(rows.as_array().map(Vec::len), Some(2));
    let absent = dir.path().join("absent");
    let (ok, _, err) = run(&[
        "sagas",
        "list",
        "--data-dir",
        absent.to_str().context("utf-8")?,
    ])
    .await?;
    assert!(!ok && err.contains("no saga store"), "{err}");
    assert!(!absent.exists(), "no store created by reading");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_of_a_namespace_without_nodes_creates_no_bucket() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let url = server.url();
    let bus = Bus::connect(
        BusConfig::builder()
            .url(url.clone())
            .namespace("idle")
            .partitions(4)
            .build()?,
    )
    .await?;
    let parts = run_json(&[
        "partitions",
        "--json",
        "--nats",
        &url,
        "--namespace",
        "idle",
        "--partitions",
        "4",
    ])
    .await?;
    let parts = parts.as_array().context("array")?;
    assert_eq!(parts.len(), 4);
    for p in parts {
        assert!(p["owner"].is_null() && p["head"].is_null(), "{p}");
        assert_eq!(
            (&p["instances"], &p["events_after_applied"]),
            (&0.into(), &0.into())
        );
    }
    let (ok, text, err) = run(&[
        "partitions",
        "--nats",
        &url,
        "--namespace",
        "idle",
        "--partitions",
        "4",
    ])
    .await?;
    assert!(ok, "{err}");
    let row = text.lines().nth(1).context("a row")?;
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["0", "-", "-", "-", "-", "0", "0"]
    );
    let leases = bus.config().bucket(choreo::LEASES_BUCKET);
    assert!(
        bus.jetstream()
            .get_key_value(leases.as_str())
            .await
            .is_err(),
        "no leases bucket created"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_lists_a_wait_nobody_can_answer() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let url = server.url();
    let dir = tempfile::tempdir()?;
    let nats = ["--nats", url.as_str(), "--namespace", "stalling"];
    // The namespace exists (read commands create none) and has no saga yet.
    Bus::connect(
        BusConfig::builder()
            .url(url.clone())
            .namespace("stalling")
            .build()?,
    )
    .await?;
    let (ok, text, err) = run(&[&["stalls"][..], &nats].concat()).await?;
    assert!(ok && text.trim() == "no stalled waits", "{text} {err}");
    let node = Node::builder()
        .bus(
            BusConfig::builder()
                .url(url.clone())
                .namespace("stalling")
                .build()?,
        )
        .data_dir(dir.path())
        .stall_grace(Duration::from_millis(200))
        .saga(Greeter { by: 1 })
        .build()?
        .start()
        .await?;
    let hello = Event::root(
        "urn:test",
        CorrelationId::new("g-stall")?,
        &Hello { who: "x".into() },
    )?;
    node.bus().publish(&hello).await?;
    // Await the report's effect on the changelog, polling the command itself.
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    let row = tokio::time::timeout(WAIT, async {
        loop {
            poll.tick().await;
            let list = run_json(&[&["stalls", "--json"][..], &nats].concat()).await?;
            if let Some(row) = list.as_array().and_then(|l| l.first()).cloned() {
                return Ok::<_, anyhow::Error>(row);
            }
        }
    })
    .await
    .context("no stall listed")??;
    assert_eq!(row["saga"], "greeter", "{row}");
    assert_eq!(row["instance"], "g-stall", "{row}");
    assert_eq!(row["awaits"], serde_json::json!(["bye.v1"]), "{row}");
    assert_eq!(row["kind"], "no_live_producer", "{row}");
    assert_eq!(row["producers"], serde_json::json!([]), "{row}");
    let (ok, text, err) = run(&[&["stalls"][..], &nats].concat()).await?;
    assert!(ok, "{err}");
    let line = text.lines().nth(1).context("a row")?;
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        (cells[..4].to_vec(), cells[cells.len() - 2..].to_vec()),
        (
            vec!["greeter", "g-stall", "bye.v1", "no_live_producer"],
            vec!["none", "hosted"]
        ),
        "{text}"
    );
    node.shutdown().await?;
    Ok(())
}
