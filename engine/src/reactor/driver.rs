//! The reactor driver: the I/O around the pure core in [`super::decide`].
//!
//! One durable pull consumer per reactor; a dispatcher routes each delivery to one of N keyed
//! serial lanes by its correlation (so one correlation is handled in log order, different
//! correlations concurrently); each lane admits, runs the handler with retries, publishes the
//! outputs, then acks.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::Message;
use choreo_schemas::{ActorName, Event, EventRegistry, EventType};
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, info_span, warn, Instrument};

use super::context::ReactContext;
use super::decide::{self, Attempt, Next};
use super::Reactor;
use crate::bus::{Bus, DlqReason};
use crate::delivery::{admit, Delivery, Limits, COMMAND_DEAD_LETTERED, COMMAND_EXPIRED};
use crate::delivery::{already_answered, maybe_past_window};
use crate::delivery::{
    dead_letter, delivery_info, nak_later, open_pull, panic_message, with_progress, PullConsumer,
};
use crate::error::{BusError, NodeError};
use crate::metrics::ActorCounters;
use crate::retry::RetryPolicy;

/// Settings of the runtime that hosts reactors, shared by every reactor of a node.
#[derive(Clone, Debug)]
pub(crate) struct DriverSettings {
    pub(crate) lanes: usize,
    pub(crate) max_depth: u32,
    pub(crate) max_deliveries: u64,
    pub(crate) ack_wait: Duration,
    pub(crate) fetch_batch: usize,
    /// Services must not perform external effects (they report them as `<type>.dry_run`).
    pub(crate) dry_run: bool,
}

/// What a hosted reactor is, after validation.
pub(crate) struct ReactorHost<R: Reactor> {
    pub(crate) reactor: Arc<R>,
    pub(crate) name: ActorName,
    pub(crate) consumes: Arc<BTreeSet<EventType>>,
    pub(crate) emits: Arc<BTreeSet<EventType>>,
    pub(crate) retry: RetryPolicy,
    pub(crate) atomic: bool,
    pub(crate) start: crate::delivery::StartPosition,
}

/// Everything a driver needs from its node.
#[derive(Clone)]
pub(crate) struct DriverEnv {
    pub(crate) bus: Bus,
    pub(crate) registry: Arc<EventRegistry>,
    pub(crate) settings: DriverSettings,
    pub(crate) counters: Arc<ActorCounters>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// A type-erased hosted reactor, so a node can hold reactors of different types.
pub(crate) trait Hosted: Send + Sync {
    fn name(&self) -> &ActorName;
    fn consumes(&self) -> &BTreeSet<EventType>;
    fn emits(&self) -> &BTreeSet<EventType>;
    /// Create or update the consumer, then spawn the run loop.
    fn start(
        &self,
        env: DriverEnv,
    ) -> futures::future::BoxFuture<'_, Result<tokio::task::JoinHandle<()>, NodeError>>;
}

impl<R: Reactor> Hosted for ReactorHost<R> {
    fn name(&self) -> &ActorName {
        &self.name
    }
    fn consumes(&self) -> &BTreeSet<EventType> {
        &self.consumes
    }
    fn emits(&self) -> &BTreeSet<EventType> {
        &self.emits
    }
    fn start(
        &self,
        env: DriverEnv,
    ) -> futures::future::BoxFuture<'_, Result<tokio::task::JoinHandle<()>, NodeError>> {
        Box::pin(async move {
            let consumer = ensure_consumer(
                &env.bus,
                &self.name,
                &self.consumes,
                self.start,
                &env.settings,
            )
            .await?;
            // What answers an input: what the reactor emits, or the runtime's expiry notice.
            let mut answers: Vec<EventType> = self.emits.iter().cloned().collect();
            answers.extend(EventType::new(COMMAND_EXPIRED).ok());
            let driver = Arc::new(Driver {
                reactor: Arc::clone(&self.reactor),
                name: self.name.clone(),
                source: format!("/actors/{}", self.name).into(),
                consumes: Arc::clone(&self.consumes),
                emits: Arc::clone(&self.emits),
                answers,
                retry: self.retry.clone(),
                atomic: self.atomic,
                env,
            });
            Ok(tokio::spawn(driver.run(consumer)))
        })
    }
}

