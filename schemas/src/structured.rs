//! The JSON event format (CloudEvents structured content mode): a message with
//! `Content-Type: application/cloudevents+json` whose body is one JSON object holding the
//! attributes and the data. It is read by turning it into the binary mode's headers and body,
//! so both modes are validated by the same code.

use base64::Engine as _;
use serde_json::Value;

use crate::error::EnvelopeError;
use crate::headers::{
    encode_value, is_json, CAUSATIONID, CORRELATIONID, DATACONTENTTYPE, DEADLINE, DEPTH, ID,
    JSON_CONTENT_TYPE, SOURCE, SPECVERSION, SUBJECT, TIME, TRACEPARENT, TRACESTATE, TYPE,
};

/// JSON attribute name → the binary mode's header.
const ATTRIBUTES: [(&str, &str); 13] = [
    ("specversion", SPECVERSION),
    ("id", ID),
    ("source", SOURCE),
    ("type", TYPE),
    ("time", TIME),
    ("subject", SUBJECT),
    ("datacontenttype", DATACONTENTTYPE),
    ("correlationid", CORRELATIONID),
    ("causationid", CAUSATIONID),
    ("depth", DEPTH),
    ("deadline", DEADLINE),
    ("traceparent", TRACEPARENT),
    ("tracestate", TRACESTATE),
];

/// Binary-mode headers (name, percent-encoded value) and the body.
type Binary = (Vec<(&'static str, String)>, Vec<u8>);

fn bad(reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Structured(reason.into())
}

/// The headers (percent-encoded, as on the wire) and the body a structured event stands for.
/// `data` is the JSON data (its content type JSON, or absent: then JSON); `data_base64` holds
/// binary data of the stated content type.
pub(crate) fn to_binary(body: &[u8]) -> Result<Binary, EnvelopeError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(bad("the body is not a JSON object"));
    };
    let mut headers = Vec::with_capacity(ATTRIBUTES.len());
    let mut content_type = None;
    for (name, header) in ATTRIBUTES {
        let text = match object.get(name) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) if name == "depth" => n.to_string(),
            Some(other) => {
                return Err(bad(format!(
                    "attribute {name} must be a string, not {other}"
                )))
            }
        };
        if name == "datacontenttype" {
            content_type = Some(text.clone());
        }
        headers.push((header, encode_value(&text)));
    }
    let data = match (object.remove("data"), object.remove("data_base64")) {
        (Some(_), Some(_)) => return Err(bad("both data and data_base64 are present")),
        (Some(data), None) => {
            match &content_type {
                None => headers.push((DATACONTENTTYPE, JSON_CONTENT_TYPE.to_owned())),
                Some(ct) if is_json(ct) => {}
                Some(ct) => {
                    return Err(bad(format!(
                        "data of datacontenttype {ct:?} must be sent in data_base64"
                    )))
                }
            }
            serde_json::to_vec(&data).map_err(|e| bad(e.to_string()))?
        }
        (None, Some(Value::String(b64))) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| bad(format!("data_base64 is not base64: {e}")))?,
        (None, Some(_)) => return Err(bad("data_base64 must be a string")),
        (None, None) => {
            if content_type.is_none() {
                headers.push((DATACONTENTTYPE, JSON_CONTENT_TYPE.to_owned()));
            }
            b"null".to_vec()
        }
    };
    Ok((headers, data))
}

#[cfg(test)]
mod tests {
    use super::to_binary;
    use crate::error::EnvelopeError;
    use crate::headers::{DATACONTENTTYPE, DEPTH, SOURCE};

    #[test]
    fn attributes_become_headers_and_json_data_the_body() {
        let (h, body) = to_binary(
            br#"{"specversion":"1.0","id":"a-1","source":"urn:x y","type":"t.v1","depth":2,
                "data":{"n":1}}"#,
        )
        .expect("valid");
        assert!(h.contains(&(SOURCE, "urn:x%20y".to_owned())), "{h:?}");
        assert!(h.contains(&(DEPTH, "2".to_owned())));
        assert!(h.contains(&(DATACONTENTTYPE, "application/json".to_owned())));
        assert_eq!(body, br#"{"n":1}"#);
    }

    #[test]
    fn binary_data_travels_in_base64() {
        let (h, body) = to_binary(
            br#"{"specversion":"1.0","datacontenttype":"application/msgpack","data_base64":"gaFuAQ=="}"#,
        )
        .expect("valid");
        assert!(h.contains(&(DATACONTENTTYPE, "application/msgpack".to_owned())));
        assert_eq!(body, vec![0x81, 0xa1, b'n', 0x01]);
    }

    #[test]
    fn each_problem_is_named() {
        let err = |body: &[u8]| match to_binary(body) {
            Err(EnvelopeError::Structured(r)) => r,
            other => panic!("expected a structured error, got {other:?}"),
        };
        assert!(!err(b"{not json").is_empty());
        assert!(err(b"[1,2]").contains("not a JSON object"));
        assert!(err(br#"{"id":7}"#).contains("attribute id must be a string"));
        assert!(err(br#"{"data":1,"data_base64":"AA=="}"#).contains("both"));
        assert!(
            err(br#"{"datacontenttype":"application/msgpack","data":{}}"#).contains("data_base64")
        );
        assert!(err(br#"{"data_base64":"%%%"}"#).contains("not base64"));
    }
}
