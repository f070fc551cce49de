//! The Restate peer: the same 3-step saga against Restate, run as a child process
//! (`benches/restate-peer`, built outside the workspace) that starts its own restate-server,
//! registers its services and prints one JSON line of results, which become a
//! [`WorkloadResult`] beside choreo's `saga`.
//!
//! Lookup of the peer binary: `$CHOREO_RESTATE_PEER`, then `.tools/bin/restate-peer` (above the
//! current directory or this crate), then `PATH`. `benches/scripts/build-restate-peer` builds
//! and links it; `benches/scripts/install-restate` installs restate-server from npm.
//!
//! When `unshare` and `ip` work (root on Linux), the peer runs in a private network namespace
//! with only loopback, so restate-server's start-up release check cannot leave the machine.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;

use crate::error::BenchError;
use crate::latency::Percentiles;
use crate::options::{BenchOptions, LoadMode};
use crate::report::WorkloadResult;

/// Environment variable naming the peer binary.
pub const ENV_RESTATE_PEER: &str = "CHOREO_RESTATE_PEER";

#[derive(Debug, Deserialize)]
struct PeerLatency {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

/// What `restate-peer` prints.
#[derive(Debug, Deserialize)]
struct PeerOutput {
    server_version: String,
    sdk: String,
    durability: String,
    sagas: u64,
    completed: u64,
    compensated: u64,
    errors: u64,
    elapsed_s: f64,
    sagas_per_s: f64,
    latency_us: PeerLatency,
    step_undos: [u64; 3],
    server_peak_rss_kib: Option<u64>,
    server_cpu_s: Option<f64>,
    peer_peak_rss_kib: Option<u64>,
    peer_cpu_s: Option<f64>,
    concurrency: usize,
}

fn locate() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(ENV_RESTATE_PEER) {
        return Some(PathBuf::from(p));
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    roots.extend(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(Path::to_path_buf),
    );
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    roots
        .iter()
        .map(|r| r.join(".tools/bin/restate-peer"))
        .chain(on_path.iter().map(|d| d.join("restate-peer")))
        .find(|p| p.is_file())
}

fn netns_available() -> bool {
    if std::env::var("CHOREO_PEER_NETNS").is_ok_and(|v| v == "0") {
        return false;
    }
    std::process::Command::new("unshare")
        .args(["--net", "ip", "link", "set", "lo", "up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run the saga against Restate with the same size, failure fraction and in-flight window.
pub(crate) async fn run_restate(opts: &BenchOptions) -> Result<WorkloadResult, BenchError> {
    let err = |reason: String| BenchError::Peer {
        peer: "restate".into(),
        reason,
    };
    let bin = locate().ok_or_else(|| {
        err(format!(
            "restate-peer not found (${ENV_RESTATE_PEER}, .tools/bin, PATH): run benches/scripts/build-restate-peer (it also installs restate-server)"
        ))
    })?;
    let in_flight = match opts.mode {
        LoadMode::Closed { in_flight } => in_flight,
        LoadMode::Open { .. } => 1024,
    };
    let args = vec![
        "--sagas".to_owned(),
        opts.sizes.sagas.to_string(),
        "--concurrency".to_owned(),
        in_flight.to_string(),
        "--fail-fraction".to_owned(),
        opts.sizes.fail_fraction.to_string(),
        "--warmup".to_owned(),
        opts.sizes.warmup.to_string(),
    ];
    let isolated = netns_available();
    let mut cmd = if isolated {
        let mut c = tokio::process::Command::new("unshare");
        c.args([
            "--net",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(&bin)
        .args(&args);
        c
    } else {
        let mut c = tokio::process::Command::new(&bin);
        c.args(&args);
        c
    };
    if opts.progress {
        eprintln!("  saga (restate): {} {}", bin.display(), args.join(" "));
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if opts.progress {
            Stdio::inherit()
        } else {
            Stdio::piped()
        })
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| err(format!("start {}: {e}", bin.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(err(format!(
            "{} exited with {}: {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    let p: PeerOutput =
        serde_json::from_str(line).map_err(|e| err(format!("unreadable output {line:?}: {e}")))?;
    if p.errors > 0 || p.completed + p.compensated != p.sagas {
        return Err(err(format!(
            "{} of {} sagas ended ({} errors)",
            p.completed + p.compensated,
            p.sagas,
            p.errors
        )));
    }
    let mut r = WorkloadResult::new("saga", "restate", "sagas");
    r.items = p.sagas;
    r.throughput_per_s = p.sagas_per_s;
    r.elapsed_s = p.elapsed_s;
    r.latency_of = "HTTP request to the ingress → saga result (request-response)".into();
    r.latency = Some(Percentiles {
        p50_us: p.latency_us.p50,
        p90_us: p.latency_us.p90,
        p99_us: p.latency_us.p99,
        p999_us: p.latency_us.p999,
        max_us: p.latency_us.max,
        mean_us: p.latency_us.mean,
        count: p.sagas,
    });
    r.peak_rss_kib = p.peer_peak_rss_kib;
    r.cpu_s = p.peer_cpu_s;
    r.server_cpu_s = p.server_cpu_s;
    r.set("server", format!("restate-server {}", p.server_version));
    r.set("sdk", p.sdk);
    r.set("completed", p.completed);
    r.set("compensated", p.compensated);
    r.set("compensations_handled", p.step_undos.iter().sum::<u64>());
    r.set("in_flight", p.concurrency);
    if let Some(k) = p.server_peak_rss_kib {
        r.set("server_peak_rss_kib", k);
    }
    r.notes.push(format!("durability: {}", p.durability));
    r.notes.push(format!(
        "load: closed loop, {} sagas in flight over HTTP/1.1{}",
        p.concurrency,
        if isolated {
            "; peer and restate-server in a loopback-only network namespace"
        } else {
            ""
        }
    ));
    Ok(r)
}