async fn ensure_consumer(
    bus: &Bus,
    name: &ActorName,
    consumes: &BTreeSet<EventType>,
    start: crate::delivery::StartPosition,
    s: &DriverSettings,
) -> Result<PullConsumer, NodeError> {
    let stream_name = bus.config().events_stream();
    let stream = bus
        .jetstream()
        .get_stream_no_info(&stream_name)
        .await
        .map_err(|e| BusError::js(format!("get stream {stream_name}"), e))?;
    // A consumer that exists keeps where it started (the server refuses to change it anyway).
    let deliver_policy = match stream.consumer_info(name.as_str()).await {
        Ok(info) => info.config.deliver_policy,
        Err(_) => start.deliver_policy(),
    };
    let config = pull::Config {
        durable_name: Some(name.to_string()),
        description: Some(format!("choreo reactor {name}")),
        filter_subjects: consumes
            .iter()
            .map(|t| bus.subjects().type_filter(t))
            .chain(std::iter::once(bus.subjects().redrive_filter(name)))
            .collect(),
        deliver_policy,
        ack_policy: AckPolicy::Explicit,
        ack_wait: s.ack_wait,
        // Unlimited: the runtime dead-letters past `max_deliveries` itself, with a reason,
        // instead of letting the server stop delivering silently.
        max_deliver: -1,
        max_ack_pending: i64::try_from(s.lanes * s.fetch_batch * 4).unwrap_or(10_000),
        ..Default::default()
    };
    let consumer = stream
        .create_consumer(config)
        .await
        .map_err(|e| BusError::js(format!("create consumer {name}"), e))?;
    Ok(consumer)
}

struct Driver<R: Reactor> {
    reactor: Arc<R>,
    name: ActorName,
    source: Arc<str>,
    consumes: Arc<BTreeSet<EventType>>,
    emits: Arc<BTreeSet<EventType>>,
    /// The types that answer an input (see [`Driver::answered_before`]).
    answers: Vec<EventType>,
    retry: RetryPolicy,
    atomic: bool,
    env: DriverEnv,
}

