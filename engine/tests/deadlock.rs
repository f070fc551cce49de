//! Deadlocks and stalls on a real nats-server with sled on a temp dir: a wait-for cycle through
//! a reactor is detected and broken; a cycle left by an owner without detection is found by
//! the next owner from the changelog; a wait whose producer no node hosts is reported stalled
//! once, and clears when a node hosting the producer appears.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result};
use choreo::{
    CorrelationId, DeadlockDetected, Event, EventType, Node, ReactContext, ReactError, Reactor,
    RunningNode, Saga, SagaContext, SagaError, SagaStatus, StallDetected, StallKind, Store,
    DEADLOCK_DETECTED, STALL_DETECTED,
};
use common::{wait_until, Harness};

fn ty(s: &str) -> EventType {
    EventType::new(s).expect("a valid type")
}

/// Starts on `starts`, sends `sends` (if any) and awaits `awaits` (within `within`, if set);
/// on it, emits `emits` (if any) and completes.
#[derive(Clone, Copy)]
struct Waiter {
    name: &'static str,
    starts: &'static str,
    sends: Option<&'static str>,
    awaits: &'static str,
    within: Option<Duration>,
    emits: Option<&'static str>,
}

impl Waiter {
    /// Starts on `start.v1`, awaits `awaits`, then emits `emits`.
    const fn cycle(name: &'static str, awaits: &'static str, emits: &'static str) -> Self {
        Self {
            name,
            starts: "start.v1",
            sends: None,
            awaits,
            within: None,
            emits: Some(emits),
        }
    }
}

impl Saga for Waiter {
    type State = ();
    fn name(&self) -> &str {
        self.name
    }
    fn starts_on(&self) -> Vec<EventType> {
        vec![ty(self.starts)]
    }
    fn continues_on(&self) -> Vec<EventType> {
        vec![ty(self.awaits)]
    }
    fn emits(&self) -> Vec<EventType> {
        self.sends
            .iter()
            .chain(&self.emits)
            .map(|t| ty(t))
            .collect()
    }
    fn handle(&self, _: &mut (), e: &Event, ctx: &mut SagaContext) -> Result<(), SagaError> {
        if e.ty.as_str() == self.starts {
            if let Some(t) = self.sends {
                ctx.emit_raw(ty(t), Vec::new())?;
            }
            match self.within {
                Some(d) => ctx.awaits_within(ty(self.awaits), d),
                None => ctx.awaits(ty(self.awaits)),
            }
        } else {
            if let Some(t) = self.emits {
                ctx.emit_raw(ty(t), Vec::new())?;
            }
            ctx.complete();
        }
        Ok(())
    }
    fn on_timeout(&self, _: &mut (), _: &str, _: &mut SagaContext) -> Result<(), SagaError> {
        Ok(())
    }
}

/// Starts on `job.v1`, sends `work.v1` and awaits `work.done.v1`, then completes.
const JOB: Waiter = Waiter {
    name: "job",
    starts: "job.v1",
    sends: Some("work.v1"),
    awaits: "work.done.v1",
    within: None,
    emits: None,
};

/// Starts on `ask.v1` and awaits `pong.v1` for 300 ms, with no timer to handle it.
const ASKER: Waiter = Waiter {
    name: "asker",
    starts: "ask.v1",
    sends: None,
    awaits: "pong.v1",
    within: Some(Duration::from_millis(300)),
    emits: None,
};

/// Turns `from` into `to`.
struct Relay {
    name: &'static str,
    from: &'static str,
    to: &'static str,
}

impl Reactor for Relay {
    fn name(&self) -> &str {
        self.name
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![ty(self.from)]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![ty(self.to)]
    }
    async fn react(&self, _: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        ctx.emit_raw(ty(self.to), Vec::new())?;
        Ok(())
    }
}

/// Saga `a` awaits t1, which only reactor `r` emits, from t3, which only saga `b` emits once
/// it has t2, which only `a` emits once it has t1.
async fn reactor_cycle_node(
    h: &Harness,
    dir: &std::path::Path,
    detect: bool,
) -> Result<RunningNode> {
    Ok(Node::builder()
        .bus(h.config()?)
        .data_dir(dir)
        .coordination(detect)
        .saga(Waiter::cycle("a", "t1.v1", "t2.v1"))
        .saga(Waiter::cycle("b", "t2.v1", "t3.v1"))
        .reactor(Relay {
            name: "r",
            from: "t3.v1",
            to: "t1.v1",
        })
        .build()?
        .start()
        .await?)
}

