//! The approval gate (human in the loop): a step that emits `approval.requested.v1` and waits for
//! `approval.granted.v1` or `approval.denied.v1`, with a timeout. `choreo approve` answers.

use std::time::Duration;

use choreo::{Bus, CorrelationId, Event, EventId, Payload, SlipStep, TraceParent};
use serde::{Deserialize, Serialize};

use crate::error::ServiceError;

/// Asks a human to approve something.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequested {
    /// What is to be approved.
    pub subject: String,
    /// Context for the approver.
    pub details: String,
}
impl Payload for ApprovalRequested {
    const TYPE: &'static str = "approval.requested.v1";
}

/// Approval given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalGranted {
    /// Who approved.
    pub by: String,
    /// Why.
    pub reason: Option<String>,
}
impl Payload for ApprovalGranted {
    const TYPE: &'static str = "approval.granted.v1";
}

/// Approval refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDenied {
    /// Who refused.
    pub by: String,
    /// Why.
    pub reason: Option<String>,
}
impl Payload for ApprovalDenied {
    const TYPE: &'static str = "approval.denied.v1";
}

/// A routing-slip step that waits for approval (denial or timeout fails the slip).
pub fn approval_step(name: &str, timeout: Duration) -> SlipStep {
    SlipStep::new(
        name,
        ApprovalRequested::event_type(),
        ApprovalGranted::event_type(),
        ApprovalDenied::event_type(),
    )
    .timeout(timeout)
}

/// Answer the latest open approval request of a correlation. The answer is caused by the
/// request (history links them). Fails if the correlation has no approval request.
pub async fn answer(
    bus: &Bus,
    correlation: &CorrelationId,
    grant: bool,
    by: &str,
    reason: Option<String>,
) -> Result<Event, ServiceError> {
    let history = bus.history(correlation).await?;
    let request = history
        .iter()
        .filter_map(|s| s.event.as_ref().ok())
        .rfind(|e| e.ty == ApprovalRequested::event_type())
        .cloned()
        .ok_or_else(|| {
            ServiceError::Invalid(format!("correlation {correlation} has no approval request"))
        })?;
    let mut answer = if grant {
        Event::root(
            "/cli/approve",
            correlation.clone(),
            &ApprovalGranted {
                by: by.to_owned(),
                reason,
            },
        )?
    } else {
        Event::root(
            "/cli/approve",
            correlation.clone(),
            &ApprovalDenied {
                by: by.to_owned(),
                reason,
            },
        )?
    };
    answer.id = EventId::derive(&format!(
        "approval/{}/{}",
        request.id,
        if grant { "granted" } else { "denied" }
    ));
    answer.causation = request.id;
    answer.depth = request.depth.saturating_add(1);
    let trace = request
        .traceparent
        .unwrap_or_else(|| TraceParent::root_for(&request.id));
    answer.traceparent = Some(trace.child_for(&answer.id));
    bus.publish(&answer).await?;
    Ok(answer)
}
