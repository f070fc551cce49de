//! CloudEvents NATS binding. Binary content mode: attributes as `ce-` headers, data as body
//! (choreo writes msgpack; it reads msgpack or JSON). Structured content mode (`Content-Type:
//! application/cloudevents+json`, the JSON event format) is read too, by [`from_message`].
//!
//! Header values are percent-encoded like the CloudEvents HTTP binding: every byte outside
//! printable ASCII, plus space, `"` and `%`, becomes `%XX` of its UTF-8 encoding.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::data_format::{json_to_msgpack, msgpack_to_json, DataFormat};
use crate::envelope::{Event, CONTENT_TYPE, SPEC_VERSION};
use crate::error::EnvelopeError;
use crate::event_type::EventType;
use crate::ids::{CorrelationId, EventId};
use crate::trace::TraceParent;

/// `ce-specversion`
pub const SPECVERSION: &str = "ce-specversion";
/// `ce-id`
pub const ID: &str = "ce-id";
/// `ce-source`
pub const SOURCE: &str = "ce-source";
/// `ce-type`
pub const TYPE: &str = "ce-type";
/// `ce-time`
pub const TIME: &str = "ce-time";
/// `ce-subject`
pub const SUBJECT: &str = "ce-subject";
/// `ce-datacontenttype`
pub const DATACONTENTTYPE: &str = "ce-datacontenttype";
/// `ce-correlationid`
pub const CORRELATIONID: &str = "ce-correlationid";
/// `ce-causationid`
pub const CAUSATIONID: &str = "ce-causationid";
/// `ce-depth`
pub const DEPTH: &str = "ce-depth";
/// `ce-deadline` (RFC 3339): a command past it must not be executed.
pub const DEADLINE: &str = "ce-deadline";
/// W3C `traceparent`
pub const TRACEPARENT: &str = "traceparent";
/// W3C `tracestate`
pub const TRACESTATE: &str = "tracestate";
/// JetStream de-duplication id; always equal to `ce-id`.
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
/// The NATS header that marks structured content mode.
pub const CONTENT_TYPE_HEADER: &str = "Content-Type";
/// Its value in structured mode (the JSON event format).
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// JSON data.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// The media type of a content type, lower case, without parameters (`; charset=utf-8`).
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether a data content type is JSON (`application/json`, `text/json`, `…+json`, any
/// parameters).
pub fn is_json(content_type: &str) -> bool {
    let m = media_type(content_type);
    m == JSON_CONTENT_TYPE || m == "text/json" || m.ends_with("+json")
}

const ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// Percent-encode a header value.
pub fn encode_value(value: &str) -> String {
    utf8_percent_encode(value, ENCODE).to_string()
}

/// An event as a NATS message in binary content mode: its headers and body, its data written
/// in `format` (JSON when asked and JSON can hold the data; msgpack otherwise).
pub fn to_message(event: &Event, format: DataFormat) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let mut headers = to_headers(event);
    if format == DataFormat::Json {
        if let Some(json) = msgpack_to_json(&event.data) {
            for (name, value) in &mut headers {
                if *name == DATACONTENTTYPE {
                    *value = JSON_CONTENT_TYPE.to_owned();
                }
            }
            return (headers, json);
        }
    }
    (headers, event.data.clone())
}

/// The headers of an event in binary content mode, `Nats-Msg-Id` included.
pub fn to_headers(event: &Event) -> Vec<(&'static str, String)> {
    let id = event.id.to_string();
    let mut h = vec![
        (SPECVERSION, SPEC_VERSION.to_owned()),
        (ID, id.clone()),
        (NATS_MSG_ID, id),
        (SOURCE, encode_value(&event.source)),
        (TYPE, event.ty.to_string()),
        (
            TIME,
            event
                .time
                .format(&Rfc3339)
                .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned()),
        ),
        (DATACONTENTTYPE, CONTENT_TYPE.to_owned()),
        (CORRELATIONID, event.correlation.to_string()),
        (CAUSATIONID, event.causation.to_string()),
        (DEPTH, event.depth.to_string()),
    ];
    if let Some(subject) = &event.subject {
        h.push((SUBJECT, encode_value(subject)));
    }
    if let Some(tp) = &event.traceparent {
        h.push((TRACEPARENT, tp.to_string()));
    }
    if let Some(ts) = &event.tracestate {
        h.push((TRACESTATE, encode_value(ts)));
    }
    if let Some(d) = event.deadline.and_then(|d| d.format(&Rfc3339).ok()) {
        h.push((DEADLINE, d));
    }
    h
}

