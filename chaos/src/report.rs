//! The report of a run: a summary table for people, JSON for machines, and the timeline
//! picture (see [`crate::svg`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::checker::Verdict;
use crate::schedule::{FaultKind, Schedule};
use crate::svg::{Band, Bucket, Phase, Timeline};
use crate::workload::{Ack, Op};

/// Anomalies quoted per invariant in the table.
const EXAMPLES: usize = 3;

/// A fault as it was carried out (applying and healing take time: a restarted node must be
/// ready).
#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    /// Its id in the schedule.
    pub id: usize,
    /// Its kind.
    pub kind: FaultKind,
    /// Its target.
    pub target: String,
    /// When it was applied (ms from the start of the run).
    pub from_ms: u64,
    /// When it was healed.
    pub to_ms: u64,
    /// Why applying or healing it failed, if it did.
    pub error: Option<String>,
}

/// How long the partitions of a faulted node took to move to others.
#[derive(Clone, Debug, Serialize)]
pub struct Takeover {
    /// The fault.
    pub kind: FaultKind,
    /// The node.
    pub node: String,
    /// From the fault to no partition owned by the node (ms).
    pub ms: u64,
}

/// What the suite put on the log itself.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Injections {
    /// Poison messages (each must be in the DLQ).
    pub poison: usize,
    /// Copies of real events under new message ids (each must be ignored).
    pub duplicates: usize,
}

/// Everything a run found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Servers and nodes.
    pub topology: (usize, usize),
    /// The schedule.
    pub schedule: Schedule,
    /// The faults as carried out.
    pub applied: Vec<Applied>,
    /// Operations by outcome.
    pub outcomes: BTreeMap<String, usize>,
    /// Takeovers measured.
    pub takeovers: Vec<Takeover>,
    /// Poison messages and duplicate copies the suite published.
    pub injected: Injections,
    /// The checker's verdict.
    pub verdict: Verdict,
    /// Phases of the run.
    pub phases: Vec<Phase>,
    /// Whether quiescence was reached before its bound.
    pub quiescent: bool,
    /// The whole run (ms).
    pub elapsed_ms: u64,
    /// The operations.
    #[serde(skip)]
    pub ops: Vec<Op>,
}

/// The `q` quantile of sorted `v` (0 when empty).
pub fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let last = v.len() - 1;
    let i = ((last as f64) * q.clamp(0.0, 1.0)).round() as usize;
    v.get(i.min(last)).copied().unwrap_or(0)
}

impl Report {
    /// True when every invariant held.
    pub fn passed(&self) -> bool {
        self.verdict.passed() && self.applied.iter().all(|a| a.error.is_none())
    }

    /// Takeover p50 and p99 (ms).
    pub fn takeover_percentiles(&self) -> (u64, u64) {
        let mut v: Vec<u64> = self.takeovers.iter().map(|t| t.ms).collect();
        v.sort_unstable();
        (quantile(&v, 0.5), quantile(&v, 0.99))
    }

