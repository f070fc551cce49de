//! A fenced commit: one atomic batch, the head last (a replica that holds a head holds every
//! record of its commit, so one snapshot read from any replica is consistent up to its head).

use async_nats::header::{
    NATS_BATCH_COMMIT, NATS_BATCH_COMMIT_FINAL, NATS_BATCH_ID, NATS_BATCH_SEQUENCE,
    NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_TTL,
};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::HeaderMap;
use serde::Serialize;

use super::{Changelog, ChangelogError};
use crate::model::{InstanceRecord, PartitionHead};

/// Largest number of records in one commit (an atomic batch holds at most 1000 messages).
pub(crate) const MAX_RECORDS_PER_COMMIT: usize = 500;

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ChangelogError> {
    rmp_serde::to_vec_named(v).map_err(|e| ChangelogError::Encode(e.to_string()))
}

impl Changelog {
    /// Write `records` and then `head` of `partition` as one atomic batch, only if the
    /// partition's head is still at `expected` (0: no head yet). Returns the new head's sequence.
    pub(crate) async fn commit(
        &self,
        partition: u16,
        expected: u64,
        head: &PartitionHead,
        records: &[InstanceRecord],
    ) -> Result<u64, ChangelogError> {
        let unknown = |reason: String| ChangelogError::Unknown { partition, reason };
        // An ended instance's record expires after the retention (a whole number of seconds).
        let ttl = self.ended_ttl.map(|d| {
            d.as_secs()
                .saturating_add(u64::from(d.subsec_nanos() > 0))
                .max(1)
                .to_string()
        });
        let mut msgs = Vec::with_capacity(records.len() + 1);
        for r in records {
            let expires = ttl.clone().filter(|_| r.status.is_terminal());
            msgs.push((
                self.instance_subject(partition, &r.saga, &r.instance),
                encode(r)?,
                expires,
            ));
        }
        msgs.push((self.head_subject(partition), encode(head)?, None));
        let batch_id = uuid::Uuid::now_v7().simple().to_string();
        let last = msgs.len();
        let client = self.bus.client();
        let mut ack = None;
        for (i, (subject, payload, expires)) in msgs.into_iter().enumerate() {
            let mut headers = HeaderMap::new();
            if let Some(t) = expires {
                headers.insert(NATS_MESSAGE_TTL, t.as_str());
            }
            if i + 1 == last && !self.unfenced {
                headers.insert(
                    NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    expected.to_string().as_str(),
                );
            }
            if last > 1 {
                headers.insert(NATS_BATCH_ID, batch_id.as_str());
                headers.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
            }
            if i + 1 < last {
                client
                    .publish_with_headers(subject, headers, payload.into())
                    .await
                    .map_err(|e| unknown(e.to_string()))?;
            } else {
                if last > 1 {
                    headers.insert(NATS_BATCH_COMMIT, NATS_BATCH_COMMIT_FINAL);
                }
                let msg = PublishMessage::build()
                    .headers(headers)
                    .payload(payload.into());
                ack = Some(
                    self.bus
                        .jetstream()
                        .send_publish(subject, msg)
                        .await
                        .map_err(|e| unknown(e.to_string()))?,
                );
            }
        }
        let Some(ack) = ack else {
            return Err(unknown("empty commit".into()));
        };
        match ack.await {
            // The batch's ack names its last message: the head.
            Ok(a) => Ok(a.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                Err(ChangelogError::Fenced {
                    partition,
                    expected,
                })
            }
            Err(e) => {
                let text = e.to_string();
                // An atomic batch reports its first failure on the commit message.
                if text.contains("wrong last sequence") || text.contains("10071") {
                    Err(ChangelogError::Fenced {
                        partition,
                        expected,
                    })
                } else {
                    Err(unknown(text))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SagaStatus;
    use crate::{Bus, BusConfig, NatsServer};

    fn record(instance: &str, applied: u64) -> InstanceRecord {
        InstanceRecord {
            saga: "trip".into(),
            instance: instance.into(),
            correlation: instance.into(),
            status: SagaStatus::Running,
            state_version: 1,
            state: vec![0x90],
            compensations: Vec::new(),
            effects: Vec::new(),
            undoing: Vec::new(),
            timers: Default::default(),
            waits: Vec::new(),
            watermark: applied,
            recent_inputs: Vec::new(),
            applied,
            reason: None,
            faulted_by: None,
            last_event: String::new(),
            last_depth: 0,
            last_trace: None,
            created_ms: 0,
            updated_ms: 0,
            partition: 0,
            commit: applied,
            outbox: Vec::new(),
            epoch: 0,
            owner: String::new(),
        }
    }

    fn head(epoch: u64, commit: u64) -> PartitionHead {
        PartitionHead {
            partition: 0,
            epoch,
            owner: format!("node-{epoch}"),
            commit,
            published: 0,
            applied_seq: commit,
            takeover: false,
            written_ms: 0,
        }
    }

    /// Against a real server: a commit is stored only if the head is where the committer last
    /// saw it, and a rejected batch stores none of its records.
    #[tokio::test]
    async fn a_stale_head_rejects_the_whole_batch() -> Result<(), Box<dyn std::error::Error>> {
        let server = NatsServer::start_temp().await?;
        let bus = Bus::connect(BusConfig::builder().url(server.url()).build()?).await?;
        let log = Changelog::new(&bus);

        let s1 = log
            .commit(0, 0, &head(1, 1), &[record("a", 1), record("b", 1)])
            .await?;
        let got = log.head(0).await?.ok_or("no head")?;
        assert_eq!((got.sequence, got.value), (s1, head(1, 1)));

        // A second committer that also believes there is no head is fenced.
        let again = log.commit(0, 0, &head(2, 1), &[record("a", 99)]).await;
        assert!(
            matches!(again, Err(ChangelogError::Fenced { .. })),
            "{again:?}"
        );

        // A takeover head (no records) moves the head; the old owner's next commit is fenced
        // and none of its records land.
        let s2 = log.commit(0, s1, &head(2, 1), &[]).await?;
        assert!(s2 > s1);
        let stale = log
            .commit(0, s1, &head(1, 2), &[record("a", 2), record("c", 2)])
            .await;
        assert!(
            matches!(stale, Err(ChangelogError::Fenced { .. })),
            "{stale:?}"
        );
        let s3 = log.commit(0, s2, &head(2, 2), &[record("b", 2)]).await?;

        let mut records: Vec<_> = log
            .partition_records(0)
            .await?
            .into_iter()
            .map(|e| (e.value.instance, e.value.applied))
            .collect();
        records.sort();
        assert_eq!(records, vec![("a".to_owned(), 1), ("b".to_owned(), 2)]);
        let last = log.head(0).await?.ok_or("no head")?;
        assert_eq!(
            (last.sequence, last.value.epoch, last.value.commit),
            (s3, 2, 2)
        );
        // The snapshot a takeover reads holds the same head and the records, and the head is
        // the last message of its batch.
        let snap = log.partition_snapshot(0).await?;
        assert_eq!(snap.head.as_ref().map(|h| h.sequence), Some(s3));
        let mut seen: Vec<_> = snap
            .records
            .iter()
            .map(|e| {
                assert!(e.sequence < s3);
                (e.value.instance.clone(), e.value.applied)
            })
            .collect();
        seen.sort();
        assert_eq!(seen, records);
        Ok(())
    }
}