const KNOWN: [&str; 13] = [
    DEADLINE,
    SPECVERSION,
    ID,
    SOURCE,
    TYPE,
    TIME,
    SUBJECT,
    DATACONTENTTYPE,
    CORRELATIONID,
    CAUSATIONID,
    DEPTH,
    TRACEPARENT,
    TRACESTATE,
];

/// Decode an event from (name, value) header pairs and a body, in either content mode (see
/// [`from_message`]; here a missing `correlationid` is an error). Never panics.
pub fn from_headers<'a, I>(headers: I, body: &[u8]) -> Result<Event, EnvelopeError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    from_message(headers, body, Stored::default())
}

/// Decode any conforming CloudEvent from a NATS message's headers and body:
///
/// - structured mode when the `Content-Type` header is `application/cloudevents+json` (the body
///   is the JSON event format: attributes and `data`, or `data_base64`);
/// - else binary mode: attributes as `ce-` headers (names match case-insensitively, values
///   percent-encoded; unknown headers are ignored), data as the body.
///
/// Data may be msgpack or JSON (`application/json`, with or without parameters); JSON data is
/// turned into msgpack, so typed payloads decode the same way. An `id` that is not a UUID gets
/// a deterministic UUID ([`EventId::from_cloudevents_id`]). A root from a producer that knows
/// nothing of choreo's extensions needs none of them: `causationid` defaults to the id,
/// `depth` to 0, and a missing `correlationid` to `correlation` (the correlation token of the
/// subject the message was stored under), when given. Never panics.
pub fn from_message<'a, I>(
    headers: I,
    body: &[u8],
    stored: Stored<'_>,
) -> Result<Event, EnvelopeError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let pairs: Vec<(&'a str, &'a str)> = headers.into_iter().collect();
    let structured = pairs.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case(CONTENT_TYPE_HEADER) && media_type(v) == STRUCTURED_CONTENT_TYPE
    });
    if structured {
        let (attributes, data) = crate::structured::to_binary(body)?;
        return from_binary(
            attributes.iter().map(|(k, v)| (*k, v.as_str())),
            &data,
            stored,
        );
    }
    from_binary(pairs, body, stored)
}

/// What the log knows of a stored message: the defaults for what a foreign producer left out.
/// Both are facts of the stored message, so decoding it again (a replay) gives the same event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored<'a> {
    /// The correlation token of the subject the message was stored under: a missing
    /// `correlationid` defaults to it.
    pub correlation: Option<&'a str>,
    /// When the log stored the message: a missing `time` defaults to it.
    pub time: Option<OffsetDateTime>,
}

