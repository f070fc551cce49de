//! Bus provisioning and publishing against a real nats-server.

mod common;

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use choreo::{
    Bus, BusConfig, BusError, CorrelationId, Event, EventType, Node, NodeError, Payload,
    ReactContext, ReactError, Reactor, StoredEvent,
};
use common::{Harness, WAIT};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Noted {
    text: String,
}
impl Payload for Noted {
    const TYPE: &'static str = "note.added.v1";
}

#[tokio::test]
async fn provisioning_is_idempotent_and_records_the_partition_count() -> Result<()> {
    let h = Harness::with_partitions(4).await?;
    // A second connect with the same config is fine.
    Bus::connect(h.config()?).await?;
    let info = h
        .bus
        .jetstream()
        .get_stream("CHOREO_EVENTS")
        .await?
        .info()
        .await?
        .config
        .clone();
    assert_eq!(
        info.metadata
            .get(choreo::PARTITIONS_METADATA_KEY)
            .map(String::as_str),
        Some("4")
    );
    assert!(info.duplicate_window >= choreo::MIN_DUPLICATE_WINDOW);
    assert_eq!(
        info.metadata
            .get(choreo::PARTITION_HASH_METADATA_KEY)
            .map(String::as_str),
        Some("fnv1a32")
    );
    assert_eq!(
        info.subjects,
        vec![
            "choreo.evt.>".to_owned(),
            "choreo.redrive.>".to_owned(),
            "choreo.in.*.>".to_owned()
        ]
    );
    h.bus.jetstream().get_stream("CHOREO_DLQ").await?;
    Ok(())
}

#[tokio::test]
async fn the_ingress_places_every_correlation_at_choreos_partition() -> Result<()> {
    let h = Harness::with_partitions(7).await?;
    let js = h.bus.jetstream();
    let ty = Noted::event_type();
    let correlations: Vec<CorrelationId> = (0..300)
        .map(|i| CorrelationId::new(format!("c-{i}-{}", i * 7919)))
        .collect::<Result<_, _>>()?;
    let mut seqs = Vec::new();
    for c in &correlations {
        let ack = js
            .publish(h.bus.subjects().ingress(c, &ty), "x".into())
            .await?
            .await?;
        seqs.push(ack.sequence);
    }
    let stream = js.get_stream("CHOREO_EVENTS").await?;
    let mut seen = std::collections::BTreeSet::new();
    for (c, seq) in correlations.iter().zip(seqs) {
        let stored = stream.get_raw_message(seq).await?;
        let p = h.bus.partition_of(c);
        seen.insert(p);
        assert_eq!(
            stored.subject.as_str(),
            h.bus.subjects().event(p, c, &ty),
            "the server placed {c} where choreo's hash does"
        );
    }
    assert_eq!(seen.len(), 7, "the correlations cover every partition");
    // An ingress subject without a type is not captured: the producer hears so.
    let err = js.publish("choreo.in.lonely", "x".into()).await?.await;
    assert!(err.is_err(), "{err:?}");
    Ok(())
}

/// The events stream as choreo created it before the ingress: no hash recorded.
async fn legacy_namespace(partitions: u16) -> Result<(choreo::NatsServer, Bus)> {
    let server = choreo::NatsServer::start_temp().await?;
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await?);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "CHOREO_EVENTS".into(),
        subjects: vec!["choreo.evt.>".into(), "choreo.redrive.>".into()],
        duplicate_window: choreo::MIN_DUPLICATE_WINDOW,
        allow_direct: true,
        allow_atomic_publish: true,
        metadata: [(
            choreo::PARTITIONS_METADATA_KEY.to_owned(),
            partitions.to_string(),
        )]
        .into(),
        ..Default::default()
    })
    .await?;
    let bus = Bus::connect(common::Harness::config_for(&server, partitions)?).await?;
    Ok((server, bus))
}

#[tokio::test]
async fn a_namespace_from_before_the_ingress_keeps_its_hash() -> Result<()> {
    use choreo::schemas::{partition_of, PartitionHash};
    let (_server, bus) = legacy_namespace(12).await?;
    assert_eq!(bus.partitioner().hash, PartitionHash::Fnv1a64);
    let differ = (0..100)
        .map(|i| CorrelationId::new(format!("d{i}")))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .find(|c| PartitionHash::Fnv1a64.partition(c, 12) != partition_of(c, 12))
        .ok_or_else(|| anyhow!("some correlation hashes differently among 12"))?;
    let e = Event::root("urn:t", differ.clone(), &Noted { text: "x".into() })?;
    let published = bus.publish(&e).await?;
    let stream = bus.jetstream().get_stream("CHOREO_EVENTS").await?;
    let stored = stream.get_raw_message(published.stream_sequence).await?;
    let p = PartitionHash::Fnv1a64.partition(&differ, 12);
    assert_eq!(
        stored.subject.as_str(),
        bus.subjects().event(p, &differ, &e.ty),
        "the namespace's own (earlier) hash places it"
    );
    let info = stream.get_info().await?.config;
    assert_eq!(info.subjects.len(), 2, "no ingress: {:?}", info.subjects);
    // A second connect (another node) agrees.
    let again = Bus::connect(bus.config().clone()).await?;
    assert_eq!(again.partitioner(), bus.partitioner());
    Ok(())
}

