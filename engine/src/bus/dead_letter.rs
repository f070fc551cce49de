//! Dead letters: why an input was given up on, and the DLQ message that records it.

use std::fmt;

use async_nats::HeaderMap;
use choreo_schemas::{headers, ActorName, EnvelopeError, Event};

use super::wire;

/// Header: machine-readable reason code (see [`DlqReason::code`]).
pub const DLQ_REASON: &str = "choreo-dlq-reason";
/// Header: human-readable detail of the reason (percent-encoded).
pub const DLQ_DETAIL: &str = "choreo-dlq-detail";
/// Header: the actor that gave up.
pub const DLQ_ACTOR: &str = "choreo-dlq-actor";
/// Header: handler attempts made (0 when the input never reached the handler).
pub const DLQ_ATTEMPTS: &str = "choreo-dlq-attempts";
/// Header: stream sequence of the original message.
pub const DLQ_STREAM_SEQ: &str = "choreo-dlq-stream-seq";
/// Header: subject of the original message.
pub const DLQ_SUBJECT: &str = "choreo-dlq-subject";
/// Header: when the dead letter was written (RFC 3339).
pub const DLQ_TIME: &str = "choreo-dlq-time";
/// Header: `reference` when the dead letter's body was left out because the copy would not fit
/// the server's `max_payload`; the original stays in the events stream at `choreo-dlq-stream-seq`.
pub const DLQ_BODY: &str = "choreo-dlq-body";
/// Header: the length of the original body (set with `choreo-dlq-body: reference`).
pub const DLQ_BODY_LEN: &str = "choreo-dlq-body-len";
/// Value of [`DLQ_BODY`] for a dead letter that refers to its original instead of copying it.
pub const BODY_REFERENCE: &str = "reference";
/// Value of [`DLQ_BODY`] for a quarantined message whose body was cut to fit.
pub const BODY_TRUNCATED: &str = "truncated";
/// Room kept under `max_payload` for what the server and client add.
const PAYLOAD_MARGIN: usize = 256;

/// Header on a redriven event: the DLQ sequence it was redriven from. The event keeps its
/// original `ce-id`, so history links the copy to the original.
pub const REDRIVEN_FROM: &str = "choreo-redriven-from";

/// Why an input went to the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DlqReason {
    /// Headers/body are not a valid choreo CloudEvent.
    InvalidEnvelope(EnvelopeError),
    /// The envelope is valid, but disagrees with the subject it was published on.
    SubjectMismatch(String),
    /// The event type is not registered, or not consumed by this actor.
    UnknownType(String),
    /// The data does not decode as the registered payload (or the handler said so).
    BadPayload(String),
    /// The input or its outputs exceed the depth limit (a causal loop).
    DepthExceeded {
        /// Depth the event or output would have.
        depth: u32,
        /// The limit.
        limit: u32,
    },
    /// The message was delivered more often than allowed (nodes keep crashing or timing out on it).
    MaxDeliveries {
        /// Deliveries so far.
        delivered: u64,
        /// The limit.
        limit: u64,
    },
    /// The handler failed transiently on every attempt.
    MaxAttempts {
        /// The last error.
        last_error: String,
    },
    /// The handler rejected the input as permanently unprocessable.
    Rejected(String),
    /// The input faulted a saga instance (unreadable state, handler error).
    SagaFaulted(String),
    /// The stored message cannot be parsed by the NATS client (its header block): it was moved
    /// out of the stream (see `bus::quarantine`).
    Unreadable(String),
}

impl DlqReason {
    /// Stable machine-readable code, the value of the `choreo-dlq-reason` header.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidEnvelope(_) => "invalid_envelope",
            Self::SubjectMismatch(_) => "subject_mismatch",
            Self::UnknownType(_) => "unknown_type",
            Self::BadPayload(_) => "bad_payload",
            Self::DepthExceeded { .. } => "depth_exceeded",
            Self::MaxDeliveries { .. } => "max_deliveries",
            Self::MaxAttempts { .. } => "max_attempts",
            Self::Rejected(_) => "rejected",
            Self::SagaFaulted(_) => "saga_faulted",
            Self::Unreadable(_) => "unreadable",
        }
    }
}

