//! `raw`: the physical limit of the log, with no engine. Pipelined JetStream publishes (each
//! with a `Nats-Msg-Id`, the same 256 B msgpack body as the engine's events) and a durable
//! pull consumer that acks every message, on the same server and with the same load mode as
//! the engine workloads. One message = one publish + one consume + one ack: the unit the
//! engine's figures are divided by.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use choreo::{CorrelationId, Event, Payload};
use futures::StreamExt;

use super::{fill_from, wait_complete, BenchData, Ctx, Measure};
use crate::driver::offer;
use crate::env::fresh_namespace;
use crate::error::BenchError;
use crate::observer::seq_of;
use crate::options::LoadMode;
use crate::progress::Progress;
use crate::report::WorkloadResult;
use crate::tracker::Tracker;

/// Messages fetched per pull request (the design measured 1000-2000 as the sweet spot).
const FETCH: usize = 1000;

/// Run `raw`.
pub(crate) async fn run(cx: &Ctx<'_>) -> Result<WorkloadResult, BenchError> {
    let opts = cx.opts;
    let ns = fresh_namespace("raw");
    let stream_name = ns.to_ascii_uppercase();
    let client = connect(&cx.server.url, "publisher").await?;
    let consumer_client = connect(&cx.server.url, "consumer").await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .max_ack_inflight(4096)
        .backpressure_on_inflight(true)
        .build(client);
    let cjs = jetstream::new(consumer_client);
    js.create_stream(stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("{ns}.>")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| BenchError::nats(format!("create stream {stream_name}"), e))?;

    let epoch = std::time::Instant::now();
    let warm = Tracker::new(epoch, opts.sizes.warmup.max(1), Some(1024));
    let window = match opts.mode {
        LoadMode::Closed { in_flight } => Some(in_flight),
        LoadMode::Open { .. } => None,
    };
    let main = Tracker::new(epoch, opts.sizes.raw_messages, window);
    let consumer = start_consumer(
        &cjs,
        &stream_name,
        &ns,
        Arc::clone(&warm),
        Arc::clone(&main),
    )
    .await?;

    let data = BenchData::new(0, 0, 0).encode()?;
    let envelope = opts.raw_envelope;
    let send = |prefix: char| {
        let js = js.clone();
        let ns = ns.clone();
        let data = data.clone();
        move |seq: u64| {
            let js = js.clone();
            let corr = format!("{prefix}{seq}");
            let subject = format!("{ns}.raw.{}.{corr}.bench.data.v1", seq % 16);
            let headers = match (envelope, CorrelationId::new(corr.as_str())) {
                (true, Ok(c)) => {
                    let ty = BenchData::event_type();
                    choreo::wire::event_headers(&Event::root_raw("/bench/raw", c, ty, Vec::new()))
                }
                _ => {
                    let mut h = HeaderMap::new();
                    h.insert("Nats-Msg-Id", format!("{ns}-{corr}").as_str());
                    h
                }
            };
            let msg = PublishMessage::build()
                .headers(headers)
                .payload(data.clone().into());
            async move {
                js.send_publish(subject.clone(), msg)
                    .await
                    .map_err(|e| BenchError::nats(format!("publish {subject}"), e))
            }
        }
    };

    offer(&warm, LoadMode::Closed { in_flight: 1024 }, send('w')).await?;
    wait_complete("raw", "warm-up messages", &warm, cx.timeout()).await?;

    let measure = Measure::start(cx.server);
    let progress = {
        let t = Arc::clone(&main);
        Progress::start(
            opts.progress,
            "raw".into(),
            "msgs",
            main.len(),
            Arc::new(move || t.completed()),
        )
    };
    offer(&main, opts.mode, send('r')).await?;
    wait_complete("raw", "messages consumed", &main, cx.timeout()).await?;
    progress.finish();

    let mut r = WorkloadResult::new("raw", "jetstream", "msgs");
    measure.finish(&mut r);
    fill_from(&mut r, &main);
    r.events_per_s = Some(r.throughput_per_s);
    r.ratio_to_raw = Some(1.0);
    r.latency_of = "publish → pulled by the consumer (before its ack)".into();
    r.set("payload_bytes", super::PAYLOAD_BYTES);
    r.set("fetch_batch", FETCH);
    if envelope {
        r.set("headers", "the engine's CloudEvents headers (raw_envelope)");
        r.notes.push(
            "raw_envelope: every message carries the engine's ce-* headers and traceparent".into(),
        );
    }
    consumer.abort();
    let _ = js.delete_stream(&stream_name).await;
    Ok(r)
}

async fn connect(url: &str, role: &str) -> Result<async_nats::Client, BenchError> {
    async_nats::ConnectOptions::new()
        .name(format!("choreo-bench-raw-{role}"))
        .connect(url)
        .await
        .map_err(|e| BenchError::nats(format!("connect {url}"), e))
}

/// A durable pull consumer acking every message; completes the message's tracker item.
async fn start_consumer(
    js: &jetstream::Context,
    stream_name: &str,
    ns: &str,
    warm: Arc<Tracker>,
    main: Arc<Tracker>,
) -> Result<tokio::task::JoinHandle<()>, BenchError> {
    let s = js
        .get_stream_no_info(stream_name)
        .await
        .map_err(|e| BenchError::nats("get raw stream", e))?;
    let consumer = s
        .create_consumer(pull::Config {
            durable_name: Some("raw-consumer".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .map_err(|e| BenchError::nats("create raw consumer", e))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(FETCH)
        .messages()
        .await
        .map_err(|e| BenchError::nats("pull raw messages", e))?;
    let prefix = format!("{ns}.raw.");
    Ok(tokio::spawn(async move {
        while let Some(m) = messages.next().await {
            let Ok(m) = m else { continue };
            let corr = m
                .subject
                .as_str()
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split('.').nth(1))
                .unwrap_or("");
            let (tracker, seq) = match (seq_of(corr, 'r'), seq_of(corr, 'w')) {
                (Some(s), _) => (&main, s),
                (None, Some(s)) => (&warm, s),
                _ => {
                    main.unknown();
                    continue;
                }
            };
            let now = tracker.now_ns();
            if let Err(e) = m.ack().await {
                tracing::debug!(error = %e, "raw ack failed");
            }
            tracker.complete_at(seq, now);
        }
    }))
}
