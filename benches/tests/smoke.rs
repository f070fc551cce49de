//! A tiny run of each workload against a server the harness starts: the harness works and
//! counts every message exactly once. No figure is asserted: timing belongs to benchmarks.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use choreo_benches::workloads::saga::fail_step;
use choreo_benches::{
    run, BenchOptions, BenchOptionsBuilder, BenchReport, Coordination, LoadMode, Workload,
};

fn tiny() -> BenchOptionsBuilder {
    BenchOptions::builder()
        .raw_messages(300)
        .hop_chains(40)
        .hop_length(2)
        .sagas(40)
        .fail_fraction(0.25)
        .timers(30)
        .timer_window(Duration::from_millis(300))
        .warmup(5)
        .failover_rounds(1)
        .failover_lease_ttl(Duration::from_secs(1))
        .failover_instances(50)
        .restore_instances(vec![200])
        .baseline(false)
        .progress(false)
        .command("cargo test -p choreo-benches --test smoke")
        .timeout(Duration::from_secs(60))
}

async fn one(w: Workload, b: BenchOptionsBuilder) -> Result<BenchReport> {
    let opts = b.build()?;
    let report = run(&[w], &opts).await?;
    let r = report
        .results
        .iter()
        .find(|r| r.workload == w.name())
        .context("a result for the workload")?;
    ensure!(r.duplicates == 0, "duplicates: {r:?}");
    ensure!(r.latency.is_some(), "latency recorded: {r:?}");
    ensure!(!report.to_table().is_empty());
    let json = report.to_json()?;
    let back = BenchReport::from_json(&json)?;
    ensure!(
        back.environment == report.environment,
        "the JSON reads back"
    );
    for (a, b) in back.results.iter().zip(&report.results) {
        ensure!((&a.workload, &a.engine, a.items) == (&b.workload, &b.engine, b.items));
        ensure!(a.latency.as_ref().map(|l| l.p99_us) == b.latency.as_ref().map(|l| l.p99_us));
    }
    Ok(report)
}

