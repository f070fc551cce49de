//! History, causal trees, replay and DLQ redrive against a real nats-server.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use choreo::{
    assert_replays, replay, BusConfig, CorrelationId, DataFormat, Event, EventType, Node, NodeKind,
    Payload, ReactContext, ReactError, Reactor, SagaId, SAGA_COMPENSATED, SAGA_COMPLETED,
};
use common::trip::{booked, trip, ty, Agency, Scenario, TripRequested, TripSaga};
use common::{wait_dead_letters, wait_events, wait_until, Harness};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Notified {
    trip: String,
}
impl Payload for Notified {
    const TYPE: &'static str = "trip.notified.v1";
}
#[derive(Serialize, Deserialize)]
struct Audited {
    what: String,
}
impl Payload for Audited {
    const TYPE: &'static str = "audit.recorded.v1";
}

/// Tells the traveller when the car is booked.
struct Notifier;
impl Reactor for Notifier {
    fn name(&self) -> &str {
        "notifier"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![booked("car")]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![Notified::event_type()]
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        ctx.emit(&Notified {
            trip: e.correlation.to_string(),
        })?;
        Ok(())
    }
}

/// Records every saga completion.
struct Auditor;
impl Reactor for Auditor {
    fn name(&self) -> &str {
        "auditor"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![ty(SAGA_COMPLETED)]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![Audited::event_type()]
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        ctx.emit(&Audited {
            what: e.ty.to_string(),
        })?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_follows_the_log_and_the_tree_links_every_cause() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let node = Node::builder()
        .bus(h.config()?)
        .data_dir(dir.path())
        .reactor(Agency)
        .reactor(Notifier)
        .reactor(Auditor)
        .saga(TripSaga::new("trip", Duration::from_secs(60)))
        .build()?
        .start()
        .await?;
    h.bus.publish(&trip("hist-1", Scenario::Ok)).await?;
    wait_events(
        &h.bus,
        &h.bus.subjects().type_filter(&Audited::event_type()),
        1,
    )
    .await?;
    wait_events(
        &h.bus,
        &h.bus.subjects().type_filter(&Notified::event_type()),
        1,
    )
    .await?;
    node.shutdown().await?;

    let c = CorrelationId::new("hist-1")?;
    let history = h.bus.correlation_history(&c).await?;
    let log: Vec<u64> = h
        .bus
        .history(&c)
        .await?
        .iter()
        .map(|s| s.sequence)
        .collect();
    let seqs: Vec<u64> = history.events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, log, "history is the log's order");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let sources: BTreeSet<&str> = history
        .events
        .iter()
        .map(|e| e.event.source.as_str())
        .collect();
    for actor in [
        "/actors/agency",
        "/actors/notifier",
        "/actors/auditor",
        "/sagas/trip",
    ] {
        assert!(sources.contains(actor), "{actor} in {sources:?}");
    }

    let tree = history.tree();
    assert!(tree.is_well_formed(), "every node reachable once");
    assert_eq!(tree.roots.len(), 1, "one root: the trip request");
    for (p, child) in tree.edges() {
        let parent = &tree.nodes[p];
        let child = &tree.nodes[child];
        let event = history
            .events
            .iter()
            .find(|e| e.event.id == child.id)
            .context("child in history")?;
        assert_eq!(
            event.event.causation, parent.id,
            "{} is under its cause",
            child.ty
        );
    }
    assert!(tree
        .nodes
        .iter()
        .any(|n| n.kind == NodeKind::SagaDecision && n.ty == SAGA_COMPLETED));
    let text = tree.to_text();
    assert_eq!(text.lines().count(), history.events.len(), "{text}");

