//! Quarantine: moving a stored message that the NATS client cannot parse out of every
//! consumer's way.
//!
//! nats-server stores header bytes as published; async-nats (0.51) refuses a delivered header
//! block that is not UTF-8, lacks the `NATS/1.0` line, or has a line that is not `name: value`,
//! by failing the whole connection (`io::ErrorKind::InvalidInput`, then a reconnect). Every
//! subscription on that connection is cut; the message is redelivered after `ack_wait` and cuts
//! it again, forever. Nothing the handler does can help: the message never reaches it.
//!
//! So after each reconnect (and on a slow period), a node looks at the first unacknowledged
//! messages of every consumer of the events stream through the JSON `STREAM.MSG.GET` API (its
//! headers arrive base64-encoded inside a JSON body, which the client parses safely), checks the
//! header block with the client's own rules ([`unreadable_headers`]), records an unreadable one
//! in the DLQ (reason `unreadable`: stream, sequence, subject, the readable part of the
//! headers, the body), and only then deletes it from the stream by sequence. The consumers then
//! skip it. The DLQ write is deduplicated per (stream, sequence), so nodes racing on the same
//! message record it once.

use std::str::FromStr;

use async_nats::jetstream::consumer;
use async_nats::{HeaderName, StatusCode};
use base64::Engine as _;
use futures::TryStreamExt;
use serde::Deserialize;

use super::dead_letter::{dead_letter_headers, fit_or_truncate, DlqReason};
use super::Bus;
use crate::error::BusError;
use choreo_schemas::{headers, ActorName};

/// The actor quarantine dead letters are filed under.
pub const QUARANTINE_ACTOR: &str = "choreo-quarantine";
/// Header on a quarantine dead letter: the original header block as far as it is readable
/// (lossy UTF-8, percent-encoded, at most [`RAW_HEADERS_KEEP`] bytes of the original).
pub const DLQ_RAW_HEADERS: &str = "choreo-dlq-raw-headers";
/// How much of an unreadable header block a dead letter keeps.
pub const RAW_HEADERS_KEEP: usize = 1024;
/// How many messages past a consumer's position are inspected.
pub(crate) const LOOK_AHEAD: usize = 8;

/// A message moved out of a stream because the client cannot parse it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// The stream it was in.
    pub stream: String,
    /// Its sequence there (now deleted).
    pub sequence: u64,
    /// Its subject.
    pub subject: String,
    /// Why the client refuses it.
    pub reason: String,
}