impl fmt::Display for DlqReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidEnvelope(e) => write!(f, "invalid envelope: {e}"),
            Self::SubjectMismatch(s) => write!(f, "envelope disagrees with subject: {s}"),
            Self::UnknownType(s) => write!(f, "unknown event type: {s}"),
            Self::BadPayload(s) => write!(f, "bad payload: {s}"),
            Self::DepthExceeded { depth, limit } => {
                write!(f, "depth {depth} exceeds the limit {limit} (causal loop?)")
            }
            Self::MaxDeliveries { delivered, limit } => write!(
                f,
                "delivered {delivered} times, limit {limit}: nodes keep crashing or timing out on it"
            ),
            Self::MaxAttempts { last_error } => {
                write!(f, "handler failed on every attempt; last error: {last_error}")
            }
            Self::Rejected(s) => write!(f, "rejected by handler: {s}"),
            Self::SagaFaulted(s) => write!(f, "saga instance faulted: {s}"),
            Self::Unreadable(s) => write!(f, "the client cannot parse it: {s}"),
        }
    }
}

/// Build the DLQ message headers: the original headers (minus JetStream control headers),
/// plus the `choreo-dlq-*` headers, and a `Nats-Msg-Id` unique per (actor, original sequence)
/// so the same input dead-lettered twice is stored once, and by two actors twice.
pub(crate) fn dead_letter_headers(
    original: Option<&HeaderMap>,
    actor: &ActorName,
    reason: &DlqReason,
    attempts: u32,
    stream_seq: u64,
    subject: &str,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(h) = original {
        for (name, values) in h.iter() {
            let n: &str = name.as_ref();
            if n.eq_ignore_ascii_case(headers::NATS_MSG_ID) || n.starts_with("Nats-Expected") {
                continue;
            }
            for v in values {
                out.append(n, v.as_str());
            }
        }
    }
    out.insert(
        headers::NATS_MSG_ID,
        format!("dlq-{actor}-{stream_seq}").as_str(),
    );
    out.insert(DLQ_REASON, reason.code());
    out.insert(
        DLQ_DETAIL,
        headers::encode_value(&reason.to_string()).as_str(),
    );
    out.insert(DLQ_ACTOR, actor.as_str());
    out.insert(DLQ_ATTEMPTS, attempts.to_string().as_str());
    out.insert(DLQ_STREAM_SEQ, stream_seq.to_string().as_str());
    out.insert(DLQ_SUBJECT, headers::encode_value(subject).as_str());
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    out.insert(DLQ_TIME, now.as_str());
    out
}

/// Bytes `h` takes on the wire (`NATS/1.0` line, `name: value` lines, blank line).
pub(crate) fn header_block_len(h: &HeaderMap) -> usize {
    let mut n = "NATS/1.0\r\n\r\n".len();
    for (name, values) in h.iter() {
        let name: &str = name.as_ref();
        for v in values {
            n = n.saturating_add(name.len() + v.as_str().len() + 4);
        }
    }
    n
}

/// The body a dead letter can carry: `body` when headers and body fit the server's
/// `max_payload`, else nothing, with [`DLQ_BODY`] = `reference` (the original stays in the
/// events stream at the recorded sequence). So every dead letter lands.
pub(crate) fn fit_body(bus: &super::Bus, hdrs: &mut HeaderMap, body: bytes::Bytes) -> bytes::Bytes {
    let limit = payload_limit(bus);
    let need = header_block_len(hdrs)
        .saturating_add(body.len())
        .saturating_add(PAYLOAD_MARGIN);
    if need <= limit {
        return body;
    }
    hdrs.insert(DLQ_BODY, BODY_REFERENCE);
    hdrs.insert(DLQ_BODY_LEN, body.len().to_string().as_str());
    bytes::Bytes::new()
}

/// For a message about to be deleted (quarantine): `body` cut to what fits, with
/// [`DLQ_BODY`] = `truncated` and [`DLQ_BODY_LEN`] = the original length when cut.
pub(crate) fn fit_or_truncate(
    bus: &super::Bus,
    hdrs: &mut HeaderMap,
    body: Vec<u8>,
) -> bytes::Bytes {
    let limit = payload_limit(bus);
    let len = body.len();
    // Room with the two marker headers counted, whether or not they are needed.
    let markers = DLQ_BODY.len() + BODY_TRUNCATED.len() + DLQ_BODY_LEN.len() + 24;
    let room = limit.saturating_sub(
        header_block_len(hdrs)
            .saturating_add(markers)
            .saturating_add(PAYLOAD_MARGIN),
    );
    if len <= room {
        return body.into();
    }
    hdrs.insert(DLQ_BODY_LEN, len.to_string().as_str());
    hdrs.insert(DLQ_BODY, BODY_TRUNCATED);
    let mut body = body;
    body.truncate(room);
    body.into()
}

