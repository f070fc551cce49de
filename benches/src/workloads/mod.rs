//! The workloads, and what they share: the ~256 B msgpack payload, the per-workload
//! measurement of CPU time and peak RSS, and helpers to start nodes and publish roots.

pub mod deadlock;
pub mod failover;
pub mod hop;
pub mod raw;
pub mod saga;
pub mod timers;

use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use choreo::{Bus, BusConfig, CorrelationId, Event, EventType, NodeBuilder, Payload};
use serde::{Deserialize, Serialize};

use crate::env::BenchServer;
use crate::error::BenchError;
use crate::options::{BenchOptions, Coordination};
use crate::procstat::{self, ProcSample};
use crate::report::WorkloadResult;

/// Encoded size of every benchmark payload (msgpack), as in the design's measurements.
pub const PAYLOAD_BYTES: usize = 256;

/// The data of every benchmark event: a sequence number, workload fields and padding up to
/// [`PAYLOAD_BYTES`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchData {
    /// Item sequence number.
    pub seq: u64,
    /// Saga workload: the step that fails (0: none).
    pub fail_step: u8,
    /// Timers workload: when the timer is due (Unix ms).
    pub due_ms: i64,
    /// Padding.
    pub pad: String,
}

impl Payload for BenchData {
    const TYPE: &'static str = "bench.data.v1";
}

impl BenchData {
    /// A payload padded to exactly [`PAYLOAD_BYTES`] when encoded.
    pub fn new(seq: u64, fail_step: u8, due_ms: i64) -> Self {
        let mut d = Self {
            seq,
            fail_step,
            due_ms,
            pad: String::new(),
        };
        let base = choreo::schemas::encode_data(&d).map_or(40, |v| v.len());
        // An empty string is 1 byte (fixstr); 32..=255 bytes take a 2-byte str8 header.
        let len = PAYLOAD_BYTES.saturating_sub(base + 1);
        d.pad = "x".repeat(if len >= 32 { len } else { len + 1 });
        d
    }

    /// The encoded payload.
    pub fn encode(&self) -> Result<Vec<u8>, BenchError> {
        Ok(choreo::schemas::encode_data(self)?)
    }
}

/// An event type from a static name.
pub(crate) fn ty(name: &str) -> Result<EventType, BenchError> {
    EventType::new(name).map_err(|e| BenchError::Options(format!("event type {name}: {e}")))
}

/// CPU time and peak RSS of this process (and CPU of the server) over one workload.
pub(crate) struct Measure {
    me: Option<ProcSample>,
    server_pid: Option<String>,
    server: Option<ProcSample>,
    peak_reset: bool,
}

impl Measure {
    pub(crate) fn start(server: &BenchServer) -> Self {
        let peak_reset = procstat::reset_peak();
        let server_pid = server.pid().map(|p| p.to_string());
        Self {
            me: procstat::sample("self"),
            server: server_pid.as_deref().and_then(procstat::sample),
            server_pid,
            peak_reset,
        }
    }

    pub(crate) fn finish(self, r: &mut WorkloadResult) {
        let now = procstat::sample("self");
        if let (Some(a), Some(b)) = (self.me, now) {
            r.cpu_s = Some(b.cpu_s - a.cpu_s);
            r.peak_rss_kib = Some(b.peak_rss_kib);
        }
        if let (Some(a), Some(b)) = (
            self.server,
            self.server_pid.as_deref().and_then(procstat::sample),
        ) {
            r.server_cpu_s = Some(b.cpu_s - a.cpu_s);
            r.set("server_peak_rss_kib", b.peak_rss_kib);
        }
        if !self.peak_reset {
            r.notes
                .push("peak RSS is since the process started (clear_refs refused)".into());
        }
    }
}

/// Everything a workload needs from the run.
pub(crate) struct Ctx<'a> {
    pub(crate) opts: &'a BenchOptions,
    pub(crate) server: &'a BenchServer,
}

