//! A follow of a stream that survives server restarts: an ordered consumer re-created from the
//! last sequence delivered whenever it fails.
//!
//! async-nats's own ordered consumer (`consumer::pull::Ordered`) is not used: it re-creates
//! itself internally and never tells, so a deleted stream makes it retry forever in silence;
//! when it re-creates itself before delivering anything it starts over from the stream's first
//! message whatever the original policy was; and after a restart it surfaces failed pulls
//! ("consumer not found") while its own recovery backs off up to 10 s. This follow does the
//! ordered-consumer protocol itself over a plain pull consumer with the same settings
//! (ephemeral, memory-stored, one replica, no acks, one delivery, removed by the server after
//! 30 s without pulls), so every failure reaches it, and it owns the resume point:
//!
//! - The start is always a concrete sequence: from the start of the stream, or, for new messages
//!   only, right after the stream's last sequence when the follow was opened (never
//!   `DeliverPolicy::New`, whose meaning would shift to "after the outage" on a re-creation and
//!   lose what was published during it).
//! - It remembers the last stream sequence delivered and resumes at the next one; anything at
//!   or below it is skipped, and a gap in the consumer sequence (a message the client dropped)
//!   re-creates the consumer, so delivery is in order, gap-free and duplicate-free across
//!   re-creations.
//! - When the client has reconnected since the consumer was created (checked every
//!   [`RECONNECT_CHECK`]), the consumer is re-created from the last sequence + 1 without waiting
//!   for the pull stream to fail: a restarted server has lost it, and the pull stream would
//!   only notice after two missed heartbeats (10 s).
//! - Before each re-creation, the messages where it resumes are checked for ones the client
//!   cannot parse (a header block that is not UTF-8 cuts the whole connection), and those are
//!   quarantined (`bus::quarantine`), so a poison message costs one reconnection, not one per
//!   re-creation.
//! - An error of the pull stream (missed heartbeats, failed pulls, no responders, consumer
//!   deleted) is not returned to the caller: it is logged, the pull stream dropped (its
//!   server-side consumer, if still there, expires by its inactivity threshold) and a consumer
//!   re-created from the last sequence + 1, retried with a bounded backoff (100 ms doubling to
//!   2 s) for as long as the caller holds the follow.
//! - The only error returned is a permanent one: the stream was deleted (the server answered
//!   "stream not found" on [`GONE_CONFIRMATIONS`] consecutive attempts, so that a cluster still
//!   recovering its streams is not mistaken for a deletion). The follow ends after it.
//! - The follow ends (without an error) when the pull stream ends: async-nats ends it only when
//!   its subscription is closed, i.e. when the connection is closed for good (drained, or out of
//!   reconnect attempts; the bus reconnects forever). A server restart shows up as errors,
//!   never as an end.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, Stream as PullStream};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::Client;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::time::{Interval, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::read::{unix_ms, RawStored};
use crate::error::BusError;

/// First pause between attempts to re-create the consumer.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest pause between attempts (the pause doubles up to it).
const MAX_RETRY: Duration = Duration::from_secs(2);
/// Consecutive "stream not found" answers after which the stream is taken as deleted.
const GONE_CONFIRMATIONS: u32 = 3;
/// Messages asked for per pull (async-nats's ordered consumer asks for as many).
const BATCH: usize = 500;
/// How long one pull waits on the server.
const EXPIRES: Duration = Duration::from_secs(30);
/// Idle heartbeat the server sends while nothing is stored: two missed ones (10 s of silence)
/// end the pull stream with an error, which re-creates the consumer.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// The server removes a follow's consumer after this long without pulls (a dropped follow).
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(30);
/// How often a follow checks whether the client reconnected (a local counter, no request).
const RECONNECT_CHECK: Duration = Duration::from_secs(1);

