//! `failover`: what a node crash costs, in two measurements against the run's server.
//!
//! 1. **Takeover time.** Two in-process nodes host the bench saga ([`BenchSaga`]) with a short
//!    lease TTL on a fresh namespace whose changelog already holds live instances. Once both
//!    own their share (every partition's changelog head names a node whose processor runs it
//!    and whose store reflects it), one node is aborted ([`RunningNode::abort`]: every task
//!    stops, no lease is released — a kill -9 as the cluster sees it) at a phase of its
//!    renewal cycle that differs per round (ownership settles right after a renewal, so an
//!    immediate abort would always hit a freshly renewed lease), and the heads of the
//!    partitions it owned are read every [`POLL`] until each names the survivor. Takeover =
//!    that instant − the abort. A replacement node (new id) then joins, the partitions spread
//!    again, and the next round aborts the other slot; K rounds. A dead node's leases expire a
//!    TTL after its last renewal (renewals come every TTL/3), so the takeover is bounded below
//!    by about TTL − TTL/3: the report gives takeover − TTL beside the takeover.
//! 2. **Changelog restore rate.** On a fresh namespace the harness writes N live instance
//!    records of the bench saga (status running, a small state, one compensation, one timer
//!    an hour away) and one head per partition straight into the changelog, then starts one
//!    node with an empty data directory and measures the time until it owns every partition
//!    with its processor past the takeover ([`RunningNode::wait_owned`]: the head sequence is
//!    in the local store, so the partition was rebuilt). The node's store must then hold the N
//!    instances and their N timers, or the workload fails. instances/s = N / that time; the
//!    same start on a changelog of heads only is measured first, and the rate net of it is
//!    reported too.

mod restore_rate;
mod takeover;

use restore_rate::{restore, restore_once};
use takeover::takeovers;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use choreo::{
    Bus, BusConfig, Changelog, Compensation, CorrelationId, EventId, InstanceRecord, Node,
    PartitionHead, RunningNode, SagaStatus,
};
use tempfile::TempDir;

use super::saga::{BenchSaga, BenchSagaState, SAGA_NAME};
use super::{stream_messages, BenchData, Ctx, Measure};
use crate::driver::Acker;
use crate::env::fresh_namespace;
use crate::error::BenchError;
use crate::report::WorkloadResult;

/// Owner named in the heads the harness writes straight into the changelog.
pub const WRITER: &str = "bench-writer";
/// How often the heads of a crashed node's partitions are read while they move.
pub const POLL: Duration = Duration::from_millis(10);
/// How often ownership is read while waiting for it to settle.
const SETTLE_POLL: Duration = Duration::from_millis(20);

fn unix_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Where in the renewal cycle (one tick, TTL/3) round `round` crashes its node: the
/// golden-ratio sequence 0.5, 0.12, 0.74, … of the period.
fn crash_phase(round: u32, ttl: Duration) -> Duration {
    let x = (0.5 + f64::from(round) * 0.618_033_988_75).fract();
    (ttl / 3).mul_f64(x)
}