impl Ctx<'_> {
    /// A bus config on a fresh namespace (with the tuned partition count, if any).
    pub(crate) fn bus_config(&self, namespace: &str) -> Result<BusConfig, BenchError> {
        self.bus_config_with(namespace, self.opts.tuning.partitions)
    }

    /// A bus config on a fresh namespace with `partitions` (`None`: the engine's default).
    pub(crate) fn bus_config_with(
        &self,
        namespace: &str,
        partitions: Option<u16>,
    ) -> Result<BusConfig, BenchError> {
        let mut b = BusConfig::builder()
            .url(self.server.url.clone())
            .namespace(namespace)
            .client_name(format!("choreo-bench-{namespace}"))
            .request_timeout(Duration::from_secs(30));
        if let Some(p) = partitions {
            b = b.partitions(p);
        }
        Ok(b.build()?)
    }

    /// Apply the engine knobs to a node builder (coordination as `--coordination` says: off
    /// only with `off`).
    pub(crate) fn tune(&self, b: NodeBuilder) -> NodeBuilder {
        self.tune_with(b, self.opts.coordination != Coordination::Off)
    }

    /// [`Ctx::tune`] with deadlock detection and the stall watchdog `coordination`.
    pub(crate) fn tune_with(&self, mut b: NodeBuilder, coordination: bool) -> NodeBuilder {
        b = b.coordination(coordination);
        let t = &self.opts.tuning;
        if let Some(n) = t.lanes {
            b = b.concurrency(n);
        }
        if let Some(n) = t.fetch_batch {
            b = b.fetch_batch(n);
        }
        if let Some(n) = t.saga_batch {
            b = b.saga_batch(n);
        }
        b
    }

    /// A per-workload timeout that grows with the size.
    pub(crate) fn timeout(&self) -> Duration {
        self.opts.timeout
    }
}

/// Publish a root event without waiting for its ack (the driver's acker awaits it).
pub(crate) async fn send_root(
    bus: &Bus,
    correlation: &str,
    ty: &EventType,
    data: Vec<u8>,
) -> Result<PublishAckFuture, BenchError> {
    let corr = CorrelationId::new(correlation)
        .map_err(|e| BenchError::Options(format!("correlation {correlation}: {e}")))?;
    let event = Event::root_raw("/bench/harness", corr, ty.clone(), data);
    let subject = bus.subject_of(&event);
    let msg = PublishMessage::build()
        .headers(choreo::wire::event_headers(&event))
        .payload(event.data.into());
    bus.jetstream()
        .send_publish(subject.clone(), msg)
        .await
        .map_err(|e| BenchError::nats(format!("publish {subject}"), e))
}

/// Messages in a stream now.
pub(crate) async fn stream_messages(bus: &Bus, stream: &str) -> Result<u64, BenchError> {
    let mut s = bus
        .jetstream()
        .get_stream(stream)
        .await
        .map_err(|e| BenchError::nats(format!("stream {stream}"), e))?;
    let info = s
        .info()
        .await
        .map_err(|e| BenchError::nats(format!("stream info {stream}"), e))?;
    Ok(info.state.messages)
}

/// Fill the throughput and latency fields of `r` from a finished tracker.
pub(crate) fn fill_from(r: &mut WorkloadResult, t: &crate::tracker::Tracker) {
    let span = t.span().as_secs_f64().max(1e-9);
    r.items = t.counts().completed;
    r.elapsed_s = span;
    r.throughput_per_s = r.items as f64 / span;
    r.latency = t.histogram().percentiles();
    r.duplicates = t.counts().duplicates;
}

/// Fail unless the tracker saw every item exactly once.
pub(crate) async fn wait_complete(
    workload: &str,
    what: &str,
    t: &crate::tracker::Tracker,
    timeout: Duration,
) -> Result<(), BenchError> {
    t.wait_all(timeout)
        .await
        .map_err(|got| BenchError::Incomplete {
            workload: workload.to_owned(),
            what: what.to_owned(),
            got,
            expected: t.len(),
            secs: timeout.as_secs(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_256_bytes() {
        for seq in [0, 1, 300, 70_000, u64::from(u32::MAX) + 1, u64::MAX] {
            for due in [0, 1_700_000_000_000] {
                let d = BenchData::new(seq, 2, due);
                assert_eq!(
                    d.encode().expect("encodes").len(),
                    PAYLOAD_BYTES,
                    "{seq} {due}"
                );
            }
        }
    }
}
