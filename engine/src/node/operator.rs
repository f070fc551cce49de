//! Operator actions on faulted instances, from any process connected to the bus: checked
//! against the changelog, then published on the instance's correlation for its owner to apply.

use crate::bus::{Bus, Published};
use crate::changelog::Changelog;
use crate::error::NodeError;
use crate::model::{InstanceRecord, SagaStatus};
use crate::saga::operator::{Operation, OperatorRequest};

/// Ask the owner of a faulted instance to run its compensation stack (`choreo sagas
/// compensate`). The instance goes Compensating, then Compensated once every compensation is
/// confirmed. `by` is recorded in its reason.
pub async fn request_compensation(
    bus: &Bus,
    saga: &str,
    instance: &str,
    by: &str,
) -> Result<Published, NodeError> {
    let record = faulted(bus, saga, instance).await?;
    request(bus, &record, Operation::Compensate, by).await
}

/// Ask the owner of a faulted instance to apply the input that faulted it again (`choreo sagas
/// retry`), after a fix of the handler or of the data it reads.
pub async fn request_retry(
    bus: &Bus,
    saga: &str,
    instance: &str,
    by: &str,
) -> Result<Published, NodeError> {
    let record = faulted(bus, saga, instance).await?;
    let refuse = |status: &str| NodeError::NotFaulted {
        saga: saga.to_owned(),
        instance: instance.to_owned(),
        status: status.to_owned(),
        what: RETRY_NEEDS,
    };
    let Some(cause) = record.faulted_by.as_ref() else {
        return Err(refuse("faulted by a timer"));
    };
    if bus.stored_event(cause.seq).await?.is_none() {
        return Err(refuse("faulted by an input no longer in the log"));
    }
    request(bus, &record, Operation::Retry, by).await
}

/// What a retry needs.
const RETRY_NEEDS: &str =
    "only an instance faulted by an event still in the log can be retried; compensate it instead";

async fn faulted(bus: &Bus, saga: &str, instance: &str) -> Result<InstanceRecord, NodeError> {
    let record = Changelog::new(bus)
        .find(saga, instance, None)
        .await?
        .ok_or_else(|| NodeError::NoInstance {
            saga: saga.to_owned(),
            instance: instance.to_owned(),
        })?;
    if record.status != SagaStatus::Faulted {
        return Err(NodeError::NotFaulted {
            saga: saga.to_owned(),
            instance: instance.to_owned(),
            status: record.status.to_string(),
            what: "the action applies to faulted instances only",
        });
    }
    Ok(record)
}

async fn request(
    bus: &Bus,
    record: &InstanceRecord,
    op: Operation,
    by: &str,
) -> Result<Published, NodeError> {
    let event = OperatorRequest::event(record, op, by)?;
    Ok(bus.publish(&event).await?)
}
