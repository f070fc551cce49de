//! Detection survives failover: the seed-002 swarm deadlocks on a node that does not detect
//! (`--no-coordination`), that node is killed (-9), and the next owner, another `choreo node`
//! process, finds the cycle from the changelog and breaks it. Real nats-server, child processes.

mod common;

use anyhow::{Context as _, Result};
use choreo::{
    Bus, Changelog, CorrelationId, DeadlockDetected, NatsServer, Replicas, SagaStatus,
    DEADLOCK_DETECTED,
};
use choreo_example_deadlock::{task_event, Variant, CYCLIC_CORRELATION};
use common::{config, NodeProc, WAIT};

const TTL_MS: u64 = 2000;
const AGENTS: [&str; 4] = ["planner", "coder", "tester", "docs"];

/// Await `check` on the changelog's records of the swarm's correlation, polling every 100 ms.
async fn until_agents(
    bus: &Bus,
    what: &str,
    check: impl Fn(&[choreo::InstanceRecord]) -> bool,
) -> Result<Vec<choreo::InstanceRecord>> {
    let log = Changelog::new(bus);
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(100));
    tokio::time::timeout(WAIT, async {
        loop {
            poll.tick().await;
            let mut found = Vec::new();
            for a in AGENTS {
                if let Some(r) = log.find(a, CYCLIC_CORRELATION, None).await? {
                    found.push(r);
                }
            }
            if found.len() == AGENTS.len() && check(&found) {
                return Ok::<_, anyhow::Error>(found);
            }
        }
    })
    .await
    .with_context(|| format!("timed out waiting until {what}"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_owner_breaks_a_deadlock_its_killed_predecessor_left() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let url = server.url();
    let dir = tempfile::tempdir()?;
    let a = NodeProc::start_example(
        "deadlock",
        &url,
        dir.path(),
        "node-a",
        TTL_MS,
        1,
        &["--no-coordination"],
    )
    .await?;
    let bus = Bus::connect(config(&url, Replicas::One)?).await?;
    bus.publish(&task_event(Variant::Cyclic)?).await?;
    until_agents(&bus, "all four agents wait", |rs| {
        rs.iter()
            .all(|r| r.status == SagaStatus::Running && r.waits.len() == 1)
    })
    .await?;
    let a_log = a.kill().await?;
    let history = |bus: Bus| async move {
        let mut found: Vec<DeadlockDetected> = Vec::new();
        for s in bus
            .history(&CorrelationId::new(CYCLIC_CORRELATION)?)
            .await?
        {
            let e = s.event?;
            if e.ty.as_str() == DEADLOCK_DETECTED {
                found.push(rmp_serde::from_slice(&e.data)?);
            }
        }
        Ok::<_, anyhow::Error>(found)
    };
    assert!(
        history(bus.clone()).await?.is_empty(),
        "the first node detected nothing: {a_log}"
    );

    let b = NodeProc::start_example("deadlock", &url, dir.path(), "node-b", TTL_MS, 1, &[]).await?;
    let ended = until_agents(&bus, "every agent ended", |rs| {
        rs.iter().all(|r| r.status.is_terminal())
    })
    .await?;
    let found = history(bus.clone()).await?;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].detected_by, "node-b");
    let members: Vec<&str> = found[0]
        .cycle
        .members
        .iter()
        .map(|m| m.saga.as_str())
        .collect();
    assert_eq!(members, ["coder", "docs", "tester"]);
    let victim = &found[0].victim.saga;
    for r in &ended {
        assert_eq!(r.status, SagaStatus::Compensated, "{r:?}");
        let reason = r.reason.as_deref().unwrap_or_default();
        if &r.saga == victim {
            assert!(reason.starts_with("deadlock"), "{reason}");
        } else {
            assert!(reason.starts_with("teammate"), "{reason}");
        }
        assert_eq!(r.owner, "node-b", "{r:?}");
    }
    b.stop().await?;
    Ok(())
}
