//! The node's quarantine sweep: after every reconnection, and on a slow period, move messages
//! the client cannot parse out of the consumers' way (see `bus::quarantine`).

use std::time::Duration;

use tracing::warn;

use super::signal;
use crate::bus::quarantine::QUARANTINE_ACTOR;
use crate::bus::Bus;
use crate::metrics::Metrics;

/// The sweep also runs this often without a reconnection (a poison message that reached only
/// another node's connection still blocks a shared consumer).
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Run sweeps until `stop` turns true. Each quarantined message counts as a dead letter of the
/// `choreo-quarantine` actor in the node's metrics.
pub(crate) async fn run(bus: Bus, metrics: Metrics, mut stop: signal::Receiver<bool>) {
    let counters = metrics.actor(QUARANTINE_ACTOR);
    let mut reconnects = bus.reconnects();
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            changed = reconnects.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {}
        }
        if *stop.borrow() {
            return;
        }
        match bus.quarantine_unreadable().await {
            Ok(moved) => moved.iter().for_each(|_| counters.dead_lettered()),
            Err(e) => {
                warn!(error = %e, "quarantine sweep failed; it runs again after the next reconnection")
            }
        }
    }
}
