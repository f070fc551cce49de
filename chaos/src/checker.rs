//! The checker: invariants over what the run wrote — the log, the changelog and the DLQ (and
//! whatever a scenario's extra invariants read, such as the services' ledger) — never the
//! engine's memory. Each anomaly names its invariant and, where it has one, its correlation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use choreo::{
    Bus, Changelog, ChangelogEntry, DeadLetter, EventType, InstanceRecord, PartitionHead,
    SagaStatus, StoredEvent, COMMAND_DEAD_LETTERED, COMMAND_EXPIRED, SAGA_COMPENSATED,
    SAGA_COMPENSATING, SAGA_TIMED_OUT,
};
use futures::future::BoxFuture;
use serde::Serialize;

use crate::error::ChaosError;
use crate::nemesis::Injected;
use crate::workload::{Ack, Op};

/// The invariants, in the order the report lists them.
pub const INVARIANTS: [(&str, &str); 9] = [
    ("stuck", "every started saga reached a terminal state after the heal"),
    ("leaked", "no confirmed effect of a saga that did not complete without its compensation after it; nothing of a completed saga undone"),
    ("duplicates", "no event id twice on the log; no decided event or answer twice per correlation"),
    ("order", "the compensations sent when compensation began are in reverse order of their steps (later undos of late answers excepted)"),
    ("lost", "every start event JetStream acked is on the log and has an instance"),
    ("fencing", "one owner per partition and epoch; epochs never go down as commits go up; nothing past a partition's head"),
    ("replay", "every ended instance replays identical from the log"),
    ("dlq", "only the injected poison is in the DLQ, each with its expected reason"),
    ("crashed", "no node exited unless the suite stopped it"),
];

/// One violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// The invariant (one of [`INVARIANTS`], or an extra invariant's name).
    pub invariant: String,
    /// The correlation concerned, when there is one.
    pub correlation: Option<String>,
    /// What was seen.
    pub detail: String,
}

impl Anomaly {
    /// An anomaly of `invariant`.
    pub fn new(invariant: &str, correlation: Option<&str>, detail: impl Into<String>) -> Self {
        Self {
            invariant: invariant.to_owned(),
            correlation: correlation.map(str::to_owned),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.correlation {
            Some(c) => write!(f, "[{}] {c}: {}", self.invariant, self.detail),
            None => write!(f, "[{}] {}", self.invariant, self.detail),
        }
    }
}

/// A step's four event types: the command, its confirmation, its compensation and the
/// compensation's confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectTypes {
    /// The command (`flight.book.v1`).
    pub request: EventType,
    /// The answer saying it took effect (`flight.booked.v1`).
    pub confirmed: EventType,
    /// The compensation (`flight.cancel.v1`).
    pub compensate: EventType,
    /// The answer saying it was undone (`flight.cancelled.v1`).
    pub compensated: EventType,
}

/// What the checker reads, once, after quiescence.
pub struct LogView {
    /// A bus connected directly to the servers.
    pub bus: Bus,
    /// Every event of the log, in order.
    pub events: Vec<StoredEvent>,
    /// The latest record of every instance.
    pub records: Vec<InstanceRecord>,
    /// The latest head of every partition.
    pub heads: Vec<ChangelogEntry<PartitionHead>>,
    /// Heads seen while the run went on, in stream order (the changelog keeps only the latest
    /// per partition; a run follows the heads to keep the rest). Empty when nobody followed.
    pub head_history: Vec<ChangelogEntry<PartitionHead>>,
    /// The DLQ.
    pub dead_letters: Vec<DeadLetter>,
    /// The workload's operations.
    pub ops: Vec<Op>,
    /// What the suite injected.
    pub injected: Injected,
}

impl LogView {
    /// Read the log, the changelog and the DLQ.
    pub async fn read(bus: &Bus, ops: Vec<Op>, injected: Injected) -> Result<Self, ChaosError> {
        let events = bus.read_events(&bus.subjects().all_events()).await?;
        let log = Changelog::new(bus);
        let records = log.list(None, None).await?;
        let heads = log.heads().await?;
        let dead_letters = bus.dead_letters().await?;
        Ok(Self {
            bus: bus.clone(),
            events,
            records,
            heads,
            head_history: Vec::new(),
            dead_letters,
            ops,
            injected,
        })
    }

