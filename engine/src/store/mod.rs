//! The saga store: the only module that touches sled. Narrow on purpose, so another embedded
//! store could replace it.
//!
//! Trees (all values msgpack):
//! - `instances`: `<saga>\0<instance>` → [`InstanceRecord`]
//! - `outbox`: `<u64 BE id>` → an event (CloudEvents headers + data), in commit order
//! - `timers`: `<due ms u64 BE><saga>\0<instance>\0<name>` → [`TimerEntry`]
//!
//! One input's record, outbox entries and timer changes commit in one transaction; a batch of
//! transactions is made durable by one [`Store::flush`] (group commit).

use std::path::{Path, PathBuf};

use choreo_schemas::{headers, Event};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use thiserror::Error;

use crate::saga::decide::Transition;
use crate::saga::{InstanceRecord, SagaStatus};

/// A store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Another process (a running node) holds the directory's lock.
    #[error("the store at {dir} is locked by another process (a running node?); stop it first, or read through that node")]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// sled failed (I/O, corruption).
    #[error("store error: {0}")]
    Sled(String),
    /// A stored value does not decode.
    #[error("store value {key} does not decode: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self::Sled(e.to_string())
    }
}

/// A pending timer as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerEntry {
    /// Saga name.
    pub saga: String,
    /// Instance id.
    pub instance: String,
    /// Correlation of the instance (decides its partition).
    pub correlation: String,
    /// Timer name.
    pub name: String,
    /// Due (Unix ms).
    pub due_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredEvent {
    headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// The node's embedded store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    instances: sled::Tree,
    outbox: sled::Tree,
    timers: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn instance_key(saga: &str, instance: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(saga.len() + instance.len() + 1);
    k.extend_from_slice(saga.as_bytes());
    k.push(0);
    k.extend_from_slice(instance.as_bytes());
    k
}

fn timer_key(saga: &str, instance: &str, name: &str, due_ms: i64) -> Vec<u8> {
    let due = u64::try_from(due_ms.max(0)).unwrap_or(0);
    let mut k = due.to_be_bytes().to_vec();
    k.extend_from_slice(&instance_key(saga, instance));
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(v).map_err(|e| StoreError::Sled(format!("encode: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        reason: e.to_string(),
    })
}

impl Store {
    /// Open (or create) the store in `dir`. Fails with [`StoreError::Locked`] when a running
    /// node holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open().map_err(|e| {
            let text = e.to_string();
            if text.contains("lock")
                || text.contains("WouldBlock")
                || text.contains("temporarily unavailable")
            {
                StoreError::Locked {
                    dir: dir.to_path_buf(),
                }
            } else {
                StoreError::Sled(format!("open {}: {text}", dir.display()))
            }
        })?;
        Ok(Self {
            instances: db.open_tree("instances")?,
            outbox: db.open_tree("outbox")?,
            timers: db.open_tree("timers")?,
            db,
        })
    }

    /// One instance's record.
    pub fn get(&self, saga: &str, instance: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let key = instance_key(saga, instance);
        self.instances
            .get(&key)?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    /// Every instance, optionally of one saga and/or one status, in key order.
    pub fn list(
        &self,
        saga: Option<&str>,
        status: Option<SagaStatus>,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let prefix = saga.map(|s| instance_key(s, "")).unwrap_or_default();
        let mut out = Vec::new();
        for item in self.instances.scan_prefix(prefix) {
            let (k, v) = item?;
            let r: InstanceRecord = decode(&k, &v)?;
            if status.is_none_or(|s| s == r.status) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Commit one input's transition atomically (not yet flushed).
    pub(crate) fn commit(&self, t: &Transition) -> Result<(), StoreError> {
        let r = &t.record;
        let key = instance_key(&r.saga, &r.instance);
        let value = encode(r)?;
        let mut outbox = Vec::with_capacity(t.outbox.len());
        for e in &t.outbox {
            let stored = StoredEvent {
                headers: headers::to_headers(e)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                data: e.data.clone(),
            };
            outbox.push((self.db.generate_id()?.to_be_bytes(), encode(&stored)?));
        }
        let mut timers_del = Vec::new();
        for (name, due) in &t.timers_removed {
            timers_del.push(timer_key(&r.saga, &r.instance, name, *due));
        }
        let mut timers_put = Vec::new();
        for (name, due) in &t.timers_added {
            let entry = TimerEntry {
                saga: r.saga.clone(),
                instance: r.instance.clone(),
                correlation: r.correlation.clone(),
                name: name.clone(),
                due_ms: *due,
            };
            timers_put.push((timer_key(&r.saga, &r.instance, name, *due), encode(&entry)?));
        }
        (&self.instances, &self.outbox, &self.timers)
            .transaction(|(inst, ob, tm)| {
                inst.insert(key.as_slice(), value.as_slice())?;
                for (k, v) in &outbox {
                    ob.insert(&k[..], v.as_slice())?;
                }
                for k in &timers_del {
                    tm.remove(k.as_slice())?;
                }
                for (k, v) in &timers_put {
                    tm.insert(k.as_slice(), v.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e: TransactionError<()>| StoreError::Sled(format!("{e:?}")))
    }

    /// Make every committed transaction durable (one fsync for the batch).
    pub(crate) async fn flush(&self) -> Result<usize, StoreError> {
        Ok(self.db.flush_async().await?)
    }

    /// The oldest outbox entries, in commit order.
    pub(crate) fn outbox_batch(&self, max: usize) -> Result<Vec<(sled::IVec, Event)>, StoreError> {
        let mut out = Vec::new();
        for item in self.outbox.iter().take(max) {
            let (k, v) = item?;
            let stored: StoredEvent = decode(&k, &v)?;
            let event = headers::from_headers(
                stored.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                &stored.data,
            )
            .map_err(|e| StoreError::Corrupt {
                key: format!("outbox/{k:?}"),
                reason: e.to_string(),
            })?;
            out.push((k, event));
        }
        Ok(out)
    }

    /// Remove published outbox entries. Not flushed: after a crash they are published again and
    /// deduplicated by id.
    pub(crate) fn outbox_remove(&self, keys: &[sled::IVec]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(k);
        }
        Ok(self.outbox.apply_batch(batch)?)
    }

    /// Drop a timer whose instance no longer wants it (stale, or the instance ended).
    pub(crate) fn remove_timer(&self, t: &TimerEntry) -> Result<(), StoreError> {
        self.timers
            .remove(timer_key(&t.saga, &t.instance, &t.name, t.due_ms))?;
        Ok(())
    }

    /// Gauges: instances by (saga, status), pending timers, outbox depth. Scans the instances.
    pub fn gauges(&self) -> Result<crate::metrics::SagaGauges, StoreError> {
        let mut g = crate::metrics::SagaGauges {
            timers_pending: self.timers.len() as u64,
            outbox_depth: self.outbox.len() as u64,
            ..Default::default()
        };
        for r in self.list(None, None)? {
            *g.instances
                .entry((r.saga, r.status.to_string()))
                .or_default() += 1;
        }
        Ok(g)
    }

    /// Entries waiting in the outbox.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Pending timers.
    pub fn timers_len(&self) -> usize {
        self.timers.len()
    }

    /// Timers due at or before `now_ms`, earliest first.
    pub(crate) fn due_timers(
        &self,
        now_ms: i64,
        max: usize,
    ) -> Result<Vec<TimerEntry>, StoreError> {
        let now = u64::try_from(now_ms.max(0)).unwrap_or(0);
        let mut out = Vec::new();
        for item in self.timers.range(..(now + 1).to_be_bytes()).take(max) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Due time of the earliest pending timer.
    pub(crate) fn next_timer_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.timers.first()?.and_then(|(k, _)| {
            let b: [u8; 8] = k.get(..8)?.try_into().ok()?;
            i64::try_from(u64::from_be_bytes(b)).ok()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_keys_sort_by_due_time() {
        let a = timer_key("s", "i", "t", 5);
        let b = timer_key("s", "i", "t", 300);
        let c = timer_key("a", "z", "t", 70_000);
        assert!(a < b && b < c);
    }

    #[test]
    fn a_second_open_reports_the_lock() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let _first = Store::open(dir.path())?;
        match Store::open(dir.path()) {
            Err(StoreError::Locked { dir: d }) => assert_eq!(d, dir.path()),
            other => panic!("expected Locked, got {other:?}"),
        }
        Ok(())
    }
}
