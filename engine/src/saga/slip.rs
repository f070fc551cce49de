//! Routing slip: a declarative itinerary run on the saga machinery, no `Saga` impl needed.
//!
//! Each step sends a command, waits for the event that confirms it (or the one that reports its
//! failure) within an optional timeout, and may name the command that undoes it. Steps run in
//! order; a failure or a step timeout compensates the completed steps in reverse. The slip's
//! "document" is the data of the event that started it: every command and compensation carries it.

use std::collections::BTreeSet;
use std::time::Duration;

use choreo_schemas::{Event, EventType};
use serde::{Deserialize, Serialize};

use super::{Effect, Saga, SagaContext, SagaError};
use crate::delivery::{CommandExpired, COMMAND_EXPIRED};
use crate::error::ConfigError;

/// One step of an itinerary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlipStep {
    /// Step name (used in timer names and failure reasons).
    pub name: String,
    /// The command sent to start the step.
    pub command: EventType,
    /// The event that confirms it.
    pub confirmed_by: EventType,
    /// The event that reports its failure.
    pub failed_by: EventType,
    /// The command that undoes it, if any.
    pub compensation: Option<EventType>,
    /// The event that confirms the compensation (`None`: done once sent).
    pub compensation_confirmed_by: Option<EventType>,
    /// How long to wait for an answer.
    pub timeout: Option<Duration>,
}

impl SlipStep {
    /// A step without compensation or timeout.
    pub fn new(
        name: impl Into<String>,
        command: EventType,
        confirmed_by: EventType,
        failed_by: EventType,
    ) -> Self {
        Self {
            name: name.into(),
            command,
            confirmed_by,
            failed_by,
            compensation: None,
            compensation_confirmed_by: None,
            timeout: None,
        }
    }

    /// The command that undoes this step.
    pub fn compensate_with(mut self, command: EventType) -> Self {
        self.compensation = Some(command);
        self
    }

    /// The command that undoes this step, and the event its service confirms it with: a failed
    /// slip stays `compensating` until that confirmation arrives.
    pub fn compensate_with_confirmation(
        mut self,
        command: EventType,
        confirmed_by: EventType,
    ) -> Self {
        self.compensation = Some(command);
        self.compensation_confirmed_by = Some(confirmed_by);
        self
    }

    /// Fail the slip if no answer arrives within `timeout`; the command carries that deadline
    /// (no service runs it later).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// State of one slip instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlipState {
    /// Whether the start event was seen.
    pub started: bool,
    /// Index of the step in progress (== steps.len() when done).
    pub current: usize,
    /// The start event's data.
    #[serde(with = "serde_bytes")]
    pub document: Vec<u8>,
}

/// A routing slip saga. Build with [`RoutingSlip::builder`].
#[derive(Clone, Debug)]
pub struct RoutingSlip {
    name: String,
    starts_on: EventType,
    steps: Vec<SlipStep>,
    start_position: crate::delivery::StartPosition,
}

impl RoutingSlip {
    /// Start an itinerary named `name`, started by events of type `starts_on`.
    pub fn builder(name: impl Into<String>, starts_on: EventType) -> RoutingSlipBuilder {
        RoutingSlipBuilder {
            slip: RoutingSlip {
                name: name.into(),
                starts_on,
                steps: Vec::new(),
                start_position: crate::delivery::StartPosition::New,
            },
        }
    }

    /// The steps.
    pub fn steps(&self) -> &[SlipStep] {
        &self.steps
    }

    fn timer(i: usize) -> String {
        format!("step-{i}")
    }

    fn dispatch(&self, state: &SlipState, ctx: &mut SagaContext) -> Result<(), SagaError> {
        let Some(step) = self.steps.get(state.current) else {
            ctx.complete();
            return Ok(());
        };
        let mut effect =
            Effect::confirmed_by(step.confirmed_by.clone()).failed_by(step.failed_by.clone());
        if let Some(c) = &step.compensation {
            effect = effect.compensate_with_raw(
                c.clone(),
                state.document.clone(),
                step.compensation_confirmed_by.clone(),
            );
        }
        if let Some(t) = step.timeout {
            effect = effect.deadline(t);
            ctx.schedule(Self::timer(state.current), t);
        }
        ctx.issue_raw(step.command.clone(), state.document.clone(), effect)?;
        ctx.awaits_any(
            [step.confirmed_by.clone(), step.failed_by.clone()],
            step.timeout,
        );
        Ok(())
    }
}

