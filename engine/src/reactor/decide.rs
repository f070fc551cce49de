//! The reactor's pure decision core: what to do with a delivery, and after an attempt.
//! No I/O, no clock; the driver performs what these functions decide.

use std::collections::BTreeSet;

use choreo_schemas::{partition_of, EnvelopeError, Event, EventRegistry, EventType, RegistryError};

use super::ReactError;
use crate::bus::DlqReason;

/// The node's limits that apply to every input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_depth: u32,
    pub(crate) max_deliveries: u64,
    pub(crate) partitions: u16,
}

/// What the driver knows about one delivery before the handler runs.
pub(crate) struct Delivery<'a> {
    pub(crate) decoded: Result<Event, EnvelopeError>,
    /// (partition, correlation token, type tokens) parsed from the subject.
    pub(crate) subject: Option<(u16, &'a str, &'a str)>,
    /// JetStream's delivery count (1 on first delivery).
    pub(crate) delivered: u64,
}

/// Admit a delivery to the handler, or say why it goes straight to the DLQ.
pub(crate) fn admit(
    d: Delivery<'_>,
    limits: Limits,
    consumes: &BTreeSet<EventType>,
    registry: &EventRegistry,
) -> Result<Event, DlqReason> {
    if d.delivered > limits.max_deliveries {
        return Err(DlqReason::MaxDeliveries {
            delivered: d.delivered,
            limit: limits.max_deliveries,
        });
    }
    let event = d.decoded.map_err(DlqReason::InvalidEnvelope)?;
    match d.subject {
        None => {
            return Err(DlqReason::SubjectMismatch(
                "subject is not <ns>.evt.<partition>.<correlation>.<type>".into(),
            ))
        }
        Some((partition, correlation, ty)) => {
            if correlation != event.correlation.as_str() {
                return Err(DlqReason::SubjectMismatch(format!(
                    "subject correlation {correlation:?} but ce-correlationid {:?}",
                    event.correlation.as_str()
                )));
            }
            let expected = partition_of(&event.correlation, limits.partitions);
            if partition != expected {
                return Err(DlqReason::SubjectMismatch(format!(
                    "published on partition {partition}, but correlation {} belongs to partition {expected}",
                    event.correlation
                )));
            }
            if ty != event.ty.as_str() && consumes.contains(&event.ty) {
                return Err(DlqReason::SubjectMismatch(format!(
                    "subject type {ty:?} but ce-type {:?}",
                    event.ty.as_str()
                )));
            }
        }
    }
    if !consumes.contains(&event.ty) {
        return Err(DlqReason::UnknownType(format!(
            "{} is not consumed by this actor",
            event.ty
        )));
    }
    match registry.validate(&event.ty, &event.data) {
        Ok(()) => {}
        Err(RegistryError::UnknownType(t)) => {
            return Err(DlqReason::UnknownType(format!("{t} is not registered")))
        }
        Err(RegistryError::BadPayload(e)) => return Err(DlqReason::BadPayload(e.to_string())),
    }
    if event.depth > limits.max_depth {
        return Err(DlqReason::DepthExceeded {
            depth: event.depth,
            limit: limits.max_depth,
        });
    }
    Ok(event)
}

/// What came out of one handler attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The handler returned Ok with this many outputs.
    Succeeded { outputs: usize },
    /// The handler failed (a panic is reported as a transient failure).
    Failed(ReactError),
}

/// The next step after an attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Publish the outputs, then ack the input.
    Publish,
    /// Wait (backoff) and try again.
    Retry,
    /// Give up: dead-letter the input and term-ack it.
    DeadLetter(DlqReason),
}

