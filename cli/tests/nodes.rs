//! Nodes as child processes (`choreo node --example travel`) sharing the saga partitions on
//! real nats-servers: kill -9, SIGSTOP past the lease, join, graceful leave, a server killed,
//! two demos at once. Invariants are read from the log and the changelog.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use choreo::{Bus, Changelog, NatsCluster, NatsServer, PartitionHead, Replicas, SagaId};
use choreo_example_travel::{TravelOptions, TripSaga};
use futures::StreamExt;
use tokio::process::Command;

use common::{config, NodeProc, PARTITIONS, WAIT};

const TTL_MS: u64 = 2000;

/// The drive's summary, or (when it failed) an error that says which trips did not end and
/// what every node logged last (the nodes are killed to read their logs).
async fn summary_or_explain(
    run: tokio::task::JoinHandle<Result<choreo_example_travel::Summary>>,
    bus: &Bus,
    nodes: Vec<NodeProc>,
) -> Result<(choreo_example_travel::Summary, Vec<NodeProc>)> {
    match run.await? {
        Ok(s) => Ok((s, nodes)),
        Err(e) => {
            let mut logs = String::new();
            for n in nodes {
                let id = n.id.clone();
                let log = n.kill().await.unwrap_or_default();
                let tail: Vec<_> = log.lines().rev().take(40).collect();
                logs.push_str(&format!(
                    "\n--- node {id} (last lines, newest first) ---\n{}",
                    tail.join("\n")
                ));
            }
            bail!("{e:#}\nnot ended: {}{logs}", not_ended(bus).await?)
        }
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
        // A trip's timers fire once each: the step's, then maybe an unanswered effect's.
        let mut key = e.ty.to_string();
        if e.ty.as_str() == choreo::SAGA_TIMED_OUT {
            let l: choreo::Lifecycle = e.decode_as()?;
            key = format!("{key}/{}", l.timer.unwrap_or_default());
        }
        // Repeats that are not duplicates: a compensation sent unconfirmed (its step's answer
        // was late) is sent again when the late confirmation comes (the provider applies it
        // once: the ledger check), re-opening `compensating`; a gate and the service behind
        // it may both refuse one expired command (or give up on one command).
        let may_repeat = key.ends_with(".cancel.v1")
            || key.ends_with(".cancelled.v1")
            || key.ends_with(".refund.v1")
            || key.ends_with(".refunded.v1")
            || key == choreo::SAGA_COMPENSATING
            || key == choreo::SAGA_COMPENSATED
            || key == choreo::COMMAND_EXPIRED
            || key == choreo::COMMAND_DEAD_LETTERED;
        if may_repeat {
            continue;
        }
        *per_trip
            .entry((e.correlation.to_string(), key))
            .or_default() += 1;
    }
    let repeated: Vec<_> = per_trip.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "repeated per trip: {repeated:?}");
    Ok(all.len())
}

/// The ledger's problems: per (trip, step) a booking or cancel applied twice, a cancel of a
/// completed trip, or a booking of a trip that did not complete left uncancelled.
async fn ledger_problems(
    ledger: &choreo_services::Ledger,
    summary: &choreo_example_travel::Summary,
) -> Result<(usize, Vec<String>)> {
    let entries = ledger.entries().await?;
    let mut by: BTreeMap<(String, String), (u32, u32)> = BTreeMap::new();
    for e in &entries {
        if let Some((step, trip)) = e
            .effect
            .strip_prefix("book a ")
            .and_then(|r| r.split_once(" for "))
        {
            by.entry((trip.to_owned(), step.to_owned())).or_default().0 += 1;
        } else if let Some((step, trip)) = e
            .effect
            .strip_prefix("cancel the ")
            .and_then(|r| r.split_once(" of "))
        {
            by.entry((trip.to_owned(), step.to_owned())).or_default().1 += 1;
        }
    }
    let completed: BTreeSet<&str> = summary
        .trips
        .iter()
        .filter(|(_, o)| *o == choreo_example_travel::Outcome::Completed)
        .map(|(t, _)| t.as_str())
        .collect();
    let mut problems = Vec::new();
    for ((trip, step), (booked, cancelled)) in &by {
        if *booked > 1 || *cancelled > 1 {
            problems.push(format!(
                "{trip}: {step} booked {booked}x, cancelled {cancelled}x"
            ));
        } else if completed.contains(trip.as_str()) && *cancelled > 0 {
            problems.push(format!("{trip} completed but its {step} was cancelled"));
        } else if !completed.contains(trip.as_str()) && booked > cancelled {
            problems.push(format!(
                "{trip} did not complete and its {step} is still booked"
            ));
        }
    }
    Ok((entries.len(), problems))
}

