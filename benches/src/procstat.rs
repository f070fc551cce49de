//! CPU time and memory of a process, read from `/proc` (Linux; `None` elsewhere). No unsafe
//! code: `/proc/<pid>/stat` gives user + system time in clock ticks (100 per second on Linux),
//! `/proc/<pid>/status` gives `VmRSS` and the peak `VmHWM`, and writing `5` to
//! `/proc/self/clear_refs` resets that peak, so each workload gets its own.

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux ABI in use).
const TICKS_PER_S: f64 = 100.0;

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ProcSample {
    /// User + system CPU time since the process started, in seconds (all threads).
    pub cpu_s: f64,
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size (since start or the last reset), KiB.
    pub peak_rss_kib: u64,
}

/// Read `pid` (`"self"` for this process).
pub fn sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(ProcSample {
        cpu_s: (utime + stime) as f64 / TICKS_PER_S,
        rss_kib: kib("VmRSS:").unwrap_or(0),
        peak_rss_kib: kib("VmHWM:").unwrap_or(0),
    })
}

/// Reset this process's peak RSS to its current RSS. False when the kernel refused.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let s = sample("self").expect("linux /proc");
        assert!(s.rss_kib > 0 && s.peak_rss_kib >= s.rss_kib / 2, "{s:?}");
        assert!(s.cpu_s >= 0.0);
    }
}
