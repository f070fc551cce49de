//! The stall watchdog of a partition: every second, the open waits of its instances that
//! stalled (see `coordination::stall`) are reported, once per wait: applying the report marks
//! the wait in the record.

use std::sync::atomic::Ordering;

use tracing::warn;

use super::super::timers::now_ms;
use super::coordination::Reported;
use super::Processor;
use crate::coordination::stall::stalled_waits;
use crate::coordination::{StallDetected, Topology};

impl Processor {
    /// Report every wait that stalled since the last run.
    pub(super) async fn report_stalls(&mut self, topo: &Topology) {
        let Some(view) = self.env.topology.clone() else {
            return;
        };
        let grace = i64::try_from(self.env.settings.stall_grace.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        // A passed deadline counts only once nothing stored waits for delivery: the answer may
        // be in the backlog (after a takeover the wall clock is ahead of the log).
        let deadlines = self.backlog == 0;
        let mut found = Vec::new();
        {
            let v = view.read().unwrap_or_else(|p| p.into_inner());
            let absent = |t: &str| i64::try_from(v.absent_for(t).as_millis()).unwrap_or(i64::MAX);
            for ((saga, instance), (_, iv)) in self.waits.views() {
                for s in stalled_waits(iv, topo, v.live(), now, grace, deadlines, &absent) {
                    let Some(w) = iv.waits.get(s.wait) else {
                        continue;
                    };
                    found.push(StallDetected {
                        saga: saga.clone(),
                        instance: instance.clone(),
                        awaits: w.types.clone(),
                        since_seq: w.since_seq,
                        deadline_ms: w.deadline_ms,
                        kind: s.kind,
                        producers: s.producers,
                        detected_by: self.env.node.to_string(),
                    });
                }
            }
        }
        for stall in found {
            let key = (stall.saga.clone(), stall.instance.clone(), stall.since_seq);
            if self.waits.stalls_unapplied.contains(&key) {
                continue; // reported, not applied yet (perhaps for another reason)
            }
            let Ok(Some(record)) =
                self.env
                    .store
                    .get_in(self.partition, &stall.saga, &stall.instance)
            else {
                continue;
            };
            let Some(event) = stall.event(&record, self.env.settings.max_depth) else {
                continue;
            };
            let reported = self.report(event).await;
            if reported != Reported::Failed {
                self.waits.stalls_unapplied.insert(key);
            }
            if reported == Reported::New {
                self.env.coordination.stalls.fetch_add(1, Ordering::Relaxed);
                warn!(
                    partition = self.partition,
                    correlation = %record.correlation,
                    instance = %format!("{}/{}", stall.saga, stall.instance),
                    awaits = %stall.awaits.join(" | "),
                    kind = %stall.kind,
                    "a wait stalled"
                );
            }
        }
    }
}
