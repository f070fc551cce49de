//! The saga driver: one task per (saga, owned partition). Applies a batch of inputs in log
//! order through the pure core, commits each input's transition, flushes sled once per batch
//! (group commit), acks the batch, then wakes the outbox publisher. Due timers arrive from the
//! timer loop on a channel and go through the same task, so they are serialised with inputs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::Message;
use choreo_schemas::{ActorName, EventRegistry, EventType, SagaId};
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, error, info_span, warn, Instrument};

use super::decide::{self, Decision, SagaInput, SagaMeta};
use super::Saga;
use crate::bus::{Bus, DlqReason};
use crate::delivery::{
    dead_letter, delivery_info, nak_later, open_pull, with_progress, PullConsumer,
};
use crate::error::{BusError, NodeError};
use crate::metrics::ActorCounters;
use crate::reactor::decide::{admit, Delivery, Limits};
use crate::retry::RetryPolicy;
use crate::store::{Store, TimerEntry};

/// Settings of the saga runtime of a node.
#[derive(Clone, Debug)]
pub(crate) struct SagaSettings {
    pub(crate) max_depth: u32,
    pub(crate) max_deliveries: u64,
    pub(crate) ack_wait: Duration,
    /// Largest group-commit batch.
    pub(crate) batch: usize,
}

/// A due timer handed to its partition task.
pub(crate) struct TimerJob {
    pub(crate) entry: TimerEntry,
}

/// Everything a partition task needs from its node.
#[derive(Clone)]
pub(crate) struct SagaEnv {
    pub(crate) bus: Bus,
    pub(crate) registry: Arc<EventRegistry>,
    pub(crate) store: Store,
    pub(crate) settings: SagaSettings,
    pub(crate) counters: Arc<ActorCounters>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Woken after each flushed batch: the outbox has entries.
    pub(crate) outbox: Arc<Notify>,
    /// Woken after each flushed batch: timers may have changed.
    pub(crate) timers_changed: Arc<Notify>,
}

/// A type-erased hosted saga.
pub(crate) trait HostedSaga: Send + Sync {
    fn name(&self) -> &ActorName;
    fn inputs(&self) -> &BTreeSet<EventType>;
    fn emits(&self) -> &BTreeSet<EventType>;
    /// Create or update the partition's consumer, then spawn its task.
    fn start_partition(
        &self,
        env: SagaEnv,
        partition: u16,
        timers: mpsc::Receiver<TimerJob>,
    ) -> BoxFuture<'_, Result<JoinHandle<()>, NodeError>>;
}

/// A saga with its validated metadata.
pub(crate) struct SagaHost<S: Saga> {
    pub(crate) saga: Arc<S>,
    pub(crate) name: ActorName,
    pub(crate) meta: Arc<SagaMeta>,
    pub(crate) inputs: Arc<BTreeSet<EventType>>,
    pub(crate) retry: RetryPolicy,
}

impl<S: Saga> HostedSaga for SagaHost<S> {
    fn name(&self) -> &ActorName {
        &self.name
    }
    fn inputs(&self) -> &BTreeSet<EventType> {
        &self.inputs
    }
    fn emits(&self) -> &BTreeSet<EventType> {
        &self.meta.emits
    }
    fn start_partition(
        &self,
        env: SagaEnv,
        partition: u16,
        timers: mpsc::Receiver<TimerJob>,
    ) -> BoxFuture<'_, Result<JoinHandle<()>, NodeError>> {
        Box::pin(async move {
            let consumer = ensure_consumer(&env, &self.name, partition, &self.inputs).await?;
            let task = Partition {
                saga: Arc::clone(&self.saga),
                name: self.name.clone(),
                meta: Arc::clone(&self.meta),
                inputs: Arc::clone(&self.inputs),
                retry: self.retry.clone(),
                partition,
                env,
            };
            Ok(tokio::spawn(task.run(consumer, timers)))
        })
    }
}

