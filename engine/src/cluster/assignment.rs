//! Which live member should own each partition: rendezvous (highest random weight) hashing.
//! Every node computes the same answer from the same member set; a join or a leave moves only
//! the partitions whose best member changed (about P/N of them).

use super::NodeId;

fn score(node: &NodeId, partition: u16) -> u64 {
    // FNV-1a 64 over the node id, a separator and the partition, then a final mix (splitmix64)
    // so that similar ids spread.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node
        .as_str()
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(partition.to_be_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The member that should own `partition` (ties broken by id); `None` without members.
pub(crate) fn owner_of(members: &[NodeId], partition: u16) -> Option<&NodeId> {
    members
        .iter()
        .max_by(|a, b| score(a, partition).cmp(&score(b, partition)).then(b.cmp(a)))
}

/// The partitions (of `partitions`) that `me` should own among `members`.
pub(crate) fn assigned_to(me: &NodeId, members: &[NodeId], partitions: u16) -> Vec<u16> {
    (0..partitions)
        .filter(|p| owner_of(members, *p) == Some(me))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn ids(n: usize, salt: u32) -> Vec<NodeId> {
        (0..n)
            .map(|i| NodeId::new(format!("node-{salt}-{i}")).expect("valid id"))
            .collect()
    }

    proptest! {
        /// Every partition has exactly one owner among the live members, and each member's
        /// own view (`assigned_to`) agrees.
        #[test]
        fn every_partition_owned_by_exactly_one_member(n in 1usize..8, salt in any::<u32>(), p in 1u16..256) {
            let members = ids(n, salt);
            let mut seen = BTreeSet::new();
            for m in &members {
                for q in assigned_to(m, &members, p) {
                    prop_assert!(seen.insert(q), "partition {} owned twice", q);
                }
            }
            prop_assert_eq!(seen.len(), usize::from(p));
        }

        /// One join or one leave moves only partitions to or from that member, and about P/N
        /// of them (bounded generously: P/N * 2 + 4).
        #[test]
        fn one_join_or_leave_moves_at_most_about_p_over_n(n in 1usize..7, salt in any::<u32>(), p in 16u16..256) {
            let before = ids(n, salt);
            let mut after = before.clone();
            let joiner = NodeId::new(format!("joiner-{salt}")).expect("valid id");
            after.push(joiner.clone());
            let mut moved = 0usize;
            for q in 0..p {
                let a = owner_of(&before, q);
                let b = owner_of(&after, q);
                if a != b {
                    prop_assert_eq!(b, Some(&joiner), "a join moves partitions only to the joiner");
                    moved += 1;
                }
            }
            let bound = usize::from(p) / (n + 1) * 2 + 4;
            prop_assert!(moved <= bound, "join moved {} of {} partitions (bound {})", moved, p, bound);
            // Leave: the joiner goes again; only its partitions move, back to their old owners.
            for q in 0..p {
                if owner_of(&after, q) != Some(&joiner) {
                    prop_assert_eq!(owner_of(&after, q), owner_of(&before, q));
                }
            }
        }
    }

    #[test]
    fn no_members_no_owner() {
        assert_eq!(owner_of(&[], 3), None);
    }
}
