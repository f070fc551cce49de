//! `restate-peer`: choreo's 3-step saga benchmark against Restate, in one process.
//!
//! Starts a restate-server (temporary base dir, loopback ports), serves the saga and its three
//! step services with the Rust SDK on a loopback port, registers that deployment through the
//! admin API, then invokes N sagas through the ingress (request-response, closed loop with C
//! in flight) and prints one JSON object on stdout (the harness's `PeerResult`). Progress goes
//! to stderr.
//!
//! ```text
//! restate-peer [--server PATH] [--sagas N] [--concurrency C] [--fail-fraction F]
//!              [--warmup N] [--partitions P]
//! ```

mod server;
mod services;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use restate_sdk::prelude::*;
use serde::Serialize;

use services::{fail_step, SagaRequest, ACTS, UNDOS};

struct Args {
    server: Option<std::path::PathBuf>,
    sagas: u64,
    concurrency: usize,
    fail_fraction: f64,
    warmup: u64,
    partitions: Option<u16>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        server: None,
        sagas: 5_000,
        concurrency: 256,
        fail_fraction: 0.1,
        warmup: 200,
        partitions: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => a.server = Some(val()?.into()),
            "--sagas" => a.sagas = val()?.parse().map_err(|e| format!("--sagas: {e}"))?,
            "--concurrency" => {
                a.concurrency = val()?.parse().map_err(|e| format!("--concurrency: {e}"))?
            }
            "--fail-fraction" => {
                a.fail_fraction = val()?
                    .parse()
                    .map_err(|e| format!("--fail-fraction: {e}"))?
            }
            "--warmup" => a.warmup = val()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--partitions" => {
                a.partitions = Some(val()?.parse().map_err(|e| format!("--partitions: {e}"))?)
            }
            "-h" | "--help" => {
                eprintln!("restate-peer [--server PATH] [--sagas N] [--concurrency C] [--fail-fraction F] [--warmup N] [--partitions P]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.concurrency == 0 || a.sagas == 0 {
        return Err("--sagas and --concurrency must be at least 1".into());
    }
    Ok(a)
}

/// Latency percentiles in microseconds.
#[derive(Serialize)]
struct Percentiles {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

/// What the harness reads (`choreo_benches::peer::PeerResult`).
#[derive(Serialize)]
struct PeerResult {
    peer: &'static str,
    server_version: String,
    sdk: &'static str,
    durability: &'static str,
    sagas: u64,
    completed: u64,
    compensated: u64,
    errors: u64,
    elapsed_s: f64,
    sagas_per_s: f64,
    latency_us: Percentiles,
    step_acts: [u64; 3],
    step_undos: [u64; 3],
    server_peak_rss_kib: Option<u64>,
    server_cpu_s: Option<f64>,
    peer_peak_rss_kib: Option<u64>,
    peer_cpu_s: Option<f64>,
    concurrency: usize,
    partitions: Option<u16>,
}

fn proc_status_kib(pid: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process (all its threads), in seconds (clock ticks of 1/100 s).
fn proc_cpu_s(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

struct Outcomes {
    completed: AtomicU64,
    compensated: AtomicU64,
    errors: AtomicU64,
}

/// A closed-loop run of sagas `from..to`.
struct Load<'a> {
    ingress: &'a str,
    from: u64,
    to: u64,
    concurrency: usize,
    fail_fraction: f64,
    progress: bool,
}

/// Run the sagas with `concurrency` in flight; returns the merged latency histogram.
async fn drive(http: &server::Http, load: Load<'_>, out: &Arc<Outcomes>) -> Histogram<u64> {
    let Load {
        ingress,
        from,
        to,
        concurrency,
        fail_fraction,
        progress,
    } = load;
    let next = Arc::new(AtomicU64::new(from));
    let pad = "x".repeat(180);
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (next, out, http, pad) = (
            Arc::clone(&next),
            Arc::clone(out),
            http.clone(),
            pad.clone(),
        );
        let url = format!("{ingress}/Saga/run");
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= to {
                    break;
                }
                let req = SagaRequest {
                    id,
                    fail_step: fail_step(id, fail_fraction),
                    pad: pad.clone(),
                };
                let body = serde_json::to_vec(&req).unwrap_or_default();
                let started = Instant::now();
                match server::request(&http, "POST", &url, Some(body)).await {
                    Ok((200, resp)) => {
                        let us = started.elapsed().as_micros() as u64;
                        let _ = h.record(us.max(1));
                        let compensated = serde_json::from_slice::<serde_json::Value>(&resp)
                            .ok()
                            .and_then(|v| v.get("compensated").and_then(|c| c.as_bool()))
                            .unwrap_or(false);
                        if compensated {
                            out.compensated.fetch_add(1, Ordering::Relaxed);
                        } else {
                            out.completed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok((status, resp)) => {
                        if out.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!(
                                "restate-peer: saga {id}: HTTP {status}: {}",
                                String::from_utf8_lossy(&resp)
                            );
                        }
                    }
                    Err(e) => {
                        if out.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("restate-peer: saga {id}: {e}");
                        }
                    }
                }
            }
            h
        }));
    }
    let total = to - from;
    let reporter = progress.then(|| {
        let out = Arc::clone(out);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = out.completed.load(Ordering::Relaxed)
                    + out.compensated.load(Ordering::Relaxed)
                    + out.errors.load(Ordering::Relaxed);
                eprintln!("restate-peer: {done} sagas done (of {total} + warm-up)");
            }
        })
    });
    let mut merged = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
    for t in tasks {
        if let Ok(h) = t.await {
            let _ = merged.add(h);
        }
    }
    if let Some(r) = reporter {
        r.abort();
    }
    merged
}

