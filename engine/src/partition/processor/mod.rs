//! One partition's processor: apply a batch of inputs through the pure cores, commit it to the
//! changelog as one fenced atomic batch, materialise it in sled, publish what it decided, and
//! only then start the next commit. Timers arrive from the node's timer loop and go through the
//! same task, so they are serialised with inputs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::Message;
use choreo_schemas::{ActorName, SagaId};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info_span, warn, Instrument};

mod commit;
mod coordination;
mod in_flight;
mod retry;
mod stall_watch;
mod timer_inputs;

use super::batch::{Batch, Stamp};
use super::timers::{now_ms, TimerJob};
use super::{inputs, takeover, Exit, PartitionEnv, ProcessorHealth};
use crate::bus::DlqReason;
use crate::changelog::MAX_RECORDS_PER_COMMIT;
use crate::delivery::{admit, delivery_info, publish_dead_letter, Delivery, Limits};
use crate::metrics::ActorCounters;
use crate::model::{InstanceRecord, PartitionHead, Transition};
use crate::saga::decide::{Decision, SagaInput};
use crate::saga::host::HostedSaga;
use crate::saga::operator::{addressed, operation, Operation};

pub(crate) struct Processor {
    env: PartitionEnv,
    partition: u16,
    epoch: u64,
    health: Arc<ProcessorHealth>,
    /// Sequence of the last head this processor wrote.
    expected: u64,
    /// The last head written.
    written: PartitionHead,
    /// Commits so far, and the highest whose events are on the log.
    commit: u64,
    published: u64,
    /// Highest input sequence applied.
    applied_seq: u64,
    /// Inputs stored but not yet delivered, as of the last delivery. Timers wait while it is
    /// not zero: an answer already on the log is applied before a timeout that would race it
    /// (after a takeover or under a backlog the wall clock is ahead of the log).
    backlog: u64,
    /// Stored time (Unix ms) of the last input delivered.
    log_ms: i64,
    /// Due timers waiting for the backlog to drain.
    deferred: Vec<TimerJob>,
    /// Unended instances by correlation, for the deadlock check and the stall watchdog.
    waits: coordination::Waits,
}

type Step = Result<(), Exit>;

