//! `choreo demo`: run one of the example swarms end to end and show what happened.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use choreo::{BusConfig, CorrelationId, NatsServer};
use clap::{Args, ValueEnum};
use serde_json::json;

/// The example swarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Example {
    /// Trips as sagas: flight, hotel, car, policy-gated payment; compensations and timeouts.
    Travel,
    /// Planner, executor and verifier agents, an approval gate, deploy with rollback.
    Release,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Which example to run.
    #[arg(long, value_enum, default_value_t = Example::Travel)]
    example: Example,
    /// How many trips (or releases).
    #[arg(long, default_value_t = 20)]
    trips: u32,
    /// Seed: the same seed gives the same outcome counts.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// NATS URL; without it (and without CHOREO_NATS_URL) a temporary nats-server is started.
    #[arg(long, env = "CHOREO_NATS_URL")]
    nats: Option<String>,
    /// Keep the node's store here (so `choreo sagas` and `choreo replay` can inspect the run);
    /// default: a temporary directory removed at exit.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print the summary as JSON (counts by terminal state and the correlation ids).
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.trips == 0 {
        bail!("--trips must be at least 1");
    }
    let mut own_server = None;
    let url = match &args.nats {
        Some(url) => url.clone(),
        None => {
            let s = NatsServer::start_temp()
                .await
                .context("start a temporary nats-server")?;
            let url = s.url();
            own_server = Some(s);
            url
        }
    };
    let temp_dir;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp_dir = tempfile::tempdir()?;
            temp_dir.path().to_path_buf()
        }
    };
    let result = demo(&args, &url, data_dir, own_server.is_some()).await;
    if let Some(mut s) = own_server {
        s.stop().await?;
    }
    result
}

async fn demo(
    args: &DemoArgs,
    url: &str,
    data_dir: PathBuf,
    temporary: bool,
) -> anyhow::Result<()> {
    let cfg = BusConfig::builder()
        .url(url)
        .client_name("choreo-demo")
        .build()?;
    let bus = choreo::Bus::connect(cfg.clone()).await?;
    let quiet = args.json;
    if !quiet {
        println!(
            "choreo demo: the {} example, {} {}, seed {}, nats-server {} at {url}{}",
            match args.example {
                Example::Travel => "travel",
                Example::Release => "release",
            },
            args.trips,
            match args.example {
                Example::Travel => "trips",
                Example::Release => "releases",
            },
            args.seed,
            bus.server_version(),
            if temporary { " (temporary)" } else { "" }
        );
    }
    let progress = |c: &str, o: &str, done: usize, total: usize| {
        if !quiet {
            println!("  [{done:>3}/{total}] {c:<22} {o}");
        }
    };
    let (saga, runs): (&str, Vec<(String, &'static str)>) = match args.example {
        Example::Travel => {
            let opts =
                choreo_example_travel::TravelOptions::new(args.trips, args.seed, data_dir.clone());
            let s =
                choreo_example_travel::run(cfg, &opts, |c, o, d, t| progress(c, o.as_str(), d, t))
                    .await?;
            (
                "trip",
                s.trips.into_iter().map(|(c, o)| (c, o.as_str())).collect(),
            )
        }
        Example::Release => {
            let opts = choreo_example_release::ReleaseOptions::new(
                args.trips,
                args.seed,
                data_dir.clone(),
            );
            if !quiet {
                println!("  (the demo's auto-approver stands in for a human; in real use: choreo approve RELEASE)");
            }
            let s =
                choreo_example_release::run(cfg, &opts, |c, o, d, t| progress(c, o.as_str(), d, t))
                    .await?;
            (
                "release",
                s.releases
                    .into_iter()
                    .map(|(c, o)| (c, o.as_str()))
                    .collect(),
            )
        }
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, o) in &runs {
        *counts.entry(o).or_default() += 1;
    }
    if args.json {
        let by: BTreeMap<&str, Vec<&str>> = runs.iter().fold(BTreeMap::new(), |mut m, (c, o)| {
            m.entry(*o).or_insert_with(Vec::new).push(c.as_str());
            m
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "example": saga,
                "seed": args.seed,
                "counts": counts,
                "correlations": by,
            }))?
        );
        return Ok(());
    }
    println!("\nsummary:");
    println!("  {:<12} {:>5}", "outcome", "count");
    for (o, n) in &counts {
        println!("  {o:<12} {n:>5}");
    }
    // The most eventful run's causal tree.
    let interesting = runs
        .iter()
        .find(|(_, o)| *o != "completed" && *o != "deployed")
        .or_else(|| runs.first())
        .map(|(c, _)| c.clone())
        .context("no runs")?;
    let tree = bus
        .correlation_history(&CorrelationId::new(interesting.as_str())?)
        .await?
        .tree();
    println!("\ncausal tree of {interesting}:");
    for line in tree.to_text().lines() {
        println!("  {line}");
    }
    println!("\nlook further:");
    if temporary || args.data_dir.is_none() {
        println!("  this run's server and store are gone; to keep them, run `choreo dev` in another terminal, then");
        println!("  choreo demo --nats nats://127.0.0.1:4222 --data-dir .choreo/demo");
        println!("and:");
    }
    let dir = args
        .data_dir
        .as_ref()
        .map_or(".choreo/demo".to_owned(), |d| d.display().to_string());
    println!("  choreo events {interesting}");
    println!("  choreo trace {interesting} --format mermaid");
    println!("  choreo sagas list --saga {saga} --data-dir {dir}");
    println!("  choreo replay {saga} {interesting} --data-dir {dir}");
    Ok(())
}