    fn injected_seq(&self, seq: u64) -> bool {
        self.injected.duplicates.contains_key(&seq)
            || self.injected.poison.iter().any(|p| p.sequence == seq)
    }
}

/// An invariant of a scenario's own, over what was written.
pub trait Invariant: Send + Sync {
    /// Its name in the report.
    fn name(&self) -> &str;
    /// What it asserts (for `--help` and the report).
    fn describe(&self) -> &str;
    /// Its anomalies.
    fn check<'a>(&'a self, view: &'a LogView) -> BoxFuture<'a, Result<Vec<Anomaly>, ChaosError>>;
}

/// Replays an instance from the log: `Ok(None)` when identical, else what differs.
pub type Replayer = dyn for<'a> Fn(&'a Bus, &'a InstanceRecord) -> BoxFuture<'a, Result<Option<String>, ChaosError>>
    + Send
    + Sync;

/// The built-in invariants' knowledge of the saga under test.
pub struct Expectations {
    /// The saga the workload starts.
    pub saga: String,
    /// Its steps' event types.
    pub effects: Vec<EffectTypes>,
    /// Types that may legitimately repeat in one correlation (compensations re-sent when a late
    /// confirmation comes, and their answers).
    pub repeatable: Vec<EventType>,
    /// How to replay an instance (none: the replay invariant is skipped and says so).
    pub replay: Option<Box<Replayer>>,
    /// Bound on the time replays may take (the rest are counted as not replayed).
    pub replay_budget: Duration,
}

/// What the check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    /// Every anomaly.
    pub anomalies: Vec<Anomaly>,
    /// Instances replayed, and instances the budget left out.
    pub replayed: (usize, usize),
    /// Events on the log, records in the changelog, dead letters.
    pub sizes: (usize, usize, usize),
    /// Invariants checked, with their anomaly counts.
    pub by_invariant: Vec<(String, usize)>,
}

impl Verdict {
    /// True when no invariant was violated.
    pub fn passed(&self) -> bool {
        self.anomalies.is_empty()
    }
}

/// Check the built-in invariants, then `extra`.
pub async fn check(
    view: &LogView,
    exp: &Expectations,
    extra: &[Box<dyn Invariant>],
    crashes: &[String],
) -> Result<Verdict, ChaosError> {
    let mut a = Vec::new();
    stuck(view, &mut a);
    lost(view, exp, &mut a);
    duplicates(view, exp, &mut a);
    effects(view, exp, &mut a);
    crate::fencing::fencing(view, &mut a);
    dlq(view, &mut a);
    for c in crashes {
        a.push(Anomaly::new("crashed", None, c.clone()));
    }
    let replayed = replay(view, exp, &mut a).await?;
    let mut names: Vec<String> = INVARIANTS.iter().map(|(n, _)| (*n).to_owned()).collect();
    for inv in extra {
        a.extend(inv.check(view).await?);
        names.push(inv.name().to_owned());
    }
    let by_invariant = names
        .into_iter()
        .map(|n| {
            let k = a.iter().filter(|x| x.invariant == n).count();
            (n, k)
        })
        .collect();
    Ok(Verdict {
        anomalies: a,
        replayed,
        sizes: (
            view.events.len(),
            view.records.len(),
            view.dead_letters.len(),
        ),
        by_invariant,
    })
}

fn stuck(view: &LogView, a: &mut Vec<Anomaly>) {
    for r in &view.records {
        if !r.status.is_terminal() {
            let waits: Vec<String> = r.waits.iter().map(|w| format!("{:?}", w.types)).collect();
            a.push(Anomaly::new(
                "stuck",
                Some(&r.correlation),
                format!(
                    "{} {} is {} (last event {}, waits {waits:?}, {} effects pending, {} undo pending)",
                    r.saga,
                    r.instance,
                    r.status,
                    r.last_event,
                    r.effects.len(),
                    r.undoing.len()
                ),
            ));
        }
    }
}

