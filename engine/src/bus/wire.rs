//! Mapping between choreo events and NATS messages (binary content mode): use these to
//! publish or read choreo events with a plain async-nats client.

use async_nats::HeaderMap;
use choreo_schemas::{headers, EnvelopeError, Event};

/// The NATS headers of an event, `Nats-Msg-Id` included.
pub fn event_headers(event: &Event) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers::to_headers(event) {
        map.insert(name, value.as_str());
    }
    map
}

/// Decode an event from NATS headers and a body. Never panics.
pub fn decode_event(hdrs: Option<&HeaderMap>, body: &[u8]) -> Result<Event, EnvelopeError> {
    let pairs: Vec<(&str, &str)> = hdrs
        .map(|h| {
            h.iter()
                .flat_map(|(name, values)| values.iter().map(move |v| (name.as_ref(), v.as_str())))
                .collect()
        })
        .unwrap_or_default();
    headers::from_headers(pairs, body)
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
