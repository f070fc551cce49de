//! Admission of a delivery, shared by the reactor and saga runtimes (pure: no I/O, no clock):
//! the envelope decodes, the subject matches it, the type is consumed and registered, the
//! depth is within the limit, the delivery count is below the poison limit.

use std::collections::BTreeSet;

use choreo_schemas::{EnvelopeError, Event, EventRegistry, EventType, Partitioner, RegistryError};

use crate::bus::DlqReason;

/// The node's limits that apply to every input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_depth: u32,
    pub(crate) max_deliveries: u64,
    pub(crate) partitioner: Partitioner,
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
            let expected = limits.partitioner.partition_of(&event.correlation);
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

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_schemas::{headers, CorrelationId};

    const LIMITS: Limits = Limits {
        max_depth: 4,
        max_deliveries: 3,
        partitioner: Partitioner {
            count: 8,
            hash: choreo_schemas::PartitionHash::Fnv1a32,
        },
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
        let subject = format!(
            "choreo.evt.{}.c.a.v1",
            LIMITS.partitioner.partition_of(&e.correlation)
        );
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
}