/// Nearest-rank quantile of sorted values (`None` when empty).
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Run `failover`: one row for the takeovers, one per restored changelog size.
pub(crate) async fn run(cx: &Ctx<'_>) -> Result<Vec<WorkloadResult>, BenchError> {
    let mut out = vec![takeovers(cx).await?];
    let (overhead, _) = restore_once(cx, 0).await?;
    if cx.opts.progress {
        eprintln!(
            "  failover: a node start on a changelog of heads only owns every partition after {:.0} ms",
            ms(overhead)
        );
    }
    for n in &cx.opts.sizes.restore_instances {
        out.push(restore(cx, *n, overhead).await?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Writing a changelog

/// What [`seed`] wrote.
struct Seeded {
    /// Messages acknowledged by JetStream (records + heads).
    messages: u64,
    /// Mean encoded record size.
    record_bytes: f64,
    /// Time to write and acknowledge everything.
    took: Duration,
}

/// The record of live instance `i` of the bench saga (its correlation is `<prefix><i>`),
/// after its first step: running, one compensation, one timer an hour away.
fn live_record(
    prefix: &str,
    i: u64,
    partitions: u16,
    now_ms: i64,
) -> Result<InstanceRecord, BenchError> {
    let name = format!("{prefix}{i}");
    let correlation = CorrelationId::new(name.as_str())
        .map_err(|e| BenchError::Options(format!("correlation {name}: {e}")))?;
    let partition = choreo::schemas::partition_of(&correlation, partitions);
    let state = rmp_serde::to_vec_named(&BenchSagaState { done: 1 })
        .map_err(|e| BenchError::Encode(e.to_string()))?;
    Ok(InstanceRecord {
        saga: SAGA_NAME.to_owned(),
        instance: name.clone(),
        correlation: name,
        status: SagaStatus::Running,
        state_version: 1,
        state,
        compensations: vec![Compensation {
            ty: "bench.step1.undo.v1".to_owned(),
            data: BenchData::new(i, 0, 0).encode()?,
            confirmed_by: Vec::new(),
        }],
        effects: Vec::new(),
        undoing: Vec::new(),
        timers: BTreeMap::from([("deadline".to_owned(), now_ms + 3_600_000)]),
        waits: vec![choreo::Wait {
            types: vec!["bench.step2.done.v1".to_owned()],
            since_seq: 0,
            since_ms: now_ms,
            deadline_ms: None,
            stalled: None,
        }],
        watermark: 0,
        recent_inputs: Vec::new(),
        applied: 2,
        reason: None,
        faulted_by: None,
        last_event: EventId::new_root().to_string(),
        last_depth: 1,
        last_trace: None,
        created_ms: now_ms,
        updated_ms: now_ms,
        partition,
        commit: 1,
        epoch: 1,
        owner: WRITER.to_owned(),
        outbox: Vec::new(),
    })
}

/// Write `n` live instances (correlations `<prefix>0..n`) and one head per partition
/// straight into the changelog of `bus`'s namespace: pipelined JetStream publishes, every ack
/// awaited. The heads say commit 1, everything published, no input applied, epoch 1.
async fn seed(bus: &Bus, n: u64, prefix: &str) -> Result<Seeded, BenchError> {
    let partitions = bus.config().partitions();
    let root = bus.subjects().root().to_owned();
    let now = unix_ms();
    let started = Instant::now();
    let acker = Acker::start();
    let mut bytes = 0u64;
    let publish = |subject: String, payload: Vec<u8>| async move {
        bus.jetstream()
            .publish(subject.clone(), payload.into())
            .await
            .map_err(|e| BenchError::nats(format!("publish {subject}"), e))
    };
    for i in 0..n {
        let r = live_record(prefix, i, partitions, now)?;
        let payload = rmp_serde::to_vec_named(&r).map_err(|e| BenchError::Encode(e.to_string()))?;
        bytes += payload.len() as u64;
        let subject = format!("{root}.state.{}.{}.{}", r.partition, r.saga, r.instance);
        acker.push(publish(subject, payload).await?).await?;
    }
    for partition in 0..partitions {
        let head = PartitionHead {
            partition,
            epoch: 1,
            owner: WRITER.to_owned(),
            commit: 1,
            published: 1,
            applied_seq: 0,
            takeover: false,
            written_ms: now,
        };
        let payload =
            rmp_serde::to_vec_named(&head).map_err(|e| BenchError::Encode(e.to_string()))?;
        acker
            .push(publish(format!("{root}.state.{partition}.head"), payload).await?)
            .await?;
    }
    let messages = acker.finish().await?;
    let took = started.elapsed();
    let stored = stream_messages(bus, &bus.config().state_stream()).await?;
    let expected = n + u64::from(partitions);
    if messages != expected || stored != expected {
        return Err(BenchError::Incomplete {
            workload: "failover".into(),
            what: format!("changelog messages written ({messages} acknowledged)"),
            got: stored,
            expected,
            secs: took.as_secs(),
        });
    }
    Ok(Seeded {
        messages,
        record_bytes: if n == 0 { 0.0 } else { bytes as f64 / n as f64 },
        took,
    })
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// A node of the run with its id and data directory.
struct Member {
    id: String,
    node: RunningNode,
    _dir: TempDir,
}

async fn start_member(
    cx: &Ctx<'_>,
    config: &BusConfig,
    id: &str,
    ttl: Option<Duration>,
) -> Result<Member, BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("choreo-bench-failover-")
        .tempdir()
        .map_err(|e| BenchError::io("temp dir", e))?;
    let mut b = Node::builder()
        .bus(config.clone())
        .data_dir(dir.path())
        .node_id(id)
        .saga(BenchSaga::new()?);
    if let Some(ttl) = ttl {
        b = b.lease_ttl(ttl);
    }
    let node = cx.tune(b).build()?.start().await?;
    Ok(Member {
        id: id.to_owned(),
        node,
        _dir: dir,
    })
}

/// Instances in a node's store, over every partition, and its pending timers.
fn stored(node: &RunningNode, partitions: u16) -> Result<(u64, u64, usize), BenchError> {
    let store = node
        .store()
        .ok_or_else(|| BenchError::Options("a saga node has a store".into()))?;
    let (mut all, mut running) = (0u64, 0u64);
    for p in 0..partitions {
        for r in store.list_partition(p)? {
            all += 1;
            if r.status == SagaStatus::Running && r.partition == p && r.saga == SAGA_NAME {
                running += 1;
            }
        }
    }
    Ok((all, running, store.timers_len()))
}

/// Wait until `node` owns every partition with processors past their takeover.
async fn wait_all_owned(
    node: &RunningNode,
    partitions: u16,
    timeout: Duration,
) -> Result<Vec<u16>, BenchError> {
    node.wait_owned(usize::from(partitions), timeout)
        .await
        .map_err(|e| match e {
            choreo::NodeError::Deadline { ended, .. } => BenchError::Incomplete {
                workload: "failover".into(),
                what: format!("partitions owned and restored by {}", node.node_id()),
                got: ended as u64,
                expected: u64::from(partitions),
                secs: timeout.as_secs(),
            },
            other => other.into(),
        })
}

/// The partitions each member owns when ownership is at rest, or `None` while it moves: every
/// partition has a head naming a member whose processor runs it and whose store reflects it,
/// and no member runs a partition whose head names someone else.
async fn at_rest(
    log: &Changelog,
    members: &[Member],
    partitions: u16,
) -> Result<Option<Vec<BTreeSet<u16>>>, BenchError> {
    let owner: BTreeMap<u16, String> = log
        .heads()
        .await?
        .into_iter()
        .map(|h| (h.value.partition, h.value.owner))
        .collect();
    let mut out = Vec::with_capacity(members.len());
    let mut covered = 0usize;
    for m in members {
        let alive: BTreeSet<u16> = m
            .node
            .health()
            .iter()
            .filter(|h| h.alive)
            .map(|h| h.partition)
            .collect();
        let named: BTreeSet<u16> = owner
            .iter()
            .filter(|(_, o)| **o == m.id)
            .map(|(p, _)| *p)
            .collect();
        if alive != named {
            return Ok(None);
        }
        let store = m
            .node
            .store()
            .ok_or_else(|| BenchError::Options("a saga node has a store".into()))?;
        for p in &alive {
            if store.head_seq(*p)?.is_none() {
                return Ok(None);
            }
        }
        covered += alive.len();
        out.push(alive);
    }
    Ok((covered == usize::from(partitions)).then_some(out))
}

/// Wait until ownership is at rest with every member owning some partition. Rendezvous
/// hashing may give a member nothing; ownership at rest for 3 TTLs that way is accepted too
/// (the second value is then false).
async fn wait_spread(
    log: &Changelog,
    members: &[Member],
    partitions: u16,
    ttl: Duration,
    timeout: Duration,
) -> Result<(Vec<BTreeSet<u16>>, bool), BenchError> {
    let deadline = Instant::now() + timeout;
    let mut lopsided_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(SETTLE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match at_rest(log, members, partitions).await? {
            Some(owned) if owned.iter().all(|s| !s.is_empty()) => return Ok((owned, true)),
            Some(owned) => {
                let since = *lopsided_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= ttl * 3 {
                    return Ok((owned, false));
                }
            }
            None => lopsided_since = None,
        }
        if Instant::now() >= deadline {
            let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
            return Err(BenchError::Incomplete {
                workload: "failover".into(),
                what: format!("nodes with their partitions at rest ({ids:?})"),
                got: 0,
                expected: members.len() as u64,
                secs: timeout.as_secs(),
            });
        }
    }
}

/// When the partitions of a dead node moved.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_names() {
        let v = [1.0, 2.0, 3.0];
        assert_eq!(quantile(&v, 0.5), Some(2.0));
        assert_eq!(quantile(&v, 0.99), Some(3.0));
        assert_eq!(quantile(&v, 1.0), Some(3.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(restore_rate::restore_name(10_000), "restore-10k");
        assert_eq!(restore_rate::restore_name(250), "restore-250");
        let ttl = Duration::from_secs(3);
        assert_eq!(crash_phase(0, ttl), Duration::from_millis(500));
        assert!((0..20).all(|r| crash_phase(r, ttl) < Duration::from_secs(1)));
    }

    #[test]
    fn seeded_records_decode_and_land_in_their_partition() {
        let r = live_record("r", 7, 8, 1_000).expect("a record");
        let c = CorrelationId::new("r7").expect("valid");
        assert_eq!(r.partition, choreo::schemas::partition_of(&c, 8));
        let bytes = rmp_serde::to_vec_named(&r).expect("encodes");
        let back: InstanceRecord = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(back, r);
        assert_eq!(back.timers.get("deadline"), Some(&3_601_000));
    }
}
