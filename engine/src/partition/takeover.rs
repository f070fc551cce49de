//! Taking a partition over: read its changelog (head and records as one snapshot), write a new
//! head fenced on the snapshot's head (accepted only if the snapshot is current; from then on
//! the previous owner cannot commit), rebuild the
//! partition in sled, and publish the events of the last commit if they are not known to be on
//! the log (their ids deduplicate).

use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::timers::now_ms;
use super::{Exit, PartitionEnv};
use crate::changelog::ChangelogError;
use crate::model::PartitionHead;

/// Where the new owner starts.
pub(crate) struct Restored {
    /// Sequence of the head this owner wrote last.
    pub(crate) head_seq: u64,
    /// That head.
    pub(crate) head: PartitionHead,
    /// Instances restored.
    pub(crate) instances: usize,
}

async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        _ = stop.changed() => true,
    }
}

pub(crate) async fn take_over(
    env: &PartitionEnv,
    partition: u16,
    epoch: u64,
    stop: &mut watch::Receiver<bool>,
) -> Result<Restored, Exit> {
    let mut backoff = Duration::from_millis(20);
    loop {
        if *stop.borrow() {
            return Err(Exit::Stopped);
        }
        match attempt(env, partition, epoch).await {
            Ok(r) => return Ok(r),
            Err(Attempt::Newer(head)) => {
                warn!(
                    partition,
                    epoch,
                    newer = head.epoch,
                    owner = %head.owner,
                    "a newer owner holds the partition; not taking it over"
                );
                return Err(Exit::Fenced);
            }
            Err(Attempt::Retry(why)) => {
                warn!(partition, reason = %why, "takeover interrupted; retrying");
                if pause(stop, backoff).await {
                    return Err(Exit::Stopped);
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(Attempt::Failed(why)) => return Err(Exit::Failed(why)),
        }
    }
}

enum Attempt {
    /// The head belongs to a newer epoch.
    Newer(PartitionHead),
    /// Someone committed in between, or NATS did not answer.
    Retry(String),
    Failed(String),
}

async fn attempt(env: &PartitionEnv, partition: u16, epoch: u64) -> Result<Restored, Attempt> {
    let log = &env.changelog;
    let retry = |e: ChangelogError| Attempt::Retry(e.to_string());
    // One snapshot, from one replica: a head read apart from the records could be newer than
    // them (a lagging replica serving the records), and the fence would accept the stale state.
    let snapshot = log.partition_snapshot(partition).await.map_err(retry)?;
    let (head, records) = (snapshot.head, snapshot.records);
    let (expected, last) = match head {
        Some(h) => (h.sequence, Some(h.value)),
        None => (0, None),
    };
    if let Some(h) = &last {
        if h.epoch > epoch {
            return Err(Attempt::Newer(h.clone()));
        }
    }
    let (commit, published, applied_seq) = last
        .as_ref()
        .map_or((0, 0, 0), |h| (h.commit, h.published, h.applied_seq));
    let mut head = PartitionHead {
        partition,
        epoch,
        owner: env.node.to_string(),
        commit,
        published,
        applied_seq,
        takeover: true,
        written_ms: now_ms(),
    };
    let mut head_seq = match log.commit(partition, expected, &head, &[]).await {
        Ok(seq) => seq,
        Err(e) => return Err(retry(e)),
    };
    // From here on the partition is ours until someone fences us.
    let records: Vec<_> = records.into_iter().map(|e| e.value).collect();
    env.store
        .drop_partition(partition)
        .and_then(|_| env.store.apply(partition, &records, head_seq))
        .map_err(|e| Attempt::Failed(format!("materialise partition {partition}: {e}")))?;
    if published < commit {
        let mut events = Vec::new();
        for r in records.iter().filter(|r| r.commit == commit) {
            for pending in &r.outbox {
                match pending.event() {
                    Ok(e) => events.push(e),
                    Err(e) => {
                        warn!(partition, instance = %r.instance, error = %e, "a pending event of the changelog does not decode; skipped")
                    }
                }
            }
        }
        // Within the duplicate window JetStream drops copies by id; past it (the partition went
        // ownerless for long), publish only what the log does not hold yet.
        let window =
            i64::try_from(env.bus.config().duplicate_window.as_millis()).unwrap_or(i64::MAX);
        let last_write = last.as_ref().map_or(0, |h| h.written_ms);
        if now_ms().saturating_sub(last_write) > window / 2 {
            let mut missing = Vec::with_capacity(events.len());
            for e in events {
                let subject = env.bus.subject_of(&e);
                let stored = env
                    .bus
                    .read_events(&subject)
                    .await
                    .map_err(|err| Attempt::Retry(format!("read {subject}: {err}")))?;
                if !stored
                    .iter()
                    .any(|s| s.event.as_ref().is_ok_and(|x| x.id == e.id))
                {
                    missing.push(e);
                }
            }
            events = missing;
        }
        env.bus
            .publish_all(&events)
            .await
            .map_err(|e| Attempt::Retry(format!("re-publish the last commit: {e}")))?;
        head.published = commit;
        head.takeover = false;
        head.written_ms = now_ms();
        head_seq = log
            .commit(partition, head_seq, &head, &[])
            .await
            .map_err(|e| match e {
                ChangelogError::Fenced { .. } => Attempt::Retry(e.to_string()),
                other => Attempt::Retry(other.to_string()),
            })?;
        info!(
            partition,
            commit,
            events = events.len(),
            "re-published the last commit's events"
        );
    }
    info!(
        partition,
        epoch,
        instances = records.len(),
        applied_seq,
        "partition taken over"
    );
    Ok(Restored {
        head_seq,
        head,
        instances: records.len(),
    })
}
