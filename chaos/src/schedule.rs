//! The fault schedule: a pure function of a seed and a plan, printed before a run so that a
//! failing run can be reproduced with `--seed`.
//!
//! Faults live in lanes; within a lane they never overlap, across lanes they may:
//! - process faults of nodes (kill, pause, restart, cut): one node at a time, so a majority of
//!   the cluster keeps making progress and every takeover is measured alone;
//! - server faults (kill, pause): one server at a time (a 3-server cluster keeps its quorum);
//! - link faults (latency, slow link) on one node's connections;
//! - log injections (duplicates, poison, clock skew) from the producer's side.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::rng::Rng;

/// What a fault does. `choreo chaos run --help` prints [`FaultKind::help`] for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL a node; start it again (same data dir) when the fault ends.
    KillNode,
    /// SIGSTOP a node past its lease, then SIGCONT: it wakes up fenced.
    PauseNode,
    /// SIGTERM a node (a graceful leave hands its partitions over), start it again later.
    RestartNode,
    /// Cut every connection between a node and the servers (the proxy closes them and refuses
    /// new ones) past the lease; restore it when the fault ends.
    Cut,
    /// SIGKILL a nats-server; restart it on the same store when the fault ends.
    KillServer,
    /// SIGSTOP a nats-server, SIGCONT when the fault ends.
    PauseServer,
    /// Add latency with jitter to every connection of a node.
    Latency,
    /// Limit every connection of a node to a few KiB/s.
    SlowLink,
    /// Republish copies of real events under new message ids (the server's duplicate window
    /// does not catch them; receivers must, by event id).
    Duplicate,
    /// Publish bad inputs (the shapes of issue 8): undecodable body, unknown type, missing
    /// header, subject mismatch. Each must reach the DLQ with its reason, and nothing else.
    Poison,
    /// Skew the producer's clock: trips started during the fault carry a `time` hours or days
    /// off. Nothing may depend on a producer's clock.
    ClockSkew,
}

impl FaultKind {
    /// Every kind, in lane order.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::KillNode,
        FaultKind::PauseNode,
        FaultKind::RestartNode,
        FaultKind::Cut,
        FaultKind::KillServer,
        FaultKind::PauseServer,
        FaultKind::Latency,
        FaultKind::SlowLink,
        FaultKind::Duplicate,
        FaultKind::Poison,
        FaultKind::ClockSkew,
    ];

    /// Its name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::KillNode => "kill-node",
            FaultKind::PauseNode => "pause-node",
            FaultKind::RestartNode => "restart-node",
            FaultKind::Cut => "cut",
            FaultKind::KillServer => "kill-server",
            FaultKind::PauseServer => "pause-server",
            FaultKind::Latency => "latency",
            FaultKind::SlowLink => "slow-link",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Poison => "poison",
            FaultKind::ClockSkew => "clock-skew",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// One line for `--help`.
    pub fn help(self) -> &'static str {
        match self {
            FaultKind::KillNode => "kill -9 a node, start it again on its data dir",
            FaultKind::PauseNode => "SIGSTOP a node past its lease, then SIGCONT (it wakes fenced)",
            FaultKind::RestartNode => "SIGTERM a node (graceful hand-over), start it again",
            FaultKind::Cut => "cut a node off every server (proxy) past its lease, then restore",
            FaultKind::KillServer => "kill -9 a nats-server, restart it on its store",
            FaultKind::PauseServer => "SIGSTOP a nats-server, then SIGCONT",
            FaultKind::Latency => "add latency and jitter to a node's connections",
            FaultKind::SlowLink => "limit a node's connections to a few KiB/s",
            FaultKind::Duplicate => "republish copies of real events under new message ids",
            FaultKind::Poison => "publish bad inputs; each must reach the DLQ with its reason",
            FaultKind::ClockSkew => "start trips whose ce-time is hours or days off",
        }
    }

    /// The lane it is scheduled in (faults of one lane never overlap).
    fn lane(self) -> usize {
        match self {
            FaultKind::KillNode
            | FaultKind::PauseNode
            | FaultKind::RestartNode
            | FaultKind::Cut => 0,
            FaultKind::KillServer | FaultKind::PauseServer => 1,
            FaultKind::Latency | FaultKind::SlowLink => 2,
            FaultKind::Duplicate | FaultKind::Poison | FaultKind::ClockSkew => 3,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a fault is applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "index")]
