//! Bus provisioning and publishing against a real nats-server.

mod common;

use anyhow::Result;
use choreo::{
    Bus, BusConfig, BusError, CorrelationId, Event, EventType, Node, NodeError, Payload,
    ReactContext, ReactError, Reactor,
};
use common::Harness;
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
        info.subjects,
        vec!["choreo.evt.>".to_owned(), "choreo.redrive.>".to_owned()]
    );
    h.bus.jetstream().get_stream("CHOREO_DLQ").await?;
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
