//! The ownership decision for one tick, pure: from the partitions this node should own, the
//! leases it holds and the state of its processors, what to do with each lease.

use std::collections::{BTreeMap, BTreeSet};

/// A lease this node holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    /// Current revision (compare-and-set target of the next renewal).
    pub(crate) revision: u64,
    /// Revision it was created with.
    pub(crate) epoch: u64,
    /// Last successful create or renewal (Unix ms, this node's clock).
    pub(crate) renewed_ms: i64,
}

/// One step of the tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Action {
    /// Not renewed within the TTL: another node may hold it now; stop at once, forget it.
    Drop(u16),
    /// No longer ours by the assignment: stop gracefully, then delete the lease.
    Release(u16),
    /// Keep it.
    Renew(u16),
    /// Keep it, and start its processor again (it stopped).
    Restart(u16),
    /// Ours by the assignment and not held: try to create the lease.
    Acquire(u16),
}

/// Decide the tick.
pub(crate) fn plan(
    desired: &BTreeSet<u16>,
    held: &BTreeMap<u16, Held>,
    dead: &BTreeSet<u16>,
    now_ms: i64,
    ttl_ms: i64,
) -> Vec<Action> {
    let mut out = Vec::new();
    for (p, h) in held {
        let since = now_ms.saturating_sub(h.renewed_ms);
        if since >= ttl_ms {
            out.push(Action::Drop(*p));
        } else if !desired.contains(p) {
            out.push(Action::Release(*p));
        } else if dead.contains(p) {
            out.push(Action::Restart(*p));
        } else {
            out.push(Action::Renew(*p));
        }
    }
    for p in desired {
        if !held.contains_key(p) {
            out.push(Action::Acquire(*p));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(renewed_ms: i64) -> Held {
        Held {
            revision: 7,
            epoch: 3,
            renewed_ms,
        }
    }

    #[test]
    fn each_lease_gets_one_action() {
        let desired = BTreeSet::from([0, 1, 2, 5]);
        let held = BTreeMap::from([(0, held(900)), (1, held(900)), (3, held(900)), (2, held(0))]);
        let dead = BTreeSet::from([1]);
        let actions = plan(&desired, &held, &dead, 1_000, 500);
        assert_eq!(
            actions,
            vec![
                Action::Drop(2),
                Action::Release(3),
                Action::Renew(0),
                Action::Restart(1),
                Action::Acquire(5),
            ]
        );
    }

    #[test]
    fn a_lease_not_renewed_within_the_ttl_is_dropped_even_if_desired() {
        let actions = plan(
            &BTreeSet::from([4]),
            &BTreeMap::from([(4, held(0))]),
            &BTreeSet::new(),
            5_000,
            5_000,
        );
        assert_eq!(actions, vec![Action::Drop(4)]);
    }
}