impl Processor {
    pub(crate) fn new(
        env: PartitionEnv,
        partition: u16,
        epoch: u64,
        health: Arc<ProcessorHealth>,
    ) -> Self {
        Self {
            written: PartitionHead {
                partition,
                epoch,
                owner: env.node.to_string(),
                commit: 0,
                published: 0,
                applied_seq: 0,
                takeover: true,
                written_ms: 0,
            },
            env,
            partition,
            epoch,
            health,
            expected: 0,
            commit: 0,
            published: 0,
            applied_seq: 0,
            backlog: 0,
            log_ms: 0,
            deferred: Vec::new(),
            waits: coordination::Waits::default(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        mut timers: mpsc::Receiver<TimerJob>,
    ) -> Exit {
        let restored =
            match takeover::take_over(&self.env, self.partition, self.epoch, &mut stop).await {
                Ok(r) => r,
                Err(exit) => return exit,
            };
        debug!(
            partition = self.partition,
            instances = restored.instances,
            "restored"
        );
        self.expected = restored.head_seq;
        self.commit = restored.head.commit;
        self.published = restored.head.published;
        self.applied_seq = restored.head.applied_seq;
        self.written = restored.head;
        self.index_restored();
        self.env.routes.changed.notify_one();
        let exit = self.serve(&mut stop, &mut timers).await;
        if exit == Exit::Fenced {
            warn!(
                partition = self.partition,
                epoch = self.epoch,
                "fenced: another owner committed the partition; stopping and dropping its state"
            );
            if let Err(e) = self.env.store.drop_partition(self.partition) {
                error!(partition = self.partition, error = %e, "cannot drop the fenced partition's state");
            }
        }
        exit
    }

    async fn serve(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        timers: &mut mpsc::Receiver<TimerJob>,
    ) -> Exit {
        let idle_mark = self.env.settings.idle_mark;
        // A reconnection loses what the server had delivered and the client not yet read: the
        // inputs are re-opened after the applied sequence then (see below). Seen once per
        // reconnection, including one that happens while the inputs are being re-opened.
        let mut reconnects = self.env.bus.reconnects();
        reconnects.borrow_and_update();
        let mut watching = true;
        'open: loop {
            let stream = loop {
                if *stop.borrow() {
                    return Exit::Stopped;
                }
                match inputs::open(&self.env, self.partition, self.applied_seq).await {
                    Ok((s, pending)) => {
                        self.backlog = pending;
                        break s;
                    }
                    Err(e) => {
                        warn!(partition = self.partition, error = %e, "cannot open the partition's inputs; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = stop.changed() => return Exit::Stopped,
                        }
                    }
                }
            };
            let mut chunks = stream.ready_chunks(self.env.settings.batch);
            let retention = self.env.settings.retention;
            let mut sweep = tokio::time::interval(sweep_every(retention));
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut watchdog = tokio::time::interval(Duration::from_millis(250));
            watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let coordination = self.coordination_on();
            // The idle mark is due `idle_mark` after the last input or timer: a deadline, so
            // the periodic arms (the watchdog's 250 ms tick) do not keep pushing it back.
            let mut mark_at = tokio::time::Instant::now() + idle_mark;
            loop {
                let unmarked = self.published > self.written.published
                    || self.applied_seq > self.written.applied_seq;
                let step = tokio::select! {
                    biased;
                    _ = stop.changed() => {
                        // A graceful stop leaves the head saying what is on the log, so the next
                        // owner publishes nothing again (however late it comes).
                        if unmarked {
                            if let Err(exit) = self.mark().await {
                                return exit;
                            }
                        }
                        return Exit::Stopped;
                    }
                    job = timers.recv() => match job {
                        Some(job) => {
                            mark_at = tokio::time::Instant::now() + idle_mark;
                            self.deferred.push(job);
                            while let Ok(more) = timers.try_recv() {
                                self.deferred.push(more);
                            }
                            self.fire_due().await
                        }
                        None => return Exit::Stopped,
                    },
                    // Before the inputs: under a steady input flow the biased select would
                    // never reach it (suspects and stalls would wait for a lull).
                    _ = watchdog.tick(), if coordination => {
                        self.coordination_tick().await;
                        Ok(())
                    }
                    chunk = chunks.next() => match chunk {
                        Some(items) => {
                            mark_at = tokio::time::Instant::now() + idle_mark;
                            let msgs: Vec<Message> = items
                                .into_iter()
                                .filter_map(|m| m.map_err(|e| debug!(error = %e, "input stream error")).ok())
                                .collect();
                            match self.apply_messages(msgs).await {
                                Ok(()) => self.fire_due().await,
                                err => err,
                            }
                        }
                        None => continue 'open,
                    },
                    changed = reconnects.changed(), if watching => {
                        if changed.is_ok() {
                            self.quarantine_ahead().await;
                            continue 'open;
                        }
                        watching = false;
                        Ok(())
                    }
                    () = tokio::time::sleep_until(mark_at), if unmarked => self.mark().await,
                    _ = sweep.tick(), if !retention.is_zero() => {
                        self.purge_ended(retention);
                        Ok(())
                    }
                };
                if let Err(exit) = step {
                    return exit;
                }
            }
        }
    }

    /// After a reconnection: the message that cut the connection may be one the client cannot
    /// parse; move such messages among the next inputs out of the way (to the DLQ) before the
    /// inputs are re-opened, or they would cut it again.
    async fn quarantine_ahead(&self) {
        let filters = inputs::filters(&self.env, self.partition);
        let stream = self.env.bus.config().events_stream();
        if let Err(e) = self
            .env
            .bus
            .quarantine_after(&stream, self.applied_seq, &filters)
            .await
        {
            warn!(partition = self.partition, error = %e, "cannot check the next inputs for unreadable messages");
        }
    }

    /// Drop ended instances past the retention from the store (their changelog records expire
    /// by TTL on their own).
    fn purge_ended(&self, retention: Duration) {
        let age = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        match self
            .env
            .store
            .purge_ended(self.partition, now_ms().saturating_sub(age))
        {
            Ok(0) => {}
            Ok(n) => debug!(
                partition = self.partition,
                purged = n,
                "ended instances past the retention left the store"
            ),
            Err(e) => warn!(partition = self.partition, error = %e, "cannot purge ended instances"),
        }
    }

    fn counters(&self, saga: &ActorName) -> Option<&Arc<ActorCounters>> {
        self.env.counters.get(saga)
    }

    async fn apply_messages(&mut self, msgs: Vec<Message>) -> Step {
        let mut batch = Batch::default();
        let room = MAX_RECORDS_PER_COMMIT.saturating_sub(self.env.sagas.len().max(1));
        for msg in msgs {
            self.apply_message(&mut batch, &msg).await?;
            if batch.records.len() >= room {
                let full = std::mem::take(&mut batch);
                self.commit(full).await?;
            }
        }
        self.commit(batch).await
    }

    /// The sagas an input is for: every hosted saga consuming its type, or only the target of a
    /// redrive.
    fn targets(&self, subject: &str, ty: Option<&str>) -> Vec<Arc<dyn HostedSaga>> {
        let redrive = format!("{}.redrive.", self.env.bus.subjects().root());
        let only = subject
            .strip_prefix(redrive.as_str())
            .and_then(|rest| rest.split('.').next());
        self.env
            .sagas
            .iter()
            .filter(|s| only.is_none_or(|a| a == s.name().as_str()))
            .filter(|s| ty.is_none_or(|t| s.inputs().iter().any(|i| i.as_str() == t)))
            .cloned()
            .collect()
    }

    async fn apply_message(&mut self, batch: &mut Batch, msg: &Message) -> Step {
        let (seq, _) = delivery_info(msg);
        if let Ok(info) = msg.info() {
            self.backlog = info.pending;
            self.log_ms = crate::bus::unix_ms(info.published);
        }
        let at_ms = self.log_ms;
        if seq != 0 && seq <= self.applied_seq.max(batch.applied_seq) {
            return Ok(()); // a redelivery after the consumer was re-created
        }
        let bus = self.env.bus.clone();
        let parsed = bus.subjects().parse_event(msg.subject.as_str());
        let targets = self.targets(msg.subject.as_str(), parsed.map(|(_, _, t)| t));
        let limits = Limits {
            max_depth: self.env.settings.max_depth,
            max_deliveries: u64::MAX,
            partitioner: bus.partitioner(),
        };
        let consumes = targets
            .iter()
            .flat_map(|s| s.inputs().iter().cloned())
            .collect();
        let delivery = Delivery {
            decoded: crate::delivery::decode_delivered(self.env.bus.subjects(), msg),
            subject: parsed,
            delivered: 1,
        };
        let event = match admit(delivery, limits, &consumes, &self.env.registry) {
            Ok(e) => e,
            Err(reason) => {
                let actor = targets
                    .first()
                    .or_else(|| self.env.sagas.first())
                    .map(|s| s.name().clone());
                if let Some(actor) = actor {
                    self.dead_letter(&actor, seq, msg, reason, 0).await?;
                }
                batch.applied_seq = batch.applied_seq.max(seq);
                return Ok(());
            }
        };
        if matches!(
            event.ty.as_str(),
            crate::coordination::DEADLOCK_DETECTED | crate::coordination::STALL_DETECTED
        ) {
            self.report_applied(&event);
        }
        for saga in targets {
            if !saga.inputs().contains(&event.ty) {
                continue;
            }
            let op = operation(&event);
            let instance = match addressed(&event) {
                // Operator actions and coordination events name their saga and instance.
                Some(None) => continue,
                Some(Some((s, _))) if s != saga.name().as_str() => continue,
                Some(Some((_, i))) => match SagaId::new(i.as_str()) {
                    Ok(i) => i,
                    Err(_) => continue,
                },
                None => match saga.instance_of(&event) {
                    Some(i) => i,
                    None => {
                        debug!(saga = %saga.name(), event_type = %event.ty, "event routed to no instance");
                        continue;
                    }
                },
            };
            let span = info_span!(
                "saga",
                saga = %saga.name(),
                event_type = %event.ty,
                correlation = %event.correlation,
                instance = %instance,
                partition = self.partition,
                seq,
                attempt = tracing::field::Empty,
            );
            crate::telemetry::set_parent(&span, event.traceparent.as_ref());
            let input = SagaInput::Event {
                event: &event,
                seq,
                at_ms,
            };
            if let Some((Operation::Retry, _)) = op {
                self.retry(batch, &saga, &instance, &event, at_ms, (seq, msg))
                    .instrument(span)
                    .await?;
                continue;
            }
            self.apply_input(batch, &saga, &instance, input, Some((seq, msg)))
                .instrument(span)
                .await?;
        }
        batch.applied_seq = batch.applied_seq.max(seq);
        Ok(())
    }

    /// Decide one input for one instance (retrying transient failures in place), and add the
    /// outcome to the batch. A fault dead-letters the input that caused it.
    async fn apply_input(
        &mut self,
        batch: &mut Batch,
        saga: &Arc<dyn HostedSaga>,
        instance: &SagaId,
        input: SagaInput<'_>,
        origin: Option<(u64, &Message)>,
    ) -> Step {
        let existing = self.existing(batch, saga.name().as_str(), instance)?;
        self.decide_input(batch, saga, instance, input, origin, existing)
            .await
    }

    /// The instance as this batch left it, else as stored.
    fn existing(
        &self,
        batch: &Batch,
        name: &str,
        instance: &SagaId,
    ) -> Result<Option<InstanceRecord>, Exit> {
        match batch.get(name, instance.as_str()) {
            Some(r) => Ok(Some(r.clone())),
            None => self
                .env
                .store
                .get_in(self.partition, name, instance.as_str())
                .map_err(|e| Exit::Failed(format!("read instance {name}/{instance}: {e}"))),
        }
    }

    /// [`Processor::apply_input`] on a given version of the instance.
    async fn decide_input(
        &mut self,
        batch: &mut Batch,
        saga: &Arc<dyn HostedSaga>,
        instance: &SagaId,
        input: SagaInput<'_>,
        origin: Option<(u64, &Message)>,
        existing: Option<InstanceRecord>,
    ) -> Step {
        let name = saga.name().as_str();
        let counters = self.counters(saga.name()).cloned();
        let mut schedule = saga.retry().schedule();
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            tracing::Span::current().record("attempt", attempt);
            let started = Instant::now();
            let decision = saga.decide(existing.clone(), instance, input);
            if let Some(c) = &counters {
                c.latency(started.elapsed());
            }
            match decision {
                Decision::Skip(skip) => {
                    if skip == crate::saga::decide::Skip::NoInstance {
                        // Choreography is noisy, but an input nobody takes is worth a word.
                        warn!(saga = name, instance = %instance, "an input matched no instance of the saga: dropped");
                        if let Some(c) = &counters {
                            c.unmatched();
                        }
                    } else {
                        debug!(?skip, "input changes nothing");
                    }
                    if let SagaInput::Timer {
                        name: timer,
                        due_ms,
                    } = input
                    {
                        self.env
                            .store
                            .remove_timer(self.partition, name, instance.as_str(), timer, due_ms)
                            .map_err(|e| Exit::Failed(format!("drop a stale timer: {e}")))?;
                    }
                    return Ok(());
                }
                Decision::Commit(mut t) => {
                    with_span_trace(&mut t);
                    if let Some(c) = &counters {
                        c.handled();
                    }
                    batch.add(t, &self.stamp());
                    batch.inputs += 1;
                    return Ok(());
                }
                Decision::Fault { transition, reason } => {
                    if let Some(c) = &counters {
                        c.failed();
                    }
                    error!(instance = %instance, %reason, "saga instance faulted");
                    let why = DlqReason::SagaFaulted(reason);
                    return self
                        .fault(batch, saga, transition, origin, why, attempt)
                        .await;
                }
                Decision::Retry(err) => {
                    if let Some(c) = &counters {
                        c.failed();
                    }
                    warn!(attempt, error = %err, "saga handler failed");
                    if attempt >= saga.retry().max_attempts() {
                        let reason = format!("handler failed {attempt} times: {err}");
                        match saga.fault(existing, instance, input, reason.clone()) {
                            Decision::Fault { transition, .. } | Decision::Commit(transition) => {
                                error!(instance = %instance, %reason, "saga instance faulted");
                                let why = DlqReason::MaxAttempts { last_error: err };
                                return self
                                    .fault(batch, saga, transition, origin, why, attempt)
                                    .await;
                            }
                            Decision::Skip(_) | Decision::Retry(_) => return Ok(()),
                        }
                    }
                    if let Some(c) = &counters {
                        c.retried();
                    }
                    tokio::time::sleep(schedule.next_delay()).await;
                }
            }
        }
    }

