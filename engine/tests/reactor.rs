//! Reactor runtime against a real nats-server.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use choreo::{
    headers_of, CorrelationId, Event, EventType, Node, Payload, ReactContext, ReactError, Reactor,
    RetryPolicy,
};
use common::{wait_dead_letters, wait_events, Harness};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Start {
    n: u32,
}
impl Payload for Start {
    const TYPE: &'static str = "test.start.v1";
}
#[derive(Debug, Serialize, Deserialize)]
struct Middle {
    n: u32,
}
impl Payload for Middle {
    const TYPE: &'static str = "test.middle.v1";
}
#[derive(Debug, Serialize, Deserialize)]
struct End {
    n: u32,
}
impl Payload for End {
    const TYPE: &'static str = "test.end.v1";
}

/// Maps one payload type to another, adding one.
struct Step<I, O> {
    name: &'static str,
    _t: std::marker::PhantomData<fn(I) -> O>,
}
impl<I, O> Step<I, O> {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            _t: std::marker::PhantomData,
        }
    }
}
trait HasN: Payload {
    fn n(&self) -> u32;
    fn with(n: u32) -> Self;
}
macro_rules! has_n {
    ($($t:ty),*) => {$(impl HasN for $t { fn n(&self) -> u32 { self.n } fn with(n: u32) -> Self { Self { n } } })*};
}
has_n!(Start, Middle, End);

