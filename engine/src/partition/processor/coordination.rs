//! The processor's side of coordination correctness: an in-memory index of its unended
//! instances by correlation, the deadlock check after each commit (and again for correlations
//! in doubt), and the stall watchdog. What they find goes on the log as events that this
//! processor then applies like any input (see `saga::operator::coordinate`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use choreo_schemas::{CorrelationId, Event, EventId};
use tracing::{debug, error, warn};

use super::super::timers::now_ms;
use super::Processor;
use crate::coordination::deadlock::{find_deadlocks, InstanceView};
use crate::coordination::stall::stalled_waits;
use crate::coordination::{ActorKind, DeadlockDetected, StallDetected, Topology, VICTIM_RULE};
use crate::error::BusError;
use crate::model::InstanceRecord;

/// How many of a correlation's messages the in-flight check reads before it gives up (and
/// counts the correlation as in doubt).
const IN_FLIGHT_SCAN: usize = 1000;
/// Every this many ticks (of 250 ms), the stall watchdog runs.
const STALL_EVERY: u32 = 4;

type Key = (String, String);

/// The processor's index of its unended instances.
#[derive(Debug, Default)]
pub(super) struct Waits {
    views: HashMap<Key, (String, InstanceView)>,
    by_corr: HashMap<String, BTreeSet<Key>>,
    /// Correlations to check again: an input was in flight, or the owner just took over.
    suspects: BTreeSet<String>,
    /// Coordination events this owner published (not re-published before they are applied).
    reported: HashSet<EventId>,
    /// The topology version the suspects were last checked against.
    seen_version: u64,
    ticks: u32,
}

