//! Reading the changelog: a partition's head and records (what a new owner restores), and every
//! instance (what `choreo sagas` shows while nodes run).

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use serde::de::DeserializeOwned;

use super::{Changelog, ChangelogError};
use crate::error::BusError;
use crate::model::{InstanceRecord, PartitionHead, SagaStatus};

/// A partition's head and its records, read together (see [`Changelog::partition_snapshot`]).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The head, if the partition was ever committed.
    pub head: Option<ChangelogEntry<PartitionHead>>,
    /// The latest record of every instance, up to the head.
    pub records: Vec<ChangelogEntry<InstanceRecord>>,
}

/// One value of the changelog with its stream sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangelogEntry<T> {
    /// Stream sequence of the value.
    pub sequence: u64,
    /// The value.
    pub value: T,
}

fn decode<T: DeserializeOwned>(subject: &str, bytes: &[u8]) -> Result<T, ChangelogError> {
    rmp_serde::from_slice(bytes).map_err(|e| ChangelogError::Corrupt {
        subject: subject.to_owned(),
        reason: e.to_string(),
    })
}

impl Changelog {
    async fn stream_handle(
        &self,
    ) -> Result<async_nats::jetstream::stream::Stream<()>, ChangelogError> {
        self.bus
            .jetstream()
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| BusError::js(format!("get stream {}", self.stream), e).into())
    }

    /// The latest value on `subject`, read from the stream's leader: a direct get may be
    /// answered by a replica that lags, and every caller here needs what was committed (an owner
    /// deciding whether its commit landed; a waiter told by a lifecycle event that an instance
    /// ended, which must then read it ended).
    async fn last_of<T: DeserializeOwned>(
        &self,
        subject: String,
    ) -> Result<Option<ChangelogEntry<T>>, ChangelogError> {
        let stream = self.stream_handle().await?;
        let got = tokio::time::timeout(
            self.timeout,
            stream.get_last_raw_message_by_subject(&subject),
        )
        .await
        .map_err(|_| BusError::js(format!("get {subject}"), "timed out"))?;
        match got {
            Ok(m) => Ok(Some(ChangelogEntry {
                sequence: m.sequence,
                value: decode(&subject, &m.payload)?,
            })),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(BusError::js(format!("get {subject}"), e).into()),
        }
    }

    /// The latest head of a partition, with its sequence, read from the stream's leader.
    pub async fn head(
        &self,
        partition: u16,
    ) -> Result<Option<ChangelogEntry<PartitionHead>>, ChangelogError> {
        self.last_of(self.head_subject(partition)).await
    }

    /// A partition's head and records as one snapshot, read through one consumer (so from one
    /// replica). A commit writes its records before its head, so a replica holding a head holds
    /// every record up to it; the snapshot is current exactly when a commit fenced on its head
    /// is accepted, which is how a takeover uses it.
    pub async fn partition_snapshot(&self, partition: u16) -> Result<Snapshot, ChangelogError> {
        let head_subject = self.head_subject(partition);
        let raw = self
            .bus
            .read_raw_with(
                &self.stream,
                vec![
                    format!("{}.state.{partition}.*.*", self.root),
                    head_subject.clone(),
                ],
                DeliverPolicy::LastPerSubject,
            )
            .await?;
        let mut snapshot = Snapshot::default();
        for m in raw {
            if m.subject == head_subject {
                if snapshot
                    .head
                    .as_ref()
                    .is_none_or(|h| h.sequence < m.sequence)
                {
                    snapshot.head = Some(ChangelogEntry {
                        sequence: m.sequence,
                        value: decode(&m.subject, &m.payload)?,
                    });
                }
            } else {
                snapshot.records.push(ChangelogEntry {
                    sequence: m.sequence,
                    value: decode(&m.subject, &m.payload)?,
                });
            }
        }
        // Records newer than the head may belong to a commit this snapshot does not hold
        // whole; a commit fenced on this head is refused then (a newer head exists), so the
        // snapshot is never used. (An outside write, an operator's repair, is kept.)
        Ok(snapshot)
    }

    /// One instance's latest record.
    pub async fn get(
        &self,
        partition: u16,
        saga: &str,
        instance: &str,
    ) -> Result<Option<ChangelogEntry<InstanceRecord>>, ChangelogError> {
        self.last_of(self.instance_subject(partition, saga, instance))
            .await
    }

    async fn read_latest<T: DeserializeOwned>(
        &self,
        filter: String,
    ) -> Result<Vec<ChangelogEntry<T>>, ChangelogError> {
        let raw = self
            .bus
            .read_raw_with(&self.stream, vec![filter], DeliverPolicy::LastPerSubject)
            .await?;
        raw.into_iter()
            .map(|m| {
                Ok(ChangelogEntry {
                    sequence: m.sequence,
                    value: decode(&m.subject, &m.payload)?,
                })
            })
            .collect()
    }

    /// Every instance record of a partition (a snapshot of the latest values).
    pub async fn partition_records(
        &self,
        partition: u16,
    ) -> Result<Vec<ChangelogEntry<InstanceRecord>>, ChangelogError> {
        self.read_latest(format!("{}.state.{partition}.*.*", self.root))
            .await
    }

    /// The head of every partition that has one.
    pub async fn heads(&self) -> Result<Vec<ChangelogEntry<PartitionHead>>, ChangelogError> {
        self.read_latest(format!("{}.state.*.head", self.root))
            .await
    }

    /// Every instance, optionally of one saga and/or one status, ordered by (saga, instance).
    pub async fn list(
        &self,
        saga: Option<&str>,
        status: Option<SagaStatus>,
    ) -> Result<Vec<InstanceRecord>, ChangelogError> {
        let filter = format!("{}.state.*.{}.*", self.root, saga.unwrap_or("*"));
        let mut out: Vec<InstanceRecord> = self
            .read_latest(filter)
            .await?
            .into_iter()
            .map(|e| e.value)
            .filter(|r: &InstanceRecord| status.is_none_or(|s| s == r.status))
            .collect();
        out.sort_by(|a, b| (&a.saga, &a.instance).cmp(&(&b.saga, &b.instance)));
        Ok(out)
    }

    /// One instance by name, wherever its partition (instances live in the partition of their
    /// correlation; `correlation` defaults to the instance id, as for [`crate::Saga::instance_of`]'s
    /// default).
    pub async fn find(
        &self,
        saga: &str,
        instance: &str,
        correlation: Option<&str>,
    ) -> Result<Option<InstanceRecord>, ChangelogError> {
        let corr = correlation.unwrap_or(instance);
        if let Ok(c) = choreo_schemas::CorrelationId::new(corr) {
            let p = self.bus.partition_of(&c);
            if let Some(e) = self.get(p, saga, instance).await? {
                return Ok(Some(e.value));
            }
        }
        let filter = format!("{}.state.*.{saga}.{instance}", self.root);
        Ok(self
            .read_latest::<InstanceRecord>(filter)
            .await?
            .into_iter()
            .next()
            .map(|e| e.value))
    }
}
