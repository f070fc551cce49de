//! The event-type registry: which types a node knows and how to validate their data.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{IdError, RegistryError};
use crate::event_type::EventType;
use crate::payload::{decode_data, Payload};

type Validator = fn(&EventType, &[u8]) -> Result<(), crate::error::CodecError>;

fn validate_as<P: Payload>(ty: &EventType, data: &[u8]) -> Result<(), crate::error::CodecError> {
    decode_data::<P>(ty, data).map(|_| ())
}

/// Known event types, each with an optional payload validator.
///
/// An event whose type is not registered is "unknown"; an event whose data does not decode as
/// the registered payload has a "bad payload". Both are dead-lettered by the runtime.
#[derive(Clone, Default)]
pub struct EventRegistry {
    types: BTreeMap<EventType, Option<Validator>>,
}

impl EventRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a typed payload: its data is validated by decoding it as `P`.
    pub fn register<P: Payload>(&mut self) -> Result<&mut Self, IdError> {
        let ty = EventType::new(P::TYPE)?;
        self.types.insert(ty, Some(validate_as::<P>));
        Ok(self)
    }

    /// Register a type whose data is opaque (any bytes accepted). Keeps an earlier validator.
    pub fn register_opaque(&mut self, ty: EventType) -> &mut Self {
        self.types.entry(ty).or_insert(None);
        self
    }

    /// Whether `ty` is registered.
    pub fn contains(&self, ty: &EventType) -> bool {
        self.types.contains_key(ty)
    }

    /// Check that `ty` is known and `data` decodes as its payload.
    pub fn validate(&self, ty: &EventType, data: &[u8]) -> Result<(), RegistryError> {
        match self.types.get(ty) {
            None => Err(RegistryError::UnknownType(ty.to_string())),
            Some(None) => Ok(()),
            Some(Some(validate)) => Ok(validate(ty, data)?),
        }
    }

    /// Every registered type, sorted.
    pub fn types(&self) -> impl Iterator<Item = &EventType> {
        self.types.keys()
    }
}

impl fmt::Debug for EventRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.types.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Placed {
        order: String,
    }
    impl Payload for Placed {
        const TYPE: &'static str = "order.placed.v1";
    }

    #[test]
    fn unknown_and_bad_payloads_are_told_apart() {
        let mut r = EventRegistry::new();
        r.register::<Placed>().expect("valid type");
        let ty = Placed::event_type();
        let good = crate::payload::encode_data(&Placed { order: "o".into() }).expect("encodes");
        assert!(r.validate(&ty, &good).is_ok());
        assert!(matches!(
            r.validate(&ty, b"\xc1junk"),
            Err(RegistryError::BadPayload(_))
        ));
        let other = EventType::new("order.shipped.v1").expect("valid");
        assert!(matches!(
            r.validate(&other, &good),
            Err(RegistryError::UnknownType(_))
        ));
        r.register_opaque(other.clone());
        assert!(r.validate(&other, b"anything").is_ok());
    }
}
