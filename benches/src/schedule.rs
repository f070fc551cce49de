//! The open-loop arrival schedule and the coordinated-omission correction, as pure functions.
//!
//! Open loop: item `i` is *intended* to be sent at `start + i / rate`, whatever happened to the
//! items before it. A sender that falls behind (the system under test stalls, the client is
//! back-pressured) sends late, but the latency it records is measured from the intended time:
//! `completed - intended`. Measuring from the actual send would hide the queueing that users
//! waiting at a fixed arrival rate suffer: that is coordinated omission.

use std::time::Duration;

/// Intended send times of a fixed-rate arrival process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpenLoopSchedule {
    interval_ns: f64,
}

impl OpenLoopSchedule {
    /// A schedule of `rate_per_s` items per second (must be positive and finite).
    pub fn new(rate_per_s: f64) -> Self {
        Self {
            interval_ns: 1e9 / rate_per_s,
        }
    }

    /// The intended send time of item `i`, as an offset from the start.
    pub fn intended(&self, i: u64) -> Duration {
        Duration::from_nanos((i as f64 * self.interval_ns).round() as u64)
    }

    /// How many items should have been sent `elapsed` after the start.
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        (elapsed.as_nanos() as f64 / self.interval_ns).floor() as u64 + 1
    }

    /// Time between two intended sends.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns.round() as u64)
    }
}

/// Where an item's latency is measured from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyOrigin {
    /// The actual send (closed loop: the sender never runs ahead of the system).
    ActualSend,
    /// The intended send (open loop: coordinated-omission corrected).
    IntendedSend,
}

/// The time an item's latency is measured from (offsets from the run's epoch, in ns).
pub fn latency_origin(origin: LatencyOrigin, intended_ns: u64, actual_send_ns: u64) -> u64 {
    match origin {
        LatencyOrigin::ActualSend => actual_send_ns,
        LatencyOrigin::IntendedSend => intended_ns,
    }
}

/// Latency of an item completed at `completed_ns` (0 if it completed before its origin).
pub fn latency_ns(origin_ns: u64, completed_ns: u64) -> u64 {
    completed_ns.saturating_sub(origin_ns)
}
