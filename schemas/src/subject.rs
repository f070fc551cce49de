//! The subject scheme and partitioning of the log.
//!
//! Events: `<root>.evt.<partition>.<correlation>.<type tokens>`;
//! redriven events (for one actor only): `<root>.redrive.<actor>.<partition>.<correlation>.<type tokens>`;
//! dead letters: `<root>.dlq.<actor>.<correlation>`.

use crate::event_type::EventType;
use crate::ids::{ActorName, CorrelationId};

/// Subject root used when none is configured.
pub const DEFAULT_ROOT: &str = "choreo";

/// How a namespace maps a correlation to its partition. Recorded on the events stream
/// (metadata `choreo.partition_hash`) when the stream is created, and fixed for its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PartitionHash {
    /// FNV-1a 32 of the correlation token, modulo the partition count: the NATS server's own
    /// `partition(n, ...)` subject-mapping function, so the server can place events published
    /// on the ingress (`<ns>.in.<correlation>.<type>`). Every namespace created since the
    /// ingress exists uses it.
    #[default]
    Fnv1a32,
    /// FNV-1a 64 modulo the partition count: namespaces created before the ingress existed
    /// (their events stream has no `choreo.partition_hash` metadata). They keep it, and have
    /// no ingress.
    Fnv1a64,
}

impl PartitionHash {
    /// The value recorded in the stream metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fnv1a32 => "fnv1a32",
            Self::Fnv1a64 => "fnv1a64",
        }
    }

    /// Parse a recorded value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fnv1a32" => Some(Self::Fnv1a32),
            "fnv1a64" => Some(Self::Fnv1a64),
            _ => None,
        }
    }

    /// Whether the two hashes place every correlation alike among `partitions`: true exactly
    /// when the count divides 32. Modulo 2^k, FNV-1a depends only on the low k bits of its
    /// offset basis and prime, and the 32- and 64-bit constants share their low 5 bits
    /// (basis …00101, prime …10011). So a namespace of 1, 2, 4, 8, 16 (the default) or 32
    /// partitions can move to the current hash without moving anything.
    pub fn hashes_agree(partitions: u16) -> bool {
        partitions != 0 && 32 % partitions == 0
    }

    /// The partition of `correlation` among `partitions` (at least 1).
    pub fn partition(self, correlation: &CorrelationId, partitions: u16) -> u16 {
        let p = u64::from(partitions.max(1));
        let hash = match self {
            Self::Fnv1a32 => {
                let mut hash: u32 = 0x811c_9dc5;
                for byte in correlation.as_str().bytes() {
                    hash ^= u32::from(byte);
                    hash = hash.wrapping_mul(0x0100_0193);
                }
                u64::from(hash)
            }
            Self::Fnv1a64 => {
                let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
                for byte in correlation.as_str().bytes() {
                    hash ^= u64::from(byte);
                    hash = hash.wrapping_mul(0x0100_0000_01b3);
                }
                hash
            }
        };
        // The remainder is < partitions <= u16::MAX.
        u16::try_from(hash % p).unwrap_or(0)
    }
}

impl std::fmt::Display for PartitionHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A namespace's partitioning: its partition count and its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Partitioner {
    /// The partition count (at least 1).
    pub count: u16,
    /// The hash.
    pub hash: PartitionHash,
}

impl Partitioner {
    /// `count` partitions with the current hash ([`PartitionHash::Fnv1a32`]).
    pub fn new(count: u16) -> Self {
        Self {
            count,
            hash: PartitionHash::default(),
        }
    }

    /// The partition of `correlation`.
    pub fn partition_of(&self, correlation: &CorrelationId) -> u16 {
        self.hash.partition(correlation, self.count)
    }
}

/// The partition of a correlation in a namespace created with the current hash:
/// FNV-1a 32 of the correlation modulo the partition count, exactly what the NATS server's
/// `partition(partitions, 1)` mapping computes for the correlation token.
///
/// The hash is part of the wire contract: changing it would move correlations between
/// partitions of an existing log. Namespaces created with the earlier hash keep it; see
/// [`PartitionHash`].
pub fn partition_of(correlation: &CorrelationId, partitions: u16) -> u16 {
    PartitionHash::Fnv1a32.partition(correlation, partitions)
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

    /// The ingress subject of an event: `<root>.in.<correlation>.<type>`. The events stream
    /// moves it to [`Subjects::event`] at the correlation's partition (a subject transform
    /// with the server's `partition()` function), so a producer needs no hash.
    pub fn ingress(&self, correlation: &CorrelationId, ty: &EventType) -> String {
        format!("{}.in.{correlation}.{ty}", self.root)
    }

    /// The events stream's ingress subjects (`<root>.in.*.>`): a correlation and a type.
    pub fn ingress_filter(&self) -> String {
        format!("{}.in.*.>", self.root)
    }

    /// The destination of the ingress transform for `partitions` partitions.
    pub fn ingress_destination(&self, partitions: u16) -> String {
        format!(
            "{}.evt.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}.>",
            self.root
        )
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
        let a = CorrelationId::new("a").expect("valid");
        let fnv32_of_a = 0xe40c_292c_u32; // FNV-1a 32 of "a"
        assert_eq!(u32::from(partition_of(&a, 1000)), fnv32_of_a % 1000);
        let fnv64_of_a = 0xaf63_dc4c_8601_ec8c_u64; // FNV-1a 64 of "a"
        assert_eq!(
            u64::from(PartitionHash::Fnv1a64.partition(&a, 1000)),
            fnv64_of_a % 1000
        );
        // Figures a real server computed with `partition(16,1)` for these tokens.
        for (c, p) in [("a", 12), ("order-1", 13), ("trip-42", 3)] {
            let c = CorrelationId::new(c).expect("valid");
            assert_eq!(Partitioner::new(16).partition_of(&c), p);
        }
        for h in [PartitionHash::Fnv1a32, PartitionHash::Fnv1a64] {
            assert_eq!(PartitionHash::parse(h.as_str()), Some(h));
        }
        assert_eq!(PartitionHash::parse("md5"), None);
    }

    #[test]
    fn the_hashes_agree_exactly_when_the_count_divides_32() {
        let correlations: Vec<CorrelationId> = (0..2000)
            .map(|i| CorrelationId::new(format!("trip-{i}-{}", i * 31)).expect("valid"))
            .collect();
        for n in 1..=64u16 {
            let differ = correlations
                .iter()
                .filter(|c| {
                    PartitionHash::Fnv1a32.partition(c, n) != PartitionHash::Fnv1a64.partition(c, n)
                })
                .count();
            assert_eq!(
                differ == 0,
                PartitionHash::hashes_agree(n),
                "{n} partitions: {differ} correlations differ"
            );
        }
    }

    #[test]
    fn ingress_subjects() {
        let s = Subjects::default();
        let c = CorrelationId::new("o1").expect("valid");
        let t = EventType::new("order.placed.v1").expect("valid");
        assert_eq!(s.ingress(&c, &t), "choreo.in.o1.order.placed.v1");
        assert_eq!(s.ingress_filter(), "choreo.in.*.>");
        assert_eq!(
            s.ingress_destination(16),
            "choreo.evt.{{partition(16,1)}}.{{wildcard(1)}}.>"
        );
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
