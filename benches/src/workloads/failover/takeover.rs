//! Takeover time after a simulated crash (`RunningNode::abort`), over several rounds.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::latency::LatencyHistogram;

struct Moved {
    /// Abort → the last of them has a head naming the survivor (as polled).
    all: Duration,
    /// Abort → the first of them did.
    first: Duration,
    /// Wall-clock ms of the latest takeover head's write (`written_ms`).
    last_written_ms: i64,
    /// Abort → none of its leases is held by the dead node any more (expired).
    leases_gone: Duration,
    /// Abort → its membership heartbeat expired.
    member_gone: Duration,
}

/// Who the crash is about, and where to read.
struct Crash<'a> {
    bus: &'a Bus,
    log: &'a Changelog,
    members_kv: &'a async_nats::jetstream::kv::Store,
    victim: &'a str,
    survivor: &'a str,
    moved: &'a BTreeSet<u16>,
}

/// Poll the heads of `c.moved` every [`POLL`] until each names the survivor; meanwhile note
/// when the dead node's leases and membership expired.
async fn await_takeover(
    c: &Crash<'_>,
    aborted: Instant,
    timeout: Duration,
) -> Result<Moved, BenchError> {
    let (log, moved, survivor) = (c.log, c.moved, c.survivor);
    let mut pending: Vec<u16> = moved.iter().copied().collect();
    let mut first = None;
    let mut last_written_ms = 0i64;
    let (mut leases_gone, mut member_gone) = (None, None);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if leases_gone.is_none() {
            let leases = choreo::read_leases(c.bus).await?;
            let held = moved.iter().any(|p| {
                leases
                    .get(p)
                    .is_some_and(|(l, _)| l.owner.as_str() == c.victim)
            });
            if !held {
                leases_gone = Some(aborted.elapsed());
            }
        }
        if member_gone.is_none() {
            let entry = c
                .members_kv
                .entry(c.victim)
                .await
                .map_err(|e| BenchError::nats(format!("membership of {}", c.victim), e))?;
            let present =
                entry.is_some_and(|e| e.operation == async_nats::jetstream::kv::Operation::Put);
            if !present {
                member_gone = Some(aborted.elapsed());
            }
        }
        let heads = futures::future::join_all(pending.iter().map(|p| log.head(*p))).await;
        let now = aborted.elapsed();
        let mut still = Vec::with_capacity(pending.len());
        for (p, head) in pending.iter().zip(heads) {
            match head? {
                Some(h) if h.value.owner == survivor => {
                    first.get_or_insert(now);
                    last_written_ms = last_written_ms.max(h.value.written_ms);
                }
                _ => still.push(*p),
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(Moved {
                all: now,
                first: first.unwrap_or(now),
                last_written_ms,
                leases_gone: leases_gone.unwrap_or(now),
                member_gone: member_gone.unwrap_or(now),
            });
        }
        if now >= timeout {
            return Err(BenchError::Incomplete {
                workload: "failover".into(),
                what: format!("partitions of the aborted node taken over by {survivor}"),
                got: (moved.len() - pending.len()) as u64,
                expected: moved.len() as u64,
                secs: timeout.as_secs(),
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Takeovers

/// One measured crash.
struct Round {
    victim: String,
    survivor: String,
    partitions: usize,
    moved: Moved,
    /// Abort → the survivor owns every partition with its store rebuilt.
    ready: Duration,
    /// Abort wall-clock ms (to compare with the heads' `written_ms`).
    aborted_ms: i64,
    /// How long after ownership settled the node was aborted.
    phase: Duration,
}

pub(super) async fn takeovers(cx: &Ctx<'_>) -> Result<WorkloadResult, BenchError> {
    let sizes = &cx.opts.sizes;
    let (rounds, partitions, ttl) = (
        sizes.failover_rounds,
        sizes.failover_partitions,
        sizes.failover_lease_ttl,
    );
    let timeout = cx.timeout().min(ttl * 20 + Duration::from_secs(60));
    let ns = fresh_namespace("failover");
    let config = cx.bus_config_with(&ns, Some(partitions))?;
    let bus = Bus::connect(config.clone()).await?;
    let log = Changelog::new(&bus);
    let seeded = seed(&bus, sizes.failover_instances, "f").await?;
    let mut notes = Vec::new();

    let measure = Measure::start(cx.server);
    let started = Instant::now();
    let mut members = Vec::with_capacity(2);
    for id in ["fo0-a", "fo0-b"] {
        members.push(start_member(cx, &config, id, Some(ttl)).await?);
    }
    let members_bucket = config.bucket(choreo::MEMBERS_BUCKET);
    let members_kv = bus
        .jetstream()
        .get_key_value(members_bucket.as_str())
        .await
        .map_err(|e| BenchError::nats(format!("bucket {members_bucket}"), e))?;
    let mut done: Vec<Round> = Vec::new();
    for round in 0..rounds {
        let (owned, spread) = wait_spread(&log, &members, partitions, ttl, timeout).await?;
        if !spread {
            notes.push(format!(
                "round {}: one node was assigned no partition (rendezvous hashing of these ids)",
                round + 1
            ));
        }
        // Alternate the slot of the victim; never abort a node that owns nothing.
        let mut victim = (round % 2) as usize;
        if owned[victim].is_empty() {
            victim = 1 - victim;
        }
        let moved_set = owned[victim].clone();
        // Ownership settles right after a tick of both nodes (a handover runs in ticks that
        // also renew every lease), so aborting now would always crash a node that has just
        // renewed. A real crash falls anywhere in the renewal cycle: spread the abort over
        // one tick period (TTL/3) with a low-discrepancy sequence. This paces the crash; it
        // waits for no result.
        tokio::time::sleep(crash_phase(round, ttl)).await;
        let Member {
            id: dead_id,
            node: dead_node,
            _dir: dead_dir,
        } = members.remove(victim);
        let survivor = members[0].id.clone();
        let aborted_ms = unix_ms();
        dead_node.abort();
        let aborted = Instant::now();
        let crash = Crash {
            bus: &bus,
            log: &log,
            members_kv: &members_kv,
            victim: &dead_id,
            survivor: &survivor,
            moved: &moved_set,
        };
        let moved = await_takeover(&crash, aborted, timeout).await?;
        wait_all_owned(&members[0].node, partitions, timeout).await?;
        let ready = aborted.elapsed();
        let (all, running, _) = stored(&members[0].node, partitions)?;
        if all != sizes.failover_instances || running != all {
            return Err(BenchError::Incomplete {
                workload: "failover".into(),
                what: format!(
                    "live instances in the survivor's store after round {}",
                    round + 1
                ),
                got: running,
                expected: sizes.failover_instances,
                secs: 0,
            });
        }
        if cx.opts.progress {
            eprintln!(
                "  failover: round {}/{rounds}: {} aborted, {} partitions taken over by {survivor} in {:.0} ms (restored in {:.0} ms)",
                round + 1,
                dead_id,
                moved_set.len(),
                ms(moved.all),
                ms(ready),
            );
        }
        done.push(Round {
            victim: dead_id,
            survivor,
            partitions: moved_set.len(),
            moved,
            ready,
            aborted_ms,
            phase: crash_phase(round, ttl),
        });
        drop(dead_dir);
        if round + 1 < rounds {
            let id = format!("fo{}-{}", round + 1, if victim == 0 { 'a' } else { 'b' });
            let joiner = start_member(cx, &config, &id, Some(ttl)).await?;
            members.insert(victim, joiner);
        }
    }
    let elapsed = started.elapsed();
    let mut r = WorkloadResult::new("failover", "choreo", "takeovers");
    measure.finish(&mut r);
    for m in members {
        m.node.shutdown().await?;
    }

    let mut hist = LatencyHistogram::new();
    for d in &done {
        hist.record_ns(u64::try_from(d.moved.all.as_nanos()).unwrap_or(u64::MAX));
    }
    let sorted = |f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = done.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let ttl_ms = ms(ttl);
    let takeover = sorted(&|d| ms(d.moved.all));
    let over_ttl = sorted(&|d| ms(d.moved.all) - ttl_ms);
    let by_head = sorted(&|d| (d.moved.last_written_ms - d.aborted_ms) as f64);
    let first = sorted(&|d| ms(d.moved.first));
    let ready = sorted(&|d| ms(d.ready));
    let leases_gone = sorted(&|d| ms(d.moved.leases_gone));
    let member_gone = sorted(&|d| ms(d.moved.member_gone));
    let acquired = sorted(&|d| ms(d.moved.all.saturating_sub(d.moved.leases_gone)));
    r.items = done.len() as u64;
    r.elapsed_s = elapsed.as_secs_f64();
    r.latency = hist.percentiles();
    r.latency_of = format!(
        "takeover: abort of a node → every partition it owned has a head naming the survivor (heads read every {} ms; lease TTL {} ms)",
        POLL.as_millis(),
        ttl.as_millis()
    );
    let mut put = |key: &str, v: &[f64], q: f64| {
        if let Some(x) = quantile(v, q) {
            r.set(key, round1(x));
        }
    };
    put("takeover_p50_ms", &takeover, 0.5);
    put("takeover_p99_ms", &takeover, 0.99);
    put("takeover_max_ms", &takeover, 1.0);
    put("takeover_minus_ttl_p50_ms", &over_ttl, 0.5);
    put("takeover_minus_ttl_p99_ms", &over_ttl, 0.99);
    put("takeover_minus_ttl_max_ms", &over_ttl, 1.0);
    put("takeover_by_head_written_p50_ms", &by_head, 0.5);
    put("takeover_by_head_written_max_ms", &by_head, 1.0);
    put("first_partition_moved_p50_ms", &first, 0.5);
    put("survivor_restored_p50_ms", &ready, 0.5);
    put("survivor_restored_max_ms", &ready, 1.0);
    put("leases_expired_p50_ms", &leases_gone, 0.5);
    put("leases_expired_max_ms", &leases_gone, 1.0);
    put("membership_expired_p50_ms", &member_gone, 0.5);
    put("lease_expiry_to_takeover_p50_ms", &acquired, 0.5);
    put("lease_expiry_to_takeover_max_ms", &acquired, 1.0);
    r.set("lease_ttl_ms", ttl.as_millis() as u64);
    r.set("partitions", partitions);
    r.set("live_instances", sizes.failover_instances);
    r.set("seed_messages", seeded.messages);
    r.set(
        "rounds",
        done.iter()
            .map(|d| {
                serde_json::json!({
                    "victim": d.victim,
                    "survivor": d.survivor,
                    "partitions_moved": d.partitions,
                    "crash_phase_ms": round1(ms(d.phase)),
                    "takeover_ms": round1(ms(d.moved.all)),
                    "leases_expired_ms": round1(ms(d.moved.leases_gone)),
                    "membership_expired_ms": round1(ms(d.moved.member_gone)),
                    "restored_ms": round1(ms(d.ready)),
                })
            })
            .collect::<Vec<_>>(),
    );
    r.notes.push(
        "a dead node's leases expire one TTL after their last renewal (renewed every TTL/3); the expiry makes no KV event, so the survivor acquires them at its next tick (every TTL/3): expect TTL − TTL/3 … TTL + TTL/3 plus the restore; each round aborts at another phase of the renewal cycle (crash_phase_ms)".into(),
    );
    r.notes.extend(notes);
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
