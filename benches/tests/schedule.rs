//! The open-loop generator's schedule and the coordinated-omission correction, without NATS.

use std::time::{Duration, Instant};

use choreo_benches::schedule::{latency_ns, latency_origin};
use choreo_benches::{LatencyHistogram, LatencyOrigin, OpenLoopSchedule, Tracker};

#[test]
fn intended_send_times_follow_the_rate() {
    let s = OpenLoopSchedule::new(1000.0);
    assert_eq!(s.interval(), Duration::from_millis(1));
    assert_eq!(s.intended(0), Duration::ZERO);
    assert_eq!(s.intended(1), Duration::from_millis(1));
    assert_eq!(s.intended(2500), Duration::from_millis(2500));
    // Non-integer intervals do not drift: item i is at i / rate, not i × rounded interval.
    let third = OpenLoopSchedule::new(3.0);
    assert_eq!(third.intended(3), Duration::from_secs(1));
    assert_eq!(third.intended(300), Duration::from_secs(100));
    // How many items are due by a given time (item 0 is due at once).
    assert_eq!(s.due_by(Duration::ZERO), 1);
    assert_eq!(s.due_by(Duration::from_micros(999)), 1);
    assert_eq!(s.due_by(Duration::from_millis(10)), 11);
}

/// A synchronous client at 1000/s against a system that answers in 0.5 ms, except for one
/// stall of 1 s. Measured from the actual send, the stall costs one slow request (coordinated
/// omission); measured from the intended send, every request that should have gone out during
/// the stall, and during the catch-up after it, waits, as users arriving at that rate would.
#[test]
fn latency_from_the_intended_time_shows_the_stall() {
    let rate = 1000.0;
    let s = OpenLoopSchedule::new(rate);
    let service = 500_000u64; // 0.5 ms
    let stall_at = 1_000u64; // the request sent at t = 1 s takes 1 s more
    let stall = 1_000_000_000u64;
    let mut naive = LatencyHistogram::new();
    let mut corrected = LatencyHistogram::new();
    let mut free_at = 0u64; // when the client can send again
    for i in 0..3_000u64 {
        let intended = u64::try_from(s.intended(i).as_nanos()).expect("fits");
        let actual = intended.max(free_at);
        let took = if i == stall_at {
            service + stall
        } else {
            service
        };
        let done = actual + took;
        free_at = done;
        naive.record_ns(latency_ns(
            latency_origin(LatencyOrigin::ActualSend, intended, actual),
            done,
        ));
        corrected.record_ns(latency_ns(
            latency_origin(LatencyOrigin::IntendedSend, intended, actual),
            done,
        ));
    }
    let n = naive.percentiles().expect("values");
    let c = corrected.percentiles().expect("values");
    // The naive view: 2999 requests of 0.5 ms, one of ~1 s: p99 stays at 0.5 ms.
    assert_eq!(n.p99_us, 500, "{n:?}");
    assert_eq!(n.p50_us, 500);
    // The corrected view: the backlog of the stall drains at 0.5 ms per request, so about
    // 2000 requests waited (from 1 s down to nothing), and p99 is close to the stall.
    assert!(c.p90_us > 300_000, "{c:?}");
    assert!(c.p99_us > 900_000, "{c:?}");
    assert!(c.max_us >= 1_000_000, "{c:?}");
    assert_eq!(n.count, c.count);
}

#[tokio::test]
async fn tracker_counts_each_item_once_and_wakes_the_waiter() {
    let t = Tracker::new(Instant::now(), 3, Some(2));
    t.acquire().await;
    t.sent(0, 0);
    t.acquire().await;
    t.sent(1, 0);
    assert!(t.complete_at(0, 5_000));
    assert!(
        !t.complete_at(0, 6_000),
        "a second completion is a duplicate"
    );
    t.complete_at(7, 1); // not an item
    let waiter = {
        let t = std::sync::Arc::clone(&t);
        tokio::spawn(async move { t.wait_all(Duration::from_secs(5)).await })
    };
    t.acquire().await; // the completion of 0 freed a slot
    t.sent(2, 10_000);
    t.complete_at(1, 20_000);
    t.complete_at(2, 30_000);
    assert_eq!(waiter.await.expect("joins"), Ok(()));
    let c = t.counts();
    assert_eq!((c.completed, c.duplicates, c.unknown), (3, 1, 1));
    let p = t.histogram().percentiles().expect("latencies");
    assert_eq!((p.count, p.max_us), (3, 20));
    assert_eq!(t.span(), Duration::from_nanos(30_000));
    // A target never reached times out with the count so far.
    let short = Tracker::new(Instant::now(), 2, None);
    short.complete(0);
    assert_eq!(short.wait_all(Duration::from_millis(20)).await, Err(1));
}
