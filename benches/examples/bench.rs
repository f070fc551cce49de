//! The harness without the CLI: the same flags as `choreo bench`.
//!
//! ```text
//! cargo run --release -p choreo-benches --example bench -- all --quick [--json FILE]
//!     [--nats URL] [--sync-always] [--peer restate] [--rate N] [--in-flight N]
//!     [--timers-1m] [--hop-length K] [--fail-fraction F] [--lanes N] [--fetch-batch N]
//!     [--saga-batch N] [--partitions P] [--messages N] [--chains N] [--sagas N]
//!     [--timers N] [--timer-window SECS] [--no-baseline] [--raw-envelope]
//!     [--failover-rounds K] [--failover-partitions P] [--failover-instances N]
//!     [--lease-ttl SECS] [--restore N[,N...]] [--deadlocks N] [--deadlock-rate N]
//!     [--coordination on|off|both] [--saga-waits]
//! ```

use std::process::ExitCode;

use choreo_benches::{run, BenchOptions, Coordination, EngineTuning, LoadMode, Peer, Workload};

fn parse() -> Result<(Vec<Workload>, BenchOptions, Option<String>), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut workloads = Vec::new();
    let mut b = BenchOptions::builder();
    let mut json = None;
    let mut tuning = EngineTuning::default();
    let mut it = args.iter();
    let num = |v: Option<&String>, f: &str| -> Result<u64, String> {
        v.ok_or(format!("{f} needs a value"))?
            .parse()
            .map_err(|e| format!("{f}: {e}"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => b = b.quick(true),
            "--json" => json = Some(it.next().ok_or("--json needs a file")?.clone()),
            "--nats" => b = b.nats_url(Some(it.next().ok_or("--nats needs a URL")?.clone())),
            "--sync-always" => b = b.sync_always(true),
            "--peer" => {
                let p = Peer::parse(it.next().ok_or("--peer needs a name")?)
                    .map_err(|e| e.to_string())?;
                b = b.peer(Some(p));
            }
            "--rate" => {
                b = b.mode(LoadMode::Open {
                    rate_per_s: num(it.next(), "--rate")? as f64,
                })
            }
            "--in-flight" => {
                b = b.mode(LoadMode::Closed {
                    in_flight: num(it.next(), "--in-flight")? as usize,
                })
            }
            "--timers-1m" => b = b.timers_1m(true),
            "--hop-length" => b = b.hop_length(num(it.next(), "--hop-length")? as usize),
            "--fail-fraction" => {
                let v = it.next().ok_or("--fail-fraction needs a value")?;
                b = b.fail_fraction(v.parse().map_err(|e| format!("--fail-fraction: {e}"))?);
            }
            "--lanes" => tuning.lanes = Some(num(it.next(), "--lanes")? as usize),
            "--fetch-batch" => tuning.fetch_batch = Some(num(it.next(), "--fetch-batch")? as usize),
            "--saga-batch" => tuning.saga_batch = Some(num(it.next(), "--saga-batch")? as usize),
            "--partitions" => tuning.partitions = Some(num(it.next(), "--partitions")? as u16),
            "--sagas" => b = b.sagas(num(it.next(), "--sagas")?),
            "--timers" => b = b.timers(num(it.next(), "--timers")?),
            "--chains" => b = b.hop_chains(num(it.next(), "--chains")?),
            "--messages" => b = b.raw_messages(num(it.next(), "--messages")?),
            "--timer-window" => {
                b = b.timer_window(std::time::Duration::from_secs(num(
                    it.next(),
                    "--timer-window",
                )?))
            }
            "--failover-rounds" => {
                b = b.failover_rounds(num(it.next(), "--failover-rounds")? as u32)
            }
            "--failover-partitions" => {
                b = b.failover_partitions(num(it.next(), "--failover-partitions")? as u16)
            }
            "--failover-instances" => {
                b = b.failover_instances(num(it.next(), "--failover-instances")?)
            }
            "--lease-ttl" => {
                b = b.failover_lease_ttl(std::time::Duration::from_secs(num(
                    it.next(),
                    "--lease-ttl",
                )?))
            }
            "--restore" => {
                let v = it.next().ok_or("--restore needs N[,N...]")?;
                let sizes = v
                    .split(',')
                    .map(|n| n.trim().parse().map_err(|e| format!("--restore: {e}")))
                    .collect::<Result<Vec<u64>, String>>()?;
                b = b.restore_instances(sizes);
            }
            "--deadlocks" => b = b.deadlocks(num(it.next(), "--deadlocks")?),
            "--deadlock-rate" => b = b.deadlock_rate(num(it.next(), "--deadlock-rate")? as f64),
            "--coordination" => {
                let c = Coordination::parse(it.next().ok_or("--coordination needs on|off|both")?)
                    .map_err(|e| e.to_string())?;
                b = b.coordination(c);
            }
            "--saga-waits" => b = b.saga_waits(true),
            "--no-baseline" => b = b.baseline(false),
            "--raw-envelope" => b = b.raw_envelope(true),
            w => workloads.extend(Workload::parse(w).map_err(|e| e.to_string())?),
        }
    }
    if workloads.is_empty() {
        workloads = Workload::ALL.to_vec();
    }
    let opts = b
        .tuning(tuning)
        .command(format!("bench {}", args.join(" ")))
        .build()
        .map_err(|e| e.to_string())?;
    Ok((workloads, opts, json))
}

#[tokio::main]
async fn main() -> ExitCode {
    let parsed = parse();
    // `deadlock` makes one deadlock per correlation, and the engine logs each at error level:
    // unless CHOREO_LOG says otherwise, those lines are left out (the report counts them).
    let quiet = matches!(&parsed, Ok((w, _, _)) if w.contains(&Workload::Deadlock));
    let default_filter = if quiet {
        "warn,choreo::partition::processor::coordination=off"
    } else {
        "warn"
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHOREO_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let (workloads, opts, json) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&workloads, &opts).await {
        Ok(report) => {
            print!("{}", report.to_table());
            if let Some(path) = json {
                let text = match report.to_json() {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                if let Err(e) = std::fs::write(&path, text) {
                    eprintln!("error: write {path}: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