/// The server's `max_payload` (unlimited when the server did not say).
fn payload_limit(bus: &super::Bus) -> usize {
    match bus.client().server_info().max_payload {
        0 => usize::MAX,
        n => n,
    }
}

/// A dead letter read back from the DLQ stream.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Sequence in the DLQ stream.
    pub dlq_sequence: u64,
    /// Reason code (`choreo-dlq-reason`).
    pub reason: String,
    /// Reason detail (`choreo-dlq-detail`).
    pub detail: String,
    /// The actor that gave up.
    pub actor: String,
    /// Handler attempts made.
    pub attempts: u32,
    /// Sequence of the original in the events stream.
    pub original_sequence: u64,
    /// Subject of the original.
    pub original_subject: String,
    /// The original event, when its envelope decodes.
    pub event: Result<Event, EnvelopeError>,
    /// The original body (empty when [`DeadLetter::body_is_reference`]).
    pub body: Vec<u8>,
    /// True when the body was too large to copy: the original is in the events stream at
    /// [`DeadLetter::original_sequence`] (while the stream retains it).
    pub body_is_reference: bool,
    /// For a quarantined message (reason `unreadable`): its header block as far as readable.
    pub raw_headers: String,
}

impl DeadLetter {
    pub(crate) fn from_message(dlq_sequence: u64, hdrs: Option<&HeaderMap>, body: &[u8]) -> Self {
        let get = |name: &str| -> String {
            hdrs.and_then(|h| h.get(name))
                .map(|v| {
                    percent_encoding::percent_decode_str(v.as_str())
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .unwrap_or_default()
        };
        Self {
            dlq_sequence,
            reason: get(DLQ_REASON),
            detail: get(DLQ_DETAIL),
            actor: get(DLQ_ACTOR),
            attempts: get(DLQ_ATTEMPTS).parse().unwrap_or(0),
            original_sequence: get(DLQ_STREAM_SEQ).parse().unwrap_or(0),
            original_subject: get(DLQ_SUBJECT),
            event: wire::decode_event(hdrs, body),
            body: body.to_vec(),
            body_is_reference: get(DLQ_BODY) == BODY_REFERENCE,
            raw_headers: get(super::quarantine::DLQ_RAW_HEADERS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_headers_keep_the_original_and_add_the_reason() {
        let mut original = HeaderMap::new();
        original.insert("ce-type", "a.b.v1");
        original.insert(headers::NATS_MSG_ID, "orig-id");
        let actor = ActorName::new("billing").expect("valid");
        let reason = DlqReason::MaxAttempts {
            last_error: "db down 100%".into(),
        };
        let h = dead_letter_headers(
            Some(&original),
            &actor,
            &reason,
            5,
            42,
            "choreo.evt.1.c.a.b.v1",
        );
        let letter = DeadLetter::from_message(7, Some(&h), b"body");
        assert_eq!(letter.reason, "max_attempts");
        assert!(letter.detail.contains("db down 100%"), "{}", letter.detail);
        assert_eq!(
            (
                letter.actor.as_str(),
                letter.attempts,
                letter.original_sequence
            ),
            ("billing", 5, 42)
        );
        assert_eq!(h.get("ce-type").map(|v| v.as_str()), Some("a.b.v1"));
        assert_eq!(
            h.get(headers::NATS_MSG_ID).map(|v| v.as_str()),
            Some("dlq-billing-42")
        );
    }

    #[test]
    fn reason_codes_are_distinct() {
        let all = [
            DlqReason::InvalidEnvelope(EnvelopeError::Missing("ce-id")),
            DlqReason::SubjectMismatch(String::new()),
            DlqReason::UnknownType(String::new()),
            DlqReason::BadPayload(String::new()),
            DlqReason::DepthExceeded { depth: 1, limit: 0 },
            DlqReason::MaxDeliveries {
                delivered: 1,
                limit: 0,
            },
            DlqReason::MaxAttempts {
                last_error: String::new(),
            },
            DlqReason::Rejected(String::new()),
            DlqReason::SagaFaulted(String::new()),
            DlqReason::Unreadable(String::new()),
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(DlqReason::code).collect();
        assert_eq!(codes.len(), all.len());
    }
}