fn from_binary<'a, I>(headers: I, body: &[u8], stored: Stored<'_>) -> Result<Event, EnvelopeError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut values: [Option<&'a str>; KNOWN.len()] = [None; KNOWN.len()];
    for (name, value) in headers {
        let Some(slot) = KNOWN.iter().position(|k| k.eq_ignore_ascii_case(name)) else {
            continue;
        };
        match values[slot] {
            Some(prev) if prev != value => return Err(EnvelopeError::Duplicate(KNOWN[slot])),
            _ => values[slot] = Some(value),
        }
    }
    let get = |name: &'static str| -> Result<Option<String>, EnvelopeError> {
        let slot = KNOWN.iter().position(|k| *k == name).unwrap_or(0);
        values[slot]
            .map(|raw| {
                percent_decode_str(raw)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| EnvelopeError::BadEncoding { header: name })
            })
            .transpose()
    };
    let require = |name: &'static str| get(name)?.ok_or(EnvelopeError::Missing(name));
    let invalid = |header: &'static str, reason: String| EnvelopeError::Invalid { header, reason };

    let spec = require(SPECVERSION)?;
    if spec != SPEC_VERSION {
        return Err(EnvelopeError::SpecVersion(spec));
    }
    let id = EventId::from_cloudevents_id(&require(ID)?).map_err(|e| invalid(ID, e.to_string()))?;
    let source = require(SOURCE)?;
    if source.is_empty() {
        return Err(invalid(SOURCE, "is empty".to_owned()));
    }
    let ty = EventType::new(require(TYPE)?).map_err(|e| invalid(TYPE, e.to_string()))?;
    let time = match get(TIME)? {
        Some(t) => OffsetDateTime::parse(&t, &Rfc3339)
            .map_err(|e| invalid(TIME, format!("not an RFC 3339 timestamp: {e}")))?,
        None => stored.time.ok_or(EnvelopeError::Missing(TIME))?,
    };
    let data = match get(DATACONTENTTYPE)? {
        Some(ct) if media_type(&ct) == CONTENT_TYPE => body.to_vec(),
        Some(ct) if is_json(&ct) => json_to_msgpack(body)?,
        Some(ct) => return Err(EnvelopeError::ContentType(ct)),
        None => return Err(EnvelopeError::Missing(DATACONTENTTYPE)),
    };
    let correlation = match get(CORRELATIONID)? {
        Some(c) => c,
        None => stored
            .correlation
            .map(str::to_owned)
            .ok_or(EnvelopeError::Missing(CORRELATIONID))?,
    };
    let correlation =
        CorrelationId::new(correlation).map_err(|e| invalid(CORRELATIONID, e.to_string()))?;
    let causation = match get(CAUSATIONID)? {
        Some(c) => {
            EventId::from_cloudevents_id(&c).map_err(|e| invalid(CAUSATIONID, e.to_string()))?
        }
        None => id,
    };
    let depth: u32 = get(DEPTH)?
        .map(|d| {
            d.parse()
                .map_err(|e| invalid(DEPTH, format!("not a non-negative integer: {e}")))
        })
        .transpose()?
        .unwrap_or(0);
    let traceparent = get(TRACEPARENT)?
        .map(|v| TraceParent::parse(&v))
        .transpose()?;
    let deadline = get(DEADLINE)?
        .map(|v| {
            OffsetDateTime::parse(&v, &Rfc3339)
                .map_err(|e| invalid(DEADLINE, format!("not an RFC 3339 timestamp: {e}")))
        })
        .transpose()?;
    Ok(Event {
        id,
        source,
        ty,
        time,
        subject: get(SUBJECT)?,
        correlation,
        causation,
        depth,
        traceparent,
        tracestate: get(TRACESTATE)?,
        deadline,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Event {
        let mut e = Event::root_raw(
            "urn:test source/ü",
            CorrelationId::new("c-1").expect("valid"),
            EventType::new("order.placed.v1").expect("valid"),
            vec![0x80],
        );
        e.subject = Some("100% \"quoted\"".to_owned());
        e.tracestate = Some("k=v,x=y".to_owned());
        e.deadline = Some(e.time + time::Duration::seconds(30));
        e
    }

    fn decode(h: &[(&'static str, String)], body: &[u8]) -> Result<Event, EnvelopeError> {
        from_headers(h.iter().map(|(k, v)| (*k, v.as_str())), body)
    }

    #[test]
    fn round_trip_keeps_every_attribute() {
        let e = sample();
        let h = to_headers(&e);
        assert!(h
            .iter()
            .any(|(k, v)| *k == NATS_MSG_ID && *v == e.id.to_string()));
        assert!(h
            .iter()
            .any(|(k, v)| *k == SOURCE && v == "urn:test%20source/%C3%BC"));
        let back = decode(&h, &e.data).expect("decodes");
        // RFC 3339 keeps nanoseconds, so the whole event compares equal.
        assert_eq!(back, e);
    }

    #[test]
    fn each_problem_is_named() {
        let e = sample();
        let without = |name: &str| {
            let h: Vec<_> = to_headers(&e)
                .into_iter()
                .filter(|(k, _)| *k != name)
                .collect();
            decode(&h, b"").expect_err("must fail").to_string()
        };
        assert_eq!(without(ID), "missing header ce-id");
        assert_eq!(without(CORRELATIONID), "missing header ce-correlationid");
        let with = |name: &'static str, value: &str| {
            let mut h: Vec<_> = to_headers(&e)
                .into_iter()
                .filter(|(k, _)| *k != name)
                .collect();
            h.push((name, value.to_owned()));
            decode(&h, b"").expect_err("must fail").to_string()
        };
        assert!(with(DEPTH, "-1").starts_with("header ce-depth is invalid"));
        assert!(with(SPECVERSION, "0.3").contains("specversion"));
        assert!(with(DATACONTENTTYPE, "application/xml").contains("datacontenttype"));
        assert!(with(DATACONTENTTYPE, "application/json").starts_with("data is not valid JSON"));
        assert!(with(TYPE, "a b").starts_with("header ce-type is invalid"));
        assert!(with(TIME, "yesterday").starts_with("header ce-time is invalid"));
        assert!(with(SOURCE, "%FF").contains("percent-encoded"));
        let mut dup = to_headers(&e);
        dup.push((ID, EventId::new_root().to_string()));
        assert_eq!(
            decode(&dup, b"").expect_err("dup").to_string(),
            "header ce-id is present more than once"
        );
    }

    #[test]
    fn header_names_match_case_insensitively() {
        let e = sample();
        let upper: Vec<(String, String)> = to_headers(&e)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect();
        let back = from_headers(upper.iter().map(|(k, v)| (k.as_str(), v.as_str())), &e.data);
        assert_eq!(back.expect("decodes"), e);
    }

    #[test]
    fn a_root_without_time_takes_the_stored_time() {
        let h: Vec<_> = foreign().into_iter().filter(|(k, _)| *k != TIME).collect();
        let pairs = || h.iter().map(|(k, v)| (*k, v.as_str()));
        let body = br#"{"order":"42"}"#;
        let at = OffsetDateTime::parse("2026-12-02T08:30:00Z", &Rfc3339).expect("valid");
        let stored = Stored {
            correlation: Some("order-42"),
            time: Some(at),
        };
        assert_eq!(
            from_message(
                pairs(),
                body,
                Stored {
                    time: None,
                    ..stored
                }
            )
            .expect_err("nothing to default to"),
            EnvelopeError::Missing(TIME)
        );
        let e = from_message(pairs(), body, stored).expect("decodes");
        assert_eq!(e.time, at);
        // Decoding the stored message again gives the same event (replay).
        assert_eq!(from_message(pairs(), body, stored).expect("decodes"), e);
        // A time the producer set wins.
        let with_time = foreign();
        let e = from_message(
            with_time.iter().map(|(k, v)| (*k, v.as_str())),
            body,
            stored,
        )
        .expect("decodes");
        assert_ne!(e.time, at);
    }

    /// What a producer in another language sends: binary mode, JSON data, a non-UUID id, none
    /// of choreo's extensions.
    fn foreign() -> Vec<(&'static str, String)> {
        vec![
            (SPECVERSION, "1.0".to_owned()),
            (ID, "order-42/1".to_owned()),
            (SOURCE, "urn:python".to_owned()),
            (TYPE, "order.placed.v1".to_owned()),
            (TIME, "2026-12-01T10:00:00Z".to_owned()),
            (
                DATACONTENTTYPE,
                "application/json; charset=utf-8".to_owned(),
            ),
        ]
    }

    #[test]
    fn a_foreign_root_with_json_data_decodes_as_a_root() {
        #[derive(Debug, PartialEq, serde::Deserialize)]
        struct Placed {
            order: String,
            cents: u64,
        }
        let body = br#"{"order":"42","cents":999}"#;
        let h = foreign();
        let pairs = || h.iter().map(|(k, v)| (*k, v.as_str()));
        let order_42 = Stored {
            correlation: Some("order-42"),
            ..Stored::default()
        };
        assert_eq!(
            from_message(pairs(), body, Stored::default()).expect_err("no correlation"),
            EnvelopeError::Missing(CORRELATIONID)
        );
        let e = from_message(pairs(), body, order_42).expect("decodes");
        assert_eq!(e.correlation.as_str(), "order-42");
        assert!(e.is_root() && e.depth == 0);
        let placed: Placed = crate::payload::decode_data(&e.ty, &e.data).expect("typed");
        assert_eq!(
            placed,
            Placed {
                order: "42".into(),
                cents: 999
            }
        );
        // The same string id always maps to the same id; another string to another.
        let again = from_message(pairs(), body, order_42).expect("decodes");
        assert_eq!(again.id, e.id);
        assert_eq!(
            e.id,
            EventId::from_cloudevents_id("order-42/1").expect("valid")
        );
        assert_ne!(
            e.id,
            EventId::from_cloudevents_id("order-42/2").expect("valid")
        );
        assert!(EventId::from_cloudevents_id("").is_err());
        // A UUID id stays itself.
        let u = EventId::new_root();
        assert_eq!(
            EventId::from_cloudevents_id(&u.to_string()).expect("valid"),
            u
        );
    }

    #[test]
    fn structured_mode_is_read_like_binary_mode() {
        let e = sample();
        let json = format!(
            r#"{{"specversion":"1.0","id":"{}","source":"urn:test source/ü","type":"order.placed.v1",
                "time":"2026-12-01T10:00:00Z","correlationid":"c-1","depth":3,"data":{{"n":1}}}}"#,
            e.id
        );
        let ct = [(CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE)];
        let got = from_message(ct, json.as_bytes(), Stored::default()).expect("decodes");
        assert_eq!(got.id, e.id);
        assert_eq!(got.source, "urn:test source/ü");
        assert_eq!(got.depth, 3);
        assert_eq!(
            got.data,
            vec![0x81, 0xa1, b'n', 0x01],
            "JSON data as msgpack"
        );
        // Invalid JSON and a body that is no event are named.
        assert!(matches!(
            from_message(ct, b"{oops", Stored::default()),
            Err(EnvelopeError::Structured(_))
        ));
        let no_type = r#"{"specversion":"1.0","id":"x","source":"s","time":"2026-12-01T10:00:00Z","correlationid":"c"}"#;
        assert_eq!(
            from_message(ct, no_type.as_bytes(), Stored::default()).expect_err("no type"),
            EnvelopeError::Missing(TYPE)
        );
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        (
            ".{1,40}",
            "[A-Za-z0-9_-]{1,40}",
            proptest::collection::vec("[a-z0-9_-]{1,10}", 1..5),
            proptest::option::of(".{0,40}"),
            proptest::option::of(".{0,40}"),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..200),
            any::<i64>().prop_map(|s| s.rem_euclid(253_402_300_799)),
        )
            .prop_map(
                |(source, corr, tokens, subject, tracestate, depth, data, secs)| {
                    let mut e = Event::root_raw(
                        source,
                        CorrelationId::new(corr).expect("strategy yields valid ids"),
                        EventType::new(tokens.join(".")).expect("strategy yields valid types"),
                        data,
                    );
                    e.subject = subject;
                    e.tracestate = tracestate;
                    e.depth = depth;
                    e.time = OffsetDateTime::from_unix_timestamp(secs).expect("in range");
                    if depth % 2 == 1 {
                        e.deadline = Some(e.time);
                    }
                    e
                },
            )
    }

    proptest! {
        #[test]
        fn any_event_round_trips(e in arb_event()) {
            let h = to_headers(&e);
            for (_, v) in &h {
                prop_assert!(v.bytes().all(|b| (0x21..0x7f).contains(&b)), "header value {v:?} is not plain ASCII");
            }
            prop_assert_eq!(decode(&h, &e.data).expect("round trip"), e);
        }

        #[test]
        fn arbitrary_headers_and_bytes_never_panic(
            pairs in proptest::collection::vec((
                prop_oneof![Just(ID.to_owned()), Just(TYPE.to_owned()), Just(DEPTH.to_owned()),
                    Just(TIME.to_owned()), Just(SPECVERSION.to_owned()), Just(TRACEPARENT.to_owned()), ".{0,12}"],
                ".{0,60}"), 0..16),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = from_headers(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())), &body);
        }

        #[test]
        fn mutated_valid_headers_never_panic(e in arb_event(), which in 0usize..12, value in ".{0,50}") {
            let mut h: Vec<(&'static str, String)> = to_headers(&e);
            let idx = which % h.len();
            h[idx].1 = value;
            let _ = decode(&h, &e.data);
        }
    }
}
