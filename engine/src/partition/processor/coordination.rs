//! The processor's side of coordination correctness: an in-memory index of its unended
//! instances by correlation, the deadlock check after each commit (and again for correlations
//! in doubt), and the stall watchdog. What they find goes on the log as events that this
//! processor then applies like any input (see `saga::operator::coordinate`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use choreo_schemas::{Event, EventId};
use tracing::{debug, error, warn};

use super::Processor;
use crate::coordination::deadlock::{find_deadlocks, InstanceView};
use crate::coordination::{DeadlockDetected, Topology, VICTIM_RULE};
use crate::model::InstanceRecord;

/// Every this many ticks (of 250 ms), the stall watchdog runs.
const STALL_EVERY: u32 = 4;
/// A suspect is checked against the log (what is in flight) once it has been one this long
/// without a commit of its correlation: a wait for an answer that comes sooner costs no I/O.
/// Each check that cannot decide doubles the wait, up to [`SUSPECT_MAX`].
const SUSPECT_AGE: Duration = Duration::from_millis(200);
const SUSPECT_MAX: Duration = Duration::from_secs(5);

/// When a suspect is checked next.
#[derive(Clone, Copy, Debug)]
struct Suspect {
    next: Instant,
    backoff: Duration,
}

/// What publishing a report did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reported {
    /// Published now.
    New,
    /// This owner published it before (it is not applied yet).
    Again,
    /// Publishing failed.
    Failed,
}

type Key = (String, String);

/// The processor's index of its unended instances.
#[derive(Debug, Default)]
pub(super) struct Waits {
    views: HashMap<Key, (String, InstanceView)>,
    by_corr: HashMap<String, BTreeSet<Key>>,
    /// Correlations to check again (an input was or may be in flight, or the owner just took
    /// over), with when to.
    suspects: BTreeMap<String, Suspect>,
    /// How far each reactor's consumer has got, read at most once per tick.
    pub(super) floors: Option<(Instant, super::in_flight::Floors)>,
    /// Coordination events this owner published and has not applied yet (not published
    /// again meanwhile).
    reported: HashSet<EventId>,
    /// Correlations with a deadlock report not applied yet: not checked again until it is.
    pub(super) unapplied: HashSet<String>,
    /// Waits (saga, instance, since) with a stall report not applied yet.
    pub(super) stalls_unapplied: HashSet<(String, String, u64)>,
    /// What each correlation's last commit published (stream sequence, type): in flight until
    /// the reactors consuming them are past it.
    pub(super) emitted: HashMap<String, Vec<(u64, String)>>,
    /// The index could not be built (an unreadable partition): nothing is decided.
    disabled: bool,
    /// The topology version the suspects were last checked against.
    seen_version: u64,
    ticks: u32,
}

impl Waits {
    /// Index one record as committed; whether its correlation has a waiting instance now.
    fn update(&mut self, r: &InstanceRecord) {
        let key = (r.saga.clone(), r.instance.clone());
        // A faulted instance stays: an operator may run it again.
        if r.status.is_terminal() && r.status != crate::model::SagaStatus::Faulted {
            if self.views.remove(&key).is_some() {
                if let Some(set) = self.by_corr.get_mut(&r.correlation) {
                    set.remove(&key);
                    if set.is_empty() {
                        self.by_corr.remove(&r.correlation);
                    }
                }
            }
            return;
        }
        self.by_corr
            .entry(r.correlation.clone())
            .or_default()
            .insert(key.clone());
        self.views
            .insert(key, (r.correlation.clone(), InstanceView::of(r)));
    }

    fn has_waiting(&self, corr: &str) -> bool {
        self.by_corr.get(corr).is_some_and(|keys| {
            keys.iter().any(|k| {
                self.views.get(k).is_some_and(|(_, v)| {
                    v.status == crate::model::SagaStatus::Running
                        && !v.timers
                        && !v.waits.is_empty()
                })
            })
        })
    }

    /// Make every correlation with a waiting instance a suspect, due now.
    fn suspect_all_waiting(&mut self) {
        let waiting: Vec<String> = self
            .by_corr
            .keys()
            .filter(|c| self.has_waiting(c))
            .cloned()
            .collect();
        let now = Instant::now();
        for c in waiting {
            let s = self.suspects.entry(c).or_insert(Suspect {
                next: now,
                backoff: SUSPECT_AGE,
            });
            s.next = now;
        }
    }

    /// Every indexed instance with its correlation.
    pub(super) fn views(&self) -> impl Iterator<Item = (&Key, &(String, InstanceView))> {
        self.views.iter()
    }

    fn views_of(&self, corr: &str) -> Vec<InstanceView> {
        self.by_corr
            .get(corr)
            .into_iter()
            .flatten()
            .filter_map(|k| self.views.get(k).map(|(_, v)| v.clone()))
            .collect()
    }
}

