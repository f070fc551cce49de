//! Progress on stderr while a workload runs: one line per second with the count and rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// A progress printer; stops when finished or dropped.
pub(crate) struct Progress {
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Print `<label>: <done>/<total> <unit> (<rate>/s)` every second while `done()` < total.
    pub(crate) fn start(
        enabled: bool,
        label: String,
        unit: &'static str,
        total: u64,
        done: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        if !enabled {
            return Self { task: None };
        }
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = done();
                let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
                eprintln!("  {label}: {n}/{total} {unit} ({})", human_rate(rate));
                if n >= total {
                    break;
                }
            }
        });
        Self { task: Some(task) }
    }

    /// Stop printing.
    pub(crate) fn finish(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// `12345.6` as `12.3k/s`.
pub fn human_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2}M/s", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1}k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0}/s")
    }
}
