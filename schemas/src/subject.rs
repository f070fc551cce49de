//! The subject scheme and partitioning of the log.
//!
//! Events: `<root>.evt.<partition>.<correlation>.<type tokens>`;
//! redriven events (for one actor only): `<root>.redrive.<actor>.<partition>.<correlation>.<type tokens>`;
//! dead letters: `<root>.dlq.<actor>.<correlation>`.

use crate::event_type::EventType;
use crate::ids::{ActorName, CorrelationId};

/// Subject root used when none is configured.
pub const DEFAULT_ROOT: &str = "choreo";

/// The partition of a correlation: a stable FNV-1a 64 hash modulo the partition count.
///
/// The hash is part of the wire contract: changing it would move correlations between
/// partitions of an existing log.
pub fn partition_of(correlation: &CorrelationId, partitions: u16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in correlation.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let p = u64::from(partitions.max(1));
    // The remainder is < partitions <= u16::MAX.
    u16::try_from(hash % p).unwrap_or(0)
}

/// Builds the subjects of one namespace (the root token, `choreo` by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    root: String,
}

impl Subjects {
    /// Subjects under `root` (one subject token, validated by the caller's config).
    pub fn new(root: impl Into<String>) -> Self {
        Self { root: root.into() }
    }

    /// The root token.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The subject an event is published on.
    pub fn event(&self, partition: u16, correlation: &CorrelationId, ty: &EventType) -> String {
        format!("{}.evt.{partition}.{correlation}.{ty}", self.root)
    }

    /// Filter matching every event (`<root>.evt.>`).
    pub fn all_events(&self) -> String {
        format!("{}.evt.>", self.root)
    }

    /// Filter matching one event type across partitions and correlations.
    pub fn type_filter(&self, ty: &EventType) -> String {
        format!("{}.evt.*.*.{ty}", self.root)
    }

    /// Literal-prefixed filter matching the whole history of one correlation.
    pub fn correlation_filter(&self, partition: u16, correlation: &CorrelationId) -> String {
        format!("{}.evt.{partition}.{correlation}.>", self.root)
    }

    /// The subject a dead-lettered event is redriven on: only `actor` consumes it.
    pub fn redrive(
        &self,
        actor: &ActorName,
        partition: u16,
        correlation: &CorrelationId,
        ty: &EventType,
    ) -> String {
        format!(
            "{}.redrive.{actor}.{partition}.{correlation}.{ty}",
            self.root
        )
    }

    /// Filter of the events redriven to `actor` (every partition).
    pub fn redrive_filter(&self, actor: &ActorName) -> String {
        format!("{}.redrive.{actor}.>", self.root)
    }

    /// Filter of the events redriven to `actor` in one partition.
    pub fn redrive_partition_filter(&self, actor: &ActorName, partition: u16) -> String {
        format!("{}.redrive.{actor}.{partition}.>", self.root)
    }

    /// Filter of every redriven event of one correlation (any actor).
    pub fn redrive_correlation_filter(
        &self,
        partition: u16,
        correlation: &CorrelationId,
    ) -> String {
        format!("{}.redrive.*.{partition}.{correlation}.>", self.root)
    }

    /// Filter matching every redriven event.
    pub fn all_redrives(&self) -> String {
        format!("{}.redrive.>", self.root)
    }

    /// Filter of the dead letters of one correlation (any actor).
    pub fn dead_letters_of(&self, correlation: &str) -> String {
        format!("{}.dlq.*.{correlation}", self.root)
    }

    /// Filter matching every event of one partition.
    pub fn partition_filter(&self, partition: u16) -> String {
        format!("{}.evt.{partition}.>", self.root)
    }

    /// Filter matching every dead letter (`<root>.dlq.>`).
    pub fn all_dead_letters(&self) -> String {
        format!("{}.dlq.>", self.root)
    }

    /// The subject a dead letter of `actor` is published on. `correlation` is the token
    /// taken from the original subject (or `_unknown`), so malformed input still has a home.
    pub fn dead_letter(&self, actor: &ActorName, correlation: &str) -> String {
        format!("{}.dlq.{actor}.{correlation}", self.root)
    }

    /// Split an event subject (or a redrive subject) into (partition, correlation token, type),
    /// if it has the shape.
    pub fn parse_event<'a>(&self, subject: &'a str) -> Option<(u16, &'a str, &'a str)> {
        let after_root = subject.strip_prefix(self.root.as_str())?;
        let rest = match after_root.strip_prefix(".evt.") {
            Some(rest) => rest,
            None => after_root.strip_prefix(".redrive.")?.split_once('.')?.1,
        };
        let mut parts = rest.splitn(3, '.');
        let partition = parts.next()?.parse().ok()?;
        let correlation = parts.next()?;
        let ty = parts.next()?;
        Some((partition, correlation, ty))
    }
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new(DEFAULT_ROOT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_in_range() {
        let c = CorrelationId::new("order-1").expect("valid");
        // Pinned: the hash is part of the wire contract.
        assert_eq!(partition_of(&c, 16), partition_of(&c, 16));
        assert_eq!(partition_of(&c, 1), 0);
        for i in 0..1000 {
            let c = CorrelationId::new(format!("c{i}")).expect("valid");
            assert!(partition_of(&c, 7) < 7);
        }
        let fnv_of_a = 0xaf63_dc4c_8601_ec8c_u64; // FNV-1a 64 of "a"
        let a = CorrelationId::new("a").expect("valid");
        assert_eq!(u64::from(partition_of(&a, 1000)), fnv_of_a % 1000);
    }

    #[test]
    fn builds_and_parses_subjects() {
        let s = Subjects::default();
        let c = CorrelationId::new("o1").expect("valid");
        let t = EventType::new("order.placed.v1").expect("valid");
        let subject = s.event(3, &c, &t);
        assert_eq!(subject, "choreo.evt.3.o1.order.placed.v1");
        assert_eq!(s.parse_event(&subject), Some((3, "o1", "order.placed.v1")));
        assert_eq!(s.type_filter(&t), "choreo.evt.*.*.order.placed.v1");
        assert_eq!(s.correlation_filter(3, &c), "choreo.evt.3.o1.>");
        assert_eq!(s.parse_event("other.evt.1.x.y"), None);
        let a = ActorName::new("billing").expect("valid");
        let r = s.redrive(&a, 3, &c, &t);
        assert_eq!(r, "choreo.redrive.billing.3.o1.order.placed.v1");
        assert_eq!(s.parse_event(&r), Some((3, "o1", "order.placed.v1")));
    }
}