/// Builder for [`RoutingSlip`].
#[derive(Clone, Debug)]
pub struct RoutingSlipBuilder {
    slip: RoutingSlip,
}

impl RoutingSlipBuilder {
    /// Append a step.
    pub fn step(mut self, step: SlipStep) -> Self {
        self.slip.steps.push(step);
        self
    }

    /// Which start events may start instances (see [`Saga::start_position`]; default new
    /// events only).
    pub fn start_position(mut self, position: crate::delivery::StartPosition) -> Self {
        self.slip.start_position = position;
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<RoutingSlip, ConfigError> {
        let s = self.slip;
        choreo_schemas::ActorName::new(s.name.as_str())
            .map_err(|e| ConfigError::new(format!("routing slip name: {e}")))?;
        if s.steps.is_empty() {
            return Err(ConfigError::new(format!(
                "routing slip {} has no steps",
                s.name
            )));
        }
        let mut answers = BTreeSet::new();
        for (i, step) in s.steps.iter().enumerate() {
            if step.confirmed_by == step.failed_by {
                return Err(ConfigError::new(format!(
                    "step {} of {}: confirmation and failure are the same type",
                    step.name, s.name
                )));
            }
            if !answers.insert(&step.confirmed_by) || !answers.insert(&step.failed_by) {
                return Err(ConfigError::new(format!(
                    "step {} (#{i}) of {}: each answer type may serve one step only",
                    step.name, s.name
                )));
            }
        }
        Ok(s)
    }
}

impl Saga for RoutingSlip {
    type State = SlipState;

    fn name(&self) -> &str {
        &self.name
    }

    fn start_position(&self) -> crate::delivery::StartPosition {
        self.start_position
    }

    fn starts_on(&self) -> Vec<EventType> {
        vec![self.starts_on.clone()]
    }

    fn continues_on(&self) -> Vec<EventType> {
        self.steps
            .iter()
            .flat_map(|s| {
                [s.confirmed_by.clone(), s.failed_by.clone()]
                    .into_iter()
                    .chain(s.compensation_confirmed_by.clone())
            })
            .collect()
    }

    fn emits(&self) -> Vec<EventType> {
        self.steps
            .iter()
            .flat_map(|s| std::iter::once(s.command.clone()).chain(s.compensation.clone()))
            .collect()
    }

    fn handle(
        &self,
        state: &mut SlipState,
        event: &Event,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        if event.ty == self.starts_on && !state.started {
            state.started = true;
            state.document = event.data.clone();
            return self.dispatch(state, ctx);
        }
        let Some(step) = self.steps.get(state.current) else {
            return Ok(());
        };
        if event.ty.as_str() == COMMAND_EXPIRED {
            let expired: CommandExpired = event.decode_as()?;
            if expired.command_type == step.command.as_str() {
                ctx.cancel(Self::timer(state.current));
                ctx.fail(format!("step {} expired unexecuted", step.name));
            }
            return Ok(());
        }
        if event.ty == step.confirmed_by {
            // The runtime put the step's compensation on the stack (it was declared with the
            // command).
            ctx.cancel(Self::timer(state.current));
            state.current += 1;
            self.dispatch(state, ctx)
        } else if event.ty == step.failed_by {
            ctx.cancel(Self::timer(state.current));
            ctx.fail(format!("step {} failed", step.name));
            Ok(())
        } else {
            // An answer for another step (late or early): not this step's business.
            Ok(())
        }
    }

    fn on_timeout(
        &self,
        state: &mut SlipState,
        timer: &str,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        if timer == Self::timer(state.current) {
            let name = self
                .steps
                .get(state.current)
                .map_or("?", |s| s.name.as_str());
            ctx.fail(format!("step {name} timed out"));
        }
        Ok(())
    }
}
