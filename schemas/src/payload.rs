//! Typed payloads and the msgpack codec.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::CodecError;
use crate::event_type::EventType;

/// A typed event payload that knows its event type (with version).
///
/// ```
/// use choreo_schemas::{Payload, EventType};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct OrderPlaced { order: String, cents: u64 }
///
/// impl Payload for OrderPlaced {
///     const TYPE: &'static str = "order.placed.v1";
/// }
/// assert_eq!(OrderPlaced::event_type().as_str(), "order.placed.v1");
/// ```
pub trait Payload: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The event type, dot-separated subject tokens ending in a version, e.g. `order.placed.v1`.
    const TYPE: &'static str;

    /// [`Self::TYPE`] as a validated [`EventType`].
    ///
    /// # Panics
    /// When `TYPE` is not a valid event type: a programming error in the payload's definition,
    /// never caused by input. Registries check it once at registration with
    /// [`EventType::new`], which returns the error instead.
    fn event_type() -> EventType {
        match EventType::new(Self::TYPE) {
            Ok(t) => t,
            Err(e) => panic!(
                "Payload::TYPE of {} is invalid: {e}",
                std::any::type_name::<Self>()
            ),
        }
    }
}

/// Encode a payload as msgpack (maps with field names, so fields can be added and reordered).
pub fn encode_data<P: Payload>(payload: &P) -> Result<Vec<u8>, CodecError> {
    encode_value(&P::event_type(), payload)
}

pub(crate) fn encode_value<T: Serialize>(ty: &EventType, value: &T) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec_named(value).map_err(|source| CodecError::Encode {
        event_type: ty.to_string(),
        source,
    })
}

/// Decode msgpack data as `T`; the event type only labels the error.
pub fn decode_data<T: DeserializeOwned>(ty: &EventType, data: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(data).map_err(|source| CodecError::Decode {
        event_type: ty.to_string(),
        source,
    })
}