fn lost(view: &LogView, exp: &Expectations, a: &mut Vec<Anomaly>) {
    let ids: BTreeSet<String> = view
        .events
        .iter()
        .filter_map(|s| s.event.as_ref().ok().map(|e| e.id.to_string()))
        .collect();
    let handled: BTreeSet<&str> = view
        .records
        .iter()
        .filter(|r| r.saga == exp.saga)
        .map(|r| r.correlation.as_str())
        .collect();
    for op in view.ops.iter().filter(|o| o.ack == Ack::Ok) {
        if !ids.contains(&op.root) {
            a.push(Anomaly::new(
                "lost",
                Some(&op.correlation),
                format!("start event {} was acked but is not on the log", op.root),
            ));
        } else if !handled.contains(op.correlation.as_str()) {
            a.push(Anomaly::new(
                "lost",
                Some(&op.correlation),
                format!(
                    "start event {} is on the log but no {} instance has it",
                    op.root, exp.saga
                ),
            ));
        }
    }
}

fn duplicates(view: &LogView, exp: &Expectations, a: &mut Vec<Anomaly>) {
    let mut ids: HashMap<String, u64> = HashMap::new();
    let mut per: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    let engine_repeats = [
        SAGA_COMPENSATING,
        SAGA_COMPENSATED,
        COMMAND_EXPIRED,
        COMMAND_DEAD_LETTERED,
    ];
    for s in &view.events {
        if view.injected_seq(s.sequence) {
            continue;
        }
        let Ok(e) = &s.event else { continue };
        if let Some(first) = ids.insert(e.id.to_string(), s.sequence) {
            a.push(Anomaly::new(
                "duplicates",
                Some(e.correlation.as_str()),
                format!(
                    "event {} ({}) twice on the log: #{first} and #{}",
                    e.id, e.ty, s.sequence
                ),
            ));
        }
        let ty = e.ty.as_str();
        if engine_repeats.contains(&ty) || exp.repeatable.iter().any(|r| r.as_str() == ty) {
            continue;
        }
        // A timer fires once per name.
        let mut key = ty.to_owned();
        if ty == SAGA_TIMED_OUT {
            if let Ok(l) = e.decode_as::<choreo::Lifecycle>() {
                key = format!("{key}/{}", l.timer.unwrap_or_default());
            }
        }
        per.entry((e.correlation.to_string(), key))
            .or_default()
            .push(s.sequence);
    }
    for ((corr, ty), seqs) in per {
        if seqs.len() > 1 {
            a.push(Anomaly::new(
                "duplicates",
                Some(&corr),
                format!("{ty} {} times (#{seqs:?})", seqs.len()),
            ));
        }
    }
}

