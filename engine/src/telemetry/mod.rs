//! Tracing and metrics export. The facade here is always compiled; with the `otlp` feature it
//! links handler spans to the `traceparent` of their input, stamps outputs with the handler
//! span's context, and exports spans and metrics over OTLP/HTTP (see [`Telemetry`]). Without
//! the feature every function is a no-op and outputs carry a deterministic child context.

#[cfg(feature = "otlp")]
mod http;
#[cfg(feature = "otlp")]
mod otlp;

use std::time::Duration;

use choreo_schemas::TraceParent;

#[cfg(feature = "otlp")]
pub use otlp::{register_node_metrics, Telemetry, TelemetryError};

/// Make `span`'s parent the remote context in `traceparent` (call before entering the span).
#[cfg(feature = "otlp")]
pub(crate) fn set_parent(span: &tracing::Span, traceparent: Option<&TraceParent>) {
    if let Some(tp) = traceparent {
        otlp::set_parent(span, tp);
    }
}

/// No-op without the `otlp` feature.
#[cfg(not(feature = "otlp"))]
pub(crate) fn set_parent(_span: &tracing::Span, _traceparent: Option<&TraceParent>) {}

/// The current span's context as a traceparent, when an OpenTelemetry layer is installed.
#[cfg(feature = "otlp")]
pub(crate) fn current_traceparent() -> Option<TraceParent> {
    otlp::current_traceparent()
}

/// `None` without the `otlp` feature.
#[cfg(not(feature = "otlp"))]
pub(crate) fn current_traceparent() -> Option<TraceParent> {
    None
}

/// Record a handler latency in the exported histogram.
#[cfg(feature = "otlp")]
pub(crate) fn record_handler_latency(actor: &str, d: Duration) {
    otlp::record_latency(crate::metrics::ACTOR_HANDLER_LATENCY, actor, d);
}

/// No-op without the `otlp` feature.
#[cfg(not(feature = "otlp"))]
pub(crate) fn record_handler_latency(_actor: &str, _d: Duration) {}

/// Record a saga flush latency in the exported histogram.
#[cfg(feature = "otlp")]
pub(crate) fn record_flush_latency(saga: &str, d: Duration) {
    otlp::record_latency(crate::metrics::SAGA_FLUSH_LATENCY, saga, d);
}

/// No-op without the `otlp` feature.
#[cfg(not(feature = "otlp"))]
pub(crate) fn record_flush_latency(_saga: &str, _d: Duration) {}
