//! Nodes as child processes (`choreo node --example travel`) sharing the saga partitions on
//! real nats-servers: kill -9, SIGSTOP past the lease, join, graceful leave, a server killed,
//! two demos at once. Invariants are read from the log and the changelog.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use choreo::{Bus, BusConfig, Changelog, NatsCluster, NatsServer, PartitionHead, Replicas, SagaId};
use choreo_example_travel::{TravelOptions, TripSaga};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(90);
const PARTITIONS: u16 = 8;
const TTL_MS: u64 = 2000;

fn config(url: &str, replicas: Replicas) -> Result<BusConfig> {
    Ok(BusConfig::builder()
        .url(url)
        .partitions(PARTITIONS)
        .replicas(replicas)
        .request_timeout(Duration::from_secs(5))
        .build()?)
}

/// One `choreo node` child process.
struct NodeProc {
    id: String,
    child: Child,
    stderr: tokio::task::JoinHandle<String>,
}

impl NodeProc {
    async fn start(url: &str, dir: &Path, id: &str, ttl_ms: u64, replicas: u8) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_choreo"))
            .args([
                "node",
                "--example",
                "travel",
                "--nats",
                url,
                "--node-id",
                id,
            ])
            .arg("--data-dir")
            .arg(dir.join(id))
            .args(["--lease-ttl-ms", &ttl_ms.to_string()])
            .args(["--partitions", &PARTITIONS.to_string()])
            .args(["--replicas", &replicas.to_string()])
            .args(["--step-timeout-ms", "4000"])
            .env_remove("CHOREO_NATS_URL")
            .env("CHOREO_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut stderr = child.stderr.take().context("stderr")?;
        let stderr = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            s
        });
        let mut lines = BufReader::new(stdout).lines();
        tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("choreo node ready") {
                    return Ok(());
                }
            }
            bail!("node {id} exited before it was ready")
        })
        .await
        .context("node start timed out")??;
        Ok(Self {
            id: id.to_owned(),
            child,
            stderr,
        })
    }

    fn pid(&self) -> Result<String> {
        Ok(self.child.id().context("running")?.to_string())
    }

    async fn signal(&self, sig: &str) -> Result<()> {
        let ok = Command::new("kill")
            .args([sig, &self.pid()?])
            .status()
            .await?
            .success();
        if !ok {
            bail!("kill {sig} {} failed", self.id);
        }
        Ok(())
    }

    /// SIGTERM and wait for a clean exit; returns what it logged.
    async fn stop(mut self) -> Result<String> {
        self.signal("-TERM").await?;
        let status = tokio::time::timeout(WAIT, self.child.wait()).await??;
        let log = self.stderr.await?;
        if !status.success() {
            bail!("node {} exited with {status}: {log}", self.id);
        }
        Ok(log)
    }

    /// SIGKILL; returns what it logged.
    async fn kill(mut self) -> Result<String> {
        self.child.kill().await?;
        Ok(self.stderr.await?)
    }
}