/// `leaked` and `order`, from the log's order of commands and answers per correlation.
fn effects(view: &LogView, exp: &Expectations, a: &mut Vec<Anomaly>) {
    let status: HashMap<&str, SagaStatus> = view
        .records
        .iter()
        .filter(|r| r.saga == exp.saga)
        .map(|r| (r.correlation.as_str(), r.status))
        .collect();
    let mut by_corr: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    // Which type each event id has, and what caused each event.
    let mut type_of: HashMap<String, String> = HashMap::new();
    let mut cause_of: HashMap<u64, String> = HashMap::new();
    for s in &view.events {
        if view.injected_seq(s.sequence) {
            continue;
        }
        if let Ok(e) = &s.event {
            by_corr
                .entry(e.correlation.to_string())
                .or_default()
                .push((s.sequence, e.ty.to_string()));
            type_of.insert(e.id.to_string(), e.ty.to_string());
            cause_of.insert(s.sequence, e.causation.to_string());
        }
    }
    for (corr, events) in &by_corr {
        let Some(st) = status.get(corr.as_str()).copied() else {
            continue;
        };
        let last = |ty: &EventType| {
            events
                .iter()
                .filter(|(_, t)| t == ty.as_str())
                .map(|(s, _)| *s)
                .max()
        };
        let first = |ty: &EventType| {
            events
                .iter()
                .find(|(_, t)| t == ty.as_str())
                .map(|(s, _)| *s)
        };
        for fx in &exp.effects {
            let confirmed = last(&fx.confirmed);
            let undone = last(&fx.compensated);
            if st == SagaStatus::Completed {
                if let Some(u) = first(&fx.compensate) {
                    a.push(Anomaly::new(
                        "leaked",
                        Some(corr),
                        format!("completed, yet {} was sent (#{u})", fx.compensate),
                    ));
                }
            } else if let Some(c) = confirmed {
                if undone.is_none_or(|u| u < c) {
                    a.push(Anomaly::new(
                        "leaked",
                        Some(corr),
                        format!(
                            "{}: {} at #{c} has no {} after it",
                            st, fx.confirmed, fx.compensated
                        ),
                    ));
                }
            }
        }
        // Order: the compensations the saga sent when it began compensating (those sharing
        // the first compensation's cause: the failing input) are, by step, the reverse of the
        // same steps' requests. A compensation with another cause undoes an effect the saga
        // learned of, or gave up waiting for, later (a late confirmation; an unknown outcome
        // past its grace), whatever the order: `leaked` checks that it was undone.
        let firsts: Vec<(usize, u64)> = exp
            .effects
            .iter()
            .enumerate()
            .filter_map(|(i, fx)| first(&fx.compensate).map(|c| (i, c)))
            .collect();
        let opening_cause = firsts
            .iter()
            .map(|(_, c)| *c)
            .min()
            .and_then(|c| cause_of.get(&c));
        let mut asked: Vec<(u64, usize)> = Vec::new();
        let mut undo: Vec<(u64, usize)> = Vec::new();
        for (i, c) in &firsts {
            let Some(fx) = exp.effects.get(*i) else {
                continue;
            };
            let same_cause = opening_cause.is_some_and(|oc| cause_of.get(c) == Some(oc));
            if let (true, Some(r)) = (same_cause, first(&fx.request)) {
                asked.push((r, *i));
                undo.push((*c, *i));
            }
        }
        asked.sort_unstable();
        undo.sort_unstable();
        let forward: Vec<usize> = asked.iter().map(|(_, i)| *i).collect();
        let mut backward: Vec<usize> = undo.iter().map(|(_, i)| *i).collect();
        backward.reverse();
        if forward != backward {
            let name = |v: &[usize]| -> Vec<String> {
                v.iter()
                    .filter_map(|i| exp.effects.get(*i))
                    .map(|f| f.compensate.to_string())
                    .collect()
            };
            let mut sent = backward.clone();
            sent.reverse();
            a.push(Anomaly::new(
                "order",
                Some(corr),
                format!(
                    "compensations sent as {:?}; the steps ran as {:?}; the log: {}",
                    name(&sent),
                    name(&forward),
                    events
                        .iter()
                        .map(|(s, t)| format!("{t}#{s}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            ));
        }
    }
}

fn dlq(view: &LogView, a: &mut Vec<Anomaly>) {
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    for d in &view.dead_letters {
        match view
            .injected
            .poison
            .iter()
            .find(|p| p.sequence == d.original_sequence)
        {
            Some(p) if p.reason == d.reason => {
                seen.insert(p.sequence);
            }
            Some(p) => a.push(Anomaly::new(
                "dlq",
                None,
                format!(
                    "poison #{} ({}) dead-lettered by {} as {}, expected {}",
                    p.sequence, p.shape, d.actor, d.reason, p.reason
                ),
            )),
            None => {
                let corr = d.event.as_ref().ok().map(|e| e.correlation.to_string());
                a.push(Anomaly::new(
                    "dlq",
                    corr.as_deref(),
                    format!(
                        "not injected: #{} dead-lettered by {}: {} {}",
                        d.original_sequence, d.actor, d.reason, d.detail
                    ),
                ));
            }
        }
    }
    for p in &view.injected.poison {
        if !seen.contains(&p.sequence) {
            a.push(Anomaly::new(
                "dlq",
                None,
                format!(
                    "poison #{} ({}) is not in the DLQ with reason {}",
                    p.sequence, p.shape, p.reason
                ),
            ));
        }
    }
}

async fn replay(
    view: &LogView,
    exp: &Expectations,
    a: &mut Vec<Anomaly>,
) -> Result<(usize, usize), ChaosError> {
    let Some(replayer) = &exp.replay else {
        return Ok((0, 0));
    };
    let started = Instant::now();
    let (mut done, mut left) = (0, 0);
    for r in view
        .records
        .iter()
        .filter(|r| r.saga == exp.saga && r.status.is_terminal())
    {
        if started.elapsed() > exp.replay_budget {
            left += 1;
            continue;
        }
        match replayer(&view.bus, r).await {
            Ok(None) => {}
            Ok(Some(diff)) => a.push(Anomaly::new("replay", Some(&r.correlation), diff)),
            // Reading the history failed (the checker's own reads, not the system under
            // test): counted with those left out, not as a divergence.
            Err(_) => {
                left += 1;
                continue;
            }
        }
        done += 1;
    }
    Ok((done, left))
}
