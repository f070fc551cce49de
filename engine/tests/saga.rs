//! Sagas and routing slips against a real nats-server and sled on a temp dir.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result};
use choreo::{
    Node, RunningNode, SagaStatus, Store, SAGA_COMPENSATED, SAGA_COMPLETED, SAGA_FAULTED,
};
use common::trip::{trip, Agency, Scenario, TripSaga};
use common::{history_types, wait_dead_letters, wait_events, wait_until, Harness};

const CAR_TIMEOUT: Duration = Duration::from_millis(800);

/// Which implementation of the itinerary a test hosts.
#[derive(Clone, Copy)]
enum Kind {
    Saga,
    Slip,
}

async fn start_node(h: &Harness, dir: &std::path::Path, kind: Kind) -> Result<RunningNode> {
    let b = Node::builder()
        .bus(h.config()?)
        .data_dir(dir)
        .reactor(Agency);
    let b = match kind {
        Kind::Saga => b.saga(TripSaga::new("trip", CAR_TIMEOUT)),
        Kind::Slip => b.saga(common::trip::trip_slip("trip", CAR_TIMEOUT)),
    };
    Ok(b.build()?.start().await?)
}

/// Wait until `correlation`'s saga completed (its history holds `choreo.saga.completed`).
async fn wait_completed(h: &Harness, correlation: &str) -> Result<()> {
    wait_until(&format!("{correlation} completed"), || async {
        Ok(history_types(&h.bus, correlation)
            .await?
            .iter()
            .any(|t| t == SAGA_COMPLETED))
    })
    .await
}

fn count(types: &[String], t: &str) -> usize {
    types.iter().filter(|x| x.as_str() == t).count()
}