impl Waits {
    /// Index one record as committed; whether its correlation has a waiting instance now.
    fn update(&mut self, r: &InstanceRecord) {
        let key = (r.saga.clone(), r.instance.clone());
        if r.status.is_terminal() {
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
        let records = match self.env.store.list_partition(self.partition) {
            Ok(r) => r,
            Err(e) => {
                warn!(partition = self.partition, error = %e, "cannot index the partition's waits");
                return;
            }
        };
        self.waits = Waits::default();
        for r in &records {
            self.waits.update(r);
        }
        let waiting: Vec<String> = self
            .waits
            .by_corr
            .keys()
            .filter(|c| self.waits.has_waiting(c))
            .cloned()
            .collect();
        self.waits.suspects.extend(waiting);
    }

    fn topology(&self) -> Option<(Arc<Topology>, u64, bool)> {
        let view = self.env.topology.as_ref()?;
        let v = view.read().unwrap_or_else(|p| p.into_inner());
        Some((Arc::clone(&v.topology), v.version, v.loaded))
    }

    /// After a commit (its events are on the log): index its records and check the
    /// correlations it touched that have a waiting instance.
    pub(super) async fn after_commit(&mut self, records: &[InstanceRecord]) {
        if self.env.topology.is_none() {
            return;
        }
        let mut touched = BTreeSet::new();
        for r in records {
            self.waits.update(r);
            touched.insert(r.correlation.clone());
        }
        for corr in touched {
            if self.waits.has_waiting(&corr) {
                self.check(&corr).await;
            } else {
                self.waits.suspects.remove(&corr);
            }
        }
    }

    /// Every 250 ms: check the correlations in doubt again, and (every second) run the stall
    /// watchdog.
    pub(super) async fn coordination_tick(&mut self) {
        let Some((topo, version, loaded)) = self.topology() else {
            return;
        };
        if version != self.waits.seen_version {
            // Producers came or went: every waiting correlation may read differently now.
            self.waits.seen_version = version;
            let waiting: Vec<String> = self
                .waits
                .by_corr
                .keys()
                .filter(|c| self.waits.has_waiting(c))
                .cloned()
                .collect();
            self.waits.suspects.extend(waiting);
        }
        let suspects: Vec<String> = self.waits.suspects.iter().cloned().collect();
        for corr in suspects {
            self.check(&corr).await;
        }
        self.waits.ticks = self.waits.ticks.wrapping_add(1);
        if loaded && self.waits.ticks % STALL_EVERY == 0 {
            self.report_stalls(&topo).await;
        }
    }

    /// Whether the watchdog's tick has anything to do.
    pub(super) fn coordination_on(&self) -> bool {
        self.env.topology.is_some()
    }

    /// Check one correlation: a deadlock with nothing in flight is reported (its victim is
    /// failed when the report is applied); one with an input in flight stays suspect.
    async fn check(&mut self, corr: &str) {
        let Some((topo, _, _)) = self.topology() else {
            return;
        };
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
        let in_flight = match self.in_flight(corr, &topo).await {
            Ok(Some(types)) => types,
            Ok(None) => {
                debug!(
                    correlation = corr,
                    "too much of the correlation in flight; checking later"
                );
                self.waits.suspects.insert(corr.to_owned());
                return;
            }
            Err(e) => {
                debug!(correlation = corr, error = %e, "cannot tell what is in flight; checking later");
                self.waits.suspects.insert(corr.to_owned());
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
            self.waits.suspects.insert(corr.to_owned());
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
            let Some(event) = detected.event(&record) else {
                continue;
            };
            if self.report(event).await {
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
            } else {
                self.waits.suspects.insert(corr.to_owned());
            }
        }
    }

    /// Publish a coordination event once per owner (its derived id makes a re-detection after
    /// a failover a duplicate JetStream drops). Whether it is (or was already) on the log.
    async fn report(&mut self, event: Event) -> bool {
        if self.waits.reported.contains(&event.id) {
            return true;
        }
        match self.env.bus.publish_all(std::slice::from_ref(&event)).await {
            Ok(_) => {
                self.waits.reported.insert(event.id);
                true
            }
            Err(e) => {
                warn!(partition = self.partition, error = %e, "cannot publish a coordination event; retrying later");
                false
            }
        }
    }

    /// The types of the correlation's events still to be consumed: by this processor (after
    /// its applied sequence, of a saga input type) or by a reactor of the topology (after its
    /// consumer's ack floor, of a type it consumes). `None`: too many to tell.
    async fn in_flight(
        &self,
        corr: &str,
        topo: &Topology,
    ) -> Result<Option<BTreeSet<String>>, BusError> {
        let stream = self.env.bus.config().events_stream();
        let mut floors: Vec<(&BTreeSet<String>, u64)> = Vec::new();
        for a in topo.actors().filter(|a| a.decl.kind == ActorKind::Reactor) {
            let floor = self.env.bus.ack_floor(&stream, &a.decl.name).await?;
            floors.push((&a.decl.consumes, floor));
        }
        let from = floors
            .iter()
            .map(|(_, f)| *f)
            .fold(self.applied_seq, u64::min);
        let correlation = CorrelationId::new(corr).map_err(|e| BusError::js("correlation", e))?;
        let filter = self
            .env
            .bus
            .subjects()
            .correlation_filter(self.partition, &correlation);
        let Some(msgs) = self
            .env
            .bus
            .scan_after(&stream, from, &filter, IN_FLIGHT_SCAN)
            .await?
        else {
            return Ok(None);
        };
        let mut out = BTreeSet::new();
        for (seq, subject) in msgs {
            let Some((_, _, ty)) = self.env.bus.subjects().parse_event(&subject) else {
                continue;
            };
            let for_sagas = seq > self.applied_seq
                && self
                    .env
                    .sagas
                    .iter()
                    .any(|s| s.inputs().iter().any(|i| i.as_str() == ty));
            let for_reactors = floors.iter().any(|(c, f)| seq > *f && c.contains(ty));
            if for_sagas || for_reactors {
                out.insert(ty.to_owned());
            }
        }
        Ok(Some(out))
    }

    /// Report every wait that stalled since the last run (once: applying the report marks it).
    async fn report_stalls(&mut self, topo: &Topology) {
        let (live, grace) = match &self.env.topology {
            Some(view) => (
                view.read()
                    .unwrap_or_else(|p| p.into_inner())
                    .live()
                    .clone(),
                i64::try_from(self.env.settings.stall_grace.as_millis()).unwrap_or(i64::MAX),
            ),
            None => return,
        };
        let now = now_ms();
        let mut found = Vec::new();
        for ((saga, instance), (_, v)) in &self.waits.views {
            for s in stalled_waits(v, topo, &live, now, grace) {
                let Some(w) = v.waits.get(s.wait) else {
                    continue;
                };
                found.push(StallDetected {
                    saga: saga.clone(),
                    instance: instance.clone(),
                    awaits: w.types.clone(),
                    since_seq: w.since_seq,
                    deadline_ms: w.deadline_ms,
                    kind: s.kind,
                    producers: s.producers,
                    detected_by: self.env.node.to_string(),
                });
            }
        }
        for stall in found {
            let Ok(Some(record)) =
                self.env
                    .store
                    .get_in(self.partition, &stall.saga, &stall.instance)
            else {
                continue;
            };
            let Some(event) = stall.event(&record) else {
                continue;
            };
            if self.waits.reported.contains(&event.id) {
                continue;
            }
            if self.report(event).await {
                self.env.coordination.stalls.fetch_add(1, Ordering::Relaxed);
                warn!(
                    partition = self.partition,
                    correlation = %record.correlation,
                    instance = %format!("{}/{}", stall.saga, stall.instance),
                    awaits = %stall.awaits.join(" | "),
                    kind = %stall.kind,
                    "a wait stalled"
                );
            }
        }
    }
}
