//! A long soak: one `choreo node --example travel` child process drives 50,000 trips in bursts;
//! its resident memory and store size are reported at 10 k, 25 k and 50 k trips. Ignored by
//! default (minutes); run it with
//!
//! ```text
//! scripts/test -p choreo-cli --test soak -- --ignored --nocapture
//! ```
//!
//! `CHOREO_SOAK_TRIPS` scales it (the checkpoints scale with it).

mod common;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result};
use choreo::{Bus, NatsServer, Replicas};
use choreo_example_travel::TravelOptions;

use common::{config, NodeProc, WAIT};

const BURST: u32 = 2500;

fn rss_kib(pid: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS in /proc/<pid>/status")
}

fn dir_kib(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        match std::fs::read_dir(p) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum(),
            Err(_) => 0,
        }
    }
    walk(dir) / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of minutes: scripts/test -p choreo-cli --test soak -- --ignored --nocapture"]
async fn fifty_thousand_trips_in_bursts_keep_a_node_flat() -> Result<()> {
    let trips: u32 = std::env::var("CHOREO_SOAK_TRIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let checkpoints = [trips / 5, trips / 2, trips];
    let server = NatsServer::start_temp().await?;
    let url = server.url();
    let bus = Bus::connect(config(&url, Replicas::One)?).await?;
    let dir = tempfile::tempdir()?;
    // Ended trips leave the store after 60 s: the soak measures a node in its steady state.
    let node = NodeProc::start_with(
        &url,
        dir.path(),
        "soak",
        2000,
        1,
        &["--retention-secs", "60"],
    )
    .await?;
    let pid = node.pid()?;
    let started = Instant::now();
    let mut done = 0u32;
    let mut rows = vec![format!(
        "{:>7} trips  {:>8} s  {:>9} KiB RSS  {:>9} KiB store",
        0,
        0,
        rss_kib(&pid)?,
        dir_kib(dir.path())
    )];
    let mut at_checkpoint = Vec::new();
    while done < trips {
        let n = BURST.min(trips - done);
        let mut opts = TravelOptions::new(n, u64::from(done), Default::default());
        opts.deadline = WAIT * 2;
        let summary = choreo_example_travel::drive(&bus, None, &opts, |_, _, _, _| {}).await?;
        assert_eq!(
            summary.trips.len(),
            n as usize,
            "every trip of the burst ended"
        );
        done += n;
        if checkpoints.contains(&done) {
            let rss = rss_kib(&pid)?;
            at_checkpoint.push(rss);
            rows.push(format!(
                "{done:>7} trips  {:>8} s  {rss:>9} KiB RSS  {:>9} KiB store",
                started.elapsed().as_secs(),
                dir_kib(dir.path())
            ));
            println!("{}", rows.last().map_or("", String::as_str));
        }
    }
    node.stop().await?;
    println!(
        "soak of {trips} trips in bursts of {BURST}:\n{}",
        rows.join("\n")
    );
    // Flat, loosely: the last checkpoint within twice the first (a leak of ~3.5 KB per trip
    // would double it between 10 k and 50 k).
    if let (Some(first), Some(last)) = (at_checkpoint.first(), at_checkpoint.last()) {
        assert!(
            *last <= first.saturating_mul(2),
            "RSS grew from {first} KiB to {last} KiB"
        );
    }
    Ok(())
}
