//! The commit path of a processor: write the batch as one fenced atomic batch (resolving an
//! unknown outcome by reading the head back from the leader), materialise it in sled, publish
//! what it decided, and mark it published.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use choreo_schemas::Event;
use tracing::{debug, warn};

use super::super::batch::Batch;
use super::super::timers::now_ms;
use super::super::Exit;
use super::{Processor, Step};
use crate::bus::Published;
use crate::changelog::ChangelogError;
use crate::model::PartitionHead;

impl Processor {
    pub(super) fn next_head(&self, commit: u64, applied_seq: u64) -> PartitionHead {
        PartitionHead {
            partition: self.partition,
            epoch: self.epoch,
            owner: self.env.node.to_string(),
            commit,
            published: self.published,
            applied_seq,
            takeover: false,
            written_ms: now_ms(),
        }
    }

    /// Write a head, fenced on the last one; resolve an unknown outcome by reading it back.
    pub(super) async fn write(
        &mut self,
        head: PartitionHead,
        records: &[crate::model::InstanceRecord],
    ) -> Result<u64, Exit> {
        let mut pause = Duration::from_millis(50);
        loop {
            match self
                .env
                .changelog
                .commit(self.partition, self.expected, &head, records)
                .await
            {
                Ok(seq) => {
                    self.expected = seq;
                    self.written = head;
                    return Ok(seq);
                }
                Err(ChangelogError::Fenced { .. }) => return Err(Exit::Fenced),
                Err(ChangelogError::Unknown { reason, .. }) => {
                    warn!(partition = self.partition, %reason, "commit outcome unknown; reading the head back");
                    fail::fail_point!("partition-commit-unknown");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    match self.env.changelog.head(self.partition).await {
                        Ok(Some(h)) if h.sequence == self.expected => continue, // not stored: retry
                        Ok(Some(h)) if h.value == head => {
                            self.expected = h.sequence;
                            self.written = head;
                            return Ok(h.sequence);
                        }
                        Ok(Some(_)) => return Err(Exit::Fenced),
                        Ok(None) if self.expected == 0 => continue,
                        Ok(None) => {
                            return Err(Exit::Failed("the partition's head vanished".into()))
                        }
                        Err(e) => {
                            warn!(partition = self.partition, error = %e, "cannot read the head; retrying");
                        }
                    }
                }
                Err(e) => return Err(Exit::Failed(e.to_string())),
            }
        }
    }

    /// Commit the batch, materialise it, publish what it decided.
    pub(super) async fn commit(&mut self, batch: Batch) -> Step {
        let applied = self.applied_seq.max(batch.applied_seq);
        if batch.is_empty() {
            self.applied_seq = applied;
            return Ok(());
        }
        let n = self.commit.saturating_add(1);
        let head = self.next_head(n, applied);
        let started = Instant::now();
        fail::fail_point!("saga-mid-batch");
        let seq = self.write(head, &batch.records).await?;
        let took = started.elapsed();
        self.commit = n;
        self.applied_seq = applied;
        self.health
            .last_commit_ms
            .store(now_ms(), Ordering::Relaxed);
        fail::fail_point!("saga-after-commit-before-ack");
        if let Err(e) = self.env.store.apply(self.partition, &batch.records, seq) {
            return Err(Exit::Failed(format!("materialise commit {n}: {e}")));
        }
        for s in self.env.sagas.iter() {
            if let Some(c) = self.counters(s.name()) {
                c.batch(batch.inputs, took);
                break;
            }
        }
        debug!(
            partition = self.partition,
            commit = n,
            records = batch.records.len(),
            events = batch.outbox.len(),
            commit_us = took.as_micros() as u64,
            "committed"
        );
        fail::fail_point!("saga-after-ack-before-outbox");
        let acks = self.publish(&batch.outbox).await?;
        self.published = n;
        self.env.routes.changed.notify_one();
        self.after_commit(&batch.records, &batch.outbox, &acks)
            .await;
        Ok(())
    }

    /// Publish decided events, retrying until JetStream has them (nothing else is committed
    /// before: the head's `published` rule depends on it).
    pub(super) async fn publish(&self, events: &[Event]) -> Result<Vec<Published>, Exit> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut pause = Duration::from_millis(50);
        loop {
            match self.env.bus.publish_all(events).await {
                Ok(acks) => return Ok(acks),
                Err(e) => {
                    warn!(partition = self.partition, error = %e, "publishing decided events failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Record in the head that the last commit's events are on the log (and how far inputs
    /// were applied), so a later takeover does not publish them again.
    pub(super) async fn mark(&mut self) -> Step {
        let head = self.next_head(self.commit, self.applied_seq);
        self.write(head, &[]).await.map(|_| ())
    }
}
