//! Replay: rebuild an instance from the log through the saga's pure handler and compare.
//!
//! Inputs are read from the log, never recomputed: events of the saga's input types (agents'
//! recorded decisions included) in log order, and timer firings from the `choreo.saga.timed_out`
//! records, each put back at the input index (`applied`) it fired at. For every input the
//! replayed outputs (deterministic ids) must be on the log with the same type and data, and
//! nothing more; at the end the replayed record must equal the stored one.
//!
//! The stored record may come from a node's store ([`replay`]) or from anywhere else, the
//! changelog included ([`Replayable::replay_instance_against`]). Given one, replay stops where
//! the record stands (events up to its watermark, timer firings before its applied count), so an
//! instance that is still receiving inputs compares with the snapshot it was read at.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use choreo_schemas::{same_data, CorrelationId, Event, EventId, SagaId};
use futures::future::BoxFuture;
use thiserror::Error;

use super::decide::{decide, timer_input_id, Decision, SagaInput, SagaMeta};
use super::lifecycle::{Lifecycle, SAGA_TIMED_OUT};
use super::operator::{addressed, after_retry, operation, reopened, retried, Operation};
use super::outputs::{output_id, output_prefix};
use super::Saga;
use crate::bus::Bus;
use crate::error::BusError;
use crate::model::InstanceRecord;
use crate::store::{Store, StoreError};

/// Replay could not run.
#[derive(Debug, Error)]
pub enum ReplayError {
    /// Reading the log failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The instance id is not a valid correlation / instance.
    #[error("invalid instance: {0}")]
    Instance(String),
    /// Nothing on the log starts this instance.
    #[error("no input of saga {saga} for instance {instance} on the log")]
    NotFound {
        /// Saga.
        saga: String,
        /// Instance.
        instance: String,
    },
}

/// Where replay and the log (or the store) first disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Index of the input in replay order (0-based), or `None` for the final state.
    pub input_index: Option<usize>,
    /// The input: event type and stream sequence, or the timer.
    pub input: String,
    /// What the log (or the store) holds.
    pub expected: String,
    /// What the handler decided now.
    pub actual: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.input_index {
            Some(i) => write!(f, "input #{i} {}", self.input)?,
            None => write!(f, "{}", self.input)?,
        }
        write!(
            f,
            "\n  expected: {}\n  actual:   {}",
            self.expected, self.actual
        )
    }
}

/// The result of a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayReport {
    /// Saga.
    pub saga: String,
    /// Instance.
    pub instance: String,
    /// Inputs fed through the handler (events and timer firings).
    pub inputs: usize,
    /// The first divergence, if any.
    pub divergence: Option<Divergence>,
}

impl ReplayReport {
    /// True when the handler decides today exactly what the log and the store record.
    pub fn is_identical(&self) -> bool {
        self.divergence.is_none()
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.divergence {
            None => write!(
                f,
                "identical: {} / {} ({} inputs)",
                self.saga, self.instance, self.inputs
            ),
            Some(d) => write!(f, "divergent: {} / {} at {d}", self.saga, self.instance),
        }
    }
}

/// A saga that can be replayed behind a trait object (what an operator binary registers).
pub trait Replayable: Send + Sync {
    /// The saga's name.
    fn saga_name(&self) -> &str;
    /// Replay one instance.
    fn replay_instance<'a>(
        &'a self,
        bus: &'a Bus,
        store: Option<&'a Store>,
        instance: &'a SagaId,
    ) -> BoxFuture<'a, Result<ReplayReport, ReplayError>>;
    /// Replay one instance and compare with `stored`, a record read from anywhere (the
    /// changelog's latest, typically); `None` compares with the log only.
    fn replay_instance_against<'a>(
        &'a self,
        bus: &'a Bus,
        stored: Option<InstanceRecord>,
        instance: &'a SagaId,
    ) -> BoxFuture<'a, Result<ReplayReport, ReplayError>>;
}

impl<S: Saga> Replayable for S {
    fn saga_name(&self) -> &str {
        self.name()
    }
    fn replay_instance<'a>(
        &'a self,
        bus: &'a Bus,
        store: Option<&'a Store>,
        instance: &'a SagaId,
    ) -> BoxFuture<'a, Result<ReplayReport, ReplayError>> {
        Box::pin(replay(self, bus, store, instance))
    }
    fn replay_instance_against<'a>(
        &'a self,
        bus: &'a Bus,
        stored: Option<InstanceRecord>,
        instance: &'a SagaId,
    ) -> BoxFuture<'a, Result<ReplayReport, ReplayError>> {
        Box::pin(replay_against(self, bus, stored, instance))
    }
}

fn describe(events: &[Event]) -> String {
    let names: Vec<&str> = events.iter().map(|e| e.ty.as_str()).collect();
    format!("[{}]", names.join(", "))
}

