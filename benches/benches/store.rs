//! Micro benches of the saga store's write path: one input's transaction over the three sled
//! trees (instance record, outbox entries, timer key), with and without a flush, and group
//! commit (N transactions, one flush) at several batch sizes.
//!
//! `choreo::Store::commit` and its `Transition` are crate-private, so this replays the same
//! shape against sled 0.34 directly (the engine's version): keys as in `engine/src/store`
//! (`<saga>\0<instance>`, `u64 BE` outbox ids from `generate_id`, `<due ms BE>...` timer keys),
//! values of the sizes the saga workload writes (a ~200 B record, two ~700 B outbox entries,
//! one timer entry). `cargo bench -p choreo-benches --bench store`.

use std::sync::atomic::{AtomicU64, Ordering};

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

fn main() {
    divan::main();
}

struct Db {
    _dir: tempfile::TempDir,
    db: sled::Db,
    instances: sled::Tree,
    outbox: sled::Tree,
    timers: sled::Tree,
    next: AtomicU64,
}

fn open() -> Db {
    let dir = tempfile::Builder::new()
        .prefix("choreo-store-bench-")
        .tempdir()
        .unwrap_or_else(|e| unreachable!("temp dir: {e}"));
    let db = sled::Config::new()
        .path(dir.path())
        .open()
        .unwrap_or_else(|e| unreachable!("sled: {e}"));
    let tree = |n: &str| {
        db.open_tree(n)
            .unwrap_or_else(|e| unreachable!("tree: {e}"))
    };
    Db {
        instances: tree("instances"),
        outbox: tree("outbox"),
        timers: tree("timers"),
        db,
        _dir: dir,
        next: AtomicU64::new(0),
    }
}

impl Db {
    /// One input's transaction, as `Store::commit` writes it.
    fn commit_one(&self) -> Result<(), TransactionError<()>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let key = format!("bsaga\0s{n}").into_bytes();
        let record = vec![0x5a_u8; 200];
        let entry = vec![0xa5_u8; 700];
        let ids: Vec<[u8; 8]> = (0..2)
            .map(|_| self.db.generate_id().unwrap_or(0).to_be_bytes())
            .collect();
        let mut timer_key = (1_700_000_000_000u64 + n).to_be_bytes().to_vec();
        timer_key.extend_from_slice(&key);
        timer_key.extend_from_slice(b"\0t");
        let timer = vec![0x33_u8; 90];
        (&self.instances, &self.outbox, &self.timers).transaction(|(inst, ob, tm)| {
            inst.insert(key.as_slice(), record.as_slice())?;
            for id in &ids {
                ob.insert(&id[..], entry.as_slice())?;
            }
            tm.insert(timer_key.as_slice(), timer.as_slice())?;
            Ok::<(), ConflictableTransactionError<()>>(())
        })
    }
}

/// One transaction, never flushed (what a batch does before its flush).
#[divan::bench]
fn transaction_no_flush(b: Bencher<'_, '_>) {
    let db = open();
    b.counter(ItemsCount::new(1usize)).bench(|| db.commit_one());
}

/// One transaction and its own flush (group commit of 1).
#[divan::bench(sample_count = 30, sample_size = 5)]
fn transaction_then_flush(b: Bencher<'_, '_>) {
    let db = open();
    b.counter(ItemsCount::new(1usize)).bench(|| {
        let _ = db.commit_one();
        db.db.flush()
    });
}

/// Group commit: `n` transactions, one flush. The counter gives inputs per second.
#[divan::bench(args = [1, 16, 64, 256], sample_count = 20, sample_size = 2)]
fn group_commit(b: Bencher<'_, '_>, n: usize) {
    let db = open();
    b.counter(ItemsCount::new(n)).bench(|| {
        for _ in 0..n {
            let _ = black_box(db.commit_one());
        }
        db.db.flush()
    });
}

/// The read of an instance record that precedes every decision.
#[divan::bench]
fn instance_get(b: Bencher<'_, '_>) {
    let db = open();
    for _ in 0..10_000 {
        let _ = db.commit_one();
    }
    let key = b"bsaga\0s5000".to_vec();
    b.bench(|| db.instances.get(black_box(&key)));
}