/// Follow the messages of `stream` matching any of `filters`, from its first message when
/// `from_start`, else from the first one stored after this call. Errors of the initial creation
/// are returned; after that, see the module docs.
pub(super) async fn follow(
    bus: super::Bus,
    stream: &str,
    filters: Vec<String>,
    from_start: bool,
) -> Result<BoxStream<'static, Result<RawStored, BusError>>, BusError> {
    let what = format!("follow {stream} {filters:?}");
    let js = bus.jetstream().clone();
    let last = if from_start {
        0
    } else {
        js.get_stream(stream)
            .await
            .map_err(|e| BusError::js(what.clone(), e))?
            .cached_info()
            .state
            .last_sequence
    };
    let mut check = tokio::time::interval(RECONNECT_CHECK);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut follow = Follow {
        client: js.client(),
        js,
        bus,
        stream: stream.to_owned(),
        filters,
        what,
        last,
        inner: None,
        delivered: 0,
        connects: 0,
        check,
        delay: FIRST_RETRY,
        attempts: 0,
        gone: 0,
        done: false,
        consumer: None,
    };
    let inner = follow
        .open()
        .await
        .map_err(|e| BusError::js(follow.what.clone(), e.reason()))?;
    follow.inner = Some(inner);
    Ok(stream::unfold(follow, |mut f| async move {
        let item = f.next().await?;
        Some((item, f))
    })
    .boxed())
}

/// The state of one follow.
struct Follow {
    client: Client,
    js: jetstream::Context,
    /// For the quarantine check before a re-creation.
    bus: super::Bus,
    stream: String,
    filters: Vec<String>,
    /// What is being done, for errors and logs.
    what: String,
    /// The last stream sequence delivered (or, before the first delivery, the one before the
    /// start): the follow resumes at `last + 1`.
    last: u64,
    /// The current consumer's messages; `None` while it has to be (re-)created.
    inner: Option<PullStream>,
    /// Consumer sequence of the current consumer's last message (0: none yet).
    delivered: u64,
    /// The client's connection count when the current consumer was created.
    connects: u64,
    /// Ticks the reconnection check.
    check: Interval,
    /// Pause before the next attempt to re-create.
    delay: Duration,
    /// Failed attempts to re-create since the pull stream last failed.
    attempts: u32,
    /// Consecutive "stream not found" answers.
    gone: u32,
    /// A permanent error was returned: the follow is over.
    done: bool,
    /// The current consumer's name, deleted when the follow is dropped.
    consumer: Option<String>,
}

impl Drop for Follow {
    /// A dropped follow deletes its consumer rather than leave it to the inactivity threshold;
    /// [`super::Bus::close`] awaits the deletion (a process about to exit calls it).
    fn drop(&mut self) {
        let Some(name) = self.consumer.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let js = self.js.clone();
        let stream = self.stream.clone();
        let task = rt.spawn(async move {
            if let Ok(s) = js.get_stream_no_info(&stream).await {
                if let Err(e) = s.delete_consumer(&name).await {
                    tracing::debug!(consumer = %name, error = %e, "cannot delete a follow's consumer");
                }
            }
        });
        self.bus.track_cleanup(task);
    }
}

/// Why creating the consumer failed.
enum OpenError {
    /// The stream does not exist.
    StreamNotFound(String),
    /// Anything else (server down, timeout, …): retried.
    Transient(String),
}

impl OpenError {
    fn reason(self) -> String {
        match self {
            Self::StreamNotFound(r) | Self::Transient(r) => r,
        }
    }
}

