//! Changelog restore rate: a node with an empty data dir taking over seeded partitions.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Seed `n` instances on a fresh namespace, start one node with an empty data dir, and
/// return the time from its start until it owns every partition restored, with its row's
/// process figures.
pub(super) async fn restore_once(
    cx: &Ctx<'_>,
    n: u64,
) -> Result<(Duration, WorkloadResult), BenchError> {
    let partitions = cx.opts.sizes.failover_partitions;
    let ns = fresh_namespace("restore");
    let config = cx.bus_config_with(&ns, Some(partitions))?;
    let bus = Bus::connect(config.clone()).await?;
    let seeded = seed(&bus, n, "r").await?;
    let mut r = WorkloadResult::new(&restore_name(n), "choreo", "instances");
    let id = format!("restore-{n}");
    let measure = Measure::start(cx.server);
    let started = Instant::now();
    let member = start_member(cx, &config, &id, None).await?;
    let owned = wait_all_owned(&member.node, partitions, cx.timeout()).await?;
    let took = started.elapsed();
    measure.finish(&mut r);

    let (all, running, timers) = stored(&member.node, partitions)?;
    let named = Changelog::new(&bus)
        .heads()
        .await?
        .iter()
        .filter(|h| h.value.owner == id)
        .count();
    let complete = owned.len() == usize::from(partitions)
        && all == n
        && running == n
        && timers as u64 == n
        && named == usize::from(partitions);
    member.node.shutdown().await?;
    if !complete {
        return Err(BenchError::Incomplete {
            workload: "failover".into(),
            what: format!(
                "instances restored from the changelog ({all} in the store, {running} live, {timers} timers, {named}/{partitions} heads taken over)"
            ),
            got: running,
            expected: n,
            secs: took.as_secs(),
        });
    }
    r.items = n;
    r.elapsed_s = took.as_secs_f64();
    r.throughput_per_s = n as f64 / r.elapsed_s.max(1e-9);
    r.latency_of = "– (throughput = instances restored/s: node start → every partition owned and rebuilt in its store)".into();
    r.set("partitions", partitions);
    r.set("restore_ms", round1(ms(took)));
    r.set("record_bytes", seeded.record_bytes.round());
    r.set(
        "changelog_write_per_s",
        (seeded.messages as f64 / seeded.took.as_secs_f64().max(1e-9)).round(),
    );
    Ok((took, r))
}

/// The row of one restored changelog size: `restore-10k`, `restore-250`.
pub(super) fn restore_name(n: u64) -> String {
    if n >= 1000 && n % 1000 == 0 {
        format!("restore-{}k", n / 1000)
    } else {
        format!("restore-{n}")
    }
}

pub(super) async fn restore(
    cx: &Ctx<'_>,
    n: u64,
    overhead: Duration,
) -> Result<WorkloadResult, BenchError> {
    let (took, mut r) = restore_once(cx, n).await?;
    r.set("start_on_heads_only_ms", round1(ms(overhead)));
    if let Some(net) = took.checked_sub(overhead).filter(|d| !d.is_zero()) {
        r.set(
            "net_instances_per_s",
            (n as f64 / net.as_secs_f64()).round(),
        );
    }
    r.notes.push(format!(
        "every one of the {n} instances and its timer is in the node's store; net rate = N / (restore − a start on a changelog of heads only)"
    ));
    if cx.opts.progress {
        eprintln!(
            "  failover: {n} instances restored in {:.0} ms ({:.0}/s)",
            ms(took),
            r.throughput_per_s
        );
    }
    Ok(r)
}