/// Why async-nats would refuse to parse this header block (and drop its connection), or `None`
/// when it parses. Mirrors `Connection::try_read_op` for `HMSG` in async-nats 0.51.
pub fn unreadable_headers(block: &[u8]) -> Option<String> {
    if block.is_empty() {
        return None; // no headers: delivered as a plain MSG, which parses
    }
    let text = match std::str::from_utf8(block) {
        Ok(t) => t,
        Err(e) => {
            return Some(format!(
                "header block is not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ))
        }
    };
    let mut lines = text.lines().peekable();
    let Some(version) = lines.next() else {
        return Some("header block has no version line".into());
    };
    let Some(suffix) = version.strip_prefix("NATS/1.0").map(str::trim) else {
        return Some("header block does not begin with NATS/1.0".into());
    };
    let status = suffix.split_once(' ').map_or(suffix, |(s, _)| s.trim());
    if !status.is_empty() && StatusCode::from_str(status).is_err() {
        return Some(format!("header status {status:?} is not a status code"));
    }
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let Some((name, _)) = line.split_once(':') else {
            return Some(format!("header line without a colon: {:?}", clip(line)));
        };
        if HeaderName::from_str(name).is_err() {
            return Some(format!("invalid header name {:?}", clip(name)));
        }
        while lines
            .next_if(|s| s.starts_with(char::is_whitespace))
            .is_some()
        {}
    }
    None
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// `STREAM.MSG.GET` answer: the message with base64 headers and data, or an API error.
#[derive(Deserialize)]
struct GetReply {
    message: Option<RawMessage>,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct RawMessage {
    subject: String,
    seq: u64,
    #[serde(default)]
    hdrs: Option<String>,
    #[serde(default)]
    data: Option<String>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u16,
    #[serde(default)]
    description: String,
}

/// A stored message read without the client's header parser.
pub(super) struct Unparsed {
    pub(super) subject: String,
    pub(super) sequence: u64,
    headers: Vec<u8>,
    data: Vec<u8>,
}

impl Bus {
    /// Inspect the first unacknowledged messages of every acking consumer of the events stream
    /// and quarantine those the client cannot parse (see the module docs). Consumers without
    /// acks (partition inputs, follows) check their own position when they resume
    /// ([`Bus::quarantine_after`]). Returns what was moved.
    pub async fn quarantine_unreadable(&self) -> Result<Vec<Quarantined>, BusError> {
        let stream_name = self.config().events_stream();
        let what = || format!("quarantine scan of {stream_name}");
        let stream = self
            .jetstream()
            .get_stream_no_info(&stream_name)
            .await
            .map_err(|e| BusError::js(what(), e))?;
        let infos: Vec<consumer::Info> = stream
            .consumers()
            .try_collect()
            .await
            .map_err(|e| BusError::js(what(), e))?;
        let mut moved = Vec::new();
        for info in infos {
            if info.config.ack_policy == consumer::AckPolicy::None {
                continue;
            }
            let filters = match (&info.config.filter_subject, &info.config.filter_subjects) {
                (_, many) if !many.is_empty() => many.clone(),
                (one, _) if !one.is_empty() => vec![one.clone()],
                _ => vec![">".to_owned()],
            };
            let found = self
                .quarantine_after(&stream_name, info.ack_floor.stream_sequence, &filters)
                .await?;
            moved.extend(found);
        }
        Ok(moved)
    }

    /// Quarantine the unreadable ones among the first [`LOOK_AHEAD`] messages of `stream` after
    /// `after` that match any of `filters` (where a consumer that lost its connection resumes).
    pub(crate) async fn quarantine_after(
        &self,
        stream_name: &str,
        after: u64,
        filters: &[String],
    ) -> Result<Vec<Quarantined>, BusError> {
        let mut next: Vec<Option<Unparsed>> = Vec::with_capacity(filters.len());
        let mut cursor = after.saturating_add(1);
        for f in filters {
            next.push(self.get_unparsed(stream_name, cursor, f).await?);
        }
        let mut moved = Vec::new();
        for _ in 0..LOOK_AHEAD {
            // The lowest sequence any filter matches from the cursor on.
            let Some(i) = (0..next.len())
                .filter(|i| next[*i].is_some())
                .min_by_key(|i| next[*i].as_ref().map_or(u64::MAX, |m| m.sequence))
            else {
                break;
            };
            let Some(msg) = next[i].take() else { break };
            cursor = msg.sequence.saturating_add(1);
            // Refresh every filter whose cached match is now behind the cursor.
            for (j, f) in filters.iter().enumerate() {
                let stale = match &next[j] {
                    Some(m) => m.sequence < cursor,
                    None => j == i,
                };
                if stale {
                    next[j] = self.get_unparsed(stream_name, cursor, f).await?;
                }
            }
            if let Some(reason) = unreadable_headers(&msg.headers) {
                moved.push(self.quarantine(stream_name, msg, reason).await?);
            }
        }
        Ok(moved)
    }

    /// The first message at or after `sequence` whose subject matches `filter`, read through the
    /// JSON API (headers as bytes, never parsed). `None` when there is none.
    pub(super) async fn get_unparsed(
        &self,
        stream: &str,
        sequence: u64,
        filter: &str,
    ) -> Result<Option<Unparsed>, BusError> {
        let what = || format!("get {stream} #{sequence} (raw)");
        let body = serde_json::json!({ "seq": sequence, "next_by_subj": filter }).to_string();
        let reply = self
            .client()
            .request(format!("$JS.API.STREAM.MSG.GET.{stream}"), body.into())
            .await
            .map_err(|e| BusError::js(what(), e))?;
        let reply: GetReply =
            serde_json::from_slice(&reply.payload).map_err(|e| BusError::js(what(), e))?;
        if let Some(err) = reply.error {
            // 10037: no message found (10059, stream not found, is an error).
            if err.err_code == 10037 {
                return Ok(None);
            }
            return Err(BusError::js(what(), err.description));
        }
        let Some(m) = reply.message else {
            return Ok(None);
        };
        let decode = |field: Option<String>| -> Result<Vec<u8>, BusError> {
            match field {
                None => Ok(Vec::new()),
                Some(b) => base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| BusError::js(what(), e)),
            }
        };
        Ok(Some(Unparsed {
            subject: m.subject,
            sequence: m.seq,
            headers: decode(m.hdrs)?,
            data: decode(m.data)?,
        }))
    }

    /// Record `msg` in the DLQ, then delete it from `stream`.
    async fn quarantine(
        &self,
        stream_name: &str,
        msg: Unparsed,
        reason: String,
    ) -> Result<Quarantined, BusError> {
        let actor = ActorName::new(QUARANTINE_ACTOR)
            .map_err(|e| BusError::js("quarantine actor name", e))?;
        let correlation = self
            .subjects()
            .parse_event(&msg.subject)
            .map_or("_unknown", |(_, c, _)| c);
        let dlq_subject = self.subjects().dead_letter(&actor, correlation);
        let dlq_reason = DlqReason::Unreadable(reason.clone());
        let mut hdrs =
            dead_letter_headers(None, &actor, &dlq_reason, 0, msg.sequence, &msg.subject);
        hdrs.insert(
            headers::NATS_MSG_ID,
            format!("quarantine-{stream_name}-{}", msg.sequence).as_str(),
        );
        let keep = &msg.headers[..msg.headers.len().min(RAW_HEADERS_KEEP)];
        hdrs.insert(
            DLQ_RAW_HEADERS,
            headers::encode_value(&String::from_utf8_lossy(keep)).as_str(),
        );
        // Never a reference body: the original is deleted below. What does not fit is cut.
        let body = fit_or_truncate(self, &mut hdrs, msg.data);
        self.publish_raw(dlq_subject, hdrs, body).await?;
        let stream = self
            .jetstream()
            .get_stream_no_info(stream_name)
            .await
            .map_err(|e| BusError::js(format!("get stream {stream_name}"), e))?;
        match stream.delete_message(msg.sequence).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("no message found") => {}
            Err(e) => {
                return Err(BusError::js(
                    format!("delete {stream_name} #{}", msg.sequence),
                    e,
                ))
            }
        }
        tracing::error!(
            stream = stream_name,
            sequence = msg.sequence,
            subject = %msg.subject,
            %reason,
            "quarantined a message the client cannot parse (moved to the DLQ)"
        );
        Ok(Quarantined {
            stream: stream_name.to_owned(),
            sequence: msg.sequence,
            subject: msg.subject,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_blocks_pass() {
        assert_eq!(unreadable_headers(b""), None, "no headers: a plain MSG");
        assert_eq!(
            unreadable_headers(b"NATS/1.0\r\nce-type: a.b.v1\r\n\r\n"),
            None
        );
        assert_eq!(unreadable_headers(b"NATS/1.0 503\r\n\r\n"), None);
        assert_eq!(
            unreadable_headers(b"NATS/1.0\r\nx: one\r\n  continued\r\n\r\n"),
            None
        );
        assert_eq!(
            unreadable_headers("NATS/1.0\r\nx: caf\u{e9}\r\n\r\n".as_bytes()),
            None
        );
    }

    #[test]
    fn what_the_client_refuses_is_named() {
        let cases: [(&[u8], &str); 5] = [
            (b"NATS/1.0\r\nce-type: \xff\xfe\r\n\r\n", "not UTF-8"),
            (b"HTTP/1.1\r\n\r\n", "NATS/1.0"),
            (b"NATS/1.0\r\nno colon here\r\n\r\n", "without a colon"),
            (b"NATS/1.0\r\nbad name: v\r\n\r\n", "invalid header name"),
            (b"NATS/1.0 abc\r\n\r\n", "status"),
        ];
        for (block, expect) in cases {
            let why = unreadable_headers(block).unwrap_or_default();
            assert!(why.contains(expect), "{block:?}: {why:?}");
        }
    }

    #[test]
    fn the_mirror_agrees_with_the_client_header_name_rules() {
        // A name the client accepts passes; one it refuses is named, never a panic.
        for name in ["ce-id", "Nats-Msg-Id", "x_y", "a.b"] {
            let block = format!("NATS/1.0\r\n{name}: v\r\n\r\n");
            assert_eq!(
                unreadable_headers(block.as_bytes()).is_none(),
                HeaderName::from_str(name).is_ok(),
                "{name}"
            );
        }
    }
}