impl<I: HasN, O: HasN> Reactor for Step<I, O> {
    fn name(&self) -> &str {
        self.name
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![I::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![O::event_type()]
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let input: I = e.decode()?;
        ctx.emit(&O::with(input.n() + 1))?;
        Ok(())
    }
}

fn corr(s: &str) -> CorrelationId {
    CorrelationId::new(s).expect("valid correlation id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_reactors_stamp_correlation_causation_depth_and_trace() -> Result<()> {
    let h = Harness::start().await?;
    let node = Node::builder()
        .bus(h.config()?)
        .register::<Start>()
        .register::<Middle>()
        .register::<End>()
        .reactor(Step::<Start, Middle>::new("a"))
        .reactor(Step::<Middle, End>::new("b"))
        .build()?
        .start()
        .await?;
    let root = Event::root("urn:test", corr("chain-1"), &Start { n: 1 })?;
    h.bus.publish(&root).await?;

    let end = wait_events(&h.bus, &h.bus.subjects().type_filter(&End::event_type()), 1).await?;
    let history = h.bus.history(&corr("chain-1")).await?;
    let events: Vec<Event> = history
        .into_iter()
        .map(|s| s.event)
        .collect::<Result<_, _>>()?;
    assert_eq!(events.len(), 3, "root, middle, end: {events:#?}");
    let (r, m, e) = (&events[0], &events[1], &events[2]);
    assert_eq!(r.id, root.id);
    assert_eq!(e, &end[0]);
    assert_eq!((m.causation, m.depth), (r.id, 1));
    assert_eq!((e.causation, e.depth), (m.id, 2));
    assert!(events.iter().all(|x| x.correlation.as_str() == "chain-1"));
    let trace = r.traceparent.map(|t| t.trace_id);
    assert!(
        trace.is_some()
            && events
                .iter()
                .all(|x| x.traceparent.map(|t| t.trace_id) == trace)
    );
    assert_eq!(e.decode::<End>()?.n, 3);
    assert_eq!(m.source, "/actors/a");
    node.shutdown().await?;
    Ok(())
}

/// Fails transiently the first `fail_first` attempts of every input, then emits one End.
struct Flaky {
    name: &'static str,
    fail_first: u32,
    attempts: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Reactor for Flaky {
    fn name(&self) -> &str {
        self.name
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![Start::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![End::event_type()]
    }
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::builder()
            .max_attempts(4)
            .initial_delay(Duration::from_millis(10))
            .max_delay(Duration::from_millis(50))
            .build()
            .expect("valid policy")
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let seen = {
            let mut map = self.attempts.lock().expect("not poisoned");
            let n = map.entry(e.correlation.to_string()).or_default();
            *n += 1;
            *n
        };
        assert_eq!(
            ctx.attempt(),
            seen,
            "ctx.attempt counts attempts of this delivery"
        );
        if seen <= self.fail_first {
            return Err(ReactError::transient(format!("flake {seen}")));
        }
        ctx.emit(&End { n: seen })?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_counted() -> Result<()> {
    let h = Harness::start().await?;
    let attempts = Arc::new(Mutex::new(BTreeMap::new()));
    let node = Node::builder()
        .bus(h.config()?)
        .reactor(Flaky {
            name: "flaky",
            fail_first: 3,
            attempts: attempts.clone(),
        })
        .build()?
        .start()
        .await?;
    h.bus
        .publish(&Event::root("urn:test", corr("flaky-1"), &Start { n: 0 })?)
        .await?;
    let out = wait_events(&h.bus, &h.bus.subjects().type_filter(&End::event_type()), 1).await?;
    assert_eq!(out[0].decode::<End>()?.n, 4, "succeeded on the 4th attempt");
    let metrics = node.metrics().clone();
    node.shutdown().await?; // finishes the in-flight ack
    let m = metrics.snapshot("flaky");
    assert_eq!(
        (m.failed, m.retried, m.handled, m.dead_lettered),
        (3, 3, 1, 0),
        "{m:?}"
    );
    assert_eq!(m.latency_count(), 4);
    let history = h.bus.history(&corr("flaky-1")).await?;
    assert_eq!(history.len(), 2, "one input, exactly one output");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_failing_input_is_dead_lettered_and_the_node_keeps_going() -> Result<()> {
    let h = Harness::start().await?;
    let attempts = Arc::new(Mutex::new(BTreeMap::new()));
    let node = Node::builder()
        .bus(h.config()?)
        .reactor(Flaky {
            name: "doomed",
            fail_first: u32::MAX,
            attempts: attempts.clone(),
        })
        .reactor(Step::<Middle, End>::new("healthy"))
        .build()?
        .start()
        .await?;
    let bad = Event::root("urn:test", corr("doomed-1"), &Start { n: 0 })?;
    h.bus.publish(&bad).await?;
    let letters = wait_dead_letters(&h.bus, 1).await?;
    let l = &letters[0];
    assert_eq!(
        (l.reason.as_str(), l.actor.as_str(), l.attempts),
        ("max_attempts", "doomed", 4)
    );
    assert!(
        l.detail.contains("flake 4"),
        "detail names the last error: {}",
        l.detail
    );
    assert_eq!(
        l.event.as_ref().map(|e| e.id).ok(),
        Some(bad.id),
        "original event kept"
    );
    assert!(
        l.original_subject.ends_with(".doomed-1.test.start.v1"),
        "{}",
        l.original_subject
    );

    // The node still handles other events, including new inputs for the same actor type.
    h.bus
        .publish(&Event::root("urn:test", corr("ok-1"), &Middle { n: 1 })?)
        .await?;
    wait_events(&h.bus, &h.bus.subjects().type_filter(&End::event_type()), 1).await?;
    let metrics = node.metrics().clone();
    node.shutdown().await?;
    assert_eq!(metrics.snapshot("doomed").dead_lettered, 1);
    assert_eq!(metrics.snapshot("healthy").handled, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_land_in_the_dlq_with_distinct_reasons() -> Result<()> {
    let h = Harness::start().await?;
    let node = Node::builder()
        .bus(h.config()?)
        .register::<Start>()
        .reactor(Step::<Start, End>::new("strict"))
        .build()?
        .start()
        .await?;
    // A plain NATS client, no choreo on the publishing side.
    let raw = async_nats::connect(h.server.url()).await?;
    let js = async_nats::jetstream::new(raw);
    let c = corr("raw-1");
    let p = choreo::schemas::partition_of(&c, h.partitions);
    let subject = h.bus.subjects().event(p, &c, &Start::event_type());

    // 1. no ce- headers at all
    js.publish(subject.clone(), "hello".into()).await?.await?;
    // 2. valid envelope, garbage body for a typed payload
    let mut garbage = Event::root_raw("urn:raw", c.clone(), Start::event_type(), vec![0xc1, 0xff]);
    garbage.subject = None;
    js.publish_with_headers(
        subject.clone(),
        headers_of(&garbage),
        garbage.data.clone().into(),
    )
    .await?
    .await?;
    // 3. valid envelope of a type nobody consumes, on a consumed subject
    let unknown = Event::root_raw(
        "urn:raw",
        c.clone(),
        EventType::new("test.exploded.v1")?,
        vec![0x80],
    );
    js.publish_with_headers(
        subject.clone(),
        headers_of(&unknown),
        unknown.data.clone().into(),
    )
    .await?
    .await?;

    let letters = wait_dead_letters(&h.bus, 3).await?;
    let reasons: BTreeSet<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["invalid_envelope", "bad_payload", "unknown_type"])
    );
    for l in &letters {
        assert_eq!((l.actor.as_str(), l.attempts), ("strict", 0), "{l:?}");
        assert!(!l.detail.is_empty());
    }
    let envelope = letters
        .iter()
        .find(|l| l.reason == "invalid_envelope")
        .expect("present");
    assert_eq!(envelope.body, b"hello", "original body kept");
    assert!(
        envelope.detail.contains("missing header ce-specversion"),
        "{}",
        envelope.detail
    );

    // Still alive: a good event goes through.
    h.bus
        .publish(&Event::root("urn:test", corr("raw-2"), &Start { n: 1 })?)
        .await?;
    wait_events(&h.bus, &h.bus.subjects().type_filter(&End::event_type()), 1).await?;
    node.shutdown().await?;
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
struct Ping;
impl Payload for Ping {
    const TYPE: &'static str = "test.ping.v1";
}
#[derive(Debug, Serialize, Deserialize)]
struct Pong;
impl Payload for Pong {
    const TYPE: &'static str = "test.pong.v1";
}

/// Emits `O` for every `I`: two of them make a causal loop.
struct Echo<I, O>(&'static str, std::marker::PhantomData<fn(I) -> O>);
impl<I: Payload, O: Payload + Default> Reactor for Echo<I, O> {
    fn name(&self) -> &str {
        self.0
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![I::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![O::event_type()]
    }
    async fn react(&self, _e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        ctx.emit(&O::default())?;
        Ok(())
    }
}
impl Default for Ping {
    fn default() -> Self {
        Ping
    }
}
impl Default for Pong {
    fn default() -> Self {
        Pong
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_causal_loop_is_cut_at_the_depth_limit() -> Result<()> {
    let h = Harness::start().await?;
    let node = Node::builder()
        .bus(h.config()?)
        .max_depth(6)
        .reactor(Echo::<Ping, Pong>("pinger", std::marker::PhantomData))
        .reactor(Echo::<Pong, Ping>("ponger", std::marker::PhantomData))
        .build()?
        .start()
        .await?;
    h.bus
        .publish(&Event::root("urn:test", corr("loop-1"), &Ping)?)
        .await?;
    let letters = wait_dead_letters(&h.bus, 1).await?;
    let l = &letters[0];
    assert_eq!(l.reason, "depth_exceeded");
    assert!(
        l.detail.contains("depth 7 exceeds the limit 6"),
        "{}",
        l.detail
    );
    let cut = l.event.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(
        cut.depth, 6,
        "the event at the limit is the one dead-lettered"
    );
    node.shutdown().await?;
    let history = h.bus.history(&corr("loop-1")).await?;
    let depths: Vec<u32> = history
        .iter()
        .map(|s| s.event.as_ref().map(|e| e.depth).unwrap_or(u32::MAX))
        .collect();
    assert_eq!(
        depths,
        (0..=6).collect::<Vec<_>>(),
        "nothing beyond the limit reached the log"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_instances_share_one_consumer() -> Result<()> {
    let h = Harness::start().await?;
    let calls = Arc::new(AtomicU32::new(0));
    struct Counting(Arc<AtomicU32>);
    impl Reactor for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn consumes(&self) -> Vec<EventType> {
            vec![Start::event_type()]
        }
        fn emits(&self) -> Vec<EventType> {
            vec![End::event_type()]
        }
        async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            ctx.emit(&End {
                n: e.decode::<Start>()?.n,
            })?;
            Ok(())
        }
    }
    let node = |c: Arc<AtomicU32>| -> Result<Node> {
        Ok(Node::builder()
            .bus(h.config()?)
            .reactor(Counting(c))
            .build()?)
    };
    let n1 = node(calls.clone())?.start().await?;
    let n2 = node(calls.clone())?.start().await?;
    let events: Vec<Event> = (0..40)
        .map(|i| Event::root("urn:test", corr(&format!("c{i}")), &Start { n: i }))
        .collect::<Result<_, _>>()?;
    h.bus.publish_all(&events).await?;
    let out = wait_events(
        &h.bus,
        &h.bus.subjects().type_filter(&End::event_type()),
        40,
    )
    .await?;
    let ns: BTreeSet<u32> = out
        .iter()
        .map(|e| e.decode::<End>().map(|x| x.n))
        .collect::<Result<_, _>>()?;
    assert_eq!(ns.len(), 40);
    let (m1, m2) = (n1.metrics().clone(), n2.metrics().clone());
    n1.shutdown().await?;
    n2.shutdown().await?;
    let (a, b) = (
        m1.snapshot("counting").handled,
        m2.snapshot("counting").handled,
    );
    assert_eq!(
        a + b,
        40,
        "each input handled once across both instances ({a} + {b})"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 40);
    Ok(())
}

/// Counts its calls and answers each input with one output.
struct Counting {
    calls: Arc<AtomicU32>,
}
impl Reactor for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![Start::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![End::event_type()]
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let input: Start = e.decode()?;
        ctx.emit(&End { n: input.n + 1 })?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_stored_past_the_duplicate_window_is_not_handled_again() -> Result<()> {
    let h = Harness::start().await?;
    let calls = Arc::new(AtomicU32::new(0));
    let node = Node::builder()
        .bus(h.config()?)
        .reactor(Counting {
            calls: calls.clone(),
        })
        .build()?
        .start()
        .await?;
    let js = async_nats::jetstream::new(async_nats::connect(h.server.url()).await?);
    let c = corr("copied-1");
    let subject = h.bus.subjects().event(
        choreo::schemas::partition_of(&c, h.partitions),
        &c,
        &Start::event_type(),
    );
    // An event ten minutes old, as a producer's retry long after its first publish would be:
    // the server's duplicate window (2 min) no longer covers the copy or its answer.
    let mut original = Event::root("urn:test", c.clone(), &Start { n: 1 })?;
    original.time -= time::Duration::minutes(10);
    let publish = |msg_id: &'static str| {
        let mut headers = headers_of(&original);
        headers.insert("Nats-Msg-Id", msg_id);
        js.publish_with_headers(subject.clone(), headers, original.data.clone().into())
    };
    publish("first").await?.await?;
    wait_events(&h.bus, &h.bus.subjects().type_filter(&End::event_type()), 1).await?;
    publish("copy").await?.await?;
    let metrics = node.metrics().clone();
    common::wait_until("the copy is recognised", || {
        let m = metrics.snapshot("counting");
        async move { Ok(m.duplicates == 1) }
    })
    .await?;
    node.shutdown().await?;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler ran once");
    let history = h.bus.history(&c).await?;
    let types: Vec<String> = history
        .iter()
        .filter_map(|s| s.event.as_ref().ok().map(|e| e.ty.to_string()))
        .collect();
    assert_eq!(
        types,
        ["test.start.v1", "test.end.v1", "test.start.v1"],
        "both copies are on the log, one answer"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_conforming_cloudevent_reaches_its_reactor() -> Result<()> {
    let h = Harness::start().await?;
    let node = Node::builder()
        .bus(h.config()?)
        .reactor(Step::<Start, End>::new("foreign"))
        .build()?
        .start()
        .await?;
    // A producer that knows CloudEvents and nothing of choreo: plain NATS, JSON, string ids, no
    // correlation/causation/depth extensions (the subject names the correlation).
    let js = async_nats::jetstream::new(async_nats::connect(h.server.url()).await?);
    // Names ending in "-in" go through the ingress, where the server finds the partition.
    // "json-structured-in" has only the four required CloudEvents attributes (no `time`).
    let subject_of = |c: &CorrelationId| {
        if c.as_str().ends_with("-in") {
            h.bus.subjects().ingress(c, &Start::event_type())
        } else {
            h.bus
                .subjects()
                .event(h.bus.partition_of(c), c, &Start::event_type())
        }
    };
    let binary = |id: &str, data: &'static str| {
        let mut m = async_nats::HeaderMap::new();
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", id),
            ("ce-source", "urn:python"),
            ("ce-type", "test.start.v1"),
            ("ce-time", "2026-12-01T10:00:00Z"),
            ("ce-datacontenttype", "application/json; charset=utf-8"),
            ("Nats-Msg-Id", id),
        ] {
            m.insert(k, v);
        }
        (m, bytes::Bytes::from_static(data.as_bytes()))
    };
    let structured = |body: &'static str| {
        let mut m = async_nats::HeaderMap::new();
        m.insert("Content-Type", "application/cloudevents+json");
        (m, bytes::Bytes::from_static(body.as_bytes()))
    };
    let sends = [
        ("json-binary", binary("order-1", r#"{"n":10}"#)),
        ("json-binary-in", binary("order-1-in", r#"{"n":30}"#)),
        (
            "json-structured-in",
            structured(
                r#"{"specversion":"1.0","id":"order-2-in","source":"urn:python","type":"test.start.v1",
                    "data":{"n":40}}"#,
            ),
        ),
        (
            "json-structured",
            structured(
                r#"{"specversion":"1.0","id":"order-2","source":"urn:python","type":"test.start.v1",
                    "time":"2026-12-01T10:00:00Z","datacontenttype":"application/json","data":{"n":20}}"#,
            ),
        ),
        ("bad-json", binary("order-3", r#"{"n": oops"#)),
        ("bad-shape", binary("order-4", r#"{"n":"not a number"}"#)),
        (
            "bad-structured",
            structured(r#"{"specversion":"1.0", "id": "#),
        ),
    ];
    for (corr_id, (headers, body)) in sends {
        let c = corr(corr_id);
        js.publish_with_headers(subject_of(&c), headers, body)
            .await?
            .await?;
    }
    let ends = wait_events(&h.bus, &h.bus.subjects().type_filter(&End::event_type()), 4).await?;
    let mut got: Vec<(String, u32)> = ends
        .iter()
        .map(|e| Ok((e.correlation.to_string(), e.decode::<End>()?.n)))
        .collect::<Result<_>>()?;
    got.sort();
    assert_eq!(
        got,
        [
            ("json-binary".to_owned(), 11),
            ("json-binary-in".to_owned(), 31),
            ("json-structured".to_owned(), 21),
            ("json-structured-in".to_owned(), 41),
        ]
    );
    let root = h
        .bus
        .history(&corr("json-binary"))
        .await?
        .into_iter()
        .find_map(|s| s.event.ok())
        .ok_or_else(|| anyhow::anyhow!("the root is in the history"))?;
    assert!(root.is_root() && root.depth == 0, "{root:?}");
    assert_eq!(
        ends.iter()
            .find(|e| e.correlation.as_str() == "json-binary")
            .map(|e| e.causation),
        Some(root.id),
        "the answer is caused by the foreign root"
    );
    let letters = wait_dead_letters(&h.bus, 3).await?;
    let reasons: BTreeMap<String, String> = letters
        .iter()
        .map(|l| {
            let c = h
                .bus
                .subjects()
                .parse_event(&l.original_subject)
                .map_or(String::new(), |(_, c, _)| c.to_owned());
            (c, format!("{}: {}", l.reason, l.detail))
        })
        .collect();
    assert!(
        reasons["bad-json"].starts_with("invalid_envelope:")
            && reasons["bad-json"].contains("data is not valid JSON"),
        "{reasons:?}"
    );
    assert!(
        reasons["bad-shape"].starts_with("bad_payload"),
        "{reasons:?}"
    );
    assert!(
        reasons["bad-structured"].starts_with("invalid_envelope:")
            && reasons["bad-structured"].contains("structured event"),
        "{reasons:?}"
    );
    node.shutdown().await?;
    Ok(())
}