impl Processor {
    /// After a takeover: index what was restored, and check every correlation that waits.
    pub(super) fn index_restored(&mut self) {
        if self.env.topology.is_none() {
            return;
        }
        self.waits = Waits::default();
        let records = match self.env.store.list_partition(self.partition) {
            Ok(r) => r,
            Err(e) => {
                warn!(partition = self.partition, error = %e, "cannot index the partition's waits: no deadlock or stall is checked under this ownership");
                self.waits.disabled = true;
                return;
            }
        };
        for r in &records {
            self.waits.update(r);
        }
        self.waits.suspect_all_waiting();
    }

    fn topology(&self) -> Option<(Arc<Topology>, u64, bool)> {
        let view = self.env.topology.as_ref()?;
        let v = view.read().unwrap_or_else(|p| p.into_inner());
        Some((Arc::clone(&v.topology), v.version, v.loaded))
    }

    /// After a commit (its events are on the log): index its records and check the
    /// correlations it touched that have a waiting instance. `outbox` is what the commit
    /// published (`acks`: where): those events, or what their consumers make of them, are
    /// still in flight.
    pub(super) async fn after_commit(
        &mut self,
        records: &[InstanceRecord],
        outbox: &[Event],
        acks: &[crate::bus::Published],
    ) {
        if self.env.topology.is_none() || self.waits.disabled {
            return;
        }
        let mut touched = BTreeSet::new();
        for r in records {
            self.waits.update(r);
            touched.insert(r.correlation.clone());
        }
        for corr in touched {
            if !self.waits.has_waiting(&corr) {
                self.waits.suspects.remove(&corr);
                self.waits.emitted.remove(&corr);
                continue;
            }
            let sent: Vec<(u64, String)> = outbox
                .iter()
                .zip(acks)
                .filter(|(e, _)| e.correlation.as_str() == corr)
                .map(|(e, a)| (a.stream_sequence, e.ty.to_string()))
                .collect();
            let fresh: BTreeSet<String> = sent.iter().map(|(_, t)| t.clone()).collect();
            if !sent.is_empty() {
                self.waits.emitted.insert(corr.clone(), sent);
            }
            self.check(&corr, Some(&fresh)).await;
        }
    }

    /// The processor applied a coordination event (whatever it did): this owner may report on
    /// its correlation again.
    pub(super) fn report_applied(&mut self, event: &Event) {
        self.waits.reported.remove(&event.id);
        match crate::coordination::Coordination::of(event) {
            Some(crate::coordination::Coordination::Deadlock(_)) => {
                self.waits.unapplied.remove(event.correlation.as_str());
            }
            Some(crate::coordination::Coordination::Stall(s)) => {
                self.waits
                    .stalls_unapplied
                    .remove(&(s.saga, s.instance, s.since_seq));
            }
            None => {}
        }
    }

    /// Every 250 ms: check the correlations in doubt again, and (every second) run the stall
    /// watchdog.
    pub(super) async fn coordination_tick(&mut self) {
        let Some((topo, version, loaded)) = self.topology() else {
            return;
        };
        if self.waits.disabled || !loaded {
            return;
        }
        if version != self.waits.seen_version {
            // Producers came or went: every waiting correlation may read differently now.
            self.waits.seen_version = version;
            self.waits.suspect_all_waiting();
        }
        let now = Instant::now();
        let suspects: Vec<String> = self
            .waits
            .suspects
            .iter()
            .filter(|(_, s)| s.next <= now)
            .map(|(c, _)| c.clone())
            .collect();
        for corr in suspects {
            self.check(&corr, None).await;
        }
        self.waits.ticks = self.waits.ticks.wrapping_add(1);
        if self.waits.ticks % STALL_EVERY == 0 {
            self.report_stalls(&topo).await;
        }
    }

    /// Whether the watchdog's tick has anything to do.
    pub(super) fn coordination_on(&self) -> bool {
        self.env.topology.is_some()
    }

    /// Keep `corr` suspect: after a commit (`fresh`), check it against the log in
    /// [`SUSPECT_AGE`]; after a check that could not decide, in twice the last wait.
    fn suspect(&mut self, corr: &str, fresh: bool) {
        let now = Instant::now();
        let s = self
            .waits
            .suspects
            .entry(corr.to_owned())
            .or_insert(Suspect {
                next: now,
                backoff: SUSPECT_AGE,
            });
        if fresh {
            s.backoff = SUSPECT_AGE;
        } else {
            s.backoff = (s.backoff * 2).min(SUSPECT_MAX);
        }
        s.next = now + s.backoff;
    }