/// Happy path, hotel failure and silent car, for one implementation.
async fn three_outcomes(kind: Kind) -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let node = start_node(&h, dir.path(), kind).await?;
    h.bus
        .publish_all(&[
            trip("trip-ok", Scenario::Ok),
            trip("trip-hotel", Scenario::HotelFails),
            trip("trip-car", Scenario::CarSilent),
        ])
        .await?;
    let subjects = h.bus.subjects();
    wait_events(
        &h.bus,
        &subjects.type_filter(&common::trip::ty(SAGA_COMPLETED)),
        1,
    )
    .await?;
    wait_events(
        &h.bus,
        &subjects.type_filter(&common::trip::ty(SAGA_COMPENSATED)),
        2,
    )
    .await?;
    let store = node.store().context("sagas have a store")?.clone();

    let ok = history_types(&h.bus, "trip-ok").await?;
    assert_eq!(
        ok,
        [
            "trip.requested.v1",
            "choreo.saga.started",
            "flight.book.v1",
            "flight.booked.v1",
            "hotel.book.v1",
            "hotel.booked.v1",
            "car.book.v1",
            "car.booked.v1",
            "choreo.saga.completed",
        ]
    );
    let r = store.get("trip", "trip-ok")?.context("instance")?;
    assert_eq!(r.status, SagaStatus::Completed);
    assert!(r.timers.is_empty() && r.compensations.is_empty());

    let hotel = history_types(&h.bus, "trip-hotel").await?;
    assert_eq!(count(&hotel, "flight.cancel.v1"), 1, "{hotel:?}");
    assert_eq!(
        count(&hotel, "hotel.cancel.v1") + count(&hotel, "car.book.v1"),
        0,
        "{hotel:?}"
    );
    let tail: Vec<&str> = hotel
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "choreo.saga.failed",
            "choreo.saga.compensating",
            "flight.cancel.v1",
            "choreo.saga.compensated"
        ]
    );
    let r = store.get("trip", "trip-hotel")?.context("instance")?;
    assert_eq!(r.status, SagaStatus::Compensated);
    assert!(
        r.reason
            .as_deref()
            .is_some_and(|x| x.ends_with("hotel failed")),
        "{:?}",
        r.reason
    );

    // The slip issues its commands as effects: the silent car's booking, unanswered past its
    // deadline and grace, is cancelled too (a second timer firing); the hand-written saga
    // pushes compensations only for confirmed steps.
    let blind = matches!(kind, Kind::Slip);
    let car = history_types(&h.bus, "trip-car").await?;
    assert_eq!(
        count(&car, "choreo.saga.timed_out"),
        1 + usize::from(blind),
        "the car timer fired once: {car:?}"
    );
    let cancels: Vec<&str> = car
        .iter()
        .filter(|t| t.ends_with(".cancel.v1"))
        .map(String::as_str)
        .collect();
    let mut expected = vec!["hotel.cancel.v1", "flight.cancel.v1"];
    if blind {
        expected.push("car.cancel.v1");
    }
    assert_eq!(cancels, expected, "reverse order, then the unanswered car");
    let r = store.get("trip", "trip-car")?.context("instance")?;
    assert_eq!(r.status, SagaStatus::Compensated);
    assert!(
        r.reason.as_deref().is_some_and(|x| x.contains("car")),
        "{:?}",
        r.reason
    );
    assert_eq!(store.timers_len(), 0, "no timer left behind");

    let metrics = node.metrics().clone();
    node.shutdown().await?;
    // The changelog holds the same records the node materialised.
    let logged = choreo::Changelog::new(&h.bus).list(None, None).await?;
    assert_eq!(logged.len(), 3);
    for r in &logged {
        let mut local = store.get("trip", &r.instance)?.context("materialised")?;
        local.outbox.clone_from(&r.outbox);
        assert_eq!(&local, r, "sled reflects the changelog");
    }
    let m = metrics.snapshot("trip");
    // 3 starts + 2 + 1 + 3 answers... every applied input is counted, and flushed in batches.
    assert!(m.handled >= 9, "{m:?}");
    assert!(m.batches >= 1 && m.batch_inputs >= m.batches, "{m:?}");
    assert!(m.flush_quantile_us(0.99).is_some() && m.mean_batch().is_some());
    let g = store.gauges()?;
    assert_eq!(
        g.instances.get(&("trip".into(), "completed".into())),
        Some(&1)
    );
    assert_eq!(
        g.instances.get(&("trip".into(), "compensated".into())),
        Some(&2)
    );
    assert_eq!((g.timers_pending, g.outbox_depth), (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_completes_compensates_and_times_out() -> Result<()> {
    three_outcomes(Kind::Saga).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_slip_completes_compensates_and_times_out() -> Result<()> {
    three_outcomes(Kind::Slip).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_inputs_change_nothing() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let node = start_node(&h, dir.path(), Kind::Saga).await?;
    h.bus.publish(&trip("dup-1", Scenario::Ok)).await?;
    let completed = h
        .bus
        .subjects()
        .type_filter(&common::trip::ty(SAGA_COMPLETED));
    wait_events(&h.bus, &completed, 1).await?;
    node.shutdown().await?;
    let before = history_types(&h.bus, "dup-1").await?;
    let record_before = Store::open(dir.path())?
        .get("trip", "dup-1")?
        .context("instance")?;

    // Forget the partitions' progress: every input is read again from the start of the log.
    let heads = choreo::Changelog::new(&h.bus).heads().await?;
    assert!(!heads.is_empty());
    let mut applied = Vec::new();
    for head in heads {
        let mut rewound = head.value.clone();
        applied.push((rewound.partition, rewound.applied_seq));
        rewound.applied_seq = 0;
        let subject = format!("choreo.state.{}.head", rewound.partition);
        h.bus
            .jetstream()
            .publish(subject, rmp_serde::to_vec_named(&rewound)?.into())
            .await?
            .await?;
    }
    let node = start_node(&h, dir.path(), Kind::Saga).await?;
    let changelog = choreo::Changelog::new(&h.bus);
    wait_until("the partitions have re-read the log", || {
        let changelog = changelog.clone();
        let applied = applied.clone();
        async move {
            for (p, seq) in applied {
                match changelog.head(p).await? {
                    Some(h) if h.value.applied_seq >= seq => {}
                    _ => return Ok(false),
                }
            }
            Ok(true)
        }
    })
    .await?;
    let metrics = node.metrics().clone();
    let store = node.store().context("store")?.clone();
    node.shutdown().await?;
    assert_eq!(
        history_types(&h.bus, "dup-1").await?,
        before,
        "nothing new on the log"
    );
    assert_eq!(
        store.get("trip", "dup-1")?.context("instance")?,
        record_before,
        "state unchanged"
    );
    assert_eq!(
        metrics.snapshot("trip").handled,
        0,
        "every redelivery skipped by the watermark"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_state_faults_only_its_instance() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    // Two trips wait for a car that never answers (the timeout is far away).
    let long = |h: &Harness| -> Result<Node> {
        Ok(Node::builder()
            .bus(h.config()?)
            .data_dir(dir.path())
            .reactor(Agency)
            .saga(TripSaga::new("trip", Duration::from_secs(600)))
            .build()?)
    };
    let node = long(&h)?.start().await?;
    h.bus
        .publish_all(&[
            trip("good-1", Scenario::CarSilent),
            trip("bad-1", Scenario::CarSilent),
        ])
        .await?;
    let car_book = h.bus.subjects().type_filter(&common::trip::book("car"));
    wait_events(&h.bus, &car_book, 2).await?;
    let store = node.store().context("store")?.clone();
    wait_until("both trips await the car", || {
        let store = store.clone();
        async move {
            Ok(["good-1", "bad-1"].iter().all(|t| {
                store
                    .get("trip", t)
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.waits.len() == 1 && r.waits[0].types == ["car.booked.v1"])
            }))
        }
    })
    .await?;
    node.shutdown().await?;
    drop(store);

    // Corrupt one instance's state in the changelog, behind the node's back.
    {
        let log = choreo::Changelog::new(&h.bus);
        let mut record = log.find("trip", "bad-1", None).await?.context("record")?;
        record.state = vec![0xc1, 0x00];
        let subject = format!("choreo.state.{}.trip.bad-1", record.partition);
        h.bus
            .jetstream()
            .publish(subject, rmp_serde::to_vec_named(&record)?.into())
            .await?
            .await?;
    }

    let node = long(&h)?.start().await?;
    let booked = |id: &str| -> Result<choreo::Event> {
        Ok(choreo::Event::root(
            "urn:test",
            choreo::CorrelationId::new(id)?,
            &common::trip::TripRequested {
                trip: id.into(),
                scenario: Scenario::Ok,
            },
        )
        .map(|mut e| {
            e.ty = common::trip::booked("car");
            e
        })?)
    };
    h.bus
        .publish_all(&[booked("bad-1")?, booked("good-1")?])
        .await?;
    let letters = wait_dead_letters(&h.bus, 1).await?;
    assert_eq!(
        (letters[0].reason.as_str(), letters[0].actor.as_str()),
        ("saga_faulted", "trip")
    );
    assert!(
        letters[0].detail.contains("state does not decode"),
        "{}",
        letters[0].detail
    );
    wait_events(
        &h.bus,
        &h.bus
            .subjects()
            .type_filter(&common::trip::ty(SAGA_COMPLETED)),
        1,
    )
    .await?;
    wait_events(
        &h.bus,
        &h.bus
            .subjects()
            .type_filter(&common::trip::ty(SAGA_FAULTED)),
        1,
    )
    .await?;
    let store = node.store().context("store")?.clone();
    node.shutdown().await?;
    assert_eq!(
        store.get("trip", "bad-1")?.context("bad")?.status,
        SagaStatus::Faulted
    );
    assert_eq!(
        store.get("trip", "good-1")?.context("good")?.status,
        SagaStatus::Completed
    );
    Ok(())
}

/// A producer's clock drives nothing: start events stamped `9999-12-31` and `1970-01-01`
/// neither panic a processor nor time out early. Each car step's timer is due one step timeout
/// after the log stored the answer that issued the car command (its `due_ms` is on the log), and
/// a control trip in the same node completes.
#[tokio::test]
async fn a_wild_ce_time_drives_nothing_the_log_clock_does() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let node = start_node(&h, dir.path(), Kind::Saga).await?;
    let mut future = trip("clock-9999", Scenario::CarSilent);
    future.time = time::macros::datetime!(9999-12-31 23:59:59 UTC);
    let mut past = trip("clock-1970", Scenario::CarSilent);
    past.time = time::OffsetDateTime::UNIX_EPOCH;
    h.bus
        .publish_all(&[future, past, trip("clock-control", Scenario::Ok)])
        .await?;
    let subjects = h.bus.subjects();
    wait_events(
        &h.bus,
        &subjects.type_filter(&common::trip::ty(SAGA_COMPENSATED)),
        2,
    )
    .await?;
    wait_events(
        &h.bus,
        &subjects.type_filter(&common::trip::ty(SAGA_COMPLETED)),
        1,
    )
    .await?;
    let timeout_ms = i64::try_from(CAR_TIMEOUT.as_millis())?;
    for id in ["clock-9999", "clock-1970"] {
        let history = h
            .bus
            .correlation_history(&choreo::CorrelationId::new(id)?)
            .await?;
        let stored = |t: &str| {
            history
                .events
                .iter()
                .find(|e| e.event.ty.as_str() == t)
                .map(|e| e.stored_ms)
                .with_context(|| format!("{id}: no {t}"))
        };
        let issued_at = stored("hotel.booked.v1")?;
        let fired = history
            .events
            .iter()
            .find(|e| e.event.ty.as_str() == choreo::SAGA_TIMED_OUT)
            .context("a timer fired")?;
        let l: choreo::Lifecycle = fired.event.decode_as()?;
        assert_eq!(
            l.due_ms,
            Some(issued_at + timeout_ms),
            "{id}: the car timer is due by the log's clock"
        );
        assert!(
            fired.stored_ms >= issued_at + timeout_ms,
            "{id}: fired no earlier than due"
        );
        let r = node
            .store()
            .context("store")?
            .get("trip", id)?
            .context("instance")?;
        assert_eq!(
            r.created_ms,
            stored("trip.requested.v1")?,
            "{id}: created by the log's clock"
        );
        assert_eq!(r.status, SagaStatus::Compensated);
    }
    node.shutdown().await?;
    Ok(())
}

/// Retention: an ended instance older than the retention leaves the changelog (per-message
/// TTL) and the store (the processor's sweep); a running one stays in both.
#[tokio::test]
async fn ended_instances_leave_after_the_retention_running_ones_stay() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let node = Node::builder()
        .bus(h.config()?)
        .data_dir(dir.path())
        .reactor(Agency)
        .saga(TripSaga::new("trip", Duration::from_secs(600)))
        .retention(Duration::from_secs(1))
        .build()?
        .start()
        .await?;
    h.bus
        .publish_all(&[
            trip("kept-running", Scenario::CarSilent),
            trip("ended-ok", Scenario::Ok),
        ])
        .await?;
    wait_events(
        &h.bus,
        &h.bus
            .subjects()
            .type_filter(&common::trip::ty(SAGA_COMPLETED)),
        1,
    )
    .await?;
    let log = choreo::Changelog::new(&h.bus);
    let store = node.store().context("store")?.clone();
    wait_until(
        "the ended instance is gone from the changelog and the store",
        || {
            let (log, store) = (log.clone(), store.clone());
            async move {
                Ok(log.find("trip", "ended-ok", None).await?.is_none()
                    && store.get("trip", "ended-ok")?.is_none())
            }
        },
    )
    .await?;
    let running = log
        .find("trip", "kept-running", None)
        .await?
        .context("the running instance is kept")?;
    assert_eq!(running.status, SagaStatus::Running);
    assert!(store.get("trip", "kept-running")?.is_some());
    let listed: Vec<String> = log
        .list(Some("trip"), None)
        .await?
        .into_iter()
        .map(|r| r.instance)
        .collect();
    assert_eq!(listed, ["kept-running"]);
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn an_input_for_no_instance_is_counted_and_dropped() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let node = start_node(&h, dir.path(), Kind::Saga).await?;
    // A confirmation for a trip that never started.
    let stray = choreo::Event::root_raw(
        "urn:test",
        choreo::CorrelationId::new("never-started")?,
        common::trip::booked("flight"),
        Vec::new(),
    );
    h.bus.publish(&stray).await?;
    let metrics = node.metrics().clone();
    wait_until("the stray input is counted", || {
        let metrics = metrics.clone();
        async move { Ok(metrics.snapshot("trip").unmatched == 1) }
    })
    .await?;
    let store = node.store().context("store")?;
    assert!(
        store.get("trip", "never-started")?.is_none(),
        "no instance made of it"
    );
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structured_json_start_from_another_producer_runs_the_saga() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let node = start_node(&h, dir.path(), Kind::Saga).await?;
    let js = async_nats::jetstream::new(async_nats::connect(h.server.url()).await?);
    let ty = common::trip::ty("trip.requested.v1");
    // Directly at the partition, and through the ingress (no partition to compute).
    for (trip, ingress) in [("trip-json", false), ("trip-json-in", true)] {
        let c = choreo::CorrelationId::new(trip)?;
        let subject = if ingress {
            h.bus.subjects().ingress(&c, &ty)
        } else {
            h.bus.subjects().event(h.bus.partition_of(&c), &c, &ty)
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Type", "application/cloudevents+json");
        // No choreo extensions and a string id: the subject gives the correlation.
        let body = format!(
            r#"{{"specversion":"1.0","id":"{trip}/request","source":"urn:python",
            "type":"trip.requested.v1","time":"2026-12-01T10:00:00Z",
            "data":{{"trip":"{trip}","scenario":"Ok"}}}}"#
        );
        js.publish_with_headers(subject, headers, body.into())
            .await?
            .await?;
    }
    wait_completed(&h, "trip-json").await?;
    wait_completed(&h, "trip-json-in").await?;
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_saga_starts_no_instance_for_history_unless_told_to() -> Result<()> {
    let h = Harness::start().await?;
    // History: a trip requested before any saga existed.
    h.bus.publish(&trip("trip-old", Scenario::Ok)).await?;
    let started = |c: &'static str| {
        let bus = h.bus.clone();
        async move {
            Ok::<_, anyhow::Error>(
                history_types(&bus, c)
                    .await?
                    .iter()
                    .filter(|t| t.as_str() == choreo::SAGA_STARTED)
                    .count(),
            )
        }
    };

    // A saga with the default start: new events only.
    let dir = tempfile::tempdir()?;
    let node = start_node(&h, dir.path(), Kind::Saga).await?;
    h.bus.publish(&trip("trip-new", Scenario::Ok)).await?;
    wait_completed(&h, "trip-new").await?;
    node.shutdown().await?;
    assert_eq!(started("trip-old").await?, 0, "no instance for history");

    // A node that joins later does not move the recorded start; and the same saga started
    // again still skips the old trip.
    let node = start_node(&h, dir.path(), Kind::Saga).await?;
    h.bus.publish(&trip("trip-newer", Scenario::Ok)).await?;
    wait_completed(&h, "trip-newer").await?;
    node.shutdown().await?;
    assert_eq!(started("trip-old").await?, 0);

    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_told_to_start_from_all_takes_the_history() -> Result<()> {
    let h = Harness::start().await?;
    h.bus.publish(&trip("trip-old", Scenario::Ok)).await?;
    let started = || async {
        Ok::<_, anyhow::Error>(
            history_types(&h.bus, "trip-old")
                .await?
                .iter()
                .filter(|t| t.as_str() == choreo::SAGA_STARTED)
                .count(),
        )
    };
    let dir2 = tempfile::tempdir()?;
    let node = Node::builder()
        .bus(h.config()?)
        .data_dir(dir2.path())
        .reactor(Agency)
        .saga(common::trip::trip_slip_from(
            "slip-all",
            CAR_TIMEOUT,
            choreo::StartPosition::All,
        ))
        .build()?
        .start()
        .await?;
    wait_completed(&h, "trip-old").await?;
    node.shutdown().await?;
    assert_eq!(started().await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_stored_while_an_upgraded_deployment_was_down_are_not_skipped() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    // A deployment that ran: its partitions have heads...
    let node = start_node(&h, dir.path(), Kind::Saga).await?;
    h.bus.publish(&trip("trip-before", Scenario::Ok)).await?;
    wait_completed(&h, "trip-before").await?;
    node.shutdown().await?;
    // ...under a version that recorded no saga start.
    let kv = h
        .bus
        .jetstream()
        .get_key_value(h.bus.config().bucket("SAGAS"))
        .await?;
    kv.purge("trip").await?;
    // A trip requested while no node runs, then the upgraded node starts: the trip is not
    // history to skip, it is work not yet done.
    h.bus.publish(&trip("trip-during", Scenario::Ok)).await?;
    let node = start_node(&h, dir.path(), Kind::Saga).await?;
    wait_completed(&h, "trip-during").await?;
    node.shutdown().await?;
    Ok(())
}
