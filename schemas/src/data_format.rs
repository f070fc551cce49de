//! How choreo writes an event's data on the wire. In memory (and in the saga changelog) data
//! is always msgpack; a producer may emit it as JSON instead (`ce-datacontenttype:
//! application/json`), so consumers in other languages need no msgpack. Readers accept both,
//! converting JSON to msgpack before decoding, so one payload decoder serves both.

use std::fmt;

use crate::error::EnvelopeError;

/// The encoding of data on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DataFormat {
    /// `application/msgpack` (the default: compact, and what the payload codec writes).
    #[default]
    Msgpack,
    /// `application/json`: the data as a JSON document. Data JSON cannot express (msgpack
    /// binary, non-string map keys, extension types) stays msgpack for that event.
    Json,
}

impl DataFormat {
    /// Its `datacontenttype`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Msgpack => crate::envelope::CONTENT_TYPE,
            Self::Json => crate::headers::JSON_CONTENT_TYPE,
        }
    }

    /// Parse `msgpack` or `json` (any case), as in configuration files.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "msgpack" => Some(Self::Msgpack),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

impl fmt::Display for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Msgpack => "msgpack",
            Self::Json => "json",
        })
    }
}

/// JSON data as the msgpack choreo's payloads decode from (maps keep their field names).
pub(crate) fn json_to_msgpack(body: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| EnvelopeError::Json(e.to_string()))?;
    rmp_serde::to_vec_named(&value).map_err(|e| EnvelopeError::Json(e.to_string()))
}

/// msgpack data as a JSON document, or `None` when JSON cannot express it.
pub fn msgpack_to_json(data: &[u8]) -> Option<Vec<u8>> {
    let value: serde_json::Value = rmp_serde::from_slice(data).ok()?;
    serde_json::to_vec(&value).ok()
}

/// Whether two msgpack encodings hold the same data: the same bytes, or the same document
/// (data that went out as JSON comes back with its map keys sorted and its integers re-encoded).
pub fn same_data(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    let doc = |d: &[u8]| rmp_serde::from_slice::<serde_json::Value>(d).ok();
    match (doc(a), doc(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Booked {
        trip: String,
        cents: u64,
        rate: f64,
        legs: Vec<u8>,
    }

    #[test]
    fn data_goes_out_as_json_and_comes_back_the_same() {
        let b = Booked {
            trip: "t-1".into(),
            cents: 12_999,
            rate: 1.0,
            legs: vec![1, 2],
        };
        let packed = rmp_serde::to_vec_named(&b).expect("encodes");
        let json = msgpack_to_json(&packed).expect("JSON can hold it");
        let doc: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
        assert_eq!(doc["trip"], "t-1");
        assert_eq!(doc["cents"], 12_999);
        let back = json_to_msgpack(&json).expect("reads back");
        assert_ne!(back, packed, "key order and encodings differ");
        assert!(same_data(&back, &packed));
        assert_eq!(rmp_serde::from_slice::<Booked>(&back).expect("decodes"), b);
    }

    #[test]
    fn data_json_cannot_hold_stays_msgpack_and_different_data_differs() {
        #[derive(Serialize)]
        struct Blob<'a> {
            #[serde(with = "serde_bytes")]
            bytes: &'a [u8],
        }
        let blob = rmp_serde::to_vec_named(&Blob { bytes: b"\x00\xff" }).expect("encodes");
        assert_eq!(msgpack_to_json(&blob), None);
        let a = rmp_serde::to_vec_named(&serde_json::json!({"n": 1})).expect("encodes");
        let b = rmp_serde::to_vec_named(&serde_json::json!({"n": 2})).expect("encodes");
        assert!(!same_data(&a, &b));
        assert!(!same_data(&a, b"\xc1"), "not msgpack");
        assert_eq!(DataFormat::parse("JSON"), Some(DataFormat::Json));
        assert_eq!(DataFormat::parse("xml"), None);
    }
}