impl Follow {
    /// A consumer with ordered-consumer settings delivering from `last + 1`, and its messages.
    async fn open(&mut self) -> Result<PullStream, OpenError> {
        self.connects = self.connect_count();
        let deliver_policy = if self.last == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: self.last.saturating_add(1),
            }
        };
        let config = pull::Config {
            deliver_policy,
            ack_policy: AckPolicy::None,
            max_deliver: 1,
            filter_subjects: self.filters.clone(),
            inactive_threshold: INACTIVE_THRESHOLD,
            num_replicas: 1,
            memory_storage: true,
            ..Default::default()
        };
        let consumer = self
            .js
            .create_consumer_on_stream(config, &self.stream)
            .await
            .map_err(|e| match e.kind() {
                ConsumerErrorKind::JetStream(js)
                    if js.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    OpenError::StreamNotFound(e.to_string())
                }
                _ => OpenError::Transient(e.to_string()),
            })?;
        self.consumer = Some(consumer.cached_info().name.clone());
        consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .expires(EXPIRES)
            .heartbeat(HEARTBEAT)
            .messages()
            .await
            .map_err(|e| OpenError::Transient(e.to_string()))
    }

    /// The next message past `last`; `None` when the follow is over.
    async fn next(&mut self) -> Option<Result<RawStored, BusError>> {
        loop {
            if self.done {
                return None;
            }
            let Some(inner) = self.inner.as_mut() else {
                if let Some(err) = self.reopen().await {
                    self.done = true;
                    return Some(Err(err));
                }
                continue;
            };
            let next = tokio::select! {
                biased;
                next = inner.next() => next,
                _ = self.check.tick() => {
                    if self.connect_count() != self.connects {
                        self.interrupted(&"the client reconnected");
                    }
                    continue;
                }
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    self.interrupted(&e);
                    continue;
                }
                None => return None,
            };
            let (sequence, consumer_sequence, stored_ms) = match msg.info() {
                Ok(info) => (
                    info.stream_sequence,
                    info.consumer_sequence,
                    unix_ms(info.published),
                ),
                Err(e) => {
                    self.interrupted(&format!("a message without JetStream metadata: {e}"));
                    continue;
                }
            };
            if consumer_sequence != self.delivered.saturating_add(1) {
                self.interrupted(&format!(
                    "consumer sequence {consumer_sequence} after {}",
                    self.delivered
                ));
                continue;
            }
            self.delivered = consumer_sequence;
            if sequence <= self.last {
                continue;
            }
            self.last = sequence;
            let (msg, _acker) = msg.split();
            return Some(Ok(RawStored {
                sequence,
                subject: msg.subject.to_string(),
                headers: msg.headers,
                payload: msg.payload,
                stored_ms,
            }));
        }
    }

    /// How many times the client has connected so far.
    fn connect_count(&self) -> u64 {
        self.client.statistics().connects.load(Ordering::Relaxed)
    }

    /// The pull stream failed: drop it, to be re-created from `last + 1`.
    fn interrupted(&mut self, error: &dyn std::fmt::Display) {
        warn!(follow = %self.what, last = self.last, %error,
            "follow interrupted; re-creating its consumer");
        self.inner = None;
        self.delivered = 0;
    }

    /// One attempt to re-create the pull stream, pausing after a failure. Returns the
    /// permanent error that ends the follow, if any.
    async fn reopen(&mut self) -> Option<BusError> {
        // What cut the connection may be a message the client cannot parse, right where the
        // follow resumes: move it out of the way first, or it cuts the connection again.
        if let Err(e) = self
            .bus
            .quarantine_after(&self.stream, self.last, &self.filters)
            .await
        {
            debug!(follow = %self.what, error = %e, "quarantine check before resuming failed");
        }
        match self.open().await {
            Ok(inner) => {
                info!(follow = %self.what, from = self.last.saturating_add(1),
                    attempts = self.attempts.saturating_add(1), "follow resumed");
                self.inner = Some(inner);
                self.delivered = 0;
                self.delay = FIRST_RETRY;
                self.attempts = 0;
                self.gone = 0;
                return None;
            }
            Err(OpenError::StreamNotFound(reason)) => {
                self.gone = self.gone.saturating_add(1);
                if self.gone >= GONE_CONFIRMATIONS {
                    return Some(BusError::js(self.what.clone(), reason));
                }
                debug!(follow = %self.what, %reason, "stream not found; confirming");
            }
            Err(OpenError::Transient(reason)) => {
                self.gone = 0;
                if self.attempts == 0 {
                    warn!(follow = %self.what, %reason,
                        "re-creating the follow's consumer failed; retrying");
                } else {
                    debug!(follow = %self.what, %reason, attempts = self.attempts.saturating_add(1),
                        "re-creating the follow's consumer failed; retrying");
                }
            }
        }
        self.attempts = self.attempts.saturating_add(1);
        tokio::time::sleep(self.delay).await;
        self.delay = self.delay.saturating_mul(2).min(MAX_RETRY);
        None
    }
}
