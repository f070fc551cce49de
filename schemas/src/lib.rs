//! # choreo-schemas
//!
//! The wire contract of choreo, with no I/O: the CloudEvents 1.0 [`Event`] envelope, typed ids
//! ([`EventId`], [`CorrelationId`], [`ActorName`], [`EventType`]), typed [`Payload`]s encoded with
//! msgpack, the mapping to NATS messages ([`headers`]: binary content mode with msgpack or JSON
//! data, and the JSON event format of structured mode, read alike), the subject scheme and
//! partitioning ([`Subjects`], [`partition_of`]) and the [`EventRegistry`].
//!
//! ```
//! use choreo_schemas::{headers, CorrelationId, Event, Payload};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct OrderPlaced { order: String, cents: u64 }
//! impl Payload for OrderPlaced { const TYPE: &'static str = "order.placed.v1"; }
//!
//! let corr = CorrelationId::new("order-42")?;
//! let event = Event::root("urn:shop", corr, &OrderPlaced { order: "42".into(), cents: 999 })?;
//!
//! // Binary content mode: attributes as `ce-` headers, data as the body.
//! let hdrs = headers::to_headers(&event);
//! let back = headers::from_headers(hdrs.iter().map(|(k, v)| (*k, v.as_str())), &event.data)?;
//! assert_eq!(back.decode::<OrderPlaced>()?, OrderPlaced { order: "42".into(), cents: 999 });
//! assert!(back.is_root() && back.depth == 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod data_format;
mod envelope;
mod error;
mod event_type;
pub mod headers;
mod ids;
mod payload;
mod registry;
mod structured;
mod subject;
mod token;
mod trace;

pub use data_format::{msgpack_to_json, same_data, DataFormat};
pub use envelope::{Event, CONTENT_TYPE, SPEC_VERSION};
pub use error::{CodecError, EnvelopeError, IdError, RegistryError};
pub use event_type::{EventType, MAX_TYPE_TOKENS};
pub use ids::{ActorName, CorrelationId, EventId, SagaId};
pub use payload::{decode_data, encode_data, Payload};
pub use registry::EventRegistry;
pub use subject::{partition_of, PartitionHash, Partitioner, Subjects, DEFAULT_ROOT};
pub use token::MAX_TOKEN_LEN;
pub use trace::TraceParent;