async fn run(args: Args) -> Result<PeerResult, String> {
    let http = server::http_client(args.concurrency + 8);
    let bin = server::locate(args.server.clone())?;
    eprintln!("restate-peer: starting {}", bin.display());
    let restate = server::RestateServer::start(&bin, args.partitions, &http).await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let sdk_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let endpoint = Endpoint::builder()
        .bind(services::Saga)
        .bind(services::Step1)
        .bind(services::Step2)
        .bind(services::Step3)
        .build();
    let sdk = tokio::spawn(HttpServer::new(endpoint).serve_with_cancel(listener, stop_rx));
    restate
        .register(&http, &format!("http://{sdk_addr}"))
        .await
        .map_err(|e| format!("{e}\n{}", restate.log_tail()))?;
    eprintln!(
        "restate-peer: restate-server {} ready, deployment registered",
        restate.version
    );

    let warm = Arc::new(Outcomes {
        completed: AtomicU64::new(0),
        compensated: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let base = 1_000_000_000u64;
    if args.warmup > 0 {
        let load = Load {
            ingress: &restate.ingress,
            from: base,
            to: base + args.warmup,
            concurrency: args.concurrency.min(args.warmup as usize),
            fail_fraction: args.fail_fraction,
            progress: false,
        };
        drive(&http, load, &warm).await;
        if warm.errors.load(Ordering::Relaxed) > 0 {
            return Err(format!("warm-up failed\n{}", restate.log_tail()));
        }
    }
    let acts0: Vec<u64> = ACTS.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let undos0: Vec<u64> = UNDOS.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let server_pid = restate.pid().map(|p| p.to_string());
    let cpu0 = server_pid.as_deref().and_then(proc_cpu_s);
    let self_cpu0 = proc_cpu_s("self");

    let out = Arc::new(Outcomes {
        completed: AtomicU64::new(0),
        compensated: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    eprintln!(
        "restate-peer: {} sagas, {} in flight, fail fraction {}",
        args.sagas, args.concurrency, args.fail_fraction
    );
    let started = Instant::now();
    let load = Load {
        ingress: &restate.ingress,
        from: 0,
        to: args.sagas,
        concurrency: args.concurrency,
        fail_fraction: args.fail_fraction,
        progress: true,
    };
    let hist = drive(&http, load, &out).await;
    let elapsed = started.elapsed().as_secs_f64();

    // Compensations are one-way calls: wait (bounded) until the services handled them all.
    let expected_undos: u64 = (0..args.sagas)
        .map(|id| u64::from(fail_step(id, args.fail_fraction).saturating_sub(1)))
        .sum();
    let undone = || {
        UNDOS.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>() - undos0.iter().sum::<u64>()
    };
    let wait_undos = async {
        loop {
            let notified = services::undo_handled().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if undone() >= expected_undos {
                break;
            }
            notified.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), wait_undos)
        .await
        .is_err()
    {
        eprintln!(
            "restate-peer: only {} of {expected_undos} compensations handled after 30 s",
            undone()
        );
    }

    let server_cpu = match (server_pid.as_deref().and_then(proc_cpu_s), cpu0) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    let peer_cpu = match (proc_cpu_s("self"), self_cpu0) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    let q = |x: f64| hist.value_at_quantile(x);
    let result = PeerResult {
        peer: "restate",
        server_version: restate.version.clone(),
        sdk: "restate-sdk 0.12",
        durability:
            "restate default (replicated loglet on the local log-server, RocksDB WAL fsync on)",
        sagas: args.sagas,
        completed: out.completed.load(Ordering::Relaxed),
        compensated: out.compensated.load(Ordering::Relaxed),
        errors: out.errors.load(Ordering::Relaxed),
        elapsed_s: elapsed,
        sagas_per_s: args.sagas as f64 / elapsed,
        latency_us: Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: hist.max(),
            mean: hist.mean(),
        },
        step_acts: [0, 1, 2].map(|i| ACTS[i].load(Ordering::Relaxed) - acts0[i]),
        step_undos: [0, 1, 2].map(|i| UNDOS[i].load(Ordering::Relaxed) - undos0[i]),
        server_peak_rss_kib: server_pid
            .as_deref()
            .and_then(|p| proc_status_kib(p, "VmHWM:")),
        server_cpu_s: server_cpu,
        peer_peak_rss_kib: proc_status_kib("self", "VmHWM:"),
        peer_cpu_s: peer_cpu,
        concurrency: args.concurrency,
        partitions: args.partitions,
    };
    let _ = stop_tx.send(());
    restate.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), sdk).await;
    Ok(result)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("restate-peer: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(r) => {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("restate-peer: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
