//! `choreo.saga.retry`: apply the input that faulted an instance again, read back from the log.

use std::sync::Arc;

use async_nats::jetstream::Message;
use choreo_schemas::{Event, SagaId};
use tracing::warn;

use super::{Processor, Step};
use crate::partition::batch::Batch;
use crate::partition::Exit;
use crate::saga::decide::SagaInput;
use crate::saga::host::HostedSaga;
use crate::saga::operator::{after_retry, reopened, retried};

impl Processor {
    /// Re-apply the event that faulted `instance` to the instance as it was before it (running,
    /// watermark back), at the retry request's log time. A retry of an instance that is not
    /// faulted by an event changes nothing; if the event left the log, the retry is refused
    /// with a warning. A fault again dead-letters the retry request.
    pub(super) async fn retry(
        &mut self,
        batch: &mut Batch,
        saga: &Arc<dyn HostedSaga>,
        instance: &SagaId,
        request: &Event,
        at_ms: i64,
        origin: (u64, &Message),
    ) -> Step {
        let name = saga.name().as_str();
        let existing = self.existing(batch, name, instance)?;
        let Some((record, by)) = existing.as_ref().and_then(reopened) else {
            warn!(%instance, "retry requested for an instance no event faulted; ignored");
            return Ok(());
        };
        let seq = by.seq;
        let original = match self.env.bus.stored_event(seq).await {
            Ok(Some(e)) => retried(e, request),
            Ok(None) => {
                warn!(%instance, seq, "retry requested, but the faulting input is no longer in the log; ignored");
                return Ok(());
            }
            Err(e) => return Err(Exit::Failed(format!("read the faulting input #{seq}: {e}"))),
        };
        // Decided under the request's sequence: the watermark moves past the request.
        let input = SagaInput::Event {
            event: &original,
            seq: origin.0,
            at_ms,
        };
        self.decide_input(batch, saga, instance, input, Some(origin), Some(record))
            .await?;
        if let Some(r) = batch.get_mut(name, instance.as_str()) {
            after_retry(r, origin.0, &by);
        }
        Ok(())
    }
}