async fn ensure_consumer(
    env: &SagaEnv,
    name: &ActorName,
    partition: u16,
    inputs: &BTreeSet<EventType>,
) -> Result<PullConsumer, NodeError> {
    let bus = &env.bus;
    let stream_name = bus.config().events_stream();
    let stream = bus
        .jetstream()
        .get_stream_no_info(&stream_name)
        .await
        .map_err(|e| BusError::js(format!("get stream {stream_name}"), e))?;
    let root = bus.subjects().root().to_owned();
    let durable = format!("{name}-p{partition}");
    let config = pull::Config {
        durable_name: Some(durable.clone()),
        description: Some(format!("choreo saga {name}, partition {partition}")),
        filter_subjects: inputs
            .iter()
            .map(|t| format!("{root}.evt.{partition}.*.{t}"))
            .chain(std::iter::once(
                bus.subjects().redrive_partition_filter(name, partition),
            ))
            .collect(),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: env.settings.ack_wait,
        max_deliver: -1,
        max_ack_pending: i64::try_from(env.settings.batch * 4).unwrap_or(10_000),
        ..Default::default()
    };
    Ok(stream
        .create_consumer(config)
        .await
        .map_err(|e| BusError::js(format!("create consumer {durable}"), e))?)
}

/// What happened to one delivery inside a batch.
enum Applied {
    /// Ack it after the flush; `committed` says a transition was written.
    Ack { committed: bool },
    /// Already settled (dead-lettered and term-acked, or nak'ed); `committed` says a
    /// transition (a faulted record) still needs the batch's flush.
    Settled { committed: bool },
}

struct Partition<S: Saga> {
    saga: Arc<S>,
    name: ActorName,
    meta: Arc<SagaMeta>,
    inputs: Arc<BTreeSet<EventType>>,
    retry: RetryPolicy,
    partition: u16,
    env: SagaEnv,
}

