//! Error types of the schemas crate.

use thiserror::Error;

/// A value that is not a valid id of its kind.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct IdError {
    kind: &'static str,
    value: String,
    reason: String,
}

impl IdError {
    pub(crate) fn new(kind: &'static str, value: &str, reason: impl Into<String>) -> Self {
        let mut value = value.to_owned();
        if value.len() > 80 {
            let mut cut = 80;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
            value.push('…');
        }
        Self {
            kind,
            value,
            reason: reason.into(),
        }
    }
}

/// Encoding or decoding event data with MessagePack failed.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The payload could not be serialised.
    #[error("cannot encode {event_type} data as msgpack: {source}")]
    Encode {
        /// The event type being encoded.
        event_type: String,
        /// The serialiser's error.
        #[source]
        source: rmp_serde::encode::Error,
    },
    /// The data (msgpack, or JSON turned into msgpack) does not decode as the payload type.
    #[error("data does not decode as {event_type} (its fields and their types): {source}")]
    Decode {
        /// The event type expected.
        event_type: String,
        /// The deserialiser's error.
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// The event has a different type than the payload asked for.
    #[error("event has type {actual}, not {expected}")]
    TypeMismatch {
        /// The type the caller asked for.
        expected: String,
        /// The event's type.
        actual: String,
    },
}

/// Why a set of NATS headers plus a body is not a choreo CloudEvent.
///
/// Every variant names the attribute at fault, so a DLQ entry says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    /// A required attribute header is absent.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// A header is present twice with different values.
    #[error("header {0} is present more than once")]
    Duplicate(&'static str),
    /// A header value is not valid percent-encoded UTF-8.
    #[error("header {header} is not valid percent-encoded UTF-8")]
    BadEncoding {
        /// The header at fault.
        header: &'static str,
    },
    /// A header value does not parse as its attribute type.
    #[error("header {header} is invalid: {reason}")]
    Invalid {
        /// The header at fault.
        header: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The CloudEvents spec version is not 1.0.
    #[error("unsupported CloudEvents specversion {0:?} (expected \"1.0\")")]
    SpecVersion(String),
    /// The data content type is neither msgpack nor JSON.
    #[error("unsupported datacontenttype {0:?} (expected \"application/msgpack\" or \"application/json\")")]
    ContentType(String),
    /// The data says it is JSON and is not.
    #[error("data is not valid JSON: {0}")]
    Json(String),
    /// A structured-mode event (`Content-Type: application/cloudevents+json`) whose body is not
    /// a JSON object of CloudEvents attributes.
    #[error("structured event is not a valid CloudEvents JSON object: {0}")]
    Structured(String),
}

/// Looking an event type up in a registry failed.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// No payload is registered under that type.
    #[error("unknown event type {0}")]
    UnknownType(String),
    /// The data does not decode as the registered payload.
    #[error(transparent)]
    BadPayload(#[from] CodecError),
}
