//! What one commit of a partition carries: the latest record of every instance the batch
//! changed (each with the events decided for it in this commit) and every decided event in
//! decision order.

use std::collections::HashMap;

use choreo_schemas::Event;

use crate::model::{InstanceRecord, PendingEvent, Transition};

/// Who writes a commit, and which.
pub(crate) struct Stamp {
    pub(crate) partition: u16,
    pub(crate) commit: u64,
    pub(crate) epoch: u64,
    pub(crate) owner: String,
}

#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) records: Vec<InstanceRecord>,
    index: HashMap<(String, String), usize>,
    /// Every event decided in the batch, in decision order.
    pub(crate) outbox: Vec<Event>,
    /// Inputs applied (events and timers).
    pub(crate) inputs: usize,
    /// Highest input sequence applied in the batch.
    pub(crate) applied_seq: u64,
}

impl Batch {
    /// The batch's version of an instance, if the batch changed it.
    pub(crate) fn get(&self, saga: &str, instance: &str) -> Option<&InstanceRecord> {
        self.index
            .get(&(saga.to_owned(), instance.to_owned()))
            .and_then(|i| self.records.get(*i))
    }

    /// The batch's version of an instance, to amend before the commit.
    pub(crate) fn get_mut(&mut self, saga: &str, instance: &str) -> Option<&mut InstanceRecord> {
        self.index
            .get(&(saga.to_owned(), instance.to_owned()))
            .and_then(|i| self.records.get_mut(*i))
    }

    /// Add a decided transition, stamped with the commit (number, epoch, owner) it will be
    /// written in.
    pub(crate) fn add(&mut self, t: Transition, at: &Stamp) {
        let Transition {
            mut record, outbox, ..
        } = t;
        record.partition = at.partition;
        record.commit = at.commit;
        record.epoch = at.epoch;
        record.owner.clone_from(&at.owner);
        let key = (record.saga.clone(), record.instance.clone());
        let mut pending = match self.index.get(&key).and_then(|i| self.records.get(*i)) {
            Some(prev) => prev.outbox.clone(),
            None => Vec::new(),
        };
        pending.extend(outbox.iter().map(PendingEvent::of));
        record.outbox = pending;
        self.outbox.extend(outbox);
        match self.index.get(&key) {
            Some(i) => {
                if let Some(slot) = self.records.get_mut(*i) {
                    *slot = record;
                }
            }
            None => {
                self.index.insert(key, self.records.len());
                self.records.push(record);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}
