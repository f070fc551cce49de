//! Timers as inputs: due timers arrive from the node's timer loop and wait behind the input
//! backlog (an answer already on the log is applied before a timeout that would race it), then
//! go through the same apply-and-commit path as events.

use choreo_schemas::SagaId;
use tracing::{info_span, warn, Instrument};

use super::super::batch::Batch;
use super::super::timers::TimerJob;
use super::{Processor, Step};
use crate::saga::decide::SagaInput;

impl Processor {
    /// Apply the deferred timers that no waiting input could precede: all of them once nothing
    /// stored is waiting, else those due before the stored time of the last input delivered
    /// (every input stored earlier has been applied, in log order).
    pub(super) async fn fire_due(&mut self) -> Step {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|j| self.backlog == 0 || j.entry.due_ms <= self.log_ms);
        self.deferred = wait;
        if ready.is_empty() {
            return Ok(());
        }
        self.apply_timers(ready).await
    }

    async fn apply_timers(&mut self, jobs: Vec<TimerJob>) -> Step {
        let mut batch = Batch::default();
        for job in jobs {
            let e = &job.entry;
            let Ok(instance) = SagaId::new(e.instance.as_str()) else {
                warn!(instance = %e.instance, "timer of an invalid instance id ignored");
                continue;
            };
            let Some(saga) = self
                .env
                .sagas
                .iter()
                .find(|s| s.name().as_str() == e.saga)
                .cloned()
            else {
                continue;
            };
            let input = SagaInput::Timer {
                name: &e.name,
                due_ms: e.due_ms,
            };
            let span = info_span!(
                "saga.timer",
                saga = %e.saga,
                timer = %e.name,
                correlation = %e.correlation,
                instance = %instance,
                partition = self.partition,
                attempt = tracing::field::Empty,
            );
            fail::fail_point!("saga-timer-fire");
            self.apply_input(&mut batch, &saga, &instance, input, None)
                .instrument(span)
                .await?;
        }
        self.commit(batch).await
    }
}
