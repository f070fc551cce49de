//! The report of a run: the environment (date, command, server version, durability, cores) and
//! one [`WorkloadResult`] per workload, rendered as a text table ([`BenchReport::to_table`]) or
//! JSON ([`BenchReport::to_json`]). Ratios come first: absolute numbers alone mean little on a
//! shared machine.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::latency::{human_us, Percentiles};
use crate::progress::human_rate;

/// Where and how the run happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// Start of the run, RFC 3339 UTC.
    pub date: String,
    /// The command line.
    pub command: String,
    /// nats-server version.
    pub server_version: String,
    /// JetStream durability mode.
    pub durability: String,
    /// Logical cores available to this process.
    pub cores: usize,
    /// CPU model, from `/proc/cpuinfo`.
    pub cpu: Option<String>,
    /// Kernel release.
    pub kernel: Option<String>,
    /// The server: `started by the harness` or the URL given.
    pub server: String,
    /// Load mode of the engine workloads.
    pub mode: String,
    /// `--quick`.
    pub quick: bool,
    /// Version of the engine (the `choreo` crate).
    pub engine_version: String,
}

/// One workload's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadResult {
    /// `raw`, `hop`, `saga`, `saga-nocoord` (`--coordination both`), `timers`, `deadlock`,
    /// `saga` (peer), `failover` (takeovers), `restore-<N>` (the changelog restore of
    /// `failover`).
    pub workload: String,
    /// What ran it: `jetstream` (no engine), `choreo`, `restate`.
    pub engine: String,
    /// Measured items (warm-up excluded).
    pub items: u64,
    /// What an item is: `msgs`, `chains`, `sagas`, `timers`, `deadlocks`, `takeovers`,
    /// `instances`.
    pub unit: String,
    /// Items per second, first send to last completion (0 for `failover`'s takeovers, whose
    /// figure is the latency).
    pub throughput_per_s: f64,
    /// Log messages per second (published and consumed), the basis of the ratio to raw.
    pub events_per_s: Option<f64>,
    /// Seconds from the first send to the last completion.
    pub elapsed_s: f64,
    /// What the latency measures.
    pub latency_of: String,
    /// Latency percentiles.
    pub latency: Option<Percentiles>,
    /// `events_per_s / raw's events_per_s`, measured in the same run.
    pub ratio_to_raw: Option<f64>,
    /// Other ratios of `throughput_per_s`: peer name → this / peer.
    pub ratios: BTreeMap<String, f64>,
    /// Peak RSS of the measuring process during the workload, KiB.
    pub peak_rss_kib: Option<u64>,
    /// CPU seconds of the measuring process during the workload.
    pub cpu_s: Option<f64>,
    /// CPU seconds of the server during the workload (when known).
    pub server_cpu_s: Option<f64>,
    /// Completions seen twice (must be 0).
    pub duplicates: u64,
    /// Workload-specific figures (batch sizes, memory per timer, ...).
    pub extra: BTreeMap<String, serde_json::Value>,
    /// Remarks.
    pub notes: Vec<String>,
}

impl WorkloadResult {
    /// An empty result for `workload` run by `engine`.
    pub fn new(workload: &str, engine: &str, unit: &str) -> Self {
        Self {
            workload: workload.to_owned(),
            engine: engine.to_owned(),
            items: 0,
            unit: unit.to_owned(),
            throughput_per_s: 0.0,
            events_per_s: None,
            elapsed_s: 0.0,
            latency_of: String::new(),
            latency: None,
            ratio_to_raw: None,
            ratios: BTreeMap::new(),
            peak_rss_kib: None,
            cpu_s: None,
            server_cpu_s: None,
            duplicates: 0,
            extra: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// Record a workload-specific figure.
    pub fn set(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.extra.insert(key.to_owned(), value.into());
    }
}

/// Everything a run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Where and how.
    pub environment: Environment,
    /// One entry per workload, in run order.
    pub results: Vec<WorkloadResult>,
}

impl BenchReport {
    /// The result of a workload run by an engine.
    pub fn result(&self, workload: &str, engine: &str) -> Option<&WorkloadResult> {
        self.results
            .iter()
            .find(|r| r.workload == workload && r.engine == engine)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String, BenchError> {
        serde_json::to_string_pretty(self).map_err(|e| BenchError::Encode(e.to_string()))
    }

    /// Parse a report written by [`BenchReport::to_json`].
    pub fn from_json(text: &str) -> Result<Self, BenchError> {
        serde_json::from_str(text).map_err(|e| BenchError::Encode(e.to_string()))
    }

    /// The text table: environment, then one row per workload (ratios first), then notes.
    pub fn to_table(&self) -> String {
        let e = &self.environment;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "choreo bench  {}  nats-server {}  {} cores{}",
            e.date,
            e.server_version,
            e.cores,
            e.cpu
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "durability: {}", e.durability);
        let _ = writeln!(
            out,
            "load: {}{}   server: {}",
            e.mode,
            if e.quick { "   --quick" } else { "" },
            e.server
        );
        let _ = writeln!(out, "command: {}", e.command);
        let _ = writeln!(out);
        let header = [
            "workload",
            "engine",
            "vs raw",
            "other",
            "throughput",
            "log msgs/s",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "items",
            "peak RSS",
            "CPU s",
            "srv CPU s",
        ];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| (*s).to_owned()).collect()];
        for r in &self.results {
            let p = r.latency.as_ref();
            let pct = |f: fn(&Percentiles) -> u64| p.map(|p| human_us(f(p))).unwrap_or("-".into());
            rows.push(vec![
                r.workload.clone(),
                r.engine.clone(),
                r.ratio_to_raw
                    .map(|x| format!("{:.0}%", x * 100.0))
                    .unwrap_or("-".into()),
                r.ratios
                    .iter()
                    .map(|(k, v)| format!("{v:.2}x {k}"))
                    .collect::<Vec<_>>()
                    .join(" ")
                    .chars()
                    .take(24)
                    .collect::<String>()
                    .if_empty("-"),
                if r.throughput_per_s > 0.0 {
                    format!("{} {}", human_rate(r.throughput_per_s), r.unit)
                } else {
                    format!("- ({} {})", r.items, r.unit)
                },
                r.events_per_s.map(human_rate).unwrap_or("-".into()),
                pct(|p| p.p50_us),
                pct(|p| p.p90_us),
                pct(|p| p.p99_us),
                pct(|p| p.p999_us),
                r.items.to_string(),
                r.peak_rss_kib
                    .map(|k| format!("{:.0} MiB", k as f64 / 1024.0))
                    .unwrap_or("-".into()),
                r.cpu_s.map(|c| format!("{c:.1}")).unwrap_or("-".into()),
                r.server_cpu_s
                    .map(|c| format!("{c:.1}"))
                    .unwrap_or("-".into()),
            ]);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}", w = *w))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        let _ = writeln!(out);
        for r in &self.results {
            let _ = writeln!(
                out,
                "{} ({}): latency = {}",
                r.workload, r.engine, r.latency_of
            );
            for (k, v) in &r.extra {
                let _ = writeln!(out, "  {k}: {v}");
            }
            for n in &r.notes {
                let _ = writeln!(out, "  note: {n}");
            }
        }
        out
    }
}

trait IfEmpty {
    fn if_empty(self, default: &str) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, default: &str) -> String {
        if self.is_empty() {
            default.to_owned()
        } else {
            self
        }
    }
}
