//! W3C trace context (`traceparent`) carried on every event.

use std::fmt;

use crate::error::EnvelopeError;
use crate::ids::EventId;

/// A parsed W3C `traceparent` (version 00): trace id, parent span id and flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// 16-byte trace id shared by every span of one trace.
    pub trace_id: [u8; 16],
    /// 8-byte id of the span that produced the carrier.
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// A new root trace derived from an event id, so the same root event always starts the
    /// same trace (replays and re-runs are stable).
    pub fn root_for(event: &EventId) -> Self {
        let bytes = event.as_uuid().as_bytes();
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&bytes[8..16]);
        Self {
            trace_id: *bytes,
            span_id: nonzero_span(span_id),
            flags: 1,
        }
    }

    /// The context for an event emitted under this one: same trace, a span id derived from
    /// the emitted event's id.
    pub fn child_for(&self, event: &EventId) -> Self {
        let bytes = event.as_uuid().as_bytes();
        let mut span_id = [0u8; 8];
        for (i, b) in span_id.iter_mut().enumerate() {
            *b = bytes[i] ^ bytes[i + 8];
        }
        Self {
            trace_id: self.trace_id,
            span_id: nonzero_span(span_id),
            flags: self.flags,
        }
    }

    /// Parse the header value.
    pub fn parse(value: &str) -> Result<Self, EnvelopeError> {
        let invalid = |reason: &str| EnvelopeError::Invalid {
            header: crate::headers::TRACEPARENT,
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = value.trim().split('-').collect();
        if parts.len() < 4 {
            return Err(invalid("expected version-traceid-spanid-flags"));
        }
        if parts[0] != "00" {
            return Err(invalid("only version 00 is supported"));
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut flags = [0u8; 1];
        hex_into(parts[1], &mut trace_id).map_err(|()| invalid("trace id is not 32 hex digits"))?;
        hex_into(parts[2], &mut span_id).map_err(|()| invalid("span id is not 16 hex digits"))?;
        hex_into(parts[3], &mut flags).map_err(|()| invalid("flags are not 2 hex digits"))?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return Err(invalid("all-zero trace or span id"));
        }
        Ok(Self {
            trace_id,
            span_id,
            flags: flags[0],
        })
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        )
    }
}

fn nonzero_span(mut span: [u8; 8]) -> [u8; 8] {
    if span == [0; 8] {
        span[7] = 1;
    }
    span
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_into(s: &str, out: &mut [u8]) -> Result<(), ()> {
    if s.len() != out.len() * 2 || !s.is_ascii() {
        return Err(());
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).map_err(|_| ())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_children_share_the_trace() {
        let root = TraceParent::root_for(&EventId::new_root());
        let parsed = TraceParent::parse(&root.to_string()).expect("parses");
        assert_eq!(parsed, root);
        let child = root.child_for(&EventId::new_root());
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "00-zz-11-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_err(), "{bad}");
        }
        assert!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_ok()
        );
    }
}
