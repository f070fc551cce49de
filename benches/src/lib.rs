//! # choreo-benches
//!
//! Throughput and latency of choreo beside the physical limit of its log, in one run: the
//! `raw` JetStream baseline (pipelined publish with `Nats-Msg-Id` + pull consume + ack, no
//! engine) and the engine workloads `hop` (a chain of reactors), `saga` (a 3-step saga with a
//! failure fraction and the services it drives), `timers` (M durable timers due over a
//! window) and `deadlock` (a wait-for cycle per correlation: detection latency), each against
//! the same nats-server, with the ratio of each engine figure to `raw`.
//! Optionally the same saga against Restate (`peer`). Closed-loop and open-loop load
//! (coordinated-omission corrected), HdrHistogram percentiles, CPU time and peak RSS of the
//! process; the report renders as a table or JSON.
//!
//! ```no_run
//! # async fn demo() -> Result<(), choreo_benches::BenchError> {
//! use choreo_benches::{run, BenchOptions, Workload};
//!
//! let opts = BenchOptions::builder().quick(true).sync_always(false).build()?;
//! let report = run(&Workload::parse("all")?, &opts).await?;
//! println!("{}", report.to_table());
//! std::fs::write("bench.json", report.to_json()?).ok();
//! # Ok(()) }
//! ```
//!
//! The harness never sleeps to wait for a result: completions are read from the log (an
//! ordered consumer on the terminal event types) or counted by the services, and awaited.
//! Only the open-loop arrival process and the timers' due times wait on the clock.

mod driver;
mod env;
mod error;
pub mod latency;
mod observer;
mod options;
mod peer;
pub mod procstat;
mod progress;
mod report;
pub mod schedule;
mod tally;
mod tracker;
pub mod workloads;

pub use error::BenchError;
pub use latency::{LatencyHistogram, Percentiles};
pub use options::{
    BenchOptions, BenchOptionsBuilder, Coordination, Durability, EngineTuning, LoadMode, Peer,
    Sizes, Workload,
};
pub use peer::ENV_RESTATE_PEER;
pub use progress::human_rate;
pub use report::{BenchReport, Environment, WorkloadResult};
pub use schedule::{LatencyOrigin, OpenLoopSchedule};
pub use tally::Tally;
pub use tracker::{Counts, Tracker};

use workloads::Ctx;

/// Run `workloads` (in the order raw, hop, saga, timers, deadlock, failover, whatever order
/// they are given in) against one nats-server, and the peer after `saga` when asked. With
/// [`BenchOptions::baseline`] (the default) `raw` runs first even when not asked, so every
/// engine figure has its ratio to the log's limit measured in the same run (not for
/// `deadlock` or `failover` alone: they measure times, not log throughput).
pub async fn run(workloads: &[Workload], opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let mut todo: Vec<Workload> = workloads.to_vec();
    let wants_ratio = todo
        .iter()
        .any(|w| !matches!(w, Workload::Failover | Workload::Deadlock));
    if opts.baseline && wants_ratio && !todo.contains(&Workload::Raw) {
        todo.push(Workload::Raw);
    }
    todo.sort();
    todo.dedup();
    if opts.peer.is_some() && !todo.contains(&Workload::Saga) {
        return Err(BenchError::Options(
            "--peer runs beside the saga workload: ask for saga or all".into(),
        ));
    }
    let server = env::BenchServer::start(opts).await?;
    let environment = server.environment(opts);
    if opts.progress {
        eprintln!(
            "choreo bench: nats-server {} ({}), {} cores, {}",
            environment.server_version, environment.durability, environment.cores, environment.mode
        );
    }
    let cx = Ctx {
        opts,
        server: &server,
    };
    let mut results = Vec::new();
    let outcome = run_all(&cx, &todo, &mut results).await;
    server.stop().await;
    outcome?;
    compute_ratios(&mut results);
    Ok(BenchReport {
        environment,
        results,
    })
}

async fn run_all(
    cx: &Ctx<'_>,
    todo: &[Workload],
    results: &mut Vec<WorkloadResult>,
) -> Result<(), BenchError> {
    for w in todo {
        if cx.opts.progress {
            eprintln!("{w}: running");
        }
        let rows = match w {
            Workload::Raw => vec![workloads::raw::run(cx).await?],
            Workload::Hop => vec![workloads::hop::run(cx).await?],
            Workload::Saga => workloads::saga::run(cx).await?,
            Workload::Timers => vec![workloads::timers::run(cx).await?],
            Workload::Deadlock => vec![workloads::deadlock::run(cx).await?],
            Workload::Failover => workloads::failover::run(cx).await?,
        };
        for r in rows {
            if cx.opts.progress {
                let rate = if r.throughput_per_s > 0.0 {
                    format!(" ({})", human_rate(r.throughput_per_s))
                } else {
                    String::new()
                };
                eprintln!(
                    "{}: {} {} in {:.2} s{rate}",
                    r.workload, r.items, r.unit, r.elapsed_s
                );
            }
            results.push(r);
        }
        if *w == Workload::Saga {
            if let Some(options::Peer::Restate) = cx.opts.peer {
                if cx.opts.progress {
                    eprintln!("saga (restate): running");
                }
                results.push(peer::run_restate(cx.opts).await?);
            }
        }
    }
    Ok(())
}

/// Ratios measured in the same run: each engine workload's log events/s over raw's msgs/s,
/// choreo's sagas/s over the peer's (and the reverse on the peer's row), and with
/// `--coordination both` the saga's sagas/s with coordination on over off (on the `saga` row).
fn compute_ratios(results: &mut [WorkloadResult]) {
    let raw = results
        .iter()
        .find(|r| r.workload == "raw")
        .and_then(|r| r.events_per_s);
    let choreo_saga = results
        .iter()
        .find(|r| r.workload == "saga" && r.engine == "choreo")
        .map(|r| r.throughput_per_s);
    let nocoord_saga = results
        .iter()
        .find(|r| r.workload == workloads::saga::NOCOORD_ROW && r.engine == "choreo")
        .map(|r| r.throughput_per_s);
    let peer_saga: Vec<(String, f64)> = results
        .iter()
        .filter(|r| r.workload == "saga" && r.engine != "choreo")
        .map(|r| (r.engine.clone(), r.throughput_per_s))
        .collect();
    for r in results.iter_mut() {
        if let (Some(raw), Some(ev)) = (raw, r.events_per_s) {
            if raw > 0.0 {
                r.ratio_to_raw = Some(ev / raw);
            }
        }
        if r.workload == "saga" && r.engine == "choreo" {
            if let Some(off) = nocoord_saga.filter(|v| *v > 0.0) {
                r.ratios.insert(
                    workloads::saga::NOCOORD_ROW.into(),
                    r.throughput_per_s / off,
                );
            }
            for (peer, v) in &peer_saga {
                if *v > 0.0 {
                    r.ratios.insert(peer.clone(), r.throughput_per_s / v);
                }
            }
        } else if r.workload == "saga" {
            if let Some(c) = choreo_saga.filter(|c| *c > 0.0) {
                r.ratios.insert("choreo".into(), r.throughput_per_s / c);
            }
        }
    }
}