pub enum Target {
    /// Node `i` (its process, or all its connections).
    Node(usize),
    /// Server `i`.
    Server(usize),
    /// The log (injections from the producer's side).
    Log,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Node(i) => write!(f, "n{i}"),
            Target::Server(i) => write!(f, "s{i}"),
            Target::Log => f.write_str("log"),
        }
    }
}

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// Its position in the schedule.
    pub id: usize,
    /// When it starts, from the start of the fault phase.
    pub at: Duration,
    /// How long until it is healed.
    pub duration: Duration,
    /// What it does.
    pub kind: FaultKind,
    /// To what.
    pub target: Target,
    /// Its strength: latency ms, bytes per second, copies, poison messages of each shape, or
    /// the clock skew (see [`Fault::skew_secs`]: twice the seconds, odd when behind).
    pub param: u64,
}

impl Fault {
    /// The clock skew it applies, in seconds (positive: ahead).
    pub fn skew_secs(&self) -> i64 {
        let s = i64::try_from(self.param / 2).unwrap_or(i64::MAX);
        if self.param % 2 == 0 {
            s
        } else {
            -s
        }
    }
}

/// What to schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The seed.
    pub seed: u64,
    /// Length of the fault phase.
    pub window: Duration,
    /// Nodes in the topology.
    pub nodes: usize,
    /// Servers in the topology.
    pub servers: usize,
    /// Kinds to inject.
    pub kinds: Vec<FaultKind>,
    /// Faults of each kind (at least).
    pub per_kind: usize,
    /// The nodes' lease TTL: a pause or cut lasts longer, so that it costs the node its lease.
    pub lease_ttl: Duration,
}

