//! The policy gate: typed rules evaluated on commands before they reach their executor.
//!
//! A saga emits `gated.<command>`; the gate evaluates the command's policy on its data (and the
//! event's time) and forwards it as `<command>`, or emits `policy.vetoed.v1` naming the rule.
//! Sagas treat a veto as the step's failure.

use std::collections::BTreeMap;

use choreo::{Event, EventType, Payload, ReactContext, ReactError, Reactor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// Prefix of gated command types.
pub const GATED_PREFIX: &str = "gated";

/// `gated.<type>`: what a saga emits to have `<type>` checked first.
pub fn gated_type(ty: &EventType) -> Result<EventType, choreo::schemas::IdError> {
    EventType::new(format!("{GATED_PREFIX}.{ty}"))
}

/// One rule. Fields are dotted paths into the command's data (`payment.amount`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Rule {
    /// The numeric field must be present and at most `max`.
    MaxAmount {
        /// Field path.
        field: String,
        /// The limit.
        max: f64,
    },
    /// The string field must not be one of `values`.
    Forbidden {
        /// Field path.
        field: String,
        /// Forbidden values.
        values: Vec<String>,
    },
    /// The event's time (UTC hour) must be within `[from_hour, to_hour)`; wraps past midnight
    /// when `from_hour > to_hour`.
    AllowedHours {
        /// First allowed hour.
        from_hour: u8,
        /// First hour no longer allowed.
        to_hour: u8,
    },
}

/// A veto: the data of `policy.vetoed.v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vetoed {
    /// The command that was stopped.
    pub command: String,
    /// The rule's name.
    pub rule: String,
    /// Why.
    pub reason: String,
}

impl Payload for Vetoed {
    const TYPE: &'static str = "policy.vetoed.v1";
}

fn field<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// Evaluate named rules in order; the first one broken, with the reason.
pub fn evaluate(
    rules: &[(String, Rule)],
    data: &Value,
    at: OffsetDateTime,
) -> Option<(String, String)> {
    for (name, rule) in rules {
        let broken = match rule {
            Rule::MaxAmount { field: f, max } => match field(data, f).and_then(Value::as_f64) {
                Some(x) if x <= *max => None,
                Some(x) => Some(format!("{f} = {x} exceeds {max}")),
                None => Some(format!("{f} is missing or not a number")),
            },
            Rule::Forbidden { field: f, values } => match field(data, f).and_then(Value::as_str) {
                Some(x) if values.iter().any(|v| v == x) => {
                    Some(format!("{f} = {x:?} is forbidden"))
                }
                _ => None,
            },
            Rule::AllowedHours { from_hour, to_hour } => {
                let h = at.hour();
                let inside = if from_hour <= to_hour {
                    (*from_hour..*to_hour).contains(&h)
                } else {
                    h >= *from_hour || h < *to_hour
                };
                (!inside)
                    .then(|| format!("{h:02}:00 UTC is outside {from_hour:02}:00-{to_hour:02}:00"))
            }
        };
        if let Some(reason) = broken {
            return Some((name.clone(), reason));
        }
    }
    None
}

/// The gate reactor. Build with [`PolicyGate::new`] and [`PolicyGate::policy`].
#[derive(Clone, Debug)]
pub struct PolicyGate {
    name: String,
    policies: BTreeMap<EventType, (EventType, Vec<(String, Rule)>)>,
}

impl PolicyGate {
    /// A gate named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            policies: BTreeMap::new(),
        }
    }

    /// Gate `command` with named `rules` (evaluated in order).
    pub fn policy(
        mut self,
        command: EventType,
        rules: Vec<(String, Rule)>,
    ) -> Result<Self, choreo::schemas::IdError> {
        self.policies
            .insert(gated_type(&command)?, (command, rules));
        Ok(self)
    }
}

impl Reactor for PolicyGate {
    fn name(&self) -> &str {
        &self.name
    }
    fn consumes(&self) -> Vec<EventType> {
        self.policies.keys().cloned().collect()
    }
    fn emits(&self) -> Vec<EventType> {
        self.policies
            .values()
            .map(|(c, _)| c.clone())
            .chain(std::iter::once(Vetoed::event_type()))
            .collect()
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let Some((command, rules)) = self.policies.get(&e.ty) else {
            return Err(ReactError::permanent(format!("no policy for {}", e.ty)));
        };
        let data: Value = e.decode_as()?;
        match evaluate(rules, &data, e.time) {
            None => {
                // The forwarded command expires when the gated one does.
                ctx.forward_deadline();
                ctx.emit_raw(command.clone(), e.data.clone())?;
            }
            Some((rule, reason)) => {
                ctx.emit(&Vetoed {
                    command: command.to_string(),
                    rule,
                    reason,
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn rules() -> Vec<(String, Rule)> {
        vec![
            (
                "limit".into(),
                Rule::MaxAmount {
                    field: "payment.cents".into(),
                    max: 50_000.0,
                },
            ),
            (
                "sanctions".into(),
                Rule::Forbidden {
                    field: "to".into(),
                    values: vec!["mallory".into()],
                },
            ),
            (
                "office-hours".into(),
                Rule::AllowedHours {
                    from_hour: 6,
                    to_hour: 22,
                },
            ),
        ]
    }

    #[test]
    fn first_broken_rule_wins() {
        let noon = datetime!(2026-11-23 12:00 UTC);
        let ok = json!({"payment": {"cents": 100}, "to": "bob"});
        assert_eq!(evaluate(&rules(), &ok, noon), None);
        let big = json!({"payment": {"cents": 90_000}, "to": "mallory"});
        assert_eq!(
            evaluate(&rules(), &big, noon).map(|(r, _)| r),
            Some("limit".into())
        );
        let bad_to = json!({"payment": {"cents": 1}, "to": "mallory"});
        assert_eq!(
            evaluate(&rules(), &bad_to, noon).map(|(r, _)| r),
            Some("sanctions".into())
        );
        let night = datetime!(2026-11-23 23:30 UTC);
        let (rule, why) = evaluate(&rules(), &ok, night).expect("vetoed at night");
        assert_eq!(rule, "office-hours");
        assert!(why.contains("23:00"), "{why}");
        assert!(
            evaluate(&rules(), &json!({"to": "bob"}), noon).is_some(),
            "missing amount is a veto"
        );
    }

    #[test]
    fn hours_wrap_past_midnight() {
        let r = vec![(
            "night".to_owned(),
            Rule::AllowedHours {
                from_hour: 22,
                to_hour: 6,
            },
        )];
        assert_eq!(
            evaluate(&r, &json!({}), datetime!(2026-01-01 23:00 UTC)),
            None
        );
        assert_eq!(
            evaluate(&r, &json!({}), datetime!(2026-01-01 03:00 UTC)),
            None
        );
        assert!(evaluate(&r, &json!({}), datetime!(2026-01-01 12:00 UTC)).is_some());
    }
}
