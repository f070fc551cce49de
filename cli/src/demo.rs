//! `choreo demo`: run one of the example swarms end to end and show what happened.

mod deadlock;

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
    /// Seed 002: four agents that wait on each other forever; the deadlock is detected and
    /// broken, and the same swarm wired as a pipeline completes.
    Deadlock,
}

impl Example {
    /// The name `--example` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Example::Travel => "travel",
            Example::Release => "release",
            Example::Deadlock => "deadlock",
        }
    }
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
    /// Step timeout of the travel saga (and approval timeout of the release saga), in
    /// milliseconds; in-process and `--nodes N` runs only.
    #[arg(long)]
    step_timeout_ms: Option<u64>,
    /// Run the example's actors and sagas in N `choreo node` child processes instead of in this
    /// process; 0: host nothing, only publish and wait (nodes run elsewhere on the same NATS).
    /// Not supported by the deadlock example.
    #[arg(long)]
    nodes: Option<usize>,
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.trips == 0 {
        bail!("--trips must be at least 1");
    }
    if args.example == Example::Deadlock && args.nodes.is_some() {
        bail!(
            "--nodes is not supported by the deadlock example: it runs its swarm in this process"
        );
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
    if args.example == Example::Deadlock {
        return deadlock::demo(args, cfg, &bus, url, data_dir, temporary).await;
    }
    let quiet = args.json;
    if !quiet {
        println!(
            "choreo demo: the {} example, {} {}, seed {}, nats-server {} at {url}{}",
            args.example.name(),
            args.trips,
            match args.example {
                Example::Travel => "trips",
                Example::Release => "releases",
                Example::Deadlock => "tasks",
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
    let children = match args.nodes {
        Some(n) if n > 0 => Some(
            NodeChildren::spawn(
                n,
                args.example,
                url,
                &data_dir,
                args.seed,
                args.step_timeout_ms,
            )
            .await?,
        ),
        _ => None,
    };
    if let (Some(n), false) = (args.nodes, quiet) {
        println!(
            "  (hosted by {n} `choreo node` process(es); this process only publishes and waits)"
        );
    }
    let remote = args.nodes.is_some();
    let result = run_example(args, cfg, &bus, data_dir, remote, progress).await;
    if let Some(c) = children {
        c.stop().await?;
    }
    let (saga, runs) = result?;
    summarize(args, &bus, saga, runs, temporary).await
}

type Runs = (&'static str, Vec<(String, &'static str)>);

async fn run_example(
    args: &DemoArgs,
    cfg: BusConfig,
    bus: &choreo::Bus,
    data_dir: PathBuf,
    remote: bool,
    progress: impl Fn(&str, &str, usize, usize),
) -> anyhow::Result<Runs> {
    let quiet = args.json;
    Ok(match args.example {
        Example::Travel => {
            let mut opts =
                choreo_example_travel::TravelOptions::new(args.trips, args.seed, data_dir.clone());
            if let Some(ms) = args.step_timeout_ms {
                opts.step_timeout = std::time::Duration::from_millis(ms);
            }
            let report =
                |c: &str, o: choreo_example_travel::Outcome, d, t| progress(c, o.as_str(), d, t);
            let s = if remote {
                choreo_example_travel::drive(bus, None, &opts, report).await?
            } else {
                choreo_example_travel::run(cfg, &opts, report).await?
            };
            (
                "trip",
                s.trips.into_iter().map(|(c, o)| (c, o.as_str())).collect(),
            )
        }
        Example::Release => {
            let mut opts = choreo_example_release::ReleaseOptions::new(
                args.trips,
                args.seed,
                data_dir.clone(),
            );
            if let Some(ms) = args.step_timeout_ms {
                opts.approval_timeout = std::time::Duration::from_millis(ms);
            }
            if !quiet {
                println!("  (the demo's auto-approver stands in for a human; in real use: choreo approve RELEASE)");
            }
            let report =
                |c: &str, o: choreo_example_release::Outcome, d, t| progress(c, o.as_str(), d, t);
            let s = if remote {
                choreo_example_release::drive(bus, None, &opts, report).await?
            } else {
                choreo_example_release::run(cfg, &opts, report).await?
            };
            (
                "release",
                s.releases
                    .into_iter()
                    .map(|(c, o)| (c, o.as_str()))
                    .collect(),
            )
        }
        Example::Deadlock => bail!("the deadlock example has its own report (demo::deadlock)"),
    })
}

async fn summarize(
    args: &DemoArgs,
    bus: &choreo::Bus,
    saga: &str,
    runs: Vec<(String, &'static str)>,
    temporary: bool,
) -> anyhow::Result<()> {
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
    if temporary {
        println!("  this run's server is gone; to keep the log and the saga state, run `choreo dev` in another terminal, then");
        println!("  choreo demo --nats nats://127.0.0.1:4222");
        println!("and:");
    }
    println!("  choreo events {interesting}");
    println!("  choreo trace {interesting} --format mermaid");
    println!("  choreo sagas list --saga {saga}");
    println!("  choreo replay {saga} {interesting}");
    println!("  choreo partitions");
    Ok(())
}

/// `choreo node` child processes hosting the example for `demo --nodes N`.
struct NodeChildren {
    children: Vec<tokio::process::Child>,
}

impl NodeChildren {
    async fn spawn(
        n: usize,
        example: Example,
        url: &str,
        data_dir: &std::path::Path,
        seed: u64,
        step_timeout_ms: Option<u64>,
    ) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt as _;
        let exe = std::env::current_exe().context("locate the choreo binary")?;
        let example = example.name();
        let mut out = Self {
            children: Vec::new(),
        };
        let mut ready = Vec::new();
        for i in 0..n {
            let dir = data_dir.join(format!("node-{i}"));
            let mut child = tokio::process::Command::new(&exe)
                .args(["node", "--example", example, "--nats", url, "--seed"])
                .arg(seed.to_string())
                .arg("--data-dir")
                .arg(&dir)
                .args(
                    step_timeout_ms
                        .map(|ms| vec!["--step-timeout-ms".to_owned(), ms.to_string()])
                        .unwrap_or_default(),
                )
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("start node {i} ({})", exe.display()))?;
            let stdout = child.stdout.take().context("node stdout")?;
            ready.push(tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.starts_with(crate::node::READY) {
                        return true;
                    }
                }
                false
            }));
            out.children.push(child);
        }
        let all = futures::future::join_all(ready);
        let started = tokio::time::timeout(std::time::Duration::from_secs(60), all)
            .await
            .context("the nodes did not start within 60 s")?;
        if started.iter().any(|r| !matches!(r, Ok(true))) {
            bail!("a node exited before it was ready (see its output above)");
        }
        Ok(out)
    }

    /// SIGTERM each node (a graceful leave) and wait for it; kill one that takes over 30 s.
    async fn stop(mut self) -> anyhow::Result<()> {
        for c in &self.children {
            if let Some(pid) = c.id() {
                let _ = tokio::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
        }
        let mut failed = 0;
        for c in &mut self.children {
            match tokio::time::timeout(std::time::Duration::from_secs(30), c.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(_) => failed += 1,
                Err(_) => {
                    let _ = c.kill().await;
                    failed += 1;
                }
            }
        }
        if failed > 0 {
            bail!("{failed} node(s) did not stop cleanly");
        }
        Ok(())
    }
}
