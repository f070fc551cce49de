//! The fencing invariant: one owner per partition and epoch, and nothing committed by a fenced
//! owner, judged from the changelog's latest values and the heads' history a run followed.

use std::collections::{BTreeMap, BTreeSet};

use choreo::{ChangelogEntry, InstanceRecord, PartitionHead};

use crate::checker::{Anomaly, LogView};

pub(crate) fn fencing(view: &LogView, a: &mut Vec<Anomaly>) {
    let mut by_epoch: BTreeMap<(u16, u64), BTreeSet<String>> = BTreeMap::new();
    for r in &view.records {
        by_epoch
            .entry((r.partition, r.epoch))
            .or_default()
            .insert(r.owner.clone());
    }
    for h in view.heads.iter().chain(&view.head_history) {
        by_epoch
            .entry((h.value.partition, h.value.epoch))
            .or_default()
            .insert(h.value.owner.clone());
    }
    for ((p, e), owners) in by_epoch {
        if owners.len() > 1 {
            a.push(Anomaly::new(
                "fencing",
                None,
                format!("partition {p} epoch {e} committed by {owners:?}"),
            ));
        }
    }
    a.extend(head_history_anomalies(&view.head_history));
    // A fenced owner's write: epochs never go down as commits go up in a partition, one
    // commit number has one epoch, and nothing is past its partition's head.
    let mut by_part: BTreeMap<u16, Vec<&InstanceRecord>> = BTreeMap::new();
    for r in &view.records {
        by_part.entry(r.partition).or_default().push(r);
    }
    for (p, mut rs) in by_part {
        rs.sort_by_key(|r| (r.commit, r.epoch));
        for w in rs.windows(2) {
            let (x, y) = (w[0], w[1]);
            if x.epoch > y.epoch || (x.commit == y.commit && x.epoch != y.epoch) {
                a.push(Anomaly::new(
                    "fencing",
                    Some(&y.correlation),
                    format!(
                        "partition {p}: commit {} at epoch {} ({}) and commit {} at epoch {} ({})",
                        x.commit, x.epoch, x.owner, y.commit, y.epoch, y.owner
                    ),
                ));
            }
        }
        if let Some(h) = view.heads.iter().find(|h| h.value.partition == p) {
            for r in rs
                .iter()
                .filter(|r| r.commit > h.value.commit || r.epoch > h.value.epoch)
            {
                a.push(Anomaly::new(
                    "fencing",
                    Some(&r.correlation),
                    format!(
                        "partition {p}: record of commit {} epoch {} past the head (commit {} epoch {})",
                        r.commit, r.epoch, h.value.commit, h.value.epoch
                    ),
                ));
            }
        }
    }
}

/// In the order the heads were stored, per partition: epochs never go down and commit counts
/// never go back. A head of a lower epoch after a higher one is a commit by a fenced owner.
pub fn head_history_anomalies(history: &[ChangelogEntry<PartitionHead>]) -> Vec<Anomaly> {
    let mut last: BTreeMap<u16, &ChangelogEntry<PartitionHead>> = BTreeMap::new();
    let mut a = Vec::new();
    let mut sorted: Vec<&ChangelogEntry<PartitionHead>> = history.iter().collect();
    sorted.sort_by_key(|h| h.sequence);
    for h in sorted {
        let p = h.value.partition;
        if let Some(prev) = last.get(&p) {
            let (x, y) = (&prev.value, &h.value);
            if y.epoch < x.epoch || y.commit < x.commit {
                a.push(Anomaly::new(
                    "fencing",
                    None,
                    format!(
                        "partition {p}: head #{} (epoch {}, commit {}, {}) stored after head #{} (epoch {}, commit {}, {}): a fenced owner committed",
                        h.sequence, y.epoch, y.commit, y.owner, prev.sequence, x.epoch, x.commit, x.owner
                    ),
                ));
            }
        }
        last.insert(p, h);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::head_history_anomalies;
    use choreo::{ChangelogEntry, PartitionHead};

    fn head(
        sequence: u64,
        partition: u16,
        epoch: u64,
        commit: u64,
        owner: &str,
    ) -> ChangelogEntry<PartitionHead> {
        ChangelogEntry {
            sequence,
            value: PartitionHead {
                partition,
                epoch,
                owner: owner.to_owned(),
                commit,
                published: commit,
                applied_seq: 0,
                takeover: false,
                written_ms: 0,
            },
        }
    }

    #[test]
    fn a_takeover_then_commits_is_clean() {
        let h = [
            head(1, 0, 1, 1, "a"),
            head(2, 1, 1, 1, "a"),
            head(3, 0, 1, 2, "a"),
            head(5, 0, 4, 2, "b"), // takeover keeps the count
            head(6, 0, 4, 3, "b"),
            head(7, 1, 1, 2, "a"),
        ];
        assert!(head_history_anomalies(&h).is_empty());
    }

    #[test]
    fn a_fenced_owner_committing_after_the_takeover_is_caught() {
        // Out of order on purpose: the check orders by stream sequence.
        let h = [
            head(6, 0, 1, 3, "a"),
            head(3, 0, 1, 2, "a"),
            head(5, 0, 4, 2, "b"),
        ];
        let a = head_history_anomalies(&h);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].invariant, "fencing");
        assert!(a[0].detail.contains("head #6"), "{}", a[0].detail);
        // A commit count going back is caught too.
        let back = [head(1, 2, 3, 9, "a"), head(2, 2, 3, 8, "a")];
        assert_eq!(head_history_anomalies(&back).len(), 1);
    }
}