    /// Dead-letter the input that faulted an instance (timers have none), then add the faulted
    /// record to the batch.
    async fn fault(
        &self,
        batch: &mut Batch,
        saga: &Arc<dyn HostedSaga>,
        transition: Transition,
        origin: Option<(u64, &Message)>,
        why: DlqReason,
        attempts: u32,
    ) -> Step {
        if let Some((seq, msg)) = origin {
            self.dead_letter(saga.name(), seq, msg, why, attempts)
                .await?;
        }
        batch.add(transition, &self.stamp());
        batch.inputs += 1;
        Ok(())
    }

    async fn dead_letter(
        &self,
        actor: &ActorName,
        seq: u64,
        msg: &Message,
        reason: DlqReason,
        attempts: u32,
    ) -> Step {
        let Some(counters) = self.counters(actor) else {
            return Ok(());
        };
        publish_dead_letter(&self.env.bus, actor, counters, seq, msg, &reason, attempts)
            .await
            .map_err(|e| Exit::Failed(format!("cannot write a dead letter: {e}")))
    }

    fn stamp(&self) -> Stamp {
        Stamp {
            partition: self.partition,
            commit: self.commit.saturating_add(1),
            epoch: self.epoch,
            owner: self.env.node.to_string(),
        }
    }
}

/// With spans exported, a saga's outputs become children of the span that decided them (the
/// deterministic ids and data are untouched, so replay and deduplication are unaffected).
fn with_span_trace(t: &mut Transition) {
    if let Some(tp) = crate::telemetry::current_traceparent() {
        for e in &mut t.outbox {
            e.traceparent = Some(tp);
        }
    }
}

/// How often a processor sweeps ended instances out of the store: a quarter of the retention,
/// between 1 s and 10 min.
fn sweep_every(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))
}
