//! What every consumer-driven driver (reactors, saga partitions) does with a JetStream delivery:
//! admit it, read its metadata, keep it alive while working, dead-letter it.

mod admit;
mod copies;
mod dead_lettered;
mod deadline;
mod start;

pub(crate) use admit::{admit, Delivery, Limits};
pub(crate) use copies::{already_answered, maybe_past_window};
pub use dead_lettered::{CommandDeadLettered, COMMAND_DEAD_LETTERED};
pub(crate) use deadline::is_expired;
pub use deadline::{CommandExpired, COMMAND_EXPIRED};
pub(crate) use start::SagaStart;
pub use start::StartPosition;

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use choreo_schemas::ActorName;
use tracing::{debug, error, warn};

use crate::bus::dead_letter::{dead_letter_headers, fit_body};
use crate::bus::{Bus, DlqReason};
use crate::metrics::ActorCounters;

/// A pull consumer of the events stream.
pub(crate) type PullConsumer =
    async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>;

/// Start pulling from `consumer` (batches of `batch`, heartbeats every 5 s), retrying with a
/// doubling pause while the server refuses. `None` once `shutdown` turns true.
pub(crate) async fn open_pull(
    consumer: &PullConsumer,
    batch: usize,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    who: &str,
) -> Option<async_nats::jetstream::consumer::pull::Stream> {
    let mut pause = Duration::from_millis(50);
    loop {
        if *shutdown.borrow() {
            return None;
        }
        match consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
        {
            Ok(m) => return Some(m),
            Err(e) => {
                warn!(consumer = who, error = %e, "cannot start pulling; retrying");
                tokio::select! {
                    _ = shutdown.changed() => return None,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// (stream sequence, delivery count) of a delivery.
pub(crate) fn delivery_info(msg: &Message) -> (u64, u64) {
    match msg.info() {
        Ok(i) => (i.stream_sequence, u64::try_from(i.delivered).unwrap_or(1)),
        Err(_) => (0, 1),
    }
}

/// Decode a delivered message as an event (see [`crate::bus::wire::decode_stored`]), with the
/// time JetStream stored it.
pub(crate) fn decode_delivered(
    subjects: &choreo_schemas::Subjects,
    msg: &Message,
) -> Result<choreo_schemas::Event, choreo_schemas::EnvelopeError> {
    crate::bus::wire::decode_stored(
        subjects,
        msg.subject.as_str(),
        msg.headers.as_ref(),
        &msg.payload,
        msg.info().ok().map(|i| i.published),
    )
}

/// Run `fut`, telling JetStream every `every` that the message is still being worked on.
pub(crate) async fn with_progress<F: Future>(msg: &Message, every: Duration, fut: F) -> F::Output {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => {
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    debug!(error = %e, "in-progress ack failed");
                }
            }
        }
    }
}

/// Ask JetStream to redeliver soon (infrastructure trouble, not the input's fault).
pub(crate) async fn nak_later(msg: &Message) {
    if let Err(e) = msg
        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
        .await
    {
        debug!(error = %e, "nak failed; the message is redelivered after ack_wait");
    }
}

/// Publish the delivery to the DLQ with its reason, then term-ack it. If the DLQ publish fails,
/// nak it instead: nothing is lost. Returns whether the dead letter landed.
pub(crate) async fn dead_letter(
    bus: &Bus,
    actor: &ActorName,
    counters: &ActorCounters,
    msg: &Message,
    reason: DlqReason,
    attempts: u32,
) -> bool {
    let (stream_seq, _) = delivery_info(msg);
    match publish_dead_letter(bus, actor, counters, stream_seq, msg, &reason, attempts).await {
        Ok(()) => {
            if let Err(e) = msg.ack_with(AckKind::Term).await {
                warn!(error = %e, "term-ack failed; a redelivery is dead-lettered again (deduplicated)");
            }
            true
        }
        Err(e) => {
            error!(%actor, stream_seq, error = %e, "cannot write dead letter; input will be redelivered");
            nak_later(msg).await;
            false
        }
    }
}

/// Publish a copy of `msg` to the DLQ with its reason (no ack: the caller settles the input).
pub(crate) async fn publish_dead_letter(
    bus: &Bus,
    actor: &ActorName,
    counters: &ActorCounters,
    stream_seq: u64,
    msg: &Message,
    reason: &DlqReason,
    attempts: u32,
) -> Result<(), crate::error::BusError> {
    let subject = msg.subject.as_str();
    let correlation = bus
        .subjects()
        .parse_event(subject)
        .map_or("_unknown", |(_, c, _)| c);
    let dlq_subject = bus.subjects().dead_letter(actor, correlation);
    let mut headers = dead_letter_headers(
        msg.headers.as_ref(),
        actor,
        reason,
        attempts,
        stream_seq,
        subject,
    );
    let body = fit_body(bus, &mut headers, msg.payload.clone());
    bus.publish_raw(dlq_subject, headers, body).await?;
    counters.dead_lettered();
    warn!(%actor, stream_seq, reason = reason.code(), detail = %reason, "dead-lettered");
    Ok(())
}

/// The message of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_owned()
    }
}