async fn start(h: &Harness, correlation: &str) -> Result<()> {
    let e = Event::root_raw(
        "urn:test",
        CorrelationId::new(correlation)?,
        ty("start.v1"),
        Vec::new(),
    );
    h.bus.publish(&e).await?;
    Ok(())
}

/// The decoded coordination events of type `t` on a correlation.
async fn reports<T: serde::de::DeserializeOwned>(
    h: &Harness,
    correlation: &str,
    t: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for s in h.bus.history(&CorrelationId::new(correlation)?).await? {
        let e = s.event?;
        if e.ty.as_str() == t {
            out.push(rmp_serde::from_slice(&e.data)?);
        }
    }
    Ok(out)
}

async fn wait_status(store: &Store, saga: &str, instance: &str, status: SagaStatus) -> Result<()> {
    wait_until(&format!("{saga}/{instance} is {status}"), || {
        let store = store.clone();
        async move {
            Ok(store
                .get(saga, instance)?
                .is_some_and(|r| r.status == status))
        }
    })
    .await
}

#[tokio::test]
async fn a_cycle_through_a_reactor_is_detected_and_broken() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let node = reactor_cycle_node(&h, dir.path(), true).await?;
    let store = node.store().context("store")?.clone();
    start(&h, "cyc-1").await?;
    // The victim is `b`: both waits date from the same input, and `b` > `a`.
    wait_status(&store, "b", "cyc-1", SagaStatus::Compensated).await?;
    let found: Vec<DeadlockDetected> = reports(&h, "cyc-1", DEADLOCK_DETECTED).await?;
    assert_eq!(found.len(), 1, "one detection: {found:?}");
    let d = &found[0];
    let members: Vec<&str> = d.cycle.members.iter().map(|m| m.saga.as_str()).collect();
    assert_eq!(members, ["a", "b"]);
    assert_eq!(d.victim.saga, "b");
    assert_eq!(d.cycle.members[0].awaits, ["t1.v1"]);
    assert_eq!(
        d.cycle.members[0].producers,
        ["r"],
        "t1 comes from the reactor"
    );
    assert_eq!(d.cycle.members[1].producers, ["a"]);
    let b = store.get("b", "cyc-1")?.context("b")?;
    assert!(
        b.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("deadlock")),
        "{:?}",
        b.reason
    );
    assert!(b.waits.is_empty());
    // `a` still waits (for what only the failed `b` could cause): a stall, not a deadlock.
    let a = store.get("a", "cyc-1")?.context("a")?;
    assert_eq!(a.status, SagaStatus::Running);
    assert_eq!(node.metrics().coordination().deadlocks, 1);
    // The causal tree marks the cycle, and the victim's failure hangs under the report.
    let tree = h
        .bus
        .correlation_history(&CorrelationId::new("cyc-1")?)
        .await?
        .tree()
        .to_text();
    let line = tree
        .lines()
        .find(|l| l.contains(DEADLOCK_DETECTED))
        .context("the report is in the tree")?;
    assert!(
        line.contains("⟲") && line.contains("DEADLOCK: a/cyc-1 awaits t1.v1 (from r)"),
        "{tree}"
    );
    assert!(line.contains("victim b/cyc-1"), "{tree}");
    assert!(tree.contains("   ├─ choreo.saga.failed"), "{tree}");
    // Replay applies the report as the owner did.
    let id = choreo::SagaId::new("cyc-1")?;
    for (name, awaits, emits) in [("a", "t1.v1", "t2.v1"), ("b", "t2.v1", "t3.v1")] {
        let saga = Waiter::cycle(name, awaits, emits);
        choreo::assert_replays(&saga, &h.bus, Some(&store), &id).await;
    }
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn the_next_owner_detects_a_cycle_from_the_changelog() -> Result<()> {
    let h = Harness::start().await?;
    let first_dir = tempfile::tempdir()?;
    let first = reactor_cycle_node(&h, first_dir.path(), false).await?;
    let store = first.store().context("store")?.clone();
    start(&h, "cyc-2").await?;
    wait_until("both instances wait", || {
        let store = store.clone();
        async move {
            Ok(["a", "b"].iter().all(|s| {
                store
                    .get(s, "cyc-2")
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.waits.len() == 1)
            }))
        }
    })
    .await?;
    first.shutdown().await?;
    drop(store);
    assert!(reports::<DeadlockDetected>(&h, "cyc-2", DEADLOCK_DETECTED)
        .await?
        .is_empty());
    // A new owner with its own (empty) store: it restores the partition from the changelog.
    let second_dir = tempfile::tempdir()?;
    let second = reactor_cycle_node(&h, second_dir.path(), true).await?;
    let store = second.store().context("store")?.clone();
    wait_status(&store, "b", "cyc-2", SagaStatus::Compensated).await?;
    let found: Vec<DeadlockDetected> = reports(&h, "cyc-2", DEADLOCK_DETECTED).await?;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].detected_by, second.node_id().to_string());
    second.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_wait_nobody_can_answer_is_reported_once_and_clears() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let node = Node::builder()
        .bus(h.config()?)
        .data_dir(dir.path())
        .stall_grace(Duration::from_millis(300))
        .saga(JOB)
        .build()?
        .start()
        .await?;
    let store = node.store().context("store")?.clone();
    let job = Event::root_raw(
        "urn:test",
        CorrelationId::new("job-1")?,
        ty("job.v1"),
        Vec::new(),
    );
    h.bus.publish(&job).await?;
    // Applied: the wait is marked, so it is never reported again.
    wait_until("the wait is marked stalled", || {
        let store = store.clone();
        async move {
            Ok(store.get("job", "job-1")?.is_some_and(|r| {
                r.waits.len() == 1 && r.waits[0].stalled == Some(StallKind::NoLiveProducer)
            }))
        }
    })
    .await?;
    let stalls: Vec<StallDetected> = reports(&h, "job-1", STALL_DETECTED).await?;
    assert_eq!(stalls.len(), 1);
    assert_eq!(stalls[0].awaits, ["work.done.v1"]);
    assert!(stalls[0].producers.is_empty(), "nobody hosts a producer");
    // A node hosting the producer appears: the command on the log is answered.
    let worker = Node::builder()
        .bus(h.config()?)
        .reactor(Relay {
            name: "worker",
            from: "work.v1",
            to: "work.done.v1",
        })
        .build()?
        .start()
        .await?;
    wait_status(&store, "job", "job-1", SagaStatus::Completed).await?;
    let r = store.get("job", "job-1")?.context("job")?;
    assert!(
        r.waits.is_empty(),
        "the satisfied wait is gone: {:?}",
        r.waits
    );
    let stalls: Vec<StallDetected> = reports(&h, "job-1", STALL_DETECTED).await?;
    assert_eq!(stalls.len(), 1, "reported once: {stalls:?}");
    assert_eq!(node.metrics().coordination().stalls, 1);
    choreo::assert_replays(&JOB, &h.bus, Some(&store), &choreo::SagaId::new("job-1")?).await;
    worker.shutdown().await?;
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_wait_past_its_deadline_is_reported_once_while_its_producer_lives() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    // `pinger` can produce the pong (from pings that come from outside), but none comes.
    let node = Node::builder()
        .bus(h.config()?)
        .data_dir(dir.path())
        .saga(ASKER)
        .reactor(Relay {
            name: "pinger",
            from: "ping.v1",
            to: "pong.v1",
        })
        .build()?
        .start()
        .await?;
    let store = node.store().context("store")?.clone();
    let ask = Event::root_raw(
        "urn:test",
        CorrelationId::new("ask-1")?,
        ty("ask.v1"),
        Vec::new(),
    );
    h.bus.publish(&ask).await?;
    wait_until("the wait is marked stalled", || {
        let store = store.clone();
        async move {
            Ok(store.get("asker", "ask-1")?.is_some_and(|r| {
                r.waits.len() == 1 && r.waits[0].stalled == Some(StallKind::DeadlinePassed)
            }))
        }
    })
    .await?;
    let stalls: Vec<StallDetected> = reports(&h, "ask-1", STALL_DETECTED).await?;
    assert_eq!(stalls.len(), 1, "{stalls:?}");
    assert!(stalls[0].deadline_ms.is_some());
    assert_eq!(stalls[0].producers.len(), 1);
    assert_eq!(stalls[0].producers[0].actor, "pinger");
    assert_eq!(stalls[0].producers[0].live, [node.node_id().to_string()]);
    // Not a deadlock: a ping may still come from outside.
    assert!(reports::<DeadlockDetected>(&h, "ask-1", DEADLOCK_DETECTED)
        .await?
        .is_empty());
    // The pong comes after all: the wait ends, the instance completes.
    let ping = Event::root_raw(
        "urn:test",
        CorrelationId::new("ask-1")?,
        ty("ping.v1"),
        Vec::new(),
    );
    h.bus.publish(&ping).await?;
    wait_status(&store, "asker", "ask-1", SagaStatus::Completed).await?;
    assert_eq!(
        reports::<StallDetected>(&h, "ask-1", STALL_DETECTED)
            .await?
            .len(),
        1
    );
    node.shutdown().await?;
    Ok(())
}