/// Replay one instance of `saga` from the log; compare with the log and, if given, the store.
pub async fn replay<S: Saga>(
    saga: &S,
    bus: &Bus,
    store: Option<&Store>,
    instance: &SagaId,
) -> Result<ReplayReport, ReplayError> {
    let stored = match store {
        Some(s) => s.get(saga.name(), instance.as_str())?,
        None => None,
    };
    replay_against(saga, bus, stored, instance).await
}

/// Replay one instance of `saga` from the log; compare with the log and, if given, the stored
/// record (from a store or the changelog), up to where that record stands.
pub async fn replay_against<S: Saga>(
    saga: &S,
    bus: &Bus,
    stored: Option<InstanceRecord>,
    instance: &SagaId,
) -> Result<ReplayReport, ReplayError> {
    let name = saga.name().to_owned();
    // With a stored record, replay what it reflects: events up to its watermark (later ones
    // were not applied when it was written) and timer firings before its applied count.
    let limit = stored.as_ref().map(|s| (s.watermark, s.applied));
    let correlation = match &stored {
        Some(r) => CorrelationId::new(r.correlation.as_str()),
        None => CorrelationId::new(instance.as_str()),
    }
    .map_err(|e| ReplayError::Instance(e.to_string()))?;
    let history = bus.correlation_history(&correlation).await?;
    let meta = SagaMeta::of(saga, &name);
    let inputs = meta.inputs.clone();
    let by_id: BTreeMap<EventId, &Event> = history
        .events
        .iter()
        .map(|e| (e.event.id, &e.event))
        .collect();
    let source = format!("/sagas/{name}");
    // Timer firings by the input index they fired at; a record stored twice (re-published after
    // the duplicate window) is one firing.
    let mut firings: BTreeMap<u64, Vec<(String, i64)>> = BTreeMap::new();
    let mut firing_ids: BTreeSet<EventId> = BTreeSet::new();
    for e in &history.events {
        if e.event.ty.as_str() == SAGA_TIMED_OUT
            && e.event.source == source
            && firing_ids.insert(e.event.id)
        {
            if let Ok(l) = e.event.decode_as::<Lifecycle>() {
                if l.instance == instance.as_str() {
                    if let (Some(t), Some(d)) = (l.timer, l.due_ms) {
                        firings.entry(l.applied).or_default().push((t, d));
                    }
                }
            }
        }
    }
    let mut record: Option<InstanceRecord> = None;
    let mut fed = 0usize;
    let mut fed_ids: BTreeSet<EventId> = BTreeSet::new();
    let report = |divergence: Option<Divergence>, fed: usize| ReplayReport {
        saga: name.clone(),
        instance: instance.to_string(),
        inputs: fed,
        divergence,
    };

    // Inputs the saga never applied: dead-lettered on arrival (not a fault of the instance), or
    // originals whose redriven copy comes later in the log (the copy is the one applied).
    let mut never_applied: BTreeSet<(EventId, u64)> = history
        .dead_letters
        .iter()
        .filter(|l| l.actor == name && l.reason != "saga_faulted")
        .filter_map(|l| l.event.as_ref().ok().map(|e| (e.id, l.original_sequence)))
        .collect();
    for (i, e) in history.events.iter().enumerate() {
        if e.redriven_to.as_deref() == Some(name.as_str()) {
            for earlier in &history.events[..i] {
                if earlier.event.id == e.event.id {
                    never_applied.insert((earlier.event.id, earlier.sequence));
                }
            }
        }
    }
    let events = history.events.iter().filter(|e| {
        e.redriven_to.as_deref().is_none_or(|to| to == name)
            && inputs.contains(&e.event.ty)
            && match addressed(&e.event) {
                Some(Some((s, i))) => s == name && i == instance.as_str(),
                Some(None) => false,
                None => saga.instance_of(&e.event).as_ref() == Some(instance),
            }
            && !never_applied.contains(&(e.event.id, e.sequence))
            && limit.is_none_or(|(watermark, _)| e.sequence <= watermark)
    });
    for entry in events.map(Some).chain(std::iter::once(None)) {
        // Timer firings recorded at the current input index come first.
        loop {
            let applied = record.as_ref().map_or(0, |r| r.applied);
            if limit.is_some_and(|(_, stored_applied)| applied >= stored_applied) {
                break;
            }
            let Some(due) = firings.remove(&applied) else {
                break;
            };
            for (timer, due_ms) in due {
                let input = SagaInput::Timer {
                    name: &timer,
                    due_ms,
                };
                let id = timer_input_id(&name, instance, &timer, due_ms);
                let label = format!("timer {timer} (due {due_ms} ms)");
                if let Some(d) = step(
                    saga,
                    &meta,
                    &mut record,
                    instance,
                    input,
                    false,
                    &id,
                    &by_id,
                    fed,
                    &label,
                ) {
                    return Ok(report(Some(d), fed + 1));
                }
                fed += 1;
            }
        }
        let Some(entry) = entry else { break };
        // A retry re-applies the faulting input, as the processor does (see `operator`).
        let again: Event;
        let mut retry_of = None;
        let event = match operation(&entry.event) {
            Some((Operation::Retry, _)) => {
                let found = record.as_ref().and_then(reopened).and_then(|(r, by)| {
                    history
                        .events
                        .iter()
                        .find(|e| e.sequence == by.seq)
                        .map(|e| (r, by, e.event.clone()))
                });
                match found {
                    Some((r, by, original)) => {
                        record = Some(r);
                        retry_of = Some(by);
                        again = retried(original, &entry.event);
                        &again
                    }
                    None => &entry.event,
                }
            }
            _ => &entry.event,
        };
        let input = SagaInput::Event {
            event,
            seq: entry.sequence,
            at_ms: entry.stored_ms,
        };
        let label = format!("{} (seq {})", entry.event.ty, entry.sequence);
        // A copy of an input fed before (stored again past the duplicate window) that the
        // saga skips adds nothing: the outputs with its id are the original's, checked there.
        let copy = !fed_ids.insert(event.id);
        if let Some(d) = step(
            saga,
            &meta,
            &mut record,
            instance,
            input,
            copy,
            &event.id,
            &by_id,
            fed,
            &label,
        ) {
            return Ok(report(Some(d), fed + 1));
        }
        if let (Some(by), Some(r)) = (retry_of, record.as_mut()) {
            after_retry(r, entry.sequence, &by);
        }
        fed += 1;
    }
    if record.is_none() && stored.is_none() {
        return Err(ReplayError::NotFound {
            saga: name,
            instance: instance.to_string(),
        });
    }
    if let (Some(s), Some(r)) = (&stored, &record) {
        let sum = |r: &InstanceRecord| {
            format!(
                "status {}, {} applied, state {} bytes, {} timers, {} compensations",
                r.status,
                r.applied,
                r.state.len(),
                r.timers.len(),
                r.compensations.len()
            )
        };
        let same = s.status == r.status
            && s.state == r.state
            && s.timers == r.timers
            && s.compensations == r.compensations
            && s.applied == r.applied;
        if !same {
            return Ok(report(
                Some(Divergence {
                    input_index: None,
                    input: "final state".into(),
                    expected: format!("stored: {}", sum(s)),
                    actual: format!("replayed: {}", sum(r)),
                }),
                fed,
            ));
        }
    }
    Ok(report(None, fed))
}

