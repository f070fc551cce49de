//! The bus: one connection to NATS, the provisioned streams, publishing and reading events.

pub(crate) mod dead_letter;
mod dlq_ops;
mod follow;
mod provision;
pub(crate) mod quarantine;
mod read;
mod scan;
mod stats;
mod version;
pub mod wire;

use std::sync::Arc;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use async_nats::{Client, ConnectOptions};
use choreo_schemas::{Event, Partitioner, Subjects};
use futures::future::try_join_all;

use crate::config::{Auth, BusConfig};
use crate::error::BusError;

pub use dead_letter::{
    DeadLetter, DlqReason, BODY_REFERENCE, BODY_TRUNCATED, DLQ_ACTOR, DLQ_ATTEMPTS, DLQ_BODY,
    DLQ_BODY_LEN, DLQ_DETAIL, DLQ_REASON, DLQ_STREAM_SEQ, DLQ_SUBJECT, DLQ_TIME, REDRIVEN_FROM,
};
pub use dlq_ops::Redriven;
pub(crate) use provision::kv_bucket;
pub use provision::{PARTITIONS_METADATA_KEY, PARTITION_HASH_METADATA_KEY};
pub use quarantine::{
    unreadable_headers, Quarantined, DLQ_RAW_HEADERS, QUARANTINE_ACTOR, RAW_HEADERS_KEEP,
};
pub(crate) use read::unix_ms;
pub use read::StoredEvent;
pub use stats::{ConsumerStats, LogStats, StreamStats};
pub use version::MIN_SERVER_VERSION;
pub(crate) use version::{is_supported as version_supported, parse_version as version_parse};

/// Where a published event landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// Stream sequence of the event (of the original, when this publish was a duplicate).
    pub stream_sequence: u64,
    /// True when JetStream dropped this publish as a duplicate of an earlier one (same id).
    pub duplicate: bool,
}

struct Inner {
    client: Client,
    /// Counts the client's reconnections (the quarantine sweep runs after each).
    reconnects: tokio::sync::watch::Receiver<u64>,
    js: jetstream::Context,
    config: BusConfig,
    subjects: Subjects,
    /// The namespace's partitioning, as recorded on its events stream.
    partitioner: Partitioner,
    /// Deletions of dropped follows' consumers, awaited by [`Bus::close`].
    cleanups: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// What connecting does to the namespace's streams.
#[derive(Clone, Copy)]
enum Provisioning {
    /// Create them if missing, verify them (and upgrade them in place) if present.
    Create,
    /// Only look them up ([`Bus::open`]).
    Inspect,
}

/// A connection to NATS with the choreo streams provisioned. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("url", &self.inner.config.url)
            .field("namespace", &self.inner.config.namespace)
            .field("partitions", &self.inner.config.partitions)
            .finish()
    }
}

impl Bus {
    /// Connect, check the server version (>= 2.12), and provision the streams idempotently.
    ///
    /// Fails with [`BusError::PartitionMismatch`] when the log exists with another partition count.
    pub async fn connect(config: BusConfig) -> Result<Self, BusError> {
        Self::connect_as(config, Provisioning::Create).await
    }

    /// Connect to a namespace that exists, creating and changing nothing: for reading
    /// (operator commands, dashboards). Fails with [`BusError::NoNamespace`] when the
    /// namespace has no log, and with [`BusError::PartitionMismatch`] as [`Bus::connect`] does.
    /// The bus can publish, but the streams it would need are not checked.
    pub async fn open(config: BusConfig) -> Result<Self, BusError> {
        Self::connect_as(config, Provisioning::Inspect).await
    }

