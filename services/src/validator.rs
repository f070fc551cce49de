//! Schema validation at the boundary.
//!
//! Producers submit `intake.<type>`; the validator decodes it as the registered payload, runs its
//! [`Validate`] rules, and forwards it as `<type>` when valid, or emits `<type>.rejected` with the
//! reasons. Consumers subscribe to `<type>`, so an invalid event never reaches them.

use std::collections::BTreeMap;

use choreo::{Event, EventType, Payload, ReactContext, ReactError, Reactor};
use serde::{Deserialize, Serialize};

/// Business rules of a payload, beyond its shape.
pub trait Validate {
    /// Every rule the value breaks, in words; empty when valid.
    fn validate(&self) -> Vec<String>;
}

/// The data of a `<type>.rejected` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The type that was submitted.
    pub event_type: String,
    /// Why it was rejected.
    pub reasons: Vec<String>,
    /// The submitted data, as it was.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Prefix of submission types.
pub const INTAKE_PREFIX: &str = "intake";

fn derived(s: String) -> Result<EventType, ReactError> {
    EventType::new(s).map_err(|e| ReactError::permanent(e.to_string()))
}

/// `intake.<type>`: what producers publish to have `<type>` validated.
pub fn intake_type(ty: &EventType) -> Result<EventType, choreo::schemas::IdError> {
    EventType::new(format!("{INTAKE_PREFIX}.{ty}"))
}

/// `<type>.rejected`.
pub fn rejected_type(ty: &EventType) -> Result<EventType, choreo::schemas::IdError> {
    EventType::new(format!("{ty}.rejected"))
}

type Check = fn(&EventType, &[u8]) -> Vec<String>;

fn check_as<P: Payload + Validate>(ty: &EventType, data: &[u8]) -> Vec<String> {
    match choreo::schemas::decode_data::<P>(ty, data) {
        Ok(p) => p.validate(),
        Err(e) => vec![e.to_string()],
    }
}

/// The validator reactor. Build with [`SchemaValidator::new`] and [`SchemaValidator::check`].
#[derive(Clone, Debug)]
pub struct SchemaValidator {
    name: String,
    checks: BTreeMap<EventType, (EventType, Check)>,
    errors: Vec<String>,
}

impl SchemaValidator {
    /// A validator named `name` (its consumer's name).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            checks: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    /// Validate submissions of `P`.
    pub fn check<P: Payload + Validate>(mut self) -> Self {
        let ty = P::event_type();
        match intake_type(&ty) {
            Ok(intake) => {
                self.checks.insert(intake, (ty, check_as::<P>));
            }
            Err(e) => self.errors.push(e.to_string()),
        }
        self
    }

    /// Problems found while building (e.g. a type too long to prefix); empty when usable.
    pub fn problems(&self) -> &[String] {
        &self.errors
    }
}

impl Reactor for SchemaValidator {
    fn name(&self) -> &str {
        &self.name
    }
    fn consumes(&self) -> Vec<EventType> {
        self.checks.keys().cloned().collect()
    }
    fn emits(&self) -> Vec<EventType> {
        self.checks
            .values()
            .flat_map(|(ty, _)| [Some(ty.clone()), rejected_type(ty).ok()])
            .flatten()
            .collect()
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let Some((target, check)) = self.checks.get(&e.ty) else {
            return Err(ReactError::permanent(format!("no check for {}", e.ty)));
        };
        let reasons = check(target, &e.data);
        if reasons.is_empty() {
            ctx.emit_raw(target.clone(), e.data.clone())?;
        } else {
            let rejected = Rejected {
                event_type: target.to_string(),
                reasons,
                data: e.data.clone(),
            };
            let data = rmp_serde::to_vec_named(&rejected).map_err(ReactError::permanent)?;
            ctx.emit_raw(derived(format!("{target}.rejected"))?, data)?;
        }
        Ok(())
    }
}