/// Decide after attempt number `attempt` (1-based).
pub(crate) fn after_attempt(
    attempt: u32,
    max_attempts: u32,
    input_depth: u32,
    max_depth: u32,
    outcome: Attempt,
) -> Next {
    match outcome {
        Attempt::Succeeded { outputs } => {
            let depth = input_depth.saturating_add(1);
            if outputs > 0 && depth > max_depth {
                Next::DeadLetter(DlqReason::DepthExceeded {
                    depth,
                    limit: max_depth,
                })
            } else {
                Next::Publish
            }
        }
        Attempt::Failed(ReactError::Permanent(e)) => Next::DeadLetter(DlqReason::Rejected(e)),
        Attempt::Failed(ReactError::BadPayload(e)) => Next::DeadLetter(DlqReason::BadPayload(e)),
        Attempt::Failed(ReactError::Transient(e)) => {
            if attempt >= max_attempts {
                Next::DeadLetter(DlqReason::MaxAttempts { last_error: e })
            } else {
                Next::Retry
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_schemas::{headers, CorrelationId};

    const LIMITS: Limits = Limits {
        max_depth: 4,
        max_deliveries: 3,
        partitions: 8,
    };

    fn setup() -> (Event, BTreeSet<EventType>, EventRegistry, String) {
        let ty = EventType::new("a.v1").expect("valid");
        let e = Event::root_raw(
            "urn:t",
            CorrelationId::new("c").expect("valid"),
            ty.clone(),
            vec![0xc0],
        );
        let mut reg = EventRegistry::new();
        reg.register_opaque(ty.clone());
        let subject = format!("choreo.evt.{}.c.a.v1", partition_of(&e.correlation, 8));
        (e, BTreeSet::from([ty]), reg, subject)
    }

    fn parse(s: &str) -> Option<(u16, &str, &str)> {
        choreo_schemas::Subjects::default().parse_event(s)
    }

    #[test]
    fn admits_a_good_delivery() {
        let (e, consumes, reg, subject) = setup();
        let d = Delivery {
            decoded: Ok(e.clone()),
            subject: parse(&subject),
            delivered: 1,
        };
        assert_eq!(admit(d, LIMITS, &consumes, &reg), Ok(e));
    }

    #[test]
    fn each_bad_input_has_its_reason() {
        let (e, consumes, reg, subject) = setup();
        let code = |d: Delivery<'_>| {
            admit(d, LIMITS, &consumes, &reg)
                .map(|_| ())
                .map_err(|r| r.code())
        };
        assert_eq!(
            code(Delivery {
                decoded: Ok(e.clone()),
                subject: parse(&subject),
                delivered: 4
            }),
            Err("max_deliveries")
        );
        assert_eq!(
            code(Delivery {
                decoded: Err(EnvelopeError::Missing(headers::ID)),
                subject: parse(&subject),
                delivered: 1
            }),
            Err("invalid_envelope")
        );
        let mut other = e.clone();
        other.ty = EventType::new("zzz.v1").expect("valid");
        assert_eq!(
            code(Delivery {
                decoded: Ok(other),
                subject: parse(&subject),
                delivered: 1
            }),
            Err("unknown_type")
        );
        let mut deep = e.clone();
        deep.depth = 5;
        assert_eq!(
            code(Delivery {
                decoded: Ok(deep),
                subject: parse(&subject),
                delivered: 1
            }),
            Err("depth_exceeded")
        );
        let wrong = subject.replace(".c.", ".d.");
        assert_eq!(
            code(Delivery {
                decoded: Ok(e.clone()),
                subject: parse(&wrong),
                delivered: 1
            }),
            Err("subject_mismatch")
        );
        let mut typed = EventRegistry::new();
        typed.register_opaque(EventType::new("other.v1").expect("valid"));
        let d = Delivery {
            decoded: Ok(e),
            subject: parse(&subject),
            delivered: 1,
        };
        assert_eq!(
            admit(d, LIMITS, &consumes, &typed).map_err(|r| r.code()),
            Err("unknown_type")
        );
    }

    #[test]
    fn retries_until_max_attempts_then_dead_letters() {
        let t = || Attempt::Failed(ReactError::Transient("x".into()));
        assert_eq!(after_attempt(1, 3, 0, 4, t()), Next::Retry);
        assert_eq!(after_attempt(2, 3, 0, 4, t()), Next::Retry);
        assert!(matches!(
            after_attempt(3, 3, 0, 4, t()),
            Next::DeadLetter(DlqReason::MaxAttempts { .. })
        ));
        assert!(matches!(
            after_attempt(
                1,
                3,
                0,
                4,
                Attempt::Failed(ReactError::Permanent("p".into()))
            ),
            Next::DeadLetter(DlqReason::Rejected(_))
        ));
        assert!(matches!(
            after_attempt(
                1,
                3,
                0,
                4,
                Attempt::Failed(ReactError::BadPayload("b".into()))
            ),
            Next::DeadLetter(DlqReason::BadPayload(_))
        ));
    }

    #[test]
    fn outputs_past_the_depth_limit_are_cut() {
        assert_eq!(
            after_attempt(1, 3, 3, 4, Attempt::Succeeded { outputs: 1 }),
            Next::Publish
        );
        assert!(matches!(
            after_attempt(1, 3, 4, 4, Attempt::Succeeded { outputs: 1 }),
            Next::DeadLetter(DlqReason::DepthExceeded { depth: 5, limit: 4 })
        ));
        // A sink at the limit emits nothing, so nothing is cut.
        assert_eq!(
            after_attempt(1, 3, 4, 4, Attempt::Succeeded { outputs: 0 }),
            Next::Publish
        );
    }
}