    /// The timeline picture's data: one bucket per second of operations ended.
    pub fn timeline(&self) -> Timeline {
        let end = self.elapsed_ms.max(1000);
        let n = usize::try_from(end / 1000 + 1).unwrap_or(1);
        let mut lat: Vec<Vec<u64>> = vec![Vec::new(); n];
        for op in &self.ops {
            if let Some(e) = op.ended_ms {
                let i = usize::try_from(e / 1000).unwrap_or(0).min(n - 1);
                lat[i].push(e.saturating_sub(op.sent_ms));
            }
        }
        let buckets = lat
            .into_iter()
            .enumerate()
            .map(|(i, mut l)| {
                l.sort_unstable();
                Bucket {
                    at_ms: u64::try_from(i).unwrap_or(0) * 1000,
                    ops_per_s: l.len() as f64,
                    p50_ms: quantile(&l, 0.5) as f64,
                    p99_ms: quantile(&l, 0.99) as f64,
                }
            })
            .collect();
        let faults = self
            .applied
            .iter()
            .map(|a| Band {
                from_ms: a.from_ms,
                to_ms: a.to_ms.max(a.from_ms + 300),
                kind: a.kind.as_str().to_owned(),
                target: a.target.clone(),
            })
            .collect();
        Timeline {
            title: format!(
                "choreo chaos · seed {} · {} servers, {} nodes · {}",
                self.seed,
                self.topology.0,
                self.topology.1,
                if self.passed() { "PASS" } else { "FAIL" }
            ),
            buckets,
            faults,
            phases: self.phases.clone(),
        }
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let (servers, nodes) = self.topology;
        let _ = writeln!(
            s,
            "choreo chaos: seed {}, {servers} servers, {nodes} nodes, {:.0} s{}",
            self.seed,
            self.elapsed_ms as f64 / 1000.0,
            if self.quiescent {
                ""
            } else {
                " (quiescence bound reached)"
            }
        );
        let _ = writeln!(s, "\noperations");
        let total: usize = self.outcomes.values().sum();
        for (k, v) in &self.outcomes {
            let _ = writeln!(s, "  {k:<22} {v:>7}");
        }
        let _ = writeln!(s, "  {:<22} {total:>7}", "total");
        let _ = writeln!(s, "\nfaults");
        let mut by: BTreeMap<FaultKind, (usize, usize)> = BTreeMap::new();
        for a in &self.applied {
            let e = by.entry(a.kind).or_default();
            e.0 += 1;
            if a.error.is_some() {
                e.1 += 1;
            }
        }
        for (k, (n, failed)) in &by {
            let note = if *failed > 0 {
                format!("  ({failed} could not be carried out)")
            } else {
                String::new()
            };
            let _ = writeln!(s, "  {:<22} {n:>7}{note}", k.as_str());
        }
        let _ = writeln!(
            s,
            "  injected: {} poison messages, {} duplicate copies",
            self.injected.poison, self.injected.duplicates
        );
        let (p50, p99) = self.takeover_percentiles();
        let _ = writeln!(
            s,
            "  takeovers measured {:>10}   p50 {p50} ms, p99 {p99} ms",
            self.takeovers.len()
        );
        let (events, records, dlq) = self.verdict.sizes;
        let _ = writeln!(
            s,
            "\ninvariants (log: {events} events, changelog: {records} instances, DLQ: {dlq}; replayed {}{})",
            self.verdict.replayed.0,
            if self.verdict.replayed.1 > 0 {
                format!(
                    ", {} left out by the budget or a failed read",
                    self.verdict.replayed.1
                )
            } else {
                String::new()
            }
        );
        for (name, n) in &self.verdict.by_invariant {
            let mark = if *n == 0 { "ok" } else { "FAIL" };
            let _ = writeln!(s, "  {name:<22} {n:>7}  {mark}");
            for a in self
                .verdict
                .anomalies
                .iter()
                .filter(|a| &a.invariant == name)
                .take(EXAMPLES)
            {
                let _ = writeln!(s, "      {a}");
            }
        }
        let _ = writeln!(
            s,
            "\n{}",
            if self.passed() {
                "PASS: every invariant held".to_owned()
            } else {
                format!(
                    "FAIL: {} anomalies (reproduce with --seed {})",
                    self.verdict.anomalies.len(),
                    self.seed
                )
            }
        );
        s
    }
}

/// Operations by outcome, from the workload's view and the instances' final status.
pub fn outcomes(ops: &[Op], status: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for op in ops {
        let k = match (op.ack, status.get(&op.correlation)) {
            (_, Some(s)) => s.clone(),
            (Ack::Ok, None) => "acked, no instance".to_owned(),
            (Ack::Failed, None) => "publish failed".to_owned(),
            (Ack::Pending, None) => "publish unanswered".to_owned(),
        };
        *out.entry(k).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_small_and_empty_sets() {
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(quantile(&[7], 0.99), 7);
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 51);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
    }
}
