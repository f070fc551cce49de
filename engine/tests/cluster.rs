//! A 3-server JetStream cluster: the replicated log survives losing a server, and the server
//! rejoins when restarted.

use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use choreo::{Bus, BusConfig, CorrelationId, Event, NatsCluster, Payload, Replicas};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Longest wait for one awaited state (leader failover takes a few election timeouts).
const WAIT: Duration = Duration::from_secs(20);
/// Pause between two checks of an awaited state.
const POLL: Duration = Duration::from_millis(100);

#[derive(Serialize, Deserialize)]
struct Noted {
    n: u32,
}
impl Payload for Noted {
    const TYPE: &'static str = "note.added.v1";
}

/// Retry `attempt` until it succeeds, failing with its last error after `WAIT`.
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let last = match tokio::time::timeout(remaining, attempt()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => anyhow!("attempt still running at the deadline"),
        };
        if Instant::now() + POLL >= deadline {
            return Err(last.context(format!("{what}: not within {WAIT:?}")));
        }
        // A backoff between retries of an operation that failed (a stream electing its
        // leader), not a wait for a result: every result is awaited by the attempt itself.
        tokio::time::sleep(POLL).await;
    }
}

fn notes(correlation: &str, range: std::ops::Range<u32>) -> Result<Vec<Event>> {
    let c = CorrelationId::new(correlation)?;
    range
        .map(|n| Ok(Event::root("urn:test:cluster", c.clone(), &Noted { n })?))
        .collect()
}

/// Publish, retrying while the stream fails over: the event id deduplicates a retried
/// publish whose first ack was lost.
async fn publish_all(bus: &Bus, events: &[Event]) -> Result<()> {
    for e in events {
        eventually("publish", || async { Ok(bus.publish(e).await?) }).await?;
    }
    Ok(())
}

async fn events_stream_cluster(bus: &Bus) -> Result<async_nats::jetstream::stream::ClusterInfo> {
    let mut stream = bus
        .jetstream()
        .get_stream(bus.config().events_stream())
        .await?;
    let info = stream.info().await?;
    info.cluster
        .clone()
        .ok_or_else(|| anyhow!("stream info has no cluster section"))
}

#[tokio::test]
async fn an_r3_log_survives_losing_its_leader_and_the_server_rejoins() -> Result<()> {
    let began = Instant::now();
    let mut cluster = NatsCluster::start(3).await.context("start the cluster")?;
    assert_eq!(cluster.len(), 3);

    // The list form of the URLs is a server list for async-nats.
    let raw = async_nats::ConnectOptions::new()
        .connect(cluster.urls())
        .await?;
    assert_eq!(raw.server_info().cluster.as_deref(), Some("choreo"));
    drop(raw);

    let bus = Bus::connect(
        BusConfig::builder()
            .url(cluster.url())
            .replicas(Replicas::Three)
            .partitions(4)
            .request_timeout(Duration::from_secs(2))
            .build()?,
    )
    .await
    .context("connect the bus and provision R3 streams")?;
    let cfg = bus
        .jetstream()
        .get_stream(bus.config().events_stream())
        .await?
        .cached_info()
        .config
        .clone();
    assert_eq!(cfg.num_replicas, 3);

    let before = notes("order-1", 0..5)?;
    publish_all(&bus, &before).await?;

    // Crash the events stream's leader: the two survivors must elect a new one.
    let leader = eventually("the events stream has a leader", || async {
        let name = events_stream_cluster(&bus)
            .await?
            .leader
            .ok_or_else(|| anyhow!("no leader yet"))?;
        cluster
            .index_of(&name)
            .ok_or_else(|| anyhow!("leader {name} is not a member"))
    })
    .await?;
    let leader_name = cluster.server(leader).name();
    cluster.kill(leader).await?;
    assert!(cluster.server(leader).pid().is_none());

    let after = notes("order-2", 0..5)?;
    publish_all(&bus, &after).await?;

    let expected: Vec<_> = before.iter().chain(&after).map(|e| e.id).collect();
    let filter = bus.subjects().all_events();
    let read = eventually("read every event back", || async {
        let got = bus
            .read_events(&filter)
            .await?
            .into_iter()
            .map(|s| Ok(s.event?.id))
            .collect::<Result<Vec<_>>>()?;
        if got.len() == expected.len() {
            Ok(got)
        } else {
            Err(anyhow!("read {} of {} events", got.len(), expected.len()))
        }
    })
    .await?;
    // Each correlation keeps its order; partitions may interleave.
    for batch in [&before, &after] {
        let ids: Vec<_> = batch.iter().map(|e| e.id).collect();
        let seen: Vec<_> = read.iter().filter(|id| ids.contains(id)).copied().collect();
        assert_eq!(seen, ids);
    }
    let new_leader = events_stream_cluster(&bus).await?.leader;
    assert!(
        new_leader.is_some() && new_leader.as_deref() != Some(leader_name.as_str()),
        "leader after the crash: {new_leader:?}"
    );

    // The restarted server rejoins with its store and catches up as a current replica.
    cluster.restart(leader).await?;
    eventually(
        "the restarted server is a current replica again",
        || async {
            let info = events_stream_cluster(&bus).await?;
            let current = info.leader.as_deref() == Some(leader_name.as_str())
                || info
                    .replicas
                    .iter()
                    .any(|p| p.name == leader_name && p.current && !p.offline);
            if current {
                Ok(())
            } else {
                Err(anyhow!(
                    "{leader_name} not current yet: {:?}",
                    info.replicas
                ))
            }
        },
    )
    .await?;
    assert_eq!(bus.read_events(&filter).await?.len(), expected.len());

    // A paused server stops answering without leaving; resumed, it answers again.
    let other = (leader + 1) % cluster.len();
    cluster.pause(other).await?;
    assert!(cluster.server(other).is_paused());
    cluster.resume(other).await?;
    assert!(!cluster.server(other).is_paused());
    cluster.wait_ready().await?;

    eprintln!("cluster test took {:?}", began.elapsed());
    Ok(())
}