impl<R: Reactor> Driver<R> {
    async fn run(self: Arc<Self>, consumer: PullConsumer) {
        let lanes = self.env.settings.lanes.max(1);
        let mut senders = Vec::with_capacity(lanes);
        let mut tasks = JoinSet::new();
        for _ in 0..lanes {
            let (tx, mut rx) = mpsc::channel::<Message>(2);
            senders.push(tx);
            let me = Arc::clone(&self);
            tasks.spawn(async move {
                while let Some(msg) = rx.recv().await {
                    me.process(msg).await;
                }
            });
        }
        let mut shutdown = self.env.shutdown.clone();
        'outer: loop {
            let Some(mut messages) = open_pull(
                &consumer,
                self.env.settings.fetch_batch,
                &mut shutdown,
                self.name.as_str(),
            )
            .await
            else {
                break;
            };
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => {
                        release_buffered(&mut messages, self.env.settings.fetch_batch, self.name.as_str()).await;
                        break 'outer;
                    }
                    next = messages.next() => match next {
                        Some(Ok(msg)) => {
                            let lane = lane_for(self.env.bus.subjects(), msg.subject.as_str(), lanes);
                            if senders[lane].send(msg).await.is_err() {
                                error!(actor = %self.name, "lane stopped; restarting the node is required");
                                break 'outer;
                            }
                        }
                        Some(Err(e)) => {
                            debug!(actor = %self.name, error = %e, "pull stream error; continuing");
                        }
                        None => continue 'outer,
                    }
                }
            }
        }
        // Graceful stop: no more fetching; lanes finish what they hold, then exit.
        drop(senders);
        while let Some(res) = tasks.join_next().await {
            if let Err(e) = res {
                error!(actor = %self.name, error = %e, "lane task ended abnormally");
            }
        }
        info!(actor = %self.name, "reactor stopped");
    }

    async fn process(&self, msg: Message) {
        let (_, delivered) = delivery_info(&msg);
        let subject = msg.subject.to_string();
        let bus = &self.env.bus;
        let limits = Limits {
            max_depth: self.env.settings.max_depth,
            max_deliveries: self.env.settings.max_deliveries,
            partitioner: bus.partitioner(),
        };
        let delivery = Delivery {
            decoded: crate::delivery::decode_delivered(bus.subjects(), &msg),
            subject: bus.subjects().parse_event(&subject),
            delivered,
        };
        let event = match admit(delivery, limits, &self.consumes, &self.env.registry) {
            Ok(e) => e,
            Err(reason) => {
                self.dead_letter(&msg, reason, 0).await;
                return;
            }
        };
        let partition = bus.subjects().parse_event(&subject).map_or(0, |p| p.0);
        let span = info_span!(
            "react",
            actor = %self.name,
            event_type = %event.ty,
            correlation = %event.correlation,
            partition,
            event_id = %event.id,
            trace_id = %event.traceparent.map(|t| t.trace_id_hex()).unwrap_or_default(),
            attempt = tracing::field::Empty,
        );
        crate::telemetry::set_parent(&span, event.traceparent.as_ref());
        if self
            .answered_before(&msg, &event)
            .instrument(span.clone())
            .await
        {
            return;
        }
        if crate::delivery::is_expired(&event, time::OffsetDateTime::now_utc()) {
            // Past its deadline: never run the handler; tell the issuer instead.
            let _enter = span.enter();
            self.env.counters.expired();
            info!(delivered, "command past its deadline: not executed");
            let ctx = ReactContext::new(
                self.name.clone(),
                Arc::clone(&self.source),
                Arc::clone(&self.emits),
                &event,
                1,
            );
            drop(_enter);
            self.publish_and_ack(&msg, ctx.expired(delivered, &event))
                .instrument(span)
                .await;
            return;
        }
        self.handle(&msg, event).instrument(span).await;
    }

    /// Whether `msg` is a copy of an input this reactor already answered, stored again past the
    /// duplicate window (then it is acked and counted, and not handled again). Asks the log only
    /// for inputs old enough for that to be possible (see `delivery::copies`). When the log
    /// cannot be read, the input is handed back for later (true).
    async fn answered_before(&self, msg: &Message, event: &Event) -> bool {
        let now = time::OffsetDateTime::now_utc();
        let stored = msg.info().map_or(now, |i| i.published);
        let window = self.env.bus.config().duplicate_window;
        if !maybe_past_window(event.time, stored, now, window) {
            return false;
        }
        match already_answered(&self.env.bus, event, &self.source, &self.answers).await {
            Ok(false) => false,
            Ok(true) => {
                self.env.counters.duplicate();
                info!("a copy of an input already answered: not handled again");
                if let Err(e) = msg.ack().await {
                    warn!(error = %e, "ack failed; the copy may be delivered again");
                }
                true
            }
            Err(e) => {
                warn!(error = %e, "cannot ask the log whether this input was answered; retrying later");
                nak_later(msg).await;
                true
            }
        }
    }

    async fn dead_letter(&self, msg: &Message, reason: DlqReason, attempts: u32) {
        let decoded = crate::delivery::decode_delivered(self.env.bus.subjects(), msg);
        let notice = match (&reason, decoded) {
            // The notice would be one hop deeper still.
            (DlqReason::DepthExceeded { .. }, _) | (_, Err(_)) => Vec::new(),
            // No notice of a notice (or of an expiry): nobody awaits an answer to those.
            (_, Ok(event))
                if [COMMAND_DEAD_LETTERED, COMMAND_EXPIRED].contains(&event.ty.as_str()) =>
            {
                Vec::new()
            }
            (_, Ok(event)) => ReactContext::new(
                self.name.clone(),
                Arc::clone(&self.source),
                Arc::clone(&self.emits),
                &event,
                attempts,
            )
            .dead_lettered(&event, &reason),
        };
        let landed = dead_letter(
            &self.env.bus,
            &self.name,
            &self.env.counters,
            msg,
            reason,
            attempts,
        )
        .await;
        // Only once it is in the DLQ (else the input is redelivered and may yet succeed), and
        // best effort after the dead letter landed: a saga waiting on this input learns it will
        // not be answered. Lost only if this node dies in between (the instance then stays
        // compensating, visible in `sagas list`).
        if landed && !notice.is_empty() {
            if let Err(e) = self.env.bus.publish_all(&notice).await {
                warn!(error = %e, "cannot publish the dead-letter notice");
            }
        }
    }

    async fn handle(&self, msg: &Message, event: Event) {
        let progress_every = (self.env.settings.ack_wait / 3).max(Duration::from_millis(100));
        let mut schedule = self.retry.schedule();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            tracing::Span::current().record("attempt", attempt);
            let mut ctx = ReactContext::new(
                self.name.clone(),
                Arc::clone(&self.source),
                Arc::clone(&self.emits),
                &event,
                attempt,
            )
            .with_dry_run(self.env.settings.dry_run);
            let started = Instant::now();
            let result = with_progress(
                msg,
                progress_every,
                AssertUnwindSafe(self.reactor.react(&event, &mut ctx)).catch_unwind(),
            )
            .await;
            self.env.counters.latency(started.elapsed());
            let outcome = match result {
                Ok(Ok(())) => Attempt::Succeeded {
                    outputs: ctx.outputs().len(),
                },
                Ok(Err(e)) => Attempt::Failed(e),
                Err(panic) => Attempt::Failed(super::ReactError::Transient(format!(
                    "handler panicked: {}",
                    panic_message(panic.as_ref())
                ))),
            };
            if let Attempt::Failed(e) = &outcome {
                self.env.counters.failed();
                warn!(attempt, error = %e, "handler failed");
            }
            match decide::after_attempt(
                attempt,
                self.retry.max_attempts(),
                event.depth,
                self.env.settings.max_depth,
                outcome,
            ) {
                Next::Publish => {
                    self.publish_and_ack(msg, ctx.into_outputs()).await;
                    return;
                }
                Next::Retry => {
                    self.env.counters.retried();
                    let delay = schedule.next_delay();
                    debug!(attempt, ?delay, "retrying after backoff");
                    with_progress(msg, progress_every, tokio::time::sleep(delay)).await;
                }
                Next::DeadLetter(reason) => {
                    self.dead_letter(msg, reason, attempt).await;
                    return;
                }
            }
        }
    }

    async fn publish_and_ack(&self, msg: &Message, outputs: Vec<Event>) {
        if !outputs.is_empty() {
            // Infrastructure, not the input's fault: retry in place (the ids deduplicate what
            // did land), keeping the input alive, through a server failover; only past that
            // let JetStream redeliver it. A nak at once would spend the input's deliveries in
            // seconds and dead-letter it as poison.
            let progress_every = (self.env.settings.ack_wait / 3).max(Duration::from_millis(100));
            let mut pause = Duration::from_millis(100);
            let give_up = Instant::now() + PUBLISH_RETRY_FOR;
            loop {
                let published = if self.atomic {
                    self.env.bus.publish_atomic(&outputs).await.map(|_| ())
                } else {
                    self.env.bus.publish_all(&outputs).await.map(|_| ())
                };
                match published {
                    Ok(()) => break,
                    Err(e) if Instant::now() + pause < give_up => {
                        warn!(error = %e, ?pause, "publishing outputs failed; retrying");
                        with_progress(msg, progress_every, tokio::time::sleep(pause)).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => {
                        warn!(error = %e, "publishing outputs failed; input will be redelivered");
                        nak_later(msg).await;
                        return;
                    }
                }
            }
        }
        fail::fail_point!("reactor-after-publish-before-ack");
        if let Err(e) = msg.ack().await {
            warn!(error = %e, "ack failed; the input may be redelivered (outputs deduplicate)");
        }
        self.env.counters.handled();
    }
}

