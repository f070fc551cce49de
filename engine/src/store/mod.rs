//! The node's saga store: the only module that touches sled. It is the node's local
//! materialisation of the partitions it owns (fast reads, the timer index); the durable truth
//! is the changelog (`CHOREO_STATE`), so nothing here needs an fsync before an input is
//! acknowledged, and a partition is rebuilt from the changelog whenever a node takes it over.
//!
//! Trees (values msgpack):
//! - `instances`: `<partition u16 BE><saga>\0<instance>` → [`InstanceRecord`]
//! - `index`: `<saga>\0<instance>` → partition (u16 BE), for lookups by name
//! - `timers`: `<due ms u64 BE><partition u16 BE><saga>\0<instance>\0<name>` → [`TimerEntry`]
//! - `meta`: `head/<partition u16 BE>` → the changelog head sequence the partition reflects
//!
//! Only plain inserts and removes are used (no transactions, no batches): sled 0.34 takes a
//! global write lock for those, and a writer queued behind a flush that waits for sled's log
//! flusher deadlocked every thread that touched sled (found by running the travel example in
//! parallel; the stacks are in the notes of issue 5). Every call still goes through one gate,
//! and `flush` runs on a blocking thread holding it.

use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

pub use crate::model::TimerEntry;
use crate::model::{InstanceRecord, SagaStatus};

/// A store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Another process (a running node) holds the directory's lock.
    #[error("the store at {dir} is locked by another process (a running node?); read the changelog instead (choreo sagas)")]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// sled failed (I/O, corruption).
    #[error("store error: {0}")]
    Sled(#[source] sled::Error),
    /// A value does not encode.
    #[error("store value does not encode: {0}")]
    Encode(String),
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
        Self::Sled(e)
    }
}

/// The node's embedded store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    gate: std::sync::Arc<std::sync::Mutex<()>>,
    db: sled::Db,
    instances: sled::Tree,
    index: sled::Tree,
    timers: sled::Tree,
    meta: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// sled's page cache: its 1 GiB default made every pending timer cost kilobytes of RSS.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

fn name_key(saga: &str, instance: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(saga.len() + instance.len() + 1);
    k.extend_from_slice(saga.as_bytes());
    k.push(0);
    k.extend_from_slice(instance.as_bytes());
    k
}

fn instance_key(partition: u16, saga: &str, instance: &str) -> Vec<u8> {
    let mut k = partition.to_be_bytes().to_vec();
    k.extend_from_slice(&name_key(saga, instance));
    k
}