    /// Check one correlation: a deadlock with nothing in flight is reported (its victim is
    /// failed when the report is applied); one with an input in flight stays suspect. After a
    /// commit, `fresh` holds the types it published: if they could break the cycle, the
    /// correlation is only suspect for now (the usual case: an instance awaiting the answer to
    /// the command it just sent), and the log is read only if it is still one later.
    async fn check(&mut self, corr: &str, fresh: Option<&BTreeSet<String>>) {
        let Some((topo, _, loaded)) = self.topology() else {
            return;
        };
        if !loaded || self.waits.unapplied.contains(corr) {
            // Not current yet, or a report of this correlation is still to be applied.
            self.suspect(corr, true);
            return;
        }
        self.env.coordination.checks.fetch_add(1, Ordering::Relaxed);
        let mut views = self.waits.views_of(corr);
        // Ended instances say their saga already has an instance here.
        for s in self.env.sagas.iter() {
            if views.iter().any(|v| v.saga == s.name().as_str()) {
                continue;
            }
            if let Ok(Some(r)) = self
                .env
                .store
                .get_in(self.partition, s.name().as_str(), corr)
            {
                views.push(InstanceView::of(&r));
            }
        }
        if find_deadlocks(&views, &topo, &BTreeSet::new()).is_empty() {
            self.waits.suspects.remove(corr);
            return;
        }
        if let Some(fresh) = fresh.filter(|f| !f.is_empty()) {
            if find_deadlocks(&views, &topo, fresh).is_empty() {
                self.suspect(corr, true);
                return;
            }
        }
        // What the correlation's last commit sent and a reactor has not consumed yet: known
        // without reading the log (only the reactors' positions). What the reactors made of
        // what they did consume may still wait in this processor's backlog.
        match self.sent_in_flight(corr, &topo).await {
            Ok((pending, consumed)) => {
                let mut maybe = pending;
                if self.backlog > 0 {
                    maybe.extend(topo.closure(consumed));
                }
                if !maybe.is_empty() && find_deadlocks(&views, &topo, &maybe).is_empty() {
                    self.suspect(corr, fresh.is_some());
                    return;
                }
            }
            Err(e) => {
                debug!(correlation = corr, error = %e, "cannot read the reactors' positions; checking later");
                self.suspect(corr, fresh.is_some());
                return;
            }
        }
        self.env
            .coordination
            .log_reads
            .fetch_add(1, Ordering::Relaxed);
        let in_flight = match self.in_flight(corr, &topo).await {
            Ok(Some(types)) => types,
            Ok(None) => {
                debug!(
                    correlation = corr,
                    "too much of the correlation in flight; checking later"
                );
                self.suspect(corr, fresh.is_some());
                return;
            }
            Err(e) => {
                debug!(correlation = corr, error = %e, "cannot tell what is in flight; checking later");
                self.suspect(corr, fresh.is_some());
                return;
            }
        };
        let cycles = find_deadlocks(&views, &topo, &in_flight);
        if cycles.is_empty() {
            // Something in flight may break it: look again when it is consumed.
            debug!(
                correlation = corr,
                ?in_flight,
                "a cycle, but an input that may break it is in flight"
            );
            self.suspect(corr, fresh.is_some());
            return;
        }
        self.waits.suspects.remove(corr);
        for cycle in cycles {
            let Some(victim) = cycle.victim().cloned() else {
                continue;
            };
            let Ok(Some(record)) =
                self.env
                    .store
                    .get_in(self.partition, &victim.saga, &victim.instance)
            else {
                continue;
            };
            let detected = DeadlockDetected {
                victim,
                cycle,
                rule: VICTIM_RULE.to_owned(),
                detected_by: self.env.node.to_string(),
            };
            let Some(event) = detected.event(&record, self.env.settings.max_depth) else {
                continue;
            };
            let reported = self.report(event).await;
            if reported != Reported::Failed {
                self.waits.unapplied.insert(corr.to_owned());
            }
            if reported == Reported::New {
                self.env
                    .coordination
                    .deadlocks
                    .fetch_add(1, Ordering::Relaxed);
                error!(
                    partition = self.partition,
                    correlation = corr,
                    victim = %format!("{}/{}", detected.victim.saga, detected.victim.instance),
                    cycle = %detected.cycle.describe(),
                    "deadlock detected; failing the victim (youngest wait)"
                );
            } else if reported == Reported::Failed {
                self.suspect(corr, false);
            }
        }
    }

    /// Publish a coordination event once per owner (its derived id makes a re-detection after
    /// a failover a duplicate JetStream drops).
    pub(super) async fn report(&mut self, event: Event) -> Reported {
        if self.waits.reported.contains(&event.id) {
            return Reported::Again;
        }
        match self.env.bus.publish_all(std::slice::from_ref(&event)).await {
            Ok(_) => {
                self.waits.reported.insert(event.id);
                Reported::New
            }
            Err(e) => {
                warn!(partition = self.partition, error = %e, "cannot publish a coordination event; retrying later");
                Reported::Failed
            }
        }
    }
}
