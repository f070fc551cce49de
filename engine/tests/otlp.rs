//! OpenTelemetry export: a real OTLP/HTTP receiver in the test, two chained actors; their spans
//! share one trace and nest, and the actor counters arrive as metrics.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use choreo::{
    CorrelationId, Event, EventType, Node, Payload, ReactContext, ReactError, Reactor, Telemetry,
};
use common::{wait_events, Harness};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attrs: HashMap<String, String>,
}

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    /// (metric name, actor attribute) → last value
    counters: HashMap<(String, String), i64>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn record(path: &str, body: &[u8], into: &Mutex<Received>) -> Result<()> {
    let mut r = into.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    match path {
        "/v1/traces" => {
            for rs in ExportTraceServiceRequest::decode(body)?.resource_spans {
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        r.spans.push(Span {
                            name: s.name,
                            trace_id: hex(&s.trace_id),
                            span_id: hex(&s.span_id),
                            parent: hex(&s.parent_span_id),
                            attrs: attrs(&s.attributes),
                        });
                    }
                }
            }
        }
        "/v1/metrics" => {
            for rm in ExportMetricsServiceRequest::decode(body)?.resource_metrics {
                for sm in rm.scope_metrics {
                    for m in sm.metrics {
                        let Some(Data::Sum(sum)) = m.data else {
                            continue;
                        };
                        for p in sum.data_points {
                            let actor = attrs(&p.attributes).remove("actor").unwrap_or_default();
                            let v = match p.value {
                                Some(number_data_point::Value::AsInt(i)) => i,
                                Some(number_data_point::Value::AsDouble(d)) => d as i64,
                                None => continue,
                            };
                            r.counters.insert((m.name.clone(), actor), v);
                        }
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// An OTLP/HTTP receiver on its own thread and runtime (the exporters block while sending).
fn start_receiver() -> Result<(u16, Arc<Mutex<Received>>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let received = Arc::new(Mutex::new(Received::default()));
    let shared = received.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            while let Ok((sock, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let (rd, mut wr) = sock.into_split();
                    let mut rd = BufReader::new(rd);
                    let mut line = String::new();
                    if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let mut len = 0usize;
                    loop {
                        line.clear();
                        if rd.read_line(&mut line).await.unwrap_or(0) == 0 || line.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            if k.trim().eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    if rd.read_exact(&mut body).await.is_ok() {
                        if let Err(e) = record(&path, &body, &shared) {
                            eprintln!("receiver: {e}");
                        }
                    }
                    let _ = wr
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
                        .await;
                });
            }
        });
    });
    Ok((port, received))
}

#[derive(Serialize, Deserialize)]
struct A;
impl Payload for A {
    const TYPE: &'static str = "otel.a.v1";
}
#[derive(Serialize, Deserialize)]
struct B;
impl Payload for B {
    const TYPE: &'static str = "otel.b.v1";
}
#[derive(Serialize, Deserialize)]
struct C;
impl Payload for C {
    const TYPE: &'static str = "otel.c.v1";
}

struct Step<I, O>(&'static str, fn() -> O, std::marker::PhantomData<I>);
impl<I: Payload, O: Payload> Reactor for Step<I, O> {
    fn name(&self) -> &str {
        self.0
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![I::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![O::event_type()]
    }
    async fn react(&self, _: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        ctx.emit(&(self.1)())?;
        Ok(())
    }
}

#[test]
fn spans_of_two_actors_share_a_trace_and_nest() -> Result<()> {
    let (port, received) = start_receiver()?;
    std::env::set_var(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{port}"),
    );
    std::env::set_var("OTEL_SERVICE_NAME", "choreo-otlp-test");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let root = rt.block_on(async {
        let telemetry = Telemetry::init("unused", "warn,choreo=info", Duration::from_millis(100))?;
        let h = Harness::start().await?;
        let node = Node::builder()
            .bus(h.config()?)
            .reactor(Step::<A, B>("first", || B, std::marker::PhantomData))
            .reactor(Step::<B, C>("second", || C, std::marker::PhantomData))
            .build()?
            .start()
            .await?;
        let root = Event::root("urn:test", CorrelationId::new("otel-1")?, &A)?;
        h.bus.publish(&root).await?;
        wait_events(&h.bus, &h.bus.subjects().type_filter(&C::event_type()), 1).await?;
        node.shutdown().await?;
        telemetry.shutdown().await;
        anyhow::Ok(root)
    })?;

    let r = received.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let span_of = |actor: &str| -> Result<Span> {
        r.spans
            .iter()
            .find(|s| s.name == "react" && s.attrs.get("actor").map(String::as_str) == Some(actor))
            .cloned()
            .with_context(|| format!("no span of {actor} among {:?}", r.spans))
    };
    let (first, second) = (span_of("first")?, span_of("second")?);
    let root_tp = root.traceparent.context("root has a trace")?;
    assert_eq!(
        first.trace_id,
        root_tp.trace_id_hex(),
        "the first handler continues the root's trace"
    );
    assert_eq!(
        second.trace_id, first.trace_id,
        "one trace across both actors"
    );
    assert_eq!(
        second.parent, first.span_id,
        "the second handler is a child of the first"
    );
    assert_eq!(
        first.attrs.get("correlation").map(String::as_str),
        Some("otel-1")
    );
    assert_eq!(
        first.attrs.get("event_type").map(String::as_str),
        Some("otel.a.v1")
    );
    for actor in ["first", "second"] {
        let handled = r
            .counters
            .get(&(choreo::metrics::ACTOR_HANDLED.to_owned(), actor.to_owned()));
        assert_eq!(
            handled,
            Some(&1),
            "{actor} handled counter exported: {:?}",
            r.counters
        );
    }
    Ok(())
}