fn timer_key(partition: u16, saga: &str, instance: &str, name: &str, due_ms: i64) -> Vec<u8> {
    let due = u64::try_from(due_ms.max(0)).unwrap_or(0);
    let mut k = due.to_be_bytes().to_vec();
    k.extend_from_slice(&instance_key(partition, saga, instance));
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

fn head_key(partition: u16) -> Vec<u8> {
    let mut k = b"head/".to_vec();
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(v).map_err(|e| StoreError::Encode(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        reason: e.to_string(),
    })
}

impl Store {
    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // The gate protects no data: a poisoned guard is as good as a clean one.
        self.gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Open (or create) the store in `dir`. Fails with [`StoreError::Locked`] when a running
    /// node holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(
            sled::Config::new().path(dir).cache_capacity(CACHE_BYTES),
            dir,
        )
    }

    fn open_with(config: sled::Config, dir: &Path) -> Result<Self, StoreError> {
        let db = config.open().map_err(|e| {
            let text = e.to_string();
            if text.contains("lock")
                || text.contains("WouldBlock")
                || text.contains("temporarily unavailable")
            {
                StoreError::Locked {
                    dir: dir.to_path_buf(),
                }
            } else {
                StoreError::Sled(e)
            }
        })?;
        Ok(Self {
            gate: std::sync::Arc::new(std::sync::Mutex::new(())),
            instances: db.open_tree("instances")?,
            index: db.open_tree("index")?,
            timers: db.open_tree("timers")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }

    /// One instance's record, wherever its partition.
    pub fn get(&self, saga: &str, instance: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let _gate = self.guard();
        let nk = name_key(saga, instance);
        let Some(p) = self.index.get(&nk)? else {
            return Ok(None);
        };
        let p: [u8; 2] = p.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            key: String::from_utf8_lossy(&nk).replace('\0', "/"),
            reason: "partition index is not two bytes".into(),
        })?;
        self.get_ungated(u16::from_be_bytes(p), saga, instance)
    }

    /// One instance's record in a partition.
    pub(crate) fn get_in(
        &self,
        partition: u16,
        saga: &str,
        instance: &str,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        let _gate = self.guard();
        self.get_ungated(partition, saga, instance)
    }

    fn get_ungated(
        &self,
        partition: u16,
        saga: &str,
        instance: &str,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        let key = instance_key(partition, saga, instance);
        self.instances
            .get(&key)?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    /// Every instance, optionally of one saga and/or one status, by partition then key.
    pub fn list(
        &self,
        saga: Option<&str>,
        status: Option<SagaStatus>,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let _gate = self.guard();
        let mut out = Vec::new();
        for item in self.instances.iter() {
            let (k, v) = item?;
            let r: InstanceRecord = decode(&k, &v)?;
            if saga.is_none_or(|s| s == r.saga) && status.is_none_or(|s| s == r.status) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Every instance of one partition.
    pub fn list_partition(&self, partition: u16) -> Result<Vec<InstanceRecord>, StoreError> {
        let _gate = self.guard();
        let mut out = Vec::new();
        for item in self.instances.scan_prefix(partition.to_be_bytes()) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Materialise committed records of `partition` (their timers follow them), and remember
    /// the changelog head sequence they reflect. Not flushed: the changelog is the durable copy.
    pub(crate) fn apply(
        &self,
        partition: u16,
        records: &[InstanceRecord],
        head_seq: u64,
    ) -> Result<(), StoreError> {
        let _gate = self.guard();
        for r in records {
            let key = instance_key(partition, &r.saga, &r.instance);
            if let Some(old) = self.instances.get(&key)? {
                let old: InstanceRecord = decode(&key, &old)?;
                for (name, due) in &old.timers {
                    if r.timers.get(name) != Some(due) {
                        self.timers.remove(timer_key(
                            partition,
                            &r.saga,
                            &r.instance,
                            name,
                            *due,
                        ))?;
                    }
                }
            }
            for (name, due) in &r.timers {
                let entry = TimerEntry {
                    saga: r.saga.clone(),
                    instance: r.instance.clone(),
                    correlation: r.correlation.clone(),
                    partition,
                    name: name.clone(),
                    due_ms: *due,
                };
                self.timers.insert(
                    timer_key(partition, &r.saga, &r.instance, name, *due),
                    encode(&entry)?,
                )?;
            }
            self.instances.insert(key, encode(r)?)?;
            self.index
                .insert(name_key(&r.saga, &r.instance), &partition.to_be_bytes())?;
        }
        self.meta
            .insert(head_key(partition), &head_seq.to_be_bytes())?;
        Ok(())
    }

    /// Forget a partition: its instances, their timers and its head (a node that no longer owns
    /// it, or is about to rebuild it from the changelog). Returns how many instances it held.
    pub(crate) fn drop_partition(&self, partition: u16) -> Result<usize, StoreError> {
        let _gate = self.guard();
        let mut n = 0;
        for item in self.instances.scan_prefix(partition.to_be_bytes()) {
            let (k, v) = item?;
            let r: InstanceRecord = decode(&k, &v)?;
            self.forget(partition, &k, &r)?;
            n += 1;
        }
        self.meta.remove(head_key(partition))?;
        Ok(n)
    }

    /// Remove one instance, its timers and its name index entry (the caller holds the gate).
    fn forget(&self, partition: u16, key: &[u8], r: &InstanceRecord) -> Result<(), StoreError> {
        for (name, due) in &r.timers {
            self.timers
                .remove(timer_key(partition, &r.saga, &r.instance, name, *due))?;
        }
        self.index.remove(name_key(&r.saga, &r.instance))?;
        self.instances.remove(key)?;
        Ok(())
    }

    /// Forget the ended instances of `partition` last changed before `cutoff_ms` (retention;
    /// the changelog drops its copies by per-message TTL). Returns how many.
    pub(crate) fn purge_ended(&self, partition: u16, cutoff_ms: i64) -> Result<usize, StoreError> {
        let _gate = self.guard();
        let mut n = 0;
        for item in self.instances.scan_prefix(partition.to_be_bytes()) {
            let (k, v) = item?;
            let r: InstanceRecord = decode(&k, &v)?;
            if !r.status.is_terminal() || r.updated_ms >= cutoff_ms {
                continue;
            }
            self.forget(partition, &k, &r)?;
            n += 1;
        }
        Ok(n)
    }

    /// Drop one timer from the index (its instance no longer holds it).
    pub(crate) fn remove_timer(
        &self,
        partition: u16,
        saga: &str,
        instance: &str,
        name: &str,
        due_ms: i64,
    ) -> Result<(), StoreError> {
        let _gate = self.guard();
        self.timers
            .remove(timer_key(partition, saga, instance, name, due_ms))?;
        Ok(())
    }

    /// The changelog head sequence a partition's materialisation reflects.
    pub fn head_seq(&self, partition: u16) -> Result<Option<u64>, StoreError> {
        let _gate = self.guard();
        Ok(self.meta.get(head_key(partition))?.and_then(|v| {
            let b: [u8; 8] = v.as_ref().try_into().ok()?;
            Some(u64::from_be_bytes(b))
        }))
    }

    /// Write everything to disk (one fsync). Used at shutdown; the hot path never needs it.
    pub(crate) async fn flush(&self) -> Result<usize, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let _gate = store.guard();
            store.db.flush()
        })
        .await
        .map_err(|e| StoreError::Encode(format!("flush task: {e}")))?
        .map_err(StoreError::from)
    }

    /// Gauges: instances by (saga, status), pending timers. Scans the instances.
    pub fn gauges(&self) -> Result<crate::metrics::SagaGauges, StoreError> {
        let mut g = crate::metrics::SagaGauges {
            timers_pending: self.timers_len() as u64,
            outbox_depth: 0,
            ..Default::default()
        };
        for r in self.list(None, None)? {
            *g.instances
                .entry((r.saga, r.status.to_string()))
                .or_default() += 1;
        }
        Ok(g)
    }

    /// Pending timers.
    pub fn timers_len(&self) -> usize {
        let _gate = self.guard();
        self.timers.len()
    }

    /// Timers due at or before `now_ms`, earliest first.
    pub(crate) fn due_timers(
        &self,
        now_ms: i64,
        max: usize,
    ) -> Result<Vec<TimerEntry>, StoreError> {
        let _gate = self.guard();
        let now = u64::try_from(now_ms.max(0)).unwrap_or(0);
        let mut out = Vec::new();
        for item in self
            .timers
            .range(..now.saturating_add(1).to_be_bytes())
            .take(max)
        {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Due time of the earliest pending timer.
    pub(crate) fn next_timer_due(&self) -> Result<Option<i64>, StoreError> {
        let _gate = self.guard();
        Ok(self.timers.first()?.and_then(|(k, _)| {
            let b: [u8; 8] = k.get(..8)?.try_into().ok()?;
            i64::try_from(u64::from_be_bytes(b)).ok()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn timer_keys_sort_by_due_time() {
        let a = timer_key(3, "s", "i", "t", 5);
        let b = timer_key(0, "s", "i", "t", 300);
        let c = timer_key(1, "a", "z", "t", 70_000);
        assert!(a < b && b < c);
    }

    fn record(p: u16, i: u32, timers: BTreeMap<String, i64>) -> InstanceRecord {
        InstanceRecord {
            saga: "s".into(),
            instance: format!("c{p}-{i}"),
            correlation: format!("c{p}-{i}"),
            status: SagaStatus::Running,
            state_version: 1,
            state: vec![1, 2, 3],
            compensations: Vec::new(),
            effects: Vec::new(),
            undoing: Vec::new(),
            timers,
            waits: Vec::new(),
            watermark: u64::from(i),
            recent_inputs: Vec::new(),
            applied: 1,
            reason: None,
            faulted_by: None,
            last_event: String::new(),
            last_depth: 0,
            last_trace: None,
            created_ms: 0,
            updated_ms: 0,
            partition: p,
            commit: 1,
            outbox: Vec::new(),
            epoch: 0,
            owner: String::new(),
        }
    }

    /// Concurrent applies, drops and timer scans from several tasks, with sled's own log
    /// flusher running every millisecond (the third party of the old deadlock), all finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_applies_drops_and_scans_finish() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let config = sled::Config::new().path(dir.path()).flush_every_ms(Some(1));
        let store = Store::open_with(config, dir.path())?;
        let mut tasks = Vec::new();
        for p in 0..6u16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..150u32 {
                    let r = record(p, i, [("t".to_owned(), 1_000 + i64::from(i))].into());
                    store
                        .apply(p, &[r], u64::from(i))
                        .map_err(|e| e.to_string())?;
                    if i % 50 == 0 {
                        store.flush().await.map_err(|e| e.to_string())?;
                    }
                    store.due_timers(i64::MAX, 8).map_err(|e| e.to_string())?;
                }
                if p % 2 == 1 {
                    store.drop_partition(p).map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            }));
        }
        let all = futures::future::join_all(tasks);
        let results = tokio::time::timeout(std::time::Duration::from_secs(60), all)
            .await
            .map_err(|_| "the store deadlocked")?;
        for r in results {
            r??;
        }
        assert_eq!(store.list(Some("s"), None)?.len(), 450);
        assert_eq!(store.timers_len(), 450);
        assert_eq!(store.head_seq(0)?, Some(149));
        assert_eq!(store.head_seq(1)?, None);
        Ok(())
    }

    #[test]
    fn a_record_moves_its_timers_and_a_drop_takes_everything(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        store.apply(
            2,
            &[record(
                2,
                1,
                [("a".to_owned(), 10), ("b".to_owned(), 20)].into(),
            )],
            5,
        )?;
        assert_eq!(store.timers_len(), 2);
        store.apply(2, &[record(2, 1, [("b".to_owned(), 30)].into())], 6)?;
        let due = store.due_timers(i64::MAX, 10)?;
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].name.as_str(), due[0].due_ms, due[0].partition),
            ("b", 30, 2)
        );
        assert_eq!(store.next_timer_due()?, Some(30));
        assert!(store.get("s", "c2-1")?.is_some());
        assert_eq!(store.drop_partition(2)?, 1);
        assert!(store.get("s", "c2-1")?.is_none());
        assert_eq!(store.timers_len(), 0);
        Ok(())
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