/// Feed one input (and whether it is a copy of one fed before); compare its outputs with the
/// log.
#[allow(clippy::too_many_arguments)]
fn step<S: Saga>(
    saga: &S,
    meta: &SagaMeta,
    record: &mut Option<InstanceRecord>,
    instance: &SagaId,
    input: SagaInput<'_>,
    copy: bool,
    input_id: &EventId,
    by_id: &BTreeMap<EventId, &Event>,
    index: usize,
    label: &str,
) -> Option<Divergence> {
    let prefix = output_prefix(&meta.name, instance, input_id);
    let on_log: Vec<Event> = (0..)
        .map(|k| output_id(&prefix, k))
        .map_while(|id| by_id.get(&id).map(|e| (*e).clone()))
        .collect();
    let (replayed, next) = match decide(saga, meta, record.clone(), instance, input) {
        Decision::Skip(_) if copy => return None,
        Decision::Skip(_) => (Vec::new(), record.clone()),
        Decision::Commit(t) | Decision::Fault { transition: t, .. } => (t.outbox, Some(t.record)),
        Decision::Retry(e) => {
            return Some(Divergence {
                input_index: Some(index),
                input: label.to_owned(),
                expected: describe(&on_log),
                actual: format!("handler failed transiently: {e}"),
            })
        }
    };
    let same = replayed.len() == on_log.len()
        && replayed
            .iter()
            .zip(&on_log)
            .all(|(a, b)| a.id == b.id && a.ty == b.ty && same_data(&a.data, &b.data));
    if !same {
        return Some(Divergence {
            input_index: Some(index),
            input: label.to_owned(),
            expected: describe(&on_log),
            actual: describe(&replayed),
        });
    }
    *record = next;
    None
}

/// Replay and panic with the divergence unless identical: for tests.
pub async fn assert_replays<S: Saga>(
    saga: &S,
    bus: &Bus,
    store: Option<&Store>,
    instance: &SagaId,
) {
    match replay(saga, bus, store, instance).await {
        Ok(r) if r.is_identical() => {}
        Ok(r) => panic!("{r}"),
        Err(e) => panic!("replay of {} / {instance} failed: {e}", saga.name()),
    }
}
