//! Partition processors against a real nats-server: ownership, the changelog and the fence.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result};
use async_nats::jetstream::message::PublishMessage;
use choreo::schemas::partition_of;
use choreo::{Changelog, CorrelationId, Node, PartitionHead, SagaStatus, SAGA_COMPLETED};
use common::trip::{trip, Agency, Scenario, TripSaga};
use common::{history_types, wait_events, wait_until, Harness, WAIT};

/// A correlation id `trip-<prefix>-<n>` that lives in `partition`.
fn trip_in(partition: u16, partitions: u16, prefix: &str) -> String {
    (0..)
        .map(|n| format!("trip-{prefix}-{n}"))
        .find(|c| {
            CorrelationId::new(c.as_str()).is_ok_and(|c| partition_of(&c, partitions) == partition)
        })
        .unwrap_or_default()
}

/// A processor whose commit is rejected because another owner wrote the partition's head stops
/// at once, keeps nothing of the partition, and publishes nothing it decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_processor_stops_and_publishes_nothing() -> Result<()> {
    let h = Harness::with_partitions(2).await?;
    let dir = tempfile::tempdir()?;
    let node = Node::builder()
        .bus(h.config()?)
        .data_dir(dir.path())
        .node_id("owner-a")
        .reactor(Agency)
        .saga(TripSaga::new("trip", Duration::from_secs(30)))
        .build()?
        .start()
        .await?;
    node.wait_owned(2, WAIT).await?;
    let p = 1u16;
    let first = trip_in(p, 2, "before");
    h.bus.publish(&trip(&first, Scenario::Ok)).await?;
    let completed = h
        .bus
        .subjects()
        .type_filter(&common::trip::ty(SAGA_COMPLETED));
    wait_events(&h.bus, &completed, 1).await?;

    // Another owner takes the partition over: a head with a newer epoch, fenced on the current.
    let log = Changelog::new(&h.bus);
    let head = log.head(p).await?.context("the partition has a head")?;
    let intruder = PartitionHead {
        epoch: head.value.epoch + 1_000,
        owner: "intruder".into(),
        takeover: true,
        ..head.value.clone()
    };
    let msg = PublishMessage::build()
        .expected_last_subject_sequence(head.sequence)
        .payload(rmp_serde::to_vec_named(&intruder)?.into());
    h.bus
        .jetstream()
        .send_publish(format!("choreo.state.{p}.head"), msg)
        .await?
        .await?;

    let second = trip_in(p, 2, "after");
    h.bus.publish(&trip(&second, Scenario::Ok)).await?;
    wait_until("the processor of the partition was fenced", || {
        let health = node.health();
        async move {
            Ok(health
                .iter()
                .any(|x| x.partition == p && !x.alive && x.exit.as_deref() == Some("Fenced")))
        }
    })
    .await?;
    let store = node.store().context("store")?;
    assert!(
        store.list_partition(p)?.is_empty(),
        "a fenced partition's state is dropped"
    );
    assert!(
        store.get("trip", &first)?.is_none(),
        "nothing of the partition kept"
    );
    // The other partition is untouched and still served.
    assert!(node.health().iter().any(|x| x.partition == 0 && x.alive));
    // Nothing the fenced owner decided reached the log: the trip is only its request.
    assert_eq!(history_types(&h.bus, &second).await?, ["trip.requested.v1"]);
    let last = log.head(p).await?.context("head")?;
    assert_eq!(
        last.value.owner, "intruder",
        "the fenced owner committed nothing"
    );
    assert!(log.find("trip", &second, None).await?.is_none());
    let done = log
        .find("trip", &first, None)
        .await?
        .context("first trip")?;
    assert_eq!(done.status, SagaStatus::Completed);
    node.shutdown().await?;
    Ok(())
}

/// A node with an empty data dir takes a partition over and rebuilds it from the changelog:
/// its sled and the changelog agree record by record, and the instances go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_data_dir_is_rebuilt_from_the_changelog() -> Result<()> {
    let h = Harness::with_partitions(4).await?;
    let start = |dir: &std::path::Path, id: &str| -> Result<Node> {
        Ok(Node::builder()
            .bus(h.config()?)
            .data_dir(dir)
            .node_id(id)
            .reactor(Agency)
            .saga(TripSaga::new("trip", Duration::from_secs(600)))
            .build()?)
    };
    let first_dir = tempfile::tempdir()?;
    let node = start(first_dir.path(), "first")?.start().await?;
    let trips: Vec<_> = (0..12)
        .map(|i| trip(&format!("rebuild-{i}"), Scenario::CarSilent))
        .collect();
    h.bus.publish_all(&trips).await?;
    let car_book = h.bus.subjects().type_filter(&common::trip::book("car"));
    wait_events(&h.bus, &car_book, 12).await?;
    node.shutdown().await?;

    let empty = tempfile::tempdir()?;
    let node = start(empty.path(), "second")?.start().await?;
    node.wait_owned(4, WAIT).await?;
    let store = node.store().context("store")?;
    let log = Changelog::new(&h.bus);
    let mut compared = 0;
    for p in 0..4 {
        let mut local = store.list_partition(p)?;
        let mut logged: Vec<_> = log
            .partition_records(p)
            .await?
            .into_iter()
            .map(|e| e.value)
            .collect();
        local.sort_by(|a, b| a.instance.cmp(&b.instance));
        logged.sort_by(|a, b| a.instance.cmp(&b.instance));
        assert_eq!(local, logged, "partition {p}: sled = changelog");
        compared += local.len();
    }
    assert_eq!(compared, 12);
    assert_eq!(store.timers_len(), 12, "every step timer is indexed again");
    // The rebuilt instances go on: the silent cars answer now.
    let answers: Vec<_> = (0..12)
        .map(|i| {
            let id = format!("rebuild-{i}");
            let mut e = trip(&id, Scenario::Ok);
            e.ty = common::trip::booked("car");
            e
        })
        .collect();
    h.bus.publish_all(&answers).await?;
    let completed = h
        .bus
        .subjects()
        .type_filter(&common::trip::ty(SAGA_COMPLETED));
    wait_events(&h.bus, &completed, 12).await?;
    node.shutdown().await?;
    Ok(())
}
