//! Typed identifiers: events, correlations, actors.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::IdError;
use crate::token::token_problem;

/// Namespace of the UUID v5 ids derived for emitted events.
const DERIVED_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6368_6f72_656f_4576_8000_0000_0000_0001);
/// Namespace of the UUID v5 ids choreo gives events whose `id` is not a UUID.
const EXTERNAL_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6368_6f72_656f_4576_8000_0000_0000_0002);

/// The id of one event (`ce-id`, also `Nats-Msg-Id`).
///
/// Roots get a time-ordered UUID v7; events emitted while handling an input get a
/// UUID v5 derived from the actor, the input id and the output index, so a re-run of
/// the same handler re-emits the same ids and JetStream's duplicate window drops them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventId(Uuid);

impl EventId {
    /// A fresh root id (UUID v7).
    pub fn new_root() -> Self {
        Self(Uuid::now_v7())
    }

    /// The deterministic id of output number `index` of `actor` handling `input`.
    pub fn derived(actor: &ActorName, input: &EventId, index: u32) -> Self {
        let name = format!("{}/{}/{}", actor.as_str(), input.0, index);
        Self(Uuid::new_v5(&DERIVED_ID_NAMESPACE, name.as_bytes()))
    }

    /// A deterministic id for any stable name (UUID v5 in choreo's namespace). Sagas derive
    /// their output ids and timer-input ids from `saga / instance / input / index` with it.
    pub fn derive(name: &str) -> Self {
        Self(Uuid::new_v5(&DERIVED_ID_NAMESPACE, name.as_bytes()))
    }

    /// The id of an event whose CloudEvents `id` is `value`: the UUID itself when it is one,
    /// else a UUID v5 of the string in choreo's external namespace (so the same string always
    /// gives the same id, and copies of an event are still recognised). Empty is an error.
    pub fn from_cloudevents_id(value: &str) -> Result<Self, IdError> {
        if value.is_empty() {
            return Err(IdError::new("event id", value, "is empty"));
        }
        Ok(Uuid::parse_str(value).map_or_else(
            |_| Self(Uuid::new_v5(&EXTERNAL_ID_NAMESPACE, value.as_bytes())),
            Self,
        ))
    }

    /// Wrap an existing UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for EventId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|e| IdError::new("event id", s, e.to_string()))
    }
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validate and wrap. The value must be a single NATS subject token:
            /// 1 to 128 ASCII letters, digits, `-` or `_`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                match token_problem(&value) {
                    None => Ok(Self(value)),
                    Some(reason) => Err(IdError::new($what, &value, reason)),
                }
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

token_id!(
    /// One business conversation (an order, a release). Every event carries one; it is a
    /// token of the event's subject, so history of a correlation is one subject filter.
    CorrelationId,
    "correlation id"
);

token_id!(
    /// The name of an actor (reactor or saga). Names its durable consumer and its DLQ subjects.
    ActorName,
    "actor name"
);

token_id!(
    /// The id of one saga instance (by default its correlation id).
    SagaId,
    "saga id"
);

impl From<CorrelationId> for SagaId {
    fn from(c: CorrelationId) -> Self {
        Self(c.0)
    }
}

impl CorrelationId {
    /// A fresh random correlation id (a simple UUID v7 without hyphens).
    pub fn generate() -> Self {
        Self(Uuid::now_v7().simple().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_deterministic_and_distinct() {
        let actor = ActorName::new("billing").expect("valid");
        let other = ActorName::new("shipping").expect("valid");
        let input = EventId::new_root();
        assert_eq!(
            EventId::derived(&actor, &input, 0),
            EventId::derived(&actor, &input, 0)
        );
        assert_ne!(
            EventId::derived(&actor, &input, 0),
            EventId::derived(&actor, &input, 1)
        );
        assert_ne!(
            EventId::derived(&actor, &input, 0),
            EventId::derived(&other, &input, 0)
        );
    }

    #[test]
    fn event_id_round_trips_through_text() {
        let id = EventId::new_root();
        assert_eq!(id.to_string().parse::<EventId>().expect("parses"), id);
        let err = "nope".parse::<EventId>().expect_err("not a uuid");
        assert!(err.to_string().contains("event id"), "{err}");
    }

    #[test]
    fn correlation_ids_must_be_subject_tokens() {
        assert!(CorrelationId::new("order-1").is_ok());
        let err = CorrelationId::new("order.1").expect_err("dot");
        assert!(err.to_string().contains("'.'"), "{err}");
        assert!(CorrelationId::new(CorrelationId::generate().as_str()).is_ok());
    }
}
