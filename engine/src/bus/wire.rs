//! Mapping between choreo events and NATS messages: use these to publish or read choreo events
//! with a plain async-nats client. choreo writes binary content mode with msgpack data (or JSON
//! data, [`crate::BusConfigBuilder::data_format`]); it reads binary or structured mode, msgpack
//! or JSON data (see [`headers::from_message`]).

use async_nats::HeaderMap;
use choreo_schemas::{headers, DataFormat, EnvelopeError, Event, Subjects};

/// The NATS headers of an event, `Nats-Msg-Id` included (data as msgpack: `event.data` is the
/// body).
pub fn event_headers(event: &Event) -> HeaderMap {
    header_map(headers::to_headers(event))
}

/// An event as a NATS message, headers and body, with its data written in `format`
/// ([`headers::to_message`]).
pub fn event_message(event: &Event, format: DataFormat) -> (HeaderMap, Vec<u8>) {
    let (pairs, body) = headers::to_message(event, format);
    (header_map(pairs), body)
}

fn header_map(pairs: Vec<(&'static str, String)>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(name, value.as_str());
    }
    map
}

fn pairs(hdrs: Option<&HeaderMap>) -> Vec<(&str, &str)> {
    hdrs.map(|h| {
        h.iter()
            .flat_map(|(name, values)| values.iter().map(move |v| (name.as_ref(), v.as_str())))
            .collect()
    })
    .unwrap_or_default()
}

/// Decode an event from NATS headers and a body (either content mode). Never panics.
pub fn decode_event(hdrs: Option<&HeaderMap>, body: &[u8]) -> Result<Event, EnvelopeError> {
    headers::from_message(pairs(hdrs), body, headers::Stored::default())
}

/// Decode an event stored under `subject` of the events stream (or of a redrive) at
/// `stored_at`: as [`decode_event`], and a root from a producer that knows nothing of choreo's
/// extensions takes the correlation of its subject, and its stored time when it has no `time`.
pub fn decode_stored(
    subjects: &Subjects,
    subject: &str,
    hdrs: Option<&HeaderMap>,
    body: &[u8],
    stored_at: Option<time::OffsetDateTime>,
) -> Result<Event, EnvelopeError> {
    let stored = headers::Stored {
        correlation: subjects.parse_event(subject).map(|(_, c, _)| c),
        time: stored_at,
    };
    headers::from_message(pairs(hdrs), body, stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_schemas::{CorrelationId, EventType};

    #[test]
    fn round_trips_through_a_header_map() {
        let e = Event::root_raw(
            "urn:t",
            CorrelationId::new("c").expect("valid"),
            EventType::new("a.b.v1").expect("valid"),
            vec![1, 2, 3],
        );
        let h = event_headers(&e);
        assert_eq!(
            h.get(headers::NATS_MSG_ID).map(|v| v.as_str().to_owned()),
            Some(e.id.to_string())
        );
        assert_eq!(decode_event(Some(&h), &e.data).expect("decodes"), e);
        assert_eq!(
            decode_event(None, b"x").expect_err("no headers"),
            EnvelopeError::Missing(headers::SPECVERSION)
        );
    }
}