#[tokio::test]
async fn a_namespace_from_before_the_ingress_with_16_partitions_gets_one() -> Result<()> {
    let (_server, bus) = legacy_namespace(16).await?;
    assert_eq!(
        bus.partitioner().hash,
        choreo::schemas::PartitionHash::Fnv1a32,
        "16 divides 32: both hashes agree, so the namespace moved"
    );
    let stream = bus.jetstream().get_stream("CHOREO_EVENTS").await?;
    let info = stream.get_info().await?.config;
    assert_eq!(
        info.metadata
            .get(choreo::PARTITION_HASH_METADATA_KEY)
            .map(String::as_str),
        Some("fnv1a32")
    );
    let c = CorrelationId::new("legacy-1")?;
    let ack = bus
        .jetstream()
        .publish(bus.subjects().ingress(&c, &Noted::event_type()), "x".into())
        .await?
        .await?;
    let stored = stream.get_raw_message(ack.sequence).await?;
    assert_eq!(
        stored.subject.as_str(),
        bus.subjects()
            .event(bus.partition_of(&c), &c, &Noted::event_type())
    );
    Ok(())
}

#[tokio::test]
async fn a_node_with_another_partition_count_refuses_to_start() -> Result<()> {
    let h = Harness::with_partitions(4).await?;
    let other = BusConfig::builder()
        .url(h.server.url())
        .partitions(8)
        .build()?;
    let err = Bus::connect(other.clone()).await.expect_err("must refuse");
    assert!(
        matches!(
            err,
            BusError::PartitionMismatch {
                log: 4,
                configured: 8,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("created with 4 partitions") && msg.contains("configured with 8"),
        "{msg}"
    );

    struct Idle;
    impl Reactor for Idle {
        fn name(&self) -> &str {
            "idle"
        }
        fn consumes(&self) -> Vec<EventType> {
            vec![Noted::event_type()]
        }
        fn emits(&self) -> Vec<EventType> {
            vec![]
        }
        async fn react(&self, _: &Event, _: &mut ReactContext) -> Result<(), ReactError> {
            Ok(())
        }
    }
    let node_err = Node::builder()
        .bus(other)
        .reactor(Idle)
        .build()?
        .start()
        .await
        .expect_err("must refuse");
    assert!(
        matches!(node_err, NodeError::Bus(BusError::PartitionMismatch { .. })),
        "{node_err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn publishing_the_same_event_twice_stores_it_once() -> Result<()> {
    let h = Harness::start().await?;
    let c = CorrelationId::new("dup-1")?;
    let e = Event::root("urn:test", c.clone(), &Noted { text: "x".into() })?;
    let first = h.bus.publish(&e).await?;
    let again = h.bus.publish(&e).await?;
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(first.stream_sequence, again.stream_sequence);
    let many: Vec<Event> = (0..50)
        .map(|i| {
            Event::root(
                "urn:test",
                c.clone(),
                &Noted {
                    text: i.to_string(),
                },
            )
        })
        .collect::<Result<_, _>>()?;
    let acks = h.bus.publish_all(&many).await?;
    assert!(
        acks.windows(2)
            .all(|w| w[0].stream_sequence < w[1].stream_sequence),
        "in order"
    );
    let history = h.bus.history(&c).await?;
    assert_eq!(history.len(), 51);
    let subject = &history[0].subject;
    let p = choreo::schemas::partition_of(&c, 4);
    assert_eq!(subject, &format!("choreo.evt.{p}.dup-1.note.added.v1"));
    Ok(())
}

#[tokio::test]
async fn connecting_to_nothing_is_a_clear_error() -> Result<()> {
    let port = choreo::free_port()?;
    let cfg = BusConfig::builder()
        .url(format!("nats://127.0.0.1:{port}"))
        .request_timeout(std::time::Duration::from_secs(1))
        .build()?;
    let err = Bus::connect(cfg).await.expect_err("nothing listens");
    assert!(
        err.to_string().starts_with(&format!(
            "cannot connect to NATS at nats://127.0.0.1:{port}"
        )),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn an_atomic_batch_is_stored_whole_once() -> Result<()> {
    let h = Harness::start().await?;
    let c = CorrelationId::new("atomic-1")?;
    let batch: Vec<Event> = (0..3)
        .map(|i| {
            Event::root(
                "urn:test",
                c.clone(),
                &Noted {
                    text: i.to_string(),
                },
            )
        })
        .collect::<Result<_, _>>()?;
    let first = h.bus.publish_atomic(&batch).await?;
    assert!(!first.duplicate);
    assert_eq!(h.bus.history(&c).await?.len(), 3);
    // A re-run of the same batch (same ids) stores nothing new.
    let again = h.bus.publish_atomic(&batch).await;
    assert_eq!(
        h.bus.history(&c).await?.len(),
        3,
        "re-run deduplicated: {again:?}"
    );
    Ok(())
}

fn notes(c: &CorrelationId, prefix: &str, n: usize) -> Result<Vec<Event>> {
    (0..n)
        .map(|i| {
            Ok(Event::root(
                "urn:test",
                c.clone(),
                &Noted {
                    text: format!("{prefix}-{i}"),
                },
            )?)
        })
        .collect()
}

/// The next item of a follow, or an error after `WAIT`.
async fn next_of<T>(
    follow: &mut BoxStream<'static, Result<T, BusError>>,
) -> Result<Option<Result<T, BusError>>> {
    tokio::time::timeout(WAIT, follow.next())
        .await
        .map_err(|_| anyhow!("timed out waiting for the follow"))
}

async fn next_event(
    follow: &mut BoxStream<'static, Result<StoredEvent, BusError>>,
) -> Result<StoredEvent> {
    next_of(follow)
        .await?
        .ok_or_else(|| anyhow!("the follow ended"))?
        .map_err(Into::into)
}

/// Publish until stored (ids deduplicate, so a retry after a lost ack stores nothing twice).
async fn publish_until_stored(bus: &Bus, events: &[Event]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        match bus.publish_all(events).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("publish failed, retrying: {e}");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[tokio::test]
async fn a_follow_survives_a_server_restart() -> Result<()> {
    let mut h = Harness::start().await?;
    let c = CorrelationId::new("restart-1")?;
    let filter = h.bus.filter_for(Some(&c), None);
    // Stored before the follow starts: not followed (new events only).
    h.bus.publish_all(&notes(&c, "old", 3)?).await?;
    let mut follow = h.bus.follow_events(&filter, false).await?;

    let before = notes(&c, "before", 5)?;
    h.bus.publish_all(&before).await?;
    let mut got = Vec::new();
    for _ in 0..before.len() {
        got.push(next_event(&mut follow).await?);
    }

    let t = Instant::now();
    h.server.restart().await?;
    let restarted = t.elapsed();
    // Published while the follow's consumer is gone and not yet re-created.
    let after = notes(&c, "after", 7)?;
    publish_until_stored(&h.bus, &after).await?;
    let published = t.elapsed();
    for _ in 0..after.len() {
        got.push(next_event(&mut follow).await?);
    }
    let resumed = t.elapsed();
    eprintln!("server restarted in {restarted:?}; published after {published:?}; all delivered after {resumed:?}");

    // Nothing more: the next item is an event published last, not a duplicate.
    let last = notes(&c, "last", 1)?;
    h.bus.publish_all(&last).await?;
    got.push(next_event(&mut follow).await?);

    let want: Vec<_> = before
        .iter()
        .chain(&after)
        .chain(&last)
        .map(|e| e.id)
        .collect();
    let ids: Vec<_> = got
        .iter()
        .map(|s| s.event.as_ref().map(|e| e.id).map_err(|e| anyhow!("{e}")))
        .collect::<Result<_>>()?;
    assert_eq!(ids, want, "every event once, in order");
    assert!(
        got.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "in log order"
    );
    Ok(())
}

#[tokio::test]
async fn a_follow_of_a_deleted_stream_fails_then_ends() -> Result<()> {
    let h = Harness::start().await?;
    let c = CorrelationId::new("deleted-1")?;
    let mut follow = h
        .bus
        .follow_events(&h.bus.filter_for(Some(&c), None), true)
        .await?;
    h.bus.publish_all(&notes(&c, "n", 2)?).await?;
    next_event(&mut follow).await?;
    next_event(&mut follow).await?;
    h.bus.jetstream().delete_stream("CHOREO_EVENTS").await?;
    match next_of(&mut follow).await? {
        Some(Err(BusError::JetStream { reason, .. })) => {
            assert!(reason.contains("stream not found"), "{reason}");
        }
        other => panic!("expected the stream's deletion, got {other:?}"),
    }
    assert!(
        next_of(&mut follow).await?.is_none(),
        "ends after the error"
    );
    Ok(())
}