    // DOT: a structural parse: balanced braces, every edge between declared nodes.
    let dot = tree.to_dot("hist-1");
    assert!(dot.starts_with("digraph \"hist-1\" {") && dot.trim_end().ends_with('}'));
    let declared: BTreeSet<&str> = dot
        .lines()
        .filter(|l| l.contains("[label="))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(declared.len(), history.events.len());
    let edges: Vec<(&str, &str)> = dot
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(';').split_once(" -> "))
        .collect();
    assert_eq!(edges.len(), history.events.len() - 1, "a tree: n - 1 edges");
    assert!(edges
        .iter()
        .all(|(a, b)| declared.contains(a) && declared.contains(b)));
    let mermaid = tree.to_mermaid();
    assert_eq!(mermaid.matches(" --> ").count(), edges.len());
    Ok(())
}

/// Run `trips` on a node (agency + trip saga) with `config` until `ends` (completed,
/// compensated) sagas ended; the node's store after its shutdown.
async fn run_trips(
    h: &Harness,
    config: choreo::BusConfig,
    dir: &std::path::Path,
    car_timeout: Duration,
    trips: &[Event],
    ends: (usize, usize),
) -> Result<choreo::Store> {
    let node = Node::builder()
        .bus(config)
        .data_dir(dir)
        .reactor(Agency)
        .saga(TripSaga::new("trip", car_timeout))
        .build()?
        .start()
        .await?;
    h.bus.publish_all(trips).await?;
    let filter = |t| h.bus.subjects().type_filter(&ty(t));
    wait_events(&h.bus, &filter(SAGA_COMPLETED), ends.0).await?;
    wait_events(&h.bus, &filter(SAGA_COMPENSATED), ends.1).await?;
    let store = node.store().context("store")?.clone();
    node.shutdown().await?;
    Ok(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_identical_and_finds_a_changed_handler() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let car_timeout = Duration::from_millis(600);
    let trips = [
        trip("r-ok", Scenario::Ok),
        trip("r-hotel", Scenario::HotelFails),
        trip("r-car", Scenario::CarSilent),
    ];
    let store = run_trips(&h, h.config()?, dir.path(), car_timeout, &trips, (1, 2)).await?;

    let saga = TripSaga::new("trip", car_timeout);
    for id in ["r-ok", "r-hotel", "r-car"] {
        let instance = SagaId::new(id)?;
        assert_replays(&saga, &h.bus, Some(&store), &instance).await;
        let report = replay(&saga, &h.bus, Some(&store), &instance).await?;
        assert!(report.is_identical(), "{report}");
    }
    let timed_out = replay(&saga, &h.bus, Some(&store), &SagaId::new("r-car")?).await?;
    assert_eq!(
        timed_out.inputs, 4,
        "request, flight, hotel, and the timer firing"
    );

    // The changed handler books the car right after the flight: divergent at input #1.
    let buggy = TripSaga {
        buggy: true,
        ..TripSaga::new("trip", car_timeout)
    };
    let report = replay(&buggy, &h.bus, Some(&store), &SagaId::new("r-ok")?).await?;
    let d = report.divergence.context("must diverge")?;
    assert_eq!(d.input_index, Some(1), "{d}");
    assert!(d.input.starts_with("flight.booked.v1"), "{d}");
    assert_eq!(
        (d.expected.as_str(), d.actual.as_str()),
        ("[hotel.book.v1]", "[car.book.v1]")
    );
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Job {
    n: u32,
}
impl Payload for Job {
    const TYPE: &'static str = "job.submitted.v1";
}
#[derive(Serialize, Deserialize)]
struct Done {
    n: u32,
    by: String,
}
impl Payload for Done {
    const TYPE: &'static str = "job.done.v1";
}

/// Fails permanently until `fixed` is set (a bug, then a deployed fix).
struct Worker {
    name: &'static str,
    fixed: Arc<AtomicBool>,
}
impl Reactor for Worker {
    fn name(&self) -> &str {
        self.name
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![Job::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![Done::event_type()]
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        if !self.fixed.load(Ordering::SeqCst) {
            return Err(ReactError::permanent("bug: division by zero"));
        }
        ctx.emit(&Done {
            n: e.decode::<Job>()?.n,
            by: self.name.into(),
        })?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_writing_json_data_runs_its_saga_and_replays_it_identically() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let json = BusConfig::builder()
        .url(h.server.url())
        .partitions(4)
        .request_timeout(Duration::from_secs(5))
        .data_format(DataFormat::Json)
        .build()?;
    let car_timeout = Duration::from_millis(600);
    // The requests go out as msgpack (the harness's bus): a node reads both.
    let trips = [
        trip("j-ok", Scenario::Ok),
        trip("j-hotel", Scenario::HotelFails),
    ];
    let store = run_trips(&h, json, dir.path(), car_timeout, &trips, (1, 1)).await?;

    // On the wire, everything the node wrote is JSON a plain JSON parser reads.
    let stream = h
        .bus
        .jetstream()
        .get_stream(h.bus.config().events_stream())
        .await?;
    let last = stream.get_info().await?.state.last_sequence;
    let (mut json_events, mut msgpack_events) = (0, 0);
    for seq in 1..=last {
        let msg = stream.get_raw_message(seq).await?;
        let header = |n: &str| msg.headers.get(n).map(|v| v.as_str().to_owned());
        let content_type = header("ce-datacontenttype").context("datacontenttype")?;
        if header("ce-type").as_deref() == Some(TripRequested::TYPE) {
            assert_eq!(content_type, "application/msgpack");
            msgpack_events += 1;
            continue;
        }
        assert_eq!(
            content_type, "application/json",
            "seq {seq}: {:?}",
            msg.headers
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&msg.payload).with_context(|| format!("seq {seq} is JSON"))?;
        if header("ce-type").as_deref() == Some("flight.book.v1") {
            assert!(doc["trip"].is_string(), "{doc}");
        }
        json_events += 1;
    }
    assert_eq!(msgpack_events, 2);
    assert!(
        json_events >= 8,
        "bookings, answers and outcomes: {json_events}"
    );

    // Replay compares data as documents: JSON on the log, msgpack from the code.
    let saga = TripSaga::new("trip", car_timeout);
    for id in ["j-ok", "j-hotel"] {
        let report = replay(&saga, &h.bus, Some(&store), &SagaId::new(id)?).await?;
        assert!(report.is_identical(), "{report}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_an_input_stored_past_the_duplicate_window_replays_identically() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    // The car never answers: the saga waits this long, so the copy lands while it runs.
    let car_timeout = Duration::from_secs(3);
    let node = Node::builder()
        .bus(h.config()?)
        .data_dir(dir.path())
        .reactor(Agency)
        .saga(TripSaga::new("trip", car_timeout))
        .build()?
        .start()
        .await?;
    let c = CorrelationId::new("c-copy")?;
    h.bus.publish(&trip("c-copy", Scenario::CarSilent)).await?;
    let is = |s: &choreo::StoredEvent, t: &EventType| s.event.as_ref().is_ok_and(|e| &e.ty == t);
    wait_events(
        &h.bus,
        &h.bus.filter_for(Some(&c), Some(&booked("flight"))),
        1,
    )
    .await?;
    let original = h
        .bus
        .history(&c)
        .await?
        .into_iter()
        .find(|s| is(s, &booked("flight")))
        .context("flight.booked")?;
    // The same event again, as a producer retrying past the server's duplicate window sends
    // it: the same ce-id, another Nats-Msg-Id.
    let stream = h
        .bus
        .jetstream()
        .get_stream(h.bus.config().events_stream())
        .await?;
    let raw = stream.get_raw_message(original.sequence).await?;
    let mut headers = raw.headers.clone();
    headers.insert("Nats-Msg-Id", "a-copy-past-the-window");
    let copy_seq = h
        .bus
        .jetstream()
        .publish_with_headers(raw.subject.to_string(), headers, raw.payload.clone())
        .await?
        .await?
        .sequence;
    wait_events(
        &h.bus,
        &h.bus.filter_for(Some(&c), Some(&ty(SAGA_COMPENSATED))),
        1,
    )
    .await?;
    let store = node.store().context("store")?.clone();
    node.shutdown().await?;

    // The copy is among the instance's inputs (before its end), and the saga skipped it.
    let history = h.bus.history(&c).await?;
    let end = history
        .iter()
        .find(|s| is(s, &ty(SAGA_COMPENSATED)))
        .context("compensated")?;
    assert!(
        copy_seq < end.sequence,
        "copy #{copy_seq}, end #{}",
        end.sequence
    );
    let hotel_book = ty("hotel.book.v1");
    let hotel_books = history.iter().filter(|s| is(s, &hotel_book)).count();
    assert_eq!(hotel_books, 1, "the copy booked nothing again");
    let report = replay(
        &TripSaga::new("trip", car_timeout),
        &h.bus,
        Some(&store),
        &SagaId::new("c-copy")?,
    )
    .await?;
    assert!(report.is_identical(), "{report}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_after_a_fix_yields_the_output_once_and_only_for_that_actor() -> Result<()> {
    let h = Harness::start().await?;
    let fixed = Arc::new(AtomicBool::new(false));
    let always = Arc::new(AtomicBool::new(true));
    let node = Node::builder()
        .bus(h.config()?)
        .reactor(Worker {
            name: "buggy",
            fixed: fixed.clone(),
        })
        .reactor(Worker {
            name: "healthy",
            fixed: always,
        })
        .build()?
        .start()
        .await?;
    let job = Event::root("urn:test", CorrelationId::new("job-1")?, &Job { n: 7 })?;
    h.bus.publish(&job).await?;
    let first = wait_dead_letters(&h.bus, 1).await?;
    assert_eq!(
        (first[0].actor.as_str(), first[0].reason.as_str()),
        ("buggy", "rejected")
    );

    // Redriven while still broken: back in the DLQ, nothing lost.
    let again = h.bus.redrive(first[0].dlq_sequence).await?;
    assert_eq!(again.actor, "buggy");
    wait_until("the redriven job is dead-lettered again", || {
        let bus = h.bus.clone();
        let seq = first[0].dlq_sequence;
        async move {
            let letters = bus.dead_letters_of_actor(None).await?;
            Ok(letters.len() == 1 && letters[0].dlq_sequence != seq)
        }
    })
    .await?;
    let second = h.bus.dead_letters_of_actor(None).await?;
    assert_eq!(
        second[0].event.as_ref().map(|e| e.id).ok(),
        Some(job.id),
        "same event id"
    );

    fixed.store(true, Ordering::SeqCst);
    h.bus.redrive(second[0].dlq_sequence).await?;
    let done_filter = h.bus.subjects().type_filter(&Done::event_type());
    wait_events(&h.bus, &done_filter, 2).await?; // healthy's (first time) and buggy's (after the fix)
    let metrics = node.metrics().clone();
    node.shutdown().await?;
    let done: Vec<Done> = h
        .bus
        .read_events(&done_filter)
        .await?
        .into_iter()
        .map(|s| {
            s.event
                .map_err(anyhow::Error::from)
                .and_then(|e| Ok(e.decode::<Done>()?))
        })
        .collect::<Result<_>>()?;
    let by: Vec<&str> = done.iter().map(|d| d.by.as_str()).collect();
    assert_eq!(by.iter().filter(|b| **b == "buggy").count(), 1, "{by:?}");
    assert_eq!(
        by.iter().filter(|b| **b == "healthy").count(),
        1,
        "the redrive was for buggy only: {by:?}"
    );
    assert_eq!(metrics.snapshot("healthy").handled, 1);
    assert!(
        h.bus.dead_letters_of_actor(None).await?.is_empty(),
        "DLQ empty after the successful redrive"
    );

    let history = h
        .bus
        .correlation_history(&CorrelationId::new("job-1")?)
        .await?;
    let copies: Vec<_> = history
        .events
        .iter()
        .filter(|e| e.event.id == job.id)
        .collect();
    assert_eq!(
        copies.len(),
        3,
        "original and two redriven copies, linked by id"
    );
    assert!(copies[1].redriven_from.is_some() && copies[1].redriven_to.as_deref() == Some("buggy"));
    Ok(())
}
