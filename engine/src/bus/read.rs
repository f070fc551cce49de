//! Reading events back from the log with ordered consumers (history, dead letters), and
//! following it (see [`follow`](super::follow): follows survive server restarts).

use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::HeaderMap;
use choreo_schemas::{CorrelationId, EnvelopeError, Event};
use futures::stream::BoxStream;
use futures::StreamExt;

use super::dead_letter::DeadLetter;
use super::{follow, wire, Bus};
use crate::error::BusError;

/// An event as stored in the log.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// Stream sequence.
    pub sequence: u64,
    /// Subject it was stored under.
    pub subject: String,
    /// The decoded event, or why it does not decode.
    pub event: Result<Event, EnvelopeError>,
}

pub(crate) struct RawStored {
    pub(crate) sequence: u64,
    pub(crate) subject: String,
    pub(crate) headers: Option<HeaderMap>,
    pub(crate) payload: bytes::Bytes,
    /// When JetStream stored it (Unix ms).
    pub(crate) stored_ms: i64,
}

impl RawStored {
    /// The stored message as an event (see [`wire::decode_stored`]).
    pub(crate) fn decode(
        &self,
        subjects: &choreo_schemas::Subjects,
    ) -> Result<Event, EnvelopeError> {
        wire::decode_stored(
            subjects,
            &self.subject,
            self.headers.as_ref(),
            &self.payload,
            from_unix_ms(self.stored_ms),
        )
    }
}

/// The time of a Unix ms timestamp (`None` out of range).
pub(crate) fn from_unix_ms(ms: i64) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// Unix ms of a stored message's server timestamp.
pub(crate) fn unix_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

impl Bus {
    /// Every event whose subject matches `filter`, in log order (a snapshot: reads up to the
    /// last message present when the read started).
    pub async fn read_events(&self, filter: &str) -> Result<Vec<StoredEvent>, BusError> {
        let raw = self
            .read_raw(&self.config().events_stream(), filter)
            .await?;
        Ok(raw
            .into_iter()
            .map(|m| StoredEvent {
                sequence: m.sequence,
                event: m.decode(self.subjects()),
                subject: m.subject,
            })
            .collect())
    }

    /// The history of one correlation, read with its literal-prefixed subject filter.
    pub async fn history(&self, correlation: &CorrelationId) -> Result<Vec<StoredEvent>, BusError> {
        let p = self.partition_of(correlation);
        let filter = self.subjects().correlation_filter(p, correlation);
        self.read_events(&filter).await
    }

    /// The event stored at `sequence` of the events stream (`None` if it is gone or is not a
    /// valid event).
    pub async fn stored_event(&self, sequence: u64) -> Result<Option<Event>, BusError> {
        let name = self.config().events_stream();
        let stream = self
            .jetstream()
            .get_stream_no_info(&name)
            .await
            .map_err(|e| BusError::js(format!("get stream {name}"), e))?;
        match stream.get_raw_message(sequence).await {
            Ok(m) => Ok(wire::decode_stored(
                self.subjects(),
                &m.subject,
                Some(&m.headers),
                &m.payload,
                Some(m.time),
            )
            .ok()),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(BusError::js(format!("get {name} #{sequence}"), e)),
        }
    }