    async fn connect_as(config: BusConfig, how: Provisioning) -> Result<Self, BusError> {
        let (client, reconnects) = connect_client(&config).await?;
        let version = client.server_info().version;
        if !version::is_supported(&version) {
            return Err(BusError::ServerTooOld {
                found: version,
                required: format!("{}.{}", MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1),
            });
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .max_ack_inflight(4096)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let partitioner = match how {
            Provisioning::Create => provision::provision(&js, &config).await?,
            Provisioning::Inspect => provision::inspect(&js, &config).await?,
        };
        let subjects = Subjects::new(config.namespace.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                reconnects,
                js,
                config,
                subjects,
                partitioner,
                cleanups: std::sync::Mutex::new(Vec::new()),
            }),
        })
    }

    /// Remember a clean-up task (a dropped follow's consumer deletion) for [`Bus::close`].
    pub(crate) fn track_cleanup(&self, task: tokio::task::JoinHandle<()>) {
        let mut tasks = self
            .inner
            .cleanups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Finish before the process exits: await the deletion of dropped follows' consumers (so a
    /// `tail` leaves no consumer behind) and flush what was published.
    pub async fn close(&self) {
        let tasks: Vec<_> = std::mem::take(
            &mut *self
                .inner
                .cleanups
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in tasks {
            let _ = task.await;
        }
        let _ = self.inner.client.flush().await;
    }

    /// The underlying NATS client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Changes each time the client connects again after losing its connection.
    pub(crate) fn reconnects(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.reconnects.clone()
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// The configuration the bus was built with.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// The subject scheme of this namespace.
    pub fn subjects(&self) -> &Subjects {
        &self.inner.subjects
    }

    /// The namespace's partitioning (count and hash), as recorded on its events stream.
    pub fn partitioner(&self) -> Partitioner {
        self.inner.partitioner
    }

    /// The partition of `correlation` in this namespace.
    pub fn partition_of(&self, correlation: &choreo_schemas::CorrelationId) -> u16 {
        self.inner.partitioner.partition_of(correlation)
    }

    /// The version the connected server reported.
    pub fn server_version(&self) -> String {
        self.inner.client.server_info().version
    }

    /// The subject an event is published on: `<ns>.evt.<partition>.<correlation>.<type>`.
    pub fn subject_of(&self, event: &Event) -> String {
        let p = self.partition_of(&event.correlation);
        self.inner.subjects.event(p, &event.correlation, &event.ty)
    }

    /// The subject filter for events of one correlation and/or one type (all events if neither).
    pub fn filter_for(
        &self,
        correlation: Option<&choreo_schemas::CorrelationId>,
        ty: Option<&choreo_schemas::EventType>,
    ) -> String {
        let s = &self.inner.subjects;
        let p = |c| self.partition_of(c);
        match (correlation, ty) {
            (Some(c), Some(t)) => s.event(p(c), c, t),
            (Some(c), None) => s.correlation_filter(p(c), c),
            (None, Some(t)) => s.type_filter(t),
            (None, None) => s.all_events(),
        }
    }

    /// Publish one event and wait for JetStream's ack.
    pub async fn publish(&self, event: &Event) -> Result<Published, BusError> {
        let subject = self.subject_of(event);
        let fut = self.send(&subject, event).await?;
        await_ack(subject, fut).await
    }

    /// Publish many events pipelined (all sent, then all acks awaited). Returns in input order.
    /// On error some events may be on the log; publishing the same events again is safe
    /// because their ids deduplicate.
    pub async fn publish_all(&self, events: &[Event]) -> Result<Vec<Published>, BusError> {
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let subject = self.subject_of(event);
            let fut = self.send(&subject, event).await?;
            pending.push(await_ack(subject, fut));
        }
        try_join_all(pending).await
    }

    /// Publish events as one JetStream atomic batch: either all are stored, or none.
    /// The batch id is the first event's id, so a re-run of the same batch is recognised.
    pub async fn publish_atomic(&self, events: &[Event]) -> Result<Published, BusError> {
        let Some((last, rest)) = events.split_last() else {
            return Ok(Published {
                stream_sequence: 0,
                duplicate: true,
            });
        };
        if rest.is_empty() {
            return self.publish(last).await;
        }
        let batch_id = events[0].id.to_string();
        for (i, event) in rest.iter().enumerate() {
            let subject = self.subject_of(event);
            let (mut headers, body) = self.message_of(event);
            headers.insert(async_nats::header::NATS_BATCH_ID, batch_id.as_str());
            headers.insert(
                async_nats::header::NATS_BATCH_SEQUENCE,
                (i + 1).to_string().as_str(),
            );
            self.inner
                .client
                .publish_with_headers(subject.clone(), headers, body.into())
                .await
                .map_err(|e| BusError::Publish {
                    subject,
                    reason: e.to_string(),
                })?;
        }
        let subject = self.subject_of(last);
        let (mut headers, body) = self.message_of(last);
        headers.insert(async_nats::header::NATS_BATCH_ID, batch_id.as_str());
        headers.insert(
            async_nats::header::NATS_BATCH_SEQUENCE,
            events.len().to_string().as_str(),
        );
        headers.insert(
            async_nats::header::NATS_BATCH_COMMIT,
            async_nats::header::NATS_BATCH_COMMIT_FINAL,
        );
        let msg = PublishMessage::build()
            .headers(headers)
            .payload(body.into());
        let fut = self
            .inner
            .js
            .send_publish(subject.clone(), msg)
            .await
            .map_err(|e| BusError::Publish {
                subject: subject.clone(),
                reason: e.to_string(),
            })?;
        await_ack(subject, fut).await
    }

    /// The message of an event: headers and body, its data in the configured format.
    fn message_of(&self, event: &Event) -> (async_nats::HeaderMap, Vec<u8>) {
        wire::event_message(event, self.inner.config.data_format_of(&event.ty))
    }

    async fn send(&self, subject: &str, event: &Event) -> Result<PublishAckFuture, BusError> {
        let (headers, body) = self.message_of(event);
        let msg = PublishMessage::build()
            .headers(headers)
            .payload(body.into());
        self.inner
            .js
            .send_publish(subject.to_owned(), msg)
            .await
            .map_err(|e| BusError::Publish {
                subject: subject.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Publish a raw message to a subject and wait for the ack (used for dead letters).
    pub(crate) async fn publish_raw(
        &self,
        subject: String,
        headers: async_nats::HeaderMap,
        payload: bytes::Bytes,
    ) -> Result<Published, BusError> {
        let fut = self
            .inner
            .js
            .send_publish(
                subject.clone(),
                PublishMessage::build().headers(headers).payload(payload),
            )
            .await
            .map_err(|e| BusError::Publish {
                subject: subject.clone(),
                reason: e.to_string(),
            })?;
        await_ack(subject, fut).await
    }
}

async fn await_ack(subject: String, fut: PublishAckFuture) -> Result<Published, BusError> {
    let ack = fut.await.map_err(|e| BusError::Publish {
        subject,
        reason: e.to_string(),
    })?;
    Ok(Published {
        stream_sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}

async fn connect_client(
    cfg: &BusConfig,
) -> Result<(Client, tokio::sync::watch::Receiver<u64>), BusError> {
    let err = |reason: String| BusError::Connect {
        url: cfg.url.clone(),
        reason,
    };
    let (reconnected, reconnects) = tokio::sync::watch::channel(0u64);
    let reconnected = Arc::new(reconnected);
    let mut opts = ConnectOptions::new()
        .name(&cfg.client_name)
        .event_callback(move |event| {
            let reconnected = Arc::clone(&reconnected);
            async move {
                match event {
                    async_nats::Event::Connected => {
                        reconnected.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("lost the NATS connection; reconnecting");
                    }
                    _ => {}
                }
            }
        })
        .request_timeout(Some(cfg.request_timeout))
        .connection_timeout(cfg.request_timeout);
    opts = match &cfg.auth {
        Auth::None => opts,
        Auth::UserPassword { user, password } => {
            opts.user_and_password(user.clone(), password.clone())
        }
        Auth::Token(t) => opts.token(t.clone()),
        Auth::NKey(seed) => opts.nkey(seed.clone()),
        Auth::CredsFile(path) => opts.credentials_file(path).await.map_err(|e| {
            err(format!(
                "cannot read credentials file {}: {e}",
                path.display()
            ))
        })?,
    };
    if cfg.tls.required {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &cfg.tls.root_certificates {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &cfg.tls.client_cert {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    // Several servers (a cluster): comma-separated; the client fails over between them.
    let servers: Vec<String> = cfg
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    let client = opts
        .connect(servers)
        .await
        .map_err(|e| err(e.to_string()))?;
    Ok((client, reconnects))
}