impl<S: Saga> Partition<S> {
    async fn run(self, consumer: PullConsumer, mut timers: mpsc::Receiver<TimerJob>) {
        let mut shutdown = self.env.shutdown.clone();
        let mut timers_open = true;
        let who = format!("{}-p{}", self.name, self.partition);
        'outer: loop {
            let Some(messages) =
                open_pull(&consumer, self.env.settings.batch, &mut shutdown, &who).await
            else {
                break;
            };
            let mut chunks = messages.ready_chunks(self.env.settings.batch);
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => break 'outer,
                    job = timers.recv(), if timers_open => match job {
                        Some(job) => {
                            let mut jobs = vec![job];
                            while let Ok(more) = timers.try_recv() {
                                jobs.push(more);
                            }
                            self.fire_timers(jobs).await;
                        }
                        None => timers_open = false,
                    },
                    chunk = chunks.next() => match chunk {
                        Some(items) => {
                            let msgs: Vec<Message> = items
                                .into_iter()
                                .filter_map(|m| m.map_err(|e| debug!(error = %e, "pull stream error")).ok())
                                .collect();
                            if !msgs.is_empty() {
                                self.apply_batch(msgs).await;
                            }
                        }
                        None => continue 'outer,
                    },
                }
            }
        }
        debug!(saga = %self.name, partition = self.partition, "partition stopped");
    }

    /// Group commit: apply every input, one flush, then ack them all.
    async fn apply_batch(&self, msgs: Vec<Message>) {
        let mid = msgs.len() / 2;
        let mut to_ack = Vec::with_capacity(msgs.len());
        let mut committed = false;
        for (i, msg) in msgs.into_iter().enumerate() {
            if i == mid && i > 0 {
                fail::fail_point!("saga-mid-batch");
            }
            match self.apply_message(&msg).await {
                Applied::Ack { committed: c } => {
                    committed |= c;
                    to_ack.push(msg);
                }
                Applied::Settled { committed: c } => committed |= c,
            }
        }
        if committed {
            let started = Instant::now();
            if let Err(e) = self.env.store.flush().await {
                error!(saga = %self.name, error = %e, "flush failed; the batch will be redelivered");
                for m in &to_ack {
                    nak_later(m).await;
                }
                return;
            }
            let flush = started.elapsed();
            self.env.counters.batch(to_ack.len(), flush);
            debug!(saga = %self.name, batch = to_ack.len(), flush_us = flush.as_micros() as u64, "batch committed");
        }
        fail::fail_point!("saga-after-commit-before-ack");
        for m in &to_ack {
            if let Err(e) = m.ack().await {
                warn!(error = %e, "ack failed; the input will be redelivered and skipped by the watermark");
            }
        }
        fail::fail_point!("saga-after-ack-before-outbox");
        if committed {
            self.env.outbox.notify_one();
            self.env.timers_changed.notify_one();
        }
    }

    async fn apply_message(&self, msg: &Message) -> Applied {
        let (seq, delivered) = delivery_info(msg);
        let bus = &self.env.bus;
        let limits = Limits {
            max_depth: self.env.settings.max_depth,
            max_deliveries: self.env.settings.max_deliveries,
            partitions: bus.config().partitions(),
        };
        let delivery = Delivery {
            decoded: crate::bus::wire::decode_event(msg.headers.as_ref(), &msg.payload),
            subject: bus.subjects().parse_event(msg.subject.as_str()),
            delivered,
        };
        let event = match admit(delivery, limits, &self.inputs, &self.env.registry) {
            Ok(e) => e,
            Err(reason) => {
                self.dead_letter(msg, reason, 0).await;
                return Applied::Settled { committed: false };
            }
        };
        let Some(instance) = self.saga.instance_of(&event) else {
            debug!(saga = %self.name, event_type = %event.ty, "event routed to no instance");
            return Applied::Ack { committed: false };
        };
        let span = info_span!(
            "saga",
            saga = %self.name,
            event_type = %event.ty,
            correlation = %event.correlation,
            instance = %instance,
            partition = self.partition,
            seq,
            attempt = tracing::field::Empty,
        );
        crate::telemetry::set_parent(&span, event.traceparent.as_ref());
        let progress_every = (self.env.settings.ack_wait / 3).max(Duration::from_millis(100));
        async {
            let mut schedule = self.retry.schedule();
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                tracing::Span::current().record("attempt", attempt);
                let existing = match self.env.store.get(self.name.as_str(), instance.as_str()) {
                    Ok(r) => r,
                    Err(e) => {
                        error!(error = %e, "cannot read the instance; input will be redelivered");
                        nak_later(msg).await;
                        return Applied::Settled { committed: false };
                    }
                };
                let input = SagaInput::Event { event: &event, seq };
                let started = Instant::now();
                let decision =
                    decide::decide(&*self.saga, &self.meta, existing.clone(), &instance, input);
                self.env.counters.latency(started.elapsed());
                match decision {
                    Decision::Skip(skip) => {
                        debug!(?skip, "input changes nothing");
                        return Applied::Ack { committed: false };
                    }
                    Decision::Commit(mut t) => {
                        with_span_trace(&mut t);
                        return match self.env.store.commit(&t) {
                            Ok(()) => {
                                self.env.counters.handled();
                                Applied::Ack { committed: true }
                            }
                            Err(e) => {
                                error!(error = %e, "commit failed; input will be redelivered");
                                nak_later(msg).await;
                                Applied::Settled { committed: false }
                            }
                        };
                    }
                    Decision::Retry(err) => {
                        self.env.counters.failed();
                        warn!(attempt, error = %err, "saga handler failed");
                        if attempt >= self.retry.max_attempts() {
                            let d = decide::fault(
                                &*self.saga,
                                &self.meta,
                                existing,
                                &instance,
                                input,
                                format!("handler failed {attempt} times: {err}"),
                            );
                            return self
                                .commit_fault(
                                    msg,
                                    d,
                                    DlqReason::MaxAttempts { last_error: err },
                                    attempt,
                                )
                                .await;
                        }
                        self.env.counters.retried();
                        with_progress(
                            msg,
                            progress_every,
                            tokio::time::sleep(schedule.next_delay()),
                        )
                        .await;
                    }
                    d @ Decision::Fault { .. } => {
                        self.env.counters.failed();
                        let reason = match &d {
                            Decision::Fault { reason, .. } => {
                                DlqReason::SagaFaulted(reason.clone())
                            }
                            _ => DlqReason::SagaFaulted(String::new()),
                        };
                        return self.commit_fault(msg, d, reason, attempt).await;
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Commit a faulted record, then dead-letter the input that faulted it.
    async fn commit_fault(
        &self,
        msg: &Message,
        d: Decision,
        reason: DlqReason,
        attempts: u32,
    ) -> Applied {
        if let Decision::Fault {
            transition,
            reason: why,
        } = &d
        {
            error!(instance = %transition.record.instance, reason = %why, "saga instance faulted");
            if let Err(e) = self.env.store.commit(transition) {
                error!(error = %e, "commit of the faulted instance failed; input will be redelivered");
                nak_later(msg).await;
                return Applied::Settled { committed: false };
            }
        }
        self.dead_letter(msg, reason, attempts).await;
        // The faulted record is flushed with the rest of the batch.
        Applied::Settled { committed: true }
    }

    async fn dead_letter(&self, msg: &Message, reason: DlqReason, attempts: u32) {
        dead_letter(
            &self.env.bus,
            &self.name,
            &self.env.counters,
            msg,
            reason,
            attempts,
        )
        .await;
    }

    /// Apply due timers (each in its own transaction), then one flush.
    async fn fire_timers(&self, jobs: Vec<TimerJob>) {
        let mut committed = false;
        for job in jobs {
            let e = &job.entry;
            let Ok(instance) = SagaId::new(e.instance.as_str()) else {
                warn!(instance = %e.instance, "timer of an invalid instance id ignored");
                continue;
            };
            let input = SagaInput::Timer {
                name: &e.name,
                due_ms: e.due_ms,
            };
            let existing = match self.env.store.get(self.name.as_str(), instance.as_str()) {
                Ok(r) => r,
                Err(err) => {
                    error!(error = %err, "cannot read the instance of a due timer; retried on the next scan");
                    continue;
                }
            };
            let mut schedule = self.retry.schedule();
            let mut attempt = 0;
            let transition = loop {
                attempt += 1;
                match decide::decide(&*self.saga, &self.meta, existing.clone(), &instance, input) {
                    Decision::Commit(t) => break Some(t),
                    Decision::Skip(skip) => {
                        debug!(?skip, timer = %e.name, "timer changes nothing; dropping it");
                        if let Err(err) = self.env.store.remove_timer(e) {
                            error!(error = %err, "cannot drop a stale timer");
                        }
                        break None;
                    }
                    Decision::Fault { transition, reason } => {
                        error!(saga = %self.name, instance = %instance, %reason, "saga instance faulted by a timer");
                        break Some(transition);
                    }
                    Decision::Retry(err) if attempt >= self.retry.max_attempts() => {
                        self.env.counters.failed();
                        let reason = format!("timeout handler failed {attempt} times: {err}");
                        match decide::fault(
                            &*self.saga,
                            &self.meta,
                            existing.clone(),
                            &instance,
                            input,
                            reason,
                        ) {
                            Decision::Fault { transition, .. } | Decision::Commit(transition) => {
                                break Some(transition)
                            }
                            Decision::Skip(_) | Decision::Retry(_) => break None,
                        }
                    }
                    Decision::Retry(err) => {
                        self.env.counters.failed();
                        self.env.counters.retried();
                        warn!(attempt, error = %err, timer = %e.name, "timeout handler failed");
                        tokio::time::sleep(schedule.next_delay()).await;
                    }
                }
            };
            let Some(transition) = transition else {
                continue;
            };
            fail::fail_point!("saga-timer-fire");
            match self.env.store.commit(&transition) {
                Ok(()) => {
                    committed = true;
                    self.env.counters.handled();
                }
                Err(err) => {
                    error!(error = %err, "commit of a timer failed; retried on the next scan")
                }
            }
        }
        if committed {
            if let Err(e) = self.env.store.flush().await {
                error!(error = %e, "flush after timers failed");
            }
            self.env.outbox.notify_one();
            self.env.timers_changed.notify_one();
        }
    }
}

/// With spans exported, a saga's outputs become children of the span that decided them (the
/// deterministic ids and data are untouched, so replay and deduplication are unaffected).
fn with_span_trace(t: &mut super::decide::Transition) {
    if let Some(tp) = crate::telemetry::current_traceparent() {
        for e in &mut t.outbox {
            e.traceparent = Some(tp);
        }
    }
}
