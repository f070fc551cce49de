//! A hosted saga behind a trait object: what a partition processor needs of each saga it
//! applies inputs to. Handler panics are caught here and reported as transient failures, so
//! the retry rule applies and a saga that always panics faults its instance, not the node.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use choreo_schemas::{ActorName, Event, EventType, SagaId};

use super::decide::{self, Decision, SagaInput, SagaMeta};
use super::Saga;
use crate::model::InstanceRecord;
use crate::retry::RetryPolicy;

/// A type-erased hosted saga.
pub(crate) trait HostedSaga: Send + Sync {
    fn name(&self) -> &ActorName;
    /// Event types it consumes (starts and continues).
    fn inputs(&self) -> &BTreeSet<EventType>;
    fn emits(&self) -> &BTreeSet<EventType>;
    /// Event types that start an instance.
    fn starts(&self) -> &BTreeSet<EventType>;
    fn retry(&self) -> &RetryPolicy;
    fn instance_of(&self, event: &Event) -> Option<SagaId>;
    /// The pure decision, with panics turned into [`Decision::Retry`].
    fn decide(
        &self,
        existing: Option<InstanceRecord>,
        instance: &SagaId,
        input: SagaInput<'_>,
    ) -> Decision;
    /// Where the saga starts (see [`super::Saga::start_position`]).
    fn start_position(&self) -> crate::delivery::StartPosition;
    /// Fix the saga's start (once, at node start, from the `<NS>_SAGAS` record).
    fn set_start(&self, start: crate::delivery::SagaStart);
    /// The faulted version of the instance.
    fn fault(
        &self,
        existing: Option<InstanceRecord>,
        instance: &SagaId,
        input: SagaInput<'_>,
        reason: String,
    ) -> Decision;
}

/// A saga with its validated metadata.
pub(crate) struct SagaHost<S: Saga> {
    pub(crate) saga: Arc<S>,
    pub(crate) name: ActorName,
    pub(crate) meta: Arc<SagaMeta>,
    pub(crate) inputs: Arc<BTreeSet<EventType>>,
    pub(crate) retry: RetryPolicy,
    /// Fixed at node start; until then (and in tests that host no node) every start counts.
    pub(crate) start: std::sync::OnceLock<crate::delivery::SagaStart>,
}

impl<S: Saga> SagaHost<S> {
    pub(crate) fn new(saga: S, name: ActorName) -> Self {
        let meta = SagaMeta::of(&saga, name.as_str());
        let inputs = meta.inputs.clone();
        Self {
            retry: saga.retry_policy(),
            meta: Arc::new(meta),
            saga: Arc::new(saga),
            name,
            inputs: Arc::new(inputs),
            start: std::sync::OnceLock::new(),
        }
    }
}

impl<S: Saga> HostedSaga for SagaHost<S> {
    fn name(&self) -> &ActorName {
        &self.name
    }
    fn inputs(&self) -> &BTreeSet<EventType> {
        &self.inputs
    }
    fn emits(&self) -> &BTreeSet<EventType> {
        &self.meta.emits
    }
    fn starts(&self) -> &BTreeSet<EventType> {
        &self.meta.starts
    }
    fn retry(&self) -> &RetryPolicy {
        &self.retry
    }
    fn instance_of(&self, event: &Event) -> Option<SagaId> {
        self.saga.instance_of(event)
    }
    fn decide(
        &self,
        existing: Option<InstanceRecord>,
        instance: &SagaId,
        input: SagaInput<'_>,
    ) -> Decision {
        let start = self.start.get().copied().unwrap_or_default();
        if decide::before_start(&self.meta, &start, existing.as_ref(), input) {
            return Decision::Skip(decide::Skip::BeforeStart);
        }
        let run =
            AssertUnwindSafe(|| decide::decide(&*self.saga, &self.meta, existing, instance, input));
        match std::panic::catch_unwind(run) {
            Ok(d) => d,
            Err(p) => Decision::Retry(format!(
                "handler panicked: {}",
                crate::delivery::panic_message(&*p)
            )),
        }
    }
    fn start_position(&self) -> crate::delivery::StartPosition {
        self.saga.start_position()
    }
    fn set_start(&self, start: crate::delivery::SagaStart) {
        let _ = self.start.set(start);
    }
    fn fault(
        &self,
        existing: Option<InstanceRecord>,
        instance: &SagaId,
        input: SagaInput<'_>,
        reason: String,
    ) -> Decision {
        decide::fault(&*self.saga, &self.meta, existing, instance, input, reason)
    }
}