/// Follow the partition heads (latest of each, then every new one) until `pred` holds over
/// partition → owner; returns when it first held.
async fn until_owners(
    bus: &Bus,
    what: &str,
    pred: impl Fn(&BTreeMap<u16, String>) -> bool,
) -> Result<Instant> {
    use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
    let stream = bus.jetstream().get_stream("CHOREO_STATE").await?;
    let mut heads = stream
        .create_consumer(OrderedConfig {
            filter_subject: "choreo.state.*.head".into(),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await?
        .messages()
        .await?;
    let mut owners = BTreeMap::new();
    let watch = async {
        if pred(&owners) {
            return Ok(Instant::now());
        }
        while let Some(msg) = heads.next().await {
            let head: PartitionHead = rmp_serde::from_slice(&msg?.payload)?;
            owners.insert(head.partition, head.owner);
            if pred(&owners) {
                return Ok(Instant::now());
            }
        }
        bail!("the heads stream ended")
    };
    match tokio::time::timeout(WAIT, watch).await {
        Ok(r) => r,
        Err(_) => bail!("timed out waiting until {what}"),
    }
}

fn opts(trips: u32) -> TravelOptions {
    let mut o = TravelOptions::new(trips, 7, Default::default());
    o.step_timeout = Duration::from_secs(6);
    o.deadline = WAIT;
    o
}

/// Drive `trips` trips in the background; the watch says how many ended so far.
fn drive(
    bus: &Bus,
    trips: u32,
) -> (
    tokio::sync::watch::Receiver<usize>,
    tokio::task::JoinHandle<Result<choreo_example_travel::Summary>>,
) {
    let (tx, rx) = tokio::sync::watch::channel(0);
    let bus = bus.clone();
    let task = tokio::spawn(async move {
        choreo_example_travel::drive(&bus, None, &opts(trips), |_, _, n, _| {
            let _ = tx.send(n);
        })
        .await
    });
    (rx, task)
}

/// Await the `n`th trip's end.
async fn until_ended(ended: &mut tokio::sync::watch::Receiver<usize>, n: usize) -> Result<()> {
    let reached = tokio::time::timeout(WAIT, ended.wait_for(|x| *x >= n))
        .await
        .map(|r| r.is_ok());
    if reached != Ok(true) {
        bail!("only {} of {n} trips ended", *ended.borrow());
    }
    Ok(())
}

/// The log's invariants over every event: no id twice (no decided event duplicated), and per
/// trip no event type twice (every command, answer and lifecycle step once).
async fn check_log(bus: &Bus) -> Result<usize> {
    let all = bus.read_events(&bus.subjects().all_events()).await?;
    let mut ids = BTreeSet::new();
    let mut per_trip: BTreeMap<(String, String), usize> = BTreeMap::new();
    for stored in &all {
        let e = stored.event.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        assert!(
            ids.insert(e.id),
            "event {} ({}) twice on the log",
            e.id,
            e.ty
        );
        *per_trip
            .entry((e.correlation.to_string(), e.ty.to_string()))
            .or_default() += 1;
    }
    let repeated: Vec<_> = per_trip.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "repeated per trip: {repeated:?}");
    Ok(all.len())
}

/// The changelog's fencing invariant: one owner per (partition, epoch) over every record.
async fn check_epochs(log: &Changelog) -> Result<()> {
    let mut by_epoch: BTreeMap<(u16, u64), BTreeSet<String>> = BTreeMap::new();
    for r in log.list(None, None).await? {
        by_epoch
            .entry((r.partition, r.epoch))
            .or_default()
            .insert(r.owner.clone());
        assert!(r.status.is_terminal(), "{} is {}", r.instance, r.status);
    }
    for h in log.heads().await? {
        by_epoch
            .entry((h.value.partition, h.value.epoch))
            .or_default()
            .insert(h.value.owner.clone());
    }
    let shared: Vec<_> = by_epoch.iter().filter(|(_, o)| o.len() > 1).collect();
    assert!(
        shared.is_empty(),
        "two owners committed at one epoch: {shared:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_cluster_survive_a_kill() -> Result<()> {
    let cluster = NatsCluster::start(3).await?;
    let url = cluster.urls().join(",");
    let bus = Bus::connect(config(&url, Replicas::Three)?).await?;
    let dir = tempfile::tempdir()?;
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(NodeProc::start(&url, dir.path(), &format!("n{i}"), TTL_MS, 3).await?);
    }
    let log = Changelog::new(&bus);
    until_owners(&bus, "every partition has an owner", |o| {
        o.len() == usize::from(PARTITIONS)
    })
    .await?;
    let (mut ended, run) = drive(&bus, 300);
    until_ended(&mut ended, 80).await?;
    let victim = nodes.remove(1);
    let killed = Instant::now();
    victim.kill().await?;
    let took = until_owners(&bus, "the killed node's partitions moved", |o| {
        o.len() == usize::from(PARTITIONS) && o.values().all(|x| x != "n1")
    })
    .await?
    .duration_since(killed);
    println!(
        "takeover after kill -9: {} ms for every partition of the killed node (lease TTL {TTL_MS} ms)",
        took.as_millis()
    );
    let summary = run.await??;
    assert_eq!(
        summary.trips.len(),
        300,
        "every trip reached a terminal state"
    );
    // Commands the killed node had fetched come back after the providers' ack_wait (30 s) and
    // are answered then (effectively once: the ledger says "already applied"). Follow the
    // answers until every effect in the ledger has one.
    let effects: BTreeSet<String> = choreo_example_travel::Step::ALL
        .iter()
        .flat_map(|s| {
            [
                s.ty(choreo_example_travel::Verb::Done),
                s.ty(choreo_example_travel::Verb::Cancelled),
            ]
        })
        .map(|t| t.to_string())
        .collect();
    let filters = effects
        .iter()
        .filter_map(|t| choreo::EventType::new(t.as_str()).ok())
        .map(|t| bus.subjects().type_filter(&t))
        .collect();
    let ledger = choreo_services::Ledger::open(&bus, "TRAVEL_LEDGER").await?;
    let mut answered = bus.follow_events_matching(filters, true).await?;
    let mut seen = 0u64;
    tokio::time::timeout(WAIT, async {
        while let Some(e) = answered.next().await {
            e?;
            seen += 1;
            if seen >= ledger.len().await? {
                return Ok::<_, anyhow::Error>(());
            }
        }
        bail!("the answers stream ended")
    })
    .await
    .with_context(|| format!("{seen} answers for the ledger's effects"))??;
    let events = check_log(&bus).await?;
    check_epochs(&log).await?;
    // Every effect the providers applied is in the ledger once, with exactly one answer on
    // the log (a command executed twice would show two ledger keys or two answers).
    let answers = bus
        .read_events(&bus.subjects().all_events())
        .await?
        .into_iter()
        .filter(|s| {
            s.event
                .as_ref()
                .is_ok_and(|e| effects.contains(e.ty.as_str()))
        })
        .count();
    assert_eq!(
        ledger.len().await?,
        u64::try_from(answers)?,
        "one ledger entry per applied effect"
    );
    println!("300 trips, {events} events, {answers} effects, no duplicate");
    for n in nodes {
        n.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_is_fenced_and_every_instance_replays_identical() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let bus = Bus::connect(config(&server.url(), Replicas::One)?).await?;
    let dir = tempfile::tempdir()?;
    let a = NodeProc::start(&server.url(), dir.path(), "pa", TTL_MS, 1).await?;
    let b = NodeProc::start(&server.url(), dir.path(), "pb", TTL_MS, 1).await?;
    let log = Changelog::new(&bus);
    until_owners(&bus, "both nodes own partitions", |o| {
        o.len() == usize::from(PARTITIONS)
            && o.values().any(|x| x == "pa")
            && o.values().any(|x| x == "pb")
    })
    .await?;
    let (mut ended, run) = drive(&bus, 60);
    until_ended(&mut ended, 10).await?;
    a.signal("-STOP").await?;
    let paused = Instant::now();
    until_owners(&bus, "the paused node's partitions were taken over", |o| {
        o.len() == usize::from(PARTITIONS) && o.values().all(|x| x == "pb")
    })
    .await?;
    println!(
        "takeover of a paused owner: {} ms",
        paused.elapsed().as_millis()
    );
    a.signal("-CONT").await?;
    let summary = run.await??;
    assert_eq!(summary.trips.len(), 60);
    let log_a = a.stop().await?;
    b.stop().await?;
    assert!(
        log_a.contains("fenced") || log_a.contains("lease lost") || log_a.contains("not renewed"),
        "the woken owner noticed it lost its partitions: {log_a}"
    );
    check_log(&bus).await?;
    check_epochs(&log).await?;
    let saga = TripSaga {
        step_timeout: Duration::from_millis(4000),
    };
    for (trip, _) in &summary.trips {
        let report = choreo::replay(&saga, &bus, None, &SagaId::new(trip.as_str())?).await?;
        assert!(report.is_identical(), "{report}");
        let stored = log
            .find("trip", trip, None)
            .await?
            .context("in the changelog")?;
        assert!(stored.status.is_terminal());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_nodes_take_their_share_while_trips_run() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let bus = Bus::connect(config(&server.url(), Replicas::One)?).await?;
    let dir = tempfile::tempdir()?;
    let mut nodes = vec![NodeProc::start(&server.url(), dir.path(), "j0", TTL_MS, 1).await?];
    let (mut ended, run) = drive(&bus, 150);
    until_ended(&mut ended, 20).await?;
    for i in 1..3 {
        nodes.push(NodeProc::start(&server.url(), dir.path(), &format!("j{i}"), TTL_MS, 1).await?);
    }
    let log = Changelog::new(&bus);
    until_owners(&bus, "the partitions spread over the three nodes", |o| {
        o.values().collect::<BTreeSet<_>>().len() == 3
    })
    .await?;
    let summary = run.await??;
    assert_eq!(summary.trips.len(), 150);
    for n in nodes {
        n.stop().await?;
    }
    check_log(&bus).await?;
    check_epochs(&log).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_hands_over_faster_than_the_lease_ttl() -> Result<()> {
    const LONG_TTL_MS: u64 = 15_000;
    let server = NatsServer::start_temp().await?;
    let bus = Bus::connect(config(&server.url(), Replicas::One)?).await?;
    let dir = tempfile::tempdir()?;
    let a = NodeProc::start(&server.url(), dir.path(), "ga", LONG_TTL_MS, 1).await?;
    let b = NodeProc::start(&server.url(), dir.path(), "gb", LONG_TTL_MS, 1).await?;
    until_owners(&bus, "both nodes own partitions", |o| {
        o.len() == usize::from(PARTITIONS)
            && o.values().any(|x| x == "gb")
            && o.values().any(|x| x == "ga")
    })
    .await?;
    let (mut ended, run) = drive(&bus, 40);
    until_ended(&mut ended, 5).await?;
    let left = Instant::now();
    b.stop().await?;
    let took = until_owners(&bus, "the leaver's partitions moved", |o| {
        o.len() == usize::from(PARTITIONS) && o.values().all(|x| x == "ga")
    })
    .await?
    .duration_since(left);
    println!(
        "graceful handover: {} ms (lease TTL {LONG_TTL_MS} ms)",
        took.as_millis()
    );
    assert!(
        took < Duration::from_millis(LONG_TTL_MS),
        "handover took {took:?}"
    );
    let summary = run.await??;
    assert_eq!(summary.trips.len(), 40);
    a.stop().await?;
    check_log(&bus).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_servers_killed_mid_run() -> Result<()> {
    let mut cluster = NatsCluster::start(3).await?;
    let url = cluster.urls().join(",");
    let bus = Bus::connect(config(&url, Replicas::Three)?).await?;
    let dir = tempfile::tempdir()?;
    let a = NodeProc::start(&url, dir.path(), "sa", TTL_MS, 3).await?;
    let b = NodeProc::start(&url, dir.path(), "sb", TTL_MS, 3).await?;
    let (mut ended, run) = drive(&bus, 100);
    until_ended(&mut ended, 20).await?;
    cluster.kill(0).await?;
    let summary = run.await??;
    assert_eq!(
        summary.trips.len(),
        100,
        "every trip terminal with a server down"
    );
    cluster.restart(0).await?;
    a.stop().await?;
    b.stop().await?;
    check_log(&bus).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demos_at_once_on_one_server_both_end_as_predicted() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let demo = || {
        Command::new(env!("CARGO_BIN_EXE_choreo"))
            .args([
                "demo",
                "--trips",
                "30",
                "--json",
                "--step-timeout-ms",
                "6000",
            ])
            .args(["--nats", &server.url()])
            .env_remove("CHOREO_NATS_URL")
            .kill_on_drop(true)
            .output()
    };
    let (x, y) = tokio::join!(demo(), demo());
    let o = opts(30);
    let mut predicted: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..30 {
        *predicted
            .entry(choreo_example_travel::predict(&o, i).as_str().to_owned())
            .or_default() += 1;
    }
    for out in [x?, y?] {
        assert!(
            out.status.success(),
            "stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let counts: BTreeMap<String, usize> = serde_json::from_value(v["counts"].clone())?;
        assert_eq!(counts, predicted);
    }
    Ok(())
}