/// Instances not terminal, with what they wait for (for failure messages).
async fn not_ended(bus: &Bus) -> Result<String> {
    let mut out = String::new();
    for r in Changelog::new(bus).list(None, None).await? {
        if r.status.is_terminal() {
            continue;
        }
        let effects: Vec<_> = r.effects.iter().map(|e| (e.ty.clone(), e.state)).collect();
        let undoing: Vec<_> = r.undoing.iter().map(|u| u.ty.clone()).collect();
        out.push_str(&format!(
            "\n  {} {} reason={:?} timers={:?} effects={effects:?} undoing={undoing:?}",
            r.instance, r.status, r.reason, r.timers
        ));
        out.push_str(&format!(
            "\n    history: {}",
            history_of(bus, &r.correlation).await?
        ));
        let h = bus
            .correlation_history(&choreo::CorrelationId::new(r.correlation.as_str())?)
            .await?;
        for d in &h.dead_letters {
            out.push_str(&format!(
                "\n    dead letter: {} {} {}",
                d.actor, d.reason, d.detail
            ));
        }
    }
    Ok(out)
}

/// A correlation's event types in log order.
async fn history_of(bus: &Bus, correlation: &str) -> Result<String> {
    let h = bus
        .correlation_history(&choreo::CorrelationId::new(correlation)?)
        .await?;
    Ok(h.events
        .iter()
        .map(|e| e.event.ty.to_string())
        .collect::<Vec<_>>()
        .join(" "))
}

/// Await (following the providers' answers) a ledger with no problem; the number of effects.
async fn await_ledger_settled(
    bus: &Bus,
    summary: &choreo_example_travel::Summary,
) -> Result<usize> {
    let ledger = choreo_services::Ledger::open(bus, "TRAVEL_LEDGER").await?;
    let filters = choreo_example_travel::Step::ALL
        .iter()
        .flat_map(|s| {
            [
                s.ty(choreo_example_travel::Verb::Done),
                s.ty(choreo_example_travel::Verb::Cancelled),
            ]
        })
        .map(|t| bus.subjects().type_filter(&t))
        .collect();
    let mut answers = bus.follow_events_matching(filters, false).await?;
    let mut last = Vec::new();
    let settled = tokio::time::timeout(WAIT, async {
        loop {
            let (n, problems) = ledger_problems(&ledger, summary).await?;
            if problems.is_empty() {
                return Ok::<_, anyhow::Error>(n);
            }
            last = problems;
            match answers.next().await {
                Some(e) => {
                    e?;
                }
                None => bail!("the answers stream ended"),
            }
        }
    })
    .await;
    match settled {
        Ok(r) => r,
        Err(_) => {
            let mut detail = String::new();
            for p in &last {
                if let Some(trip) = p.split([':', ' ']).next() {
                    detail.push_str(&format!("\n  {trip}: {}", history_of(bus, trip).await?));
                }
            }
            bail!("the ledger did not settle: {last:?}{detail}")
        }
    }
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
    let (summary, nodes) = summary_or_explain(run, &bus, nodes).await?;
    assert_eq!(
        summary.trips.len(),
        300,
        "every trip reached a terminal state"
    );
    // Commands the killed node had fetched come back after the providers' ack_wait (30 s):
    // past their deadline, they are refused (`choreo.command.expired`) and compensated if an
    // earlier delivery may have run them. Follow the answers until the ledger holds no
    // uncompensated effect of a trip that did not complete.
    let answers = await_ledger_settled(&bus, &summary).await?;
    let events = check_log(&bus).await?;
    check_epochs(&log).await?;
    println!("300 trips, {events} events, {answers} effects, none leaked, no duplicate");
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
    let saga = TripSaga::new(Duration::from_millis(4000));
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
    let (summary, nodes) = summary_or_explain(run, &bus, vec![a, b]).await?;
    assert_eq!(
        summary.trips.len(),
        100,
        "every trip terminal with a server down"
    );
    cluster.restart(0).await?;
    await_ledger_settled(&bus, &summary).await?;
    for n in nodes {
        n.stop().await?;
    }
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

/// The nats-server stopped (SIGSTOP) for 10 s mid-run, then continued: every trip terminal, and
/// the ledger holds no uncancelled booking of a trip that did not complete, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_paused_for_ten_seconds_mid_run() -> Result<()> {
    let mut server = NatsServer::start_temp().await?;
    let url = server.url();
    let bus = Bus::connect(config(&url, Replicas::One)?).await?;
    let dir = tempfile::tempdir()?;
    let a = NodeProc::start(&url, dir.path(), "pa", TTL_MS, 1).await?;
    let (mut ended, run) = drive(&bus, 60);
    until_ended(&mut ended, 10).await?;
    server.pause().await?;
    // The fault's length (the nemesis), not a wait for a result.
    tokio::time::sleep(Duration::from_secs(10)).await;
    server.resume().await?;
    let summary = run.await??;
    assert_eq!(
        summary.trips.len(),
        60,
        "every trip terminal after the pause"
    );
    await_ledger_settled(&bus, &summary).await?;
    a.stop().await?;
    check_log(&bus).await?;
    Ok(())
}