/// How long a reactor retries publishing its outputs before it hands the input back.
const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(60);

/// The lane of a delivery: a hash of its subject's correlation token (events and redrives alike),
/// so one correlation always lands in the same lane.
fn lane_for(subjects: &choreo_schemas::Subjects, subject: &str, lanes: usize) -> usize {
    let key = subjects.parse_event(subject).map_or(subject, |(_, c, _)| c);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(h % (lanes as u64)).unwrap_or(0)
}

/// On a graceful stop, hand back the deliveries this node fetched but no lane started: a nak
/// makes JetStream redeliver each at once (to another node, or to this one at its next start),
/// instead of after `ack_wait`. Bounded: at most one fetch batch, within a short grace (a nak'ed
/// message may come straight back to this still-open pull); anything else returns after
/// `ack_wait`.
async fn release_buffered(
    messages: &mut async_nats::jetstream::consumer::pull::Stream,
    max: usize,
    who: &str,
) {
    const GRACE: Duration = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + GRACE * 4;
    let mut released = 0usize;
    let mut seen = std::collections::HashSet::new();
    while released < max && tokio::time::Instant::now() < deadline {
        let Ok(Some(next)) = tokio::time::timeout(GRACE, messages.next()).await else {
            break;
        };
        let Ok(msg) = next else { continue };
        let (seq, _) = delivery_info(&msg);
        if !seen.insert(seq) {
            break; // our own nak came back: nobody else is pulling right now
        }
        if msg
            .ack_with(async_nats::jetstream::AckKind::Nak(None))
            .await
            .is_ok()
        {
            released += 1;
        }
    }
    if released > 0 {
        debug!(
            actor = who,
            released, "handed back fetched deliveries at shutdown"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::lane_for;

    #[test]
    fn one_correlation_one_lane() {
        let s = choreo_schemas::Subjects::default();
        let a = lane_for(&s, "choreo.evt.1.order-1.a.v1", 8);
        assert_eq!(a, lane_for(&s, "choreo.evt.1.order-1.b.v2", 8));
        assert_eq!(
            a,
            lane_for(&s, "choreo.redrive.billing.1.order-1.a.v1", 8),
            "redrives keep the lane"
        );
        assert!(lane_for(&s, "garbage", 8) < 8);
        let spread: std::collections::BTreeSet<_> = (0..100)
            .map(|i| lane_for(&s, &format!("choreo.evt.0.c{i}.a"), 8))
            .collect();
        assert!(spread.len() > 4, "{spread:?}");
    }
}
