//! Operating on the dead-letter queue: list, show, redrive, purge.

use async_nats::HeaderMap;
use choreo_schemas::{headers, ActorName, CorrelationId, EventType};

use super::dead_letter::{
    DeadLetter, BODY_REFERENCE, DLQ_ACTOR, DLQ_BODY, DLQ_STREAM_SEQ, DLQ_SUBJECT, REDRIVEN_FROM,
};
use super::{Bus, Published};
use crate::error::BusError;

/// The outcome of redriving one dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redriven {
    /// The DLQ sequence that was redriven (and removed from the DLQ).
    pub dlq_sequence: u64,
    /// The actor that will see the event again.
    pub actor: String,
    /// The subject it was republished on.
    pub subject: String,
    /// Where it landed in the events stream.
    pub published: Published,
}

impl Bus {
    async fn dlq_handle(
        &self,
    ) -> Result<(String, async_nats::jetstream::stream::Stream<()>), BusError> {
        let name = self.config().dlq_stream();
        let stream = self
            .jetstream()
            .get_stream_no_info(&name)
            .await
            .map_err(|e| BusError::js(format!("get stream {name}"), e))?;
        Ok((name, stream))
    }

    /// Dead letters, optionally of one actor, in DLQ order.
    pub async fn dead_letters_of_actor(
        &self,
        actor: Option<&ActorName>,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let filter = match actor {
            Some(a) => format!("{}.dlq.{a}.>", self.subjects().root()),
            None => self.subjects().all_dead_letters(),
        };
        let raw = self.read_raw(&self.config().dlq_stream(), &filter).await?;
        Ok(raw
            .into_iter()
            .map(|m| DeadLetter::from_message(m.sequence, m.headers.as_ref(), &m.payload))
            .collect())
    }

    /// One dead letter by DLQ sequence (`None` if there is none).
    pub async fn dead_letter(&self, sequence: u64) -> Result<Option<DeadLetter>, BusError> {
        Ok(self
            .raw_dead_letter(sequence)
            .await?
            .map(|(h, body)| DeadLetter::from_message(sequence, Some(&h), &body)))
    }

    async fn raw_dead_letter(
        &self,
        sequence: u64,
    ) -> Result<Option<(HeaderMap, bytes::Bytes)>, BusError> {
        let (_, stream) = self.dlq_handle().await?;
        match stream.get_raw_message(sequence).await {
            Ok(m) => Ok(Some((m.headers, m.payload))),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
            {
                Ok(None)
            }
            Err(e) => Err(BusError::js(format!("get dead letter {sequence}"), e)),
        }
    }

    /// Republish a dead letter's original event so its actor (only) sees it again, then remove
    /// the entry from the DLQ. The event keeps its `ce-id` (idempotency keys stay valid) and gains
    /// `choreo-redriven-from`; if it fails again it lands back in the DLQ. Redriving the same
    /// entry twice within the duplicate window stores it once.
    pub async fn redrive(&self, sequence: u64) -> Result<Redriven, BusError> {
        let not_redrivable = |reason: String| BusError::IncompatibleStream {
            stream: self.config().dlq_stream(),
            reason: format!("dead letter {sequence} cannot be redriven: {reason}"),
        };
        let (h, body) = self
            .raw_dead_letter(sequence)
            .await?
            .ok_or_else(|| not_redrivable("no such entry".into()))?;
        let get = |name: &str| {
            h.get(name).map(|v| {
                percent_encoding::percent_decode_str(v.as_str())
                    .decode_utf8_lossy()
                    .into_owned()
            })
        };
        let actor = ActorName::new(get(DLQ_ACTOR).unwrap_or_default())
            .map_err(|e| not_redrivable(format!("actor header: {e}")))?;
        let original = get(DLQ_SUBJECT).unwrap_or_default();
        let (partition, correlation, ty) =
            self.subjects().parse_event(&original).ok_or_else(|| {
                not_redrivable(format!(
                    "original subject {original:?} is not an event subject"
                ))
            })?;
        let correlation =
            CorrelationId::new(correlation).map_err(|e| not_redrivable(e.to_string()))?;
        let ty = EventType::new(ty).map_err(|e| not_redrivable(e.to_string()))?;
        let subject = self
            .subjects()
            .redrive(&actor, partition, &correlation, &ty);
        let mut out = HeaderMap::new();
        for (name, values) in h.iter() {
            let n: &str = name.as_ref();
            if n.starts_with("choreo-dlq-") || n.eq_ignore_ascii_case(headers::NATS_MSG_ID) {
                continue;
            }
            for v in values {
                out.append(n, v.as_str());
            }
        }
        // A dead letter too large to copy refers to its original in the events stream.
        let body = if get(DLQ_BODY).as_deref() == Some(BODY_REFERENCE) {
            let at: u64 = get(DLQ_STREAM_SEQ)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let events = self.config().events_stream();
            let stream = self
                .jetstream()
                .get_stream_no_info(&events)
                .await
                .map_err(|e| BusError::js(format!("get stream {events}"), e))?;
            stream
                .get_raw_message(at)
                .await
                .map_err(|e| {
                    not_redrivable(format!("its original #{at} is no longer in {events}: {e}"))
                })?
                .payload
        } else {
            body
        };
        out.insert(headers::NATS_MSG_ID, format!("redrive-{sequence}").as_str());
        out.insert(REDRIVEN_FROM, sequence.to_string().as_str());
        let published = self.publish_raw(subject.clone(), out, body).await?;
        self.purge_dead_letter(sequence).await?;
        Ok(Redriven {
            dlq_sequence: sequence,
            actor: actor.to_string(),
            subject,
            published,
        })
    }

    /// Remove one dead letter. Returns whether it existed.
    pub async fn purge_dead_letter(&self, sequence: u64) -> Result<bool, BusError> {
        let (_, stream) = self.dlq_handle().await?;
        match stream.delete_message(sequence).await {
            Ok(existed) => Ok(existed),
            Err(e) if e.to_string().contains("no message found") => Ok(false),
            Err(e) => Err(BusError::js(format!("delete dead letter {sequence}"), e)),
        }
    }

    /// Remove every dead letter (of one actor, if given). Returns how many were removed.
    pub async fn purge_dead_letters(&self, actor: Option<&ActorName>) -> Result<u64, BusError> {
        let (name, stream) = self.dlq_handle().await?;
        let purge = match actor {
            Some(a) => {
                stream
                    .purge()
                    .filter(format!("{}.dlq.{a}.>", self.subjects().root()))
                    .await
            }
            None => stream.purge().await,
        };
        purge
            .map(|p| p.purged)
            .map_err(|e| BusError::js(format!("purge {name}"), e))
    }
}
