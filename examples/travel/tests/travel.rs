//! The travel example end to end against a harness server.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use choreo::{Bus, BusConfig, CorrelationId, NatsServer};
use choreo_example_travel::{predict, run, Outcome, TravelOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_seed_gives_the_predicted_outcomes() -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let server = NatsServer::start_temp().await?;
    let dir = tempfile::tempdir()?;
    let mut opts = TravelOptions::new(24, 42, dir.path().to_path_buf());
    // Long enough that every answer beats it even on a loaded machine; only silent providers
    // time out (outcomes are asserted exactly).
    opts.step_timeout = Duration::from_secs(5);
    let cfg = BusConfig::builder().url(server.url()).build()?;
    let summary = run(cfg.clone(), &opts, |_, _, _, _| {}).await?;
    assert_eq!(summary.trips.len(), 24);
    let bus = choreo::Bus::connect(cfg.clone()).await?;
    for (corr, outcome) in &summary.trips {
        let index: u32 = corr.split('-').nth(1).context("trip-<i>-<run>")?.parse()?;
        if *outcome != predict(&opts, index) {
            let tree = bus
                .correlation_history(&choreo::CorrelationId::new(corr.as_str())?)
                .await?
                .tree()
                .to_text();
            panic!(
                "{corr}: {outcome:?}, predicted {:?}\n{tree}",
                predict(&opts, index)
            );
        }
    }
    // Seed 42 shows every outcome (pinned: a change to the simulation shows up here).
    let counts: BTreeMap<Outcome, usize> = summary.counts.clone();
    assert_eq!(
        counts,
        BTreeMap::from([
            (Outcome::Completed, 11),
            (Outcome::Compensated, 3),
            (Outcome::TimedOut, 4),
            (Outcome::Vetoed, 6),
        ]),
        "{counts:?}"
    );

    // A vetoed trip cancelled its three bookings, in reverse order, once each.
    let bus = Bus::connect(cfg).await?;
    let (vetoed, _) = summary
        .trips
        .iter()
        .find(|(_, o)| *o == Outcome::Vetoed)
        .context("a veto")?;
    let types: Vec<String> = bus
        .history(&CorrelationId::new(vetoed.as_str())?)
        .await?
        .into_iter()
        .filter_map(|s| s.event.ok().map(|e| e.ty.to_string()))
        .collect();
    let cancels: Vec<&str> = types
        .iter()
        .filter(|t| t.ends_with(".cancel.v1"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        cancels,
        ["car.cancel.v1", "hotel.cancel.v1", "flight.cancel.v1"],
        "{types:?}"
    );
    assert!(types.contains(&"policy.vetoed.v1".to_owned()));
    assert!(
        !types.contains(&"payment.charge.v1".to_owned()),
        "the veto stopped the charge"
    );
    let cancelled = types
        .iter()
        .filter(|t| t.ends_with(".cancelled.v1"))
        .count();
    assert_eq!(
        cancelled, 3,
        "the providers undid their bookings: {types:?}"
    );
    Ok(())
}