/// The faults of one run, ordered by start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Schedule {
    /// The seed it came from.
    pub seed: u64,
    /// The faults.
    pub faults: Vec<Fault>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Schedule {
    /// The schedule of `plan`: the same plan always gives the same schedule.
    pub fn generate(plan: &Plan) -> Schedule {
        let mut rng = Rng::new(plan.seed);
        let ttl = ms(plan.lease_ttl).max(100);
        let window = ms(plan.window).max(1000);
        let mut lanes: [Vec<FaultKind>; 4] = Default::default();
        for k in &plan.kinds {
            let usable = match k.lane() {
                0 | 2 => plan.nodes > 0,
                1 => plan.servers > 0,
                _ => true,
            };
            if usable && !lanes[k.lane()].contains(k) {
                for _ in 0..plan.per_kind.max(1) {
                    lanes[k.lane()].push(*k);
                }
            }
        }
        let mut faults = Vec::new();
        for lane in &mut lanes {
            // Shuffle (Fisher–Yates) so that kinds interleave differently per seed.
            for i in (1..lane.len()).rev() {
                let j = rng.below(i + 1);
                lane.swap(i, j);
            }
            let n = u64::try_from(lane.len()).unwrap_or(1).max(1);
            let slot = window / n;
            for (i, kind) in lane.iter().enumerate() {
                let start = slot.saturating_mul(u64::try_from(i).unwrap_or(0));
                let at = start + rng.range(0, slot / 4);
                let room = (start + slot)
                    .saturating_sub(at)
                    .saturating_sub(slot / 8)
                    .max(200);
                let (want, param) = shape(*kind, ttl, &mut rng);
                let target = match kind.lane() {
                    0 | 2 => Target::Node(rng.below(plan.nodes)),
                    1 => Target::Server(rng.below(plan.servers)),
                    _ => Target::Log,
                };
                faults.push(Fault {
                    id: 0,
                    at: Duration::from_millis(at),
                    duration: Duration::from_millis(want.min(room)),
                    kind: *kind,
                    target,
                    param,
                });
            }
        }
        faults.sort_by_key(|f| (f.at, f.kind));
        for (i, f) in faults.iter_mut().enumerate() {
            f.id = i;
        }
        Schedule {
            seed: plan.seed,
            faults,
        }
    }

    /// How many faults of each kind.
    pub fn counts(&self) -> Vec<(FaultKind, usize)> {
        FaultKind::ALL
            .into_iter()
            .map(|k| (k, self.faults.iter().filter(|f| f.kind == k).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Duration (ms) and strength of a fault of `kind`.
fn shape(kind: FaultKind, ttl: u64, rng: &mut Rng) -> (u64, u64) {
    match kind {
        FaultKind::KillNode => (rng.range(2000, 5000), 0),
        FaultKind::PauseNode | FaultKind::Cut => (ttl * 2 + rng.range(0, ttl), 0),
        FaultKind::RestartNode => (rng.range(500, 2000), 0),
        FaultKind::KillServer | FaultKind::PauseServer => (rng.range(2000, 5000), 0),
        FaultKind::Latency => (rng.range(3000, 7000), rng.range(30, 250)),
        FaultKind::SlowLink => (rng.range(3000, 7000), rng.range(16, 64) * 1024),
        FaultKind::Duplicate => (1000, rng.range(5, 25)),
        FaultKind::Poison => (1000, rng.range(1, 2)),
        FaultKind::ClockSkew => {
            let secs = rng.range(3600, 3 * 86_400);
            (rng.range(3000, 6000), secs * 2 + rng.range(0, 1))
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schedule (seed {}): {} faults",
            self.seed,
            self.faults.len()
        )?;
        for x in &self.faults {
            let what = match x.kind {
                FaultKind::Latency => format!("{} ms ± {} ms", x.param, x.param / 2),
                FaultKind::SlowLink => format!("{} KiB/s", x.param / 1024),
                FaultKind::Duplicate => format!("{} copies", x.param),
                FaultKind::Poison => format!("{} of each shape", x.param),
                FaultKind::ClockSkew => format!("{:+} s", x.skew_secs()),
                _ => String::new(),
            };
            writeln!(
                f,
                "  #{:<3} +{:>6.1}s  for {:>5.1}s  {:<13} {:<4} {what}",
                x.id,
                x.at.as_secs_f64(),
                x.duration.as_secs_f64(),
                x.kind.as_str(),
                x.target.to_string(),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plan(seed: u64) -> Plan {
        Plan {
            seed,
            window: Duration::from_secs(60),
            nodes: 3,
            servers: 3,
            kinds: FaultKind::ALL.to_vec(),
            per_kind: 1,
            lease_ttl: Duration::from_secs(2),
        }
    }

    #[test]
    fn the_same_seed_prints_the_same_schedule_and_another_seed_another() {
        let a = Schedule::generate(&plan(42)).to_string();
        assert_eq!(a, Schedule::generate(&plan(42)).to_string());
        assert_ne!(a, Schedule::generate(&plan(43)).to_string());
        assert!(a.starts_with("schedule (seed 42): 11 faults"), "{a}");
    }

    #[test]
    fn pauses_and_cuts_outlast_the_lease() {
        for seed in 0..50 {
            for f in Schedule::generate(&plan(seed)).faults {
                if matches!(f.kind, FaultKind::PauseNode | FaultKind::Cut) {
                    assert!(f.duration > Duration::from_secs(2), "{f:?}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn every_kind_once_in_the_window_and_lanes_never_overlap(
            seed in any::<u64>(), per_kind in 1usize..4, nodes in 1usize..6, servers in 1usize..4
        ) {
            let p = Plan { per_kind, nodes, servers, ..plan(seed) };
            let s = Schedule::generate(&p);
            for k in FaultKind::ALL {
                prop_assert_eq!(s.faults.iter().filter(|f| f.kind == k).count(), per_kind, "{}", k);
            }
            for f in &s.faults {
                prop_assert!(f.at + f.duration <= p.window, "{:?} past the window", f);
                match f.target {
                    Target::Node(i) => prop_assert!(i < nodes),
                    Target::Server(i) => prop_assert!(i < servers),
                    Target::Log => {}
                }
            }
            for a in &s.faults {
                for b in &s.faults {
                    if a.id < b.id && a.kind.lane() == b.kind.lane() {
                        let apart = a.at + a.duration <= b.at || b.at + b.duration <= a.at;
                        prop_assert!(apart, "{:?} overlaps {:?}", a, b);
                    }
                }
            }
        }
    }
}