    /// Every dead letter, in DLQ order.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        let filter = self.subjects().all_dead_letters();
        let raw = self.read_raw(&self.config().dlq_stream(), &filter).await?;
        Ok(raw
            .into_iter()
            .map(|m| DeadLetter::from_message(m.sequence, m.headers.as_ref(), &m.payload))
            .collect())
    }

    /// Follow events matching `filter` as they are stored: from the start of the log when
    /// `from_start`, else only new ones. The follow survives server restarts and failovers: it
    /// resumes right after the last event it delivered, with no gap and no duplicate; transient
    /// failures are logged, not yielded. It yields an error only when the stream was deleted
    /// (and then ends), and ends only if the connection is closed.
    pub async fn follow_events(
        &self,
        filter: &str,
        from_start: bool,
    ) -> Result<BoxStream<'static, Result<StoredEvent, BusError>>, BusError> {
        self.follow_events_matching(vec![filter.to_owned()], from_start)
            .await
    }

    /// Follow dead letters as they are stored (see [`Bus::follow_events`]).
    pub async fn follow_dead_letters(
        &self,
        from_start: bool,
    ) -> Result<BoxStream<'static, Result<DeadLetter, BusError>>, BusError> {
        let filter = self.subjects().all_dead_letters();
        let raw = self
            .follow_raw(&self.config().dlq_stream(), &filter, from_start)
            .await?;
        Ok(raw
            .map(|m| {
                m.map(|m| DeadLetter::from_message(m.sequence, m.headers.as_ref(), &m.payload))
            })
            .boxed())
    }

    /// [`Bus::follow_events`] over several filters at once (one ordered consumer).
    pub async fn follow_events_matching(
        &self,
        filters: Vec<String>,
        from_start: bool,
    ) -> Result<BoxStream<'static, Result<StoredEvent, BusError>>, BusError> {
        let raw = self
            .follow_raw_multi(&self.config().events_stream(), filters, from_start)
            .await?;
        let subjects = self.subjects().clone();
        Ok(raw
            .map(move |m| {
                m.map(|m| StoredEvent {
                    sequence: m.sequence,
                    event: m.decode(&subjects),
                    subject: m.subject,
                })
            })
            .boxed())
    }

    async fn follow_raw(
        &self,
        stream: &str,
        filter: &str,
        from_start: bool,
    ) -> Result<BoxStream<'static, Result<RawStored, BusError>>, BusError> {
        self.follow_raw_multi(stream, vec![filter.to_owned()], from_start)
            .await
    }

    /// Follow `stream` through server restarts (see [`follow`](super::follow)).
    async fn follow_raw_multi(
        &self,
        stream: &str,
        filters: Vec<String>,
        from_start: bool,
    ) -> Result<BoxStream<'static, Result<RawStored, BusError>>, BusError> {
        follow::follow(self.clone(), stream, filters, from_start).await
    }

    pub(crate) async fn read_raw(
        &self,
        stream: &str,
        filter: &str,
    ) -> Result<Vec<RawStored>, BusError> {
        self.read_raw_multi(stream, vec![filter.to_owned()]).await
    }

    /// Snapshot read of every message matching any of `filters`, in stream order.
    pub(crate) async fn read_raw_multi(
        &self,
        stream: &str,
        filters: Vec<String>,
    ) -> Result<Vec<RawStored>, BusError> {
        self.read_raw_with(stream, filters, DeliverPolicy::All)
            .await
    }

    /// Snapshot read with a delivery policy (`LastPerSubject` reads a changelog's latest
    /// values).
    pub(crate) async fn read_raw_with(
        &self,
        stream: &str,
        filters: Vec<String>,
        deliver_policy: DeliverPolicy,
    ) -> Result<Vec<RawStored>, BusError> {
        let what = || format!("read {stream} {filters:?}");
        let stream = self
            .jetstream()
            .get_stream_no_info(stream)
            .await
            .map_err(|e| BusError::js(what(), e))?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subjects: filters.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::js(what(), e))?;
        let name = consumer.cached_info().name.clone();
        let read = self.drain_snapshot(consumer, &what()).await;
        // A snapshot read's consumer is done: delete it now rather than leave it to expire
        // (a server limits consumers per stream; many reads in a row would reach it). Best
        // effort: an ordered consumer that re-created itself mid-read expires on its own.
        if let Err(e) = stream.delete_consumer(&name).await {
            tracing::debug!(consumer = %name, error = %e, "cannot delete a read's consumer");
        }
        read
    }

    async fn drain_snapshot(
        &self,
        mut consumer: async_nats::jetstream::consumer::Consumer<OrderedConfig>,
        what: &str,
    ) -> Result<Vec<RawStored>, BusError> {
        let pending = consumer
            .info()
            .await
            .map_err(|e| BusError::js(what.to_owned(), e))?
            .num_pending;
        let mut out = Vec::with_capacity(usize::try_from(pending).unwrap_or(0));
        if pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| BusError::js(what.to_owned(), e))?;
        let idle = self.config().request_timeout.max(Duration::from_secs(1));
        while out.len() < usize::try_from(pending).unwrap_or(usize::MAX) {
            let next = tokio::time::timeout(idle, messages.next())
                .await
                .map_err(|_| {
                    BusError::js(what.to_owned(), "timed out waiting for stored messages")
                })?;
            let Some(msg) = next else { break };
            let msg = msg.map_err(|e| BusError::js(what.to_owned(), e))?;
            let info = msg.info().map_err(|e| BusError::js(what.to_owned(), e))?;
            let sequence = info.stream_sequence;
            let remaining = info.pending;
            out.push(RawStored {
                sequence,
                subject: msg.subject.to_string(),
                headers: msg.headers.clone(),
                payload: msg.payload.clone(),
                stored_ms: unix_ms(info.published),
            });
            if remaining == 0 {
                break;
            }
        }
        Ok(out)
    }
}
