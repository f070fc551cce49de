//! OpenTelemetry export over OTLP/HTTP (protobuf), configured by the standard variables
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (default `http://localhost:4318`; `/v1/traces` and
//! `/v1/metrics` are appended) and `OTEL_SERVICE_NAME`.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use choreo_schemas::TraceParent;
use opentelemetry::metrics::Histogram;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use thiserror::Error;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::http::StdHttpClient;
use crate::metrics::{self, Metrics};
use crate::store::Store;

/// Setting up export failed.
#[derive(Debug, Error)]
pub enum TelemetryError {
    /// An exporter could not be built.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// A global subscriber is already installed.
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(String),
}

/// The installed exporters; call [`Telemetry::shutdown`] before exit to flush them.
#[derive(Debug)]
pub struct Telemetry {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
}

impl Telemetry {
    /// Whether `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the usual switch for exporting).
    pub fn configured() -> bool {
        std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
    }

    /// Install a global `tracing` subscriber (fmt to stderr filtered by `log_filter`, plus the
    /// OpenTelemetry layer) and a global meter provider exporting every `metrics_interval`.
    /// `service_name` applies when `OTEL_SERVICE_NAME` is unset.
    pub fn init(
        service_name: &str,
        log_filter: &str,
        metrics_interval: Duration,
    ) -> Result<Self, TelemetryError> {
        let client = StdHttpClient {
            timeout: Duration::from_secs(5),
        };
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(Duration::from_secs(5))
            .with_http_client(client.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service_name.to_owned());
        }
        let resource = resource.build();
        let tracer = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(spans)
            .build();
        let metrics_exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_temporality(Temporality::Cumulative)
            .with_http_client(client)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let reader = PeriodicReader::builder(metrics_exporter)
            .with_interval(metrics_interval)
            .build();
        let meter = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader)
            .build();
        opentelemetry::global::set_meter_provider(meter.clone());
        let filter = tracing_subscriber::EnvFilter::try_new(log_filter)
            .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .with(tracing_opentelemetry::layer().with_tracer(tracer.tracer("choreo")))
            .try_init()
            .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
        Ok(Self { tracer, meter })
    }

    /// Flush and stop both exporters (blocking work runs off the async runtime).
    pub async fn shutdown(self) {
        let Self { tracer, meter } = self;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = tracer.force_flush();
            let _ = meter.force_flush();
            let _ = tracer.shutdown();
            let _ = meter.shutdown();
        })
        .await;
    }
}

pub(super) fn set_parent(span: &tracing::Span, tp: &TraceParent) {
    let mut carrier = HashMap::with_capacity(1);
    carrier.insert("traceparent".to_owned(), tp.to_string());
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

pub(super) fn current_traceparent() -> Option<TraceParent> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    TraceParent::parse(&format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8() & 1
    ))
    .ok()
}

fn histograms() -> &'static HashMap<&'static str, Histogram<f64>> {
    static H: OnceLock<HashMap<&'static str, Histogram<f64>>> = OnceLock::new();
    H.get_or_init(|| {
        let meter = opentelemetry::global::meter("choreo");
        [metrics::ACTOR_HANDLER_LATENCY, metrics::SAGA_FLUSH_LATENCY]
            .into_iter()
            .map(|name| (name, meter.f64_histogram(name).with_unit("us").build()))
            .collect()
    })
}

pub(super) fn record_latency(name: &'static str, actor: &str, d: Duration) {
    if let Some(h) = histograms().get(name) {
        h.record(
            d.as_secs_f64() * 1e6,
            &[KeyValue::new("actor", actor.to_owned())],
        );
    }
}

/// Export a node's counters and its saga store's gauges through the global meter provider.
pub fn register_node_metrics(node_metrics: &Metrics, store: Option<Store>) {
    let meter = opentelemetry::global::meter("choreo");
    type Pick = fn(&crate::metrics::ActorMetrics) -> u64;
    let counters: [(&'static str, Pick); 9] = [
        (metrics::ACTOR_HANDLED, |m| m.handled),
        (metrics::ACTOR_FAILED, |m| m.failed),
        (metrics::ACTOR_RETRIED, |m| m.retried),
        (metrics::ACTOR_DEAD_LETTERED, |m| m.dead_lettered),
        (metrics::ACTOR_EXPIRED, |m| m.expired),
        (metrics::ACTOR_DUPLICATES, |m| m.duplicates),
        (metrics::SAGA_UNMATCHED, |m| m.unmatched),
        (metrics::SAGA_BATCHES, |m| m.batches),
        (metrics::SAGA_BATCH_INPUTS, |m| m.batch_inputs),
    ];
    for (name, pick) in counters {
        let m = node_metrics.clone();
        let _ = meter
            .u64_observable_counter(name)
            .with_callback(move |obs| {
                for (actor, snap) in m.all() {
                    obs.observe(pick(&snap), &[KeyValue::new("actor", actor)]);
                }
            })
            .build();
    }
    type PickNode = fn(&crate::metrics::CoordinationMetrics) -> u64;
    let node_counters: [(&'static str, PickNode); 4] = [
        (metrics::DEADLOCKS_DETECTED, |c| c.deadlocks),
        (metrics::STALLS_DETECTED, |c| c.stalls),
        (metrics::DEADLOCK_CHECKS, |c| c.checks),
        (metrics::DEADLOCK_LOG_READS, |c| c.log_reads),
    ];
    for (name, pick) in node_counters {
        let m = node_metrics.clone();
        let _ = meter
            .u64_observable_counter(name)
            .with_callback(move |obs| obs.observe(pick(&m.coordination()), &[]))
            .build();
    }
    if let Some(store) = store {
        let s = store.clone();
        let _ = meter
            .u64_observable_gauge(metrics::SAGA_INSTANCES)
            .with_callback(move |obs| {
                if let Ok(g) = s.gauges() {
                    for ((saga, status), n) in g.instances {
                        obs.observe(
                            n,
                            &[KeyValue::new("saga", saga), KeyValue::new("status", status)],
                        );
                    }
                }
            })
            .build();
        let _ = meter
            .u64_observable_gauge(metrics::SAGA_TIMERS_PENDING)
            .with_callback(move |obs| obs.observe(store.timers_len() as u64, &[]))
            .build();
    }
}