fn extra_u64(report: &BenchReport, workload: &str, key: &str) -> Result<u64> {
    report
        .result(workload, "choreo")
        .and_then(|r| r.extra.get(key))
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("{workload}.{key}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_counts_every_message() -> Result<()> {
    let report = one(Workload::Raw, tiny()).await?;
    let r = report.result("raw", "jetstream").context("raw")?;
    ensure!(r.items == 300, "{r:?}");
    ensure!(r.ratio_to_raw == Some(1.0));
    ensure!(
        report.environment.server_version.starts_with("2."),
        "{:?}",
        report.environment
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_open_loop_counts_every_message() -> Result<()> {
    let report = one(
        Workload::Raw,
        tiny().mode(LoadMode::Open { rate_per_s: 3000.0 }),
    )
    .await?;
    let r = report.result("raw", "jetstream").context("raw")?;
    ensure!(r.items == 300, "{r:?}");
    ensure!(report.environment.mode.starts_with("open-loop"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_counts_every_chain_and_gets_a_ratio() -> Result<()> {
    let report = one(Workload::Hop, tiny().baseline(true)).await?;
    let r = report.result("hop", "choreo").context("hop")?;
    ensure!(r.items == 40, "{r:?}");
    ensure!(r.ratio_to_raw.is_some_and(|x| x > 0.0), "{r:?}");
    // 2 reactors × (40 chains + 5 warm-up).
    ensure!(extra_u64(&report, "hop", "reactor_inputs_handled")? == 90);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_counts_every_saga_and_compensation() -> Result<()> {
    let report = one(Workload::Saga, tiny()).await?;
    let r = report.result("saga", "choreo").context("saga")?;
    ensure!(r.items == 40, "{r:?}");
    let failing = (0..40).filter(|s| fail_step(*s, 0.25) != 0).count() as u64;
    ensure!(failing > 0, "the tiny run exercises compensation");
    ensure!(extra_u64(&report, "saga", "compensated")? == failing);
    ensure!(extra_u64(&report, "saga", "completed")? == 40 - failing);
    let undo = |n: u64| -> u64 {
        (0..n)
            .map(|s| u64::from(fail_step(s, 0.25).saturating_sub(1)))
            .sum()
    };
    ensure!(extra_u64(&report, "saga", "compensations_handled")? == undo(40) + undo(5));
    ensure!(r.events_per_s.is_some_and(|e| e > 0.0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_runs_with_coordination_on_and_off() -> Result<()> {
    let opts = tiny()
        .sagas(20)
        .coordination(Coordination::Both)
        .saga_waits(true)
        .baseline(true)
        .build()?;
    let report = run(&[Workload::Saga], &opts).await?;
    let on = report.result("saga", "choreo").context("saga")?;
    let off = report
        .result("saga-nocoord", "choreo")
        .context("saga-nocoord")?;
    ensure!(on.items == 20 && off.items == 20, "{on:?} {off:?}");
    ensure!(on.ratio_to_raw.is_some() && off.ratio_to_raw.is_some());
    ensure!(on.ratios.contains_key("saga-nocoord"), "{on:?}");
    ensure!(extra_u64(&report, "saga", "deadlock_checks")? > 0, "{on:?}");
    ensure!(!off.extra.contains_key("deadlock_checks"), "{off:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlock_detects_every_cycle_once() -> Result<()> {
    let opts = tiny().deadlocks(30).deadlock_rate(200.0).build()?;
    let report = run(&[Workload::Deadlock], &opts).await?;
    ensure!(
        report.result("raw", "jetstream").is_none(),
        "deadlock alone needs no baseline"
    );
    let r = report.result("deadlock", "choreo").context("deadlock")?;
    ensure!(r.items == 30 && r.duplicates == 0, "{r:?}");
    ensure!(r.latency.as_ref().is_some_and(|l| l.count == 30), "{r:?}");
    // The node's counter also counts a cycle found again before its report was applied.
    ensure!(extra_u64(&report, "deadlock", "deadlocks_reported")? >= 30);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_every_timer_once() -> Result<()> {
    let report = one(Workload::Timers, tiny()).await?;
    let r = report.result("timers", "choreo").context("timers")?;
    ensure!(r.items == 30, "{r:?}");
    ensure!(extra_u64(&report, "timers", "pending_after_scheduling")? <= 30);
    ensure!(
        r.extra.contains_key("memory_per_pending_timer_bytes"),
        "{r:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_takes_over_and_restores_everything() -> Result<()> {
    let opts = tiny().baseline(true).build()?;
    let report = run(&[Workload::Failover], &opts).await?;
    ensure!(
        report.result("raw", "jetstream").is_none(),
        "failover alone needs no baseline"
    );
    let r = report
        .result("failover", "choreo")
        .context("takeover row")?;
    ensure!(r.items == 1, "{r:?}");
    let p99 = r
        .latency
        .as_ref()
        .map(|l| l.p99_us)
        .context("takeover time")?;
    ensure!(p99 > 0, "{r:?}");
    ensure!(extra_u64(&report, "failover", "lease_ttl_ms")? == 1000);
    let restore = report
        .result("restore-200", "choreo")
        .context("restore row")?;
    ensure!(restore.items == 200, "{restore:?}");
    ensure!(restore.throughput_per_s > 0.0, "{restore:?}");
    ensure!(!report.to_table().is_empty());
    Ok(())
}

#[test]
fn options_are_validated() {
    assert!(BenchOptions::builder().hop_length(0).build().is_err());
    assert!(BenchOptions::builder().fail_fraction(1.5).build().is_err());
    assert!(BenchOptions::builder()
        .mode(LoadMode::Open { rate_per_s: 0.0 })
        .build()
        .is_err());
    assert!(BenchOptions::builder()
        .nats_url(Some("nats://127.0.0.1:4222".into()))
        .sync_always(true)
        .build()
        .is_err());
    let o = BenchOptions::builder()
        .quick(true)
        .timers_1m(true)
        .build()
        .expect("valid");
    assert_eq!(o.sizes.timers, 1_000_000);
    assert_eq!(Workload::parse("all").expect("all").len(), 6);
    assert!(BenchOptions::builder().failover_rounds(0).build().is_err());
    assert!(BenchOptions::builder()
        .restore_instances(Vec::new())
        .build()
        .is_err());
    assert!(BenchOptions::builder()
        .failover_lease_ttl(Duration::from_millis(500))
        .build()
        .is_err());
    assert!(Workload::parse("nope").is_err());
    assert_eq!(
        Workload::parse("deadlock").expect("deadlock"),
        [Workload::Deadlock]
    );
    assert!(BenchOptions::builder().deadlocks(0).build().is_err());
    assert!(BenchOptions::builder().deadlock_rate(0.0).build().is_err());
    assert_eq!(Coordination::parse("both").ok(), Some(Coordination::Both));
    assert!(Coordination::parse("maybe").is_err());
}

/// The same saga against Restate. Needs `benches/scripts/build-restate-peer` first:
/// `cargo test -p choreo-benches --test smoke -- --ignored restate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Restate peer (benches/scripts/build-restate-peer)"]
async fn restate_peer_runs_the_same_saga() -> Result<()> {
    let opts = tiny().peer(Some(choreo_benches::Peer::Restate)).build()?;
    let report = run(&[Workload::Saga], &opts).await?;
    let p = report.result("saga", "restate").context("peer row")?;
    ensure!(p.items == 40, "{p:?}");
    ensure!(p.ratios.contains_key("choreo"), "{p:?}");
    let c = report.result("saga", "choreo").context("choreo row")?;
    ensure!(c.ratios.contains_key("restate"), "{c:?}");
    Ok(())
}
