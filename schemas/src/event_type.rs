//! Event type names such as `order.placed.v1`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::IdError;
use crate::token::token_problem;

/// Most dot-separated tokens an event type may have.
pub const MAX_TYPE_TOKENS: usize = 8;

/// The CloudEvents `type` of an event: dot-separated subject tokens, by convention ending in a
/// version (`order.placed.v1`). The tokens become the tail of the event's subject, which is how
/// a reactor's consumer filters the types it reacts to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventType(String);

impl EventType {
    /// Validate and wrap: 1 to 8 tokens separated by `.`, each a valid subject token.
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        let tokens: Vec<&str> = value.split('.').collect();
        if tokens.len() > MAX_TYPE_TOKENS {
            return Err(IdError::new(
                "event type",
                &value,
                format!(
                    "has {} tokens, the limit is {MAX_TYPE_TOKENS}",
                    tokens.len()
                ),
            ));
        }
        for token in &tokens {
            if let Some(reason) = token_problem(token) {
                return Err(IdError::new(
                    "event type",
                    &value,
                    format!("token {token:?} {reason}"),
                ));
            }
        }
        Ok(Self(value))
    }

    /// The type as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// How many subject tokens the type occupies.
    pub fn token_count(&self) -> usize {
        self.0.split('.').count()
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EventType {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for EventType {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<EventType> for String {
    fn from(t: EventType) -> String {
        t.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_tokens() {
        assert_eq!(
            EventType::new("order.placed.v1").map(|t| t.token_count()),
            Ok(3)
        );
        assert!(EventType::new("order..v1").is_err());
        assert!(EventType::new("order.*.v1").is_err());
        assert!(EventType::new("a.b.c.d.e.f.g.h.i").is_err());
        assert!(EventType::new("").is_err());
    }
}
