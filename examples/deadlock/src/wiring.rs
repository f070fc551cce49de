//! Who awaits what: the four roles, their artifacts, and how each variant wires them.

use choreo::{EventType, Payload, SagaContext};

use crate::domain::{CodeWritten, DocsWritten, SpecWritten, TestsWritten, Variant};

/// What an agent writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Artifact {
    /// `spec.written.v1`.
    Spec,
    /// `code.written.v1`.
    Code,
    /// `tests.written.v1`.
    Tests,
    /// `docs.written.v1`.
    Docs,
}

impl Artifact {
    /// Every artifact.
    pub const ALL: [Artifact; 4] = [Self::Spec, Self::Code, Self::Tests, Self::Docs];

    /// Its event type's name.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::Spec => SpecWritten::TYPE,
            Self::Code => CodeWritten::TYPE,
            Self::Tests => TestsWritten::TYPE,
            Self::Docs => DocsWritten::TYPE,
        }
    }

    /// Its event type.
    pub fn event_type(self) -> EventType {
        match self {
            Self::Spec => SpecWritten::event_type(),
            Self::Code => CodeWritten::event_type(),
            Self::Tests => TestsWritten::event_type(),
            Self::Docs => DocsWritten::event_type(),
        }
    }

    /// The artifact an event type carries, if any.
    pub fn of(ty: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.type_name() == ty)
    }

    /// `spec`, `code`, `tests` or `docs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spec => "spec",
            Self::Code => "code",
            Self::Tests => "tests",
            Self::Docs => "docs",
        }
    }

    /// Emit this artifact with `text`.
    pub fn emit(self, ctx: &mut SagaContext, text: String) -> Result<(), choreo::EmitError> {
        match self {
            Self::Spec => ctx.emit(&SpecWritten { text }),
            Self::Code => ctx.emit(&CodeWritten { text }),
            Self::Tests => ctx.emit(&TestsWritten { text }),
            Self::Docs => ctx.emit(&DocsWritten { text }),
        }
    }
}

/// A member of the swarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Writes the spec.
    Planner,
    /// Writes the code.
    Coder,
    /// Writes the tests.
    Tester,
    /// Writes the docs.
    Docs,
}

/// How one role is wired in one variant: every role awaits exactly one artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wiring {
    /// What it writes as soon as it has the task.
    pub at_start: Option<Artifact>,
    /// What it awaits.
    pub awaits: Artifact,
    /// What it writes once it has what it awaits (then it completes).
    pub on_awaited: Option<Artifact>,
}

impl Role {
    /// The swarm, in reporting order.
    pub const ALL: [Role; 4] = [Self::Planner, Self::Coder, Self::Tester, Self::Docs];

    /// The saga's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Planner => "planner",
            Self::Coder => "coder",
            Self::Tester => "tester",
            Self::Docs => "docs",
        }
    }

    /// The role of a saga name, if it is a member of the swarm.
    pub fn of(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// What it writes.
    pub fn produces(self) -> Artifact {
        match self {
            Self::Planner => Artifact::Spec,
            Self::Coder => Artifact::Code,
            Self::Tester => Artifact::Tests,
            Self::Docs => Artifact::Docs,
        }
    }

    /// Its wiring in `variant`.
    pub fn wiring(self, variant: Variant) -> Wiring {
        let own = Some(self.produces());
        match (variant, self) {
            // Seed 002: coder -> tests -> tester -> docs -> docs writer -> code -> coder.
            (Variant::Cyclic, Self::Planner) => Wiring {
                at_start: None,
                awaits: Artifact::Code,
                on_awaited: None,
            },
            (Variant::Cyclic, Self::Coder) => Wiring {
                at_start: None,
                awaits: Artifact::Tests,
                on_awaited: own,
            },
            (Variant::Cyclic, Self::Tester) => Wiring {
                at_start: None,
                awaits: Artifact::Docs,
                on_awaited: own,
            },
            (Variant::Cyclic, Self::Docs) => Wiring {
                at_start: None,
                awaits: Artifact::Code,
                on_awaited: own,
            },
            // A pipeline: spec -> code -> tests -> docs; the planner waits for the code.
            (Variant::Acyclic, Self::Planner) => Wiring {
                at_start: own,
                awaits: Artifact::Code,
                on_awaited: None,
            },
            (Variant::Acyclic, Self::Coder) => Wiring {
                at_start: None,
                awaits: Artifact::Spec,
                on_awaited: own,
            },
            (Variant::Acyclic, Self::Tester) => Wiring {
                at_start: None,
                awaits: Artifact::Code,
                on_awaited: own,
            },
            (Variant::Acyclic, Self::Docs) => Wiring {
                at_start: None,
                awaits: Artifact::Tests,
                on_awaited: own,
            },
        }
    }

    /// The wirings of both variants (what the saga declares statically).
    pub fn wirings(self) -> [Wiring; 2] {
        [self.wiring(Variant::Cyclic), self.wiring(Variant::Acyclic)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_emits_only_its_own_artifact() {
        for r in Role::ALL {
            for w in r.wirings() {
                for a in [w.at_start, w.on_awaited].into_iter().flatten() {
                    assert_eq!(a, r.produces(), "{r:?}");
                }
                assert_ne!(w.awaits, r.produces(), "{r:?} awaits itself");
            }
        }
    }

    #[test]
    fn names_and_types_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::of(r.name()), Some(r));
        }
        for a in Artifact::ALL {
            assert_eq!(Artifact::of(a.type_name()), Some(a));
            assert_eq!(a.event_type().as_str(), a.type_name());
        }
        assert_eq!(Role::of("stranger"), None);
    }
}
