//! One agent of the swarm as a saga: it starts on the task, declares what it awaits, writes its
//! artifact when that comes, and gives up with its teammates.

use std::collections::BTreeSet;

use choreo::{Event, EventType, Lifecycle, Payload, Saga, SagaContext, SagaError, SAGA_FAILED};
use serde::{Deserialize, Serialize};

use crate::domain::{TaskSubmitted, Variant};
use crate::model;
use crate::wiring::{Artifact, Role};

/// The text every artifact event carries.
#[derive(Deserialize)]
struct Text {
    text: String,
}

/// An agent's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// The task.
    pub task: String,
    /// The wiring of the task (none before the task arrived).
    pub variant: Option<Variant>,
    /// What it wrote, if anything yet.
    pub produced: Option<String>,
}

/// One member of the swarm (saga named after its role). Instance = correlation: one per task.
///
/// It declares statically the union of both variants' wiring (and `choreo.saga.failed`, to give
/// up with its teammates); which wiring applies is in the task. Its waits are plain
/// [`SagaContext::awaits`]: no timer, no deadline, the seed-002 agents wait politely forever,
/// and only the engine's deadlock detector can tell that they never will be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwarmAgent {
    /// Its role.
    pub role: Role,
}

impl SwarmAgent {
    /// The agent of `role`.
    pub fn new(role: Role) -> Self {
        Self { role }
    }

    fn produce(
        &self,
        state: &mut AgentState,
        ctx: &mut SagaContext,
        input: Option<(Artifact, &str)>,
    ) -> Result<(), SagaError> {
        let text = model::write(self.role, &state.task, input);
        self.role.produces().emit(ctx, text.clone())?;
        state.produced = Some(text);
        Ok(())
    }
}

impl Saga for SwarmAgent {
    type State = AgentState;

    fn name(&self) -> &str {
        self.role.name()
    }

    fn starts_on(&self) -> Vec<EventType> {
        vec![TaskSubmitted::event_type()]
    }

    fn continues_on(&self) -> Vec<EventType> {
        let mut types: BTreeSet<EventType> = self
            .role
            .wirings()
            .iter()
            .map(|w| w.awaits.event_type())
            .collect();
        types.extend(EventType::new(SAGA_FAILED).ok());
        types.into_iter().collect()
    }

    fn emits(&self) -> Vec<EventType> {
        let types: BTreeSet<EventType> = self
            .role
            .wirings()
            .iter()
            .flat_map(|w| [w.at_start, w.on_awaited])
            .flatten()
            .map(Artifact::event_type)
            .collect();
        types.into_iter().collect()
    }

    fn handle(
        &self,
        state: &mut AgentState,
        event: &Event,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        let ty = event.ty.as_str();
        if ty == TaskSubmitted::TYPE {
            if state.variant.is_some() {
                return Ok(()); // a duplicate task
            }
            let task: TaskSubmitted = event.decode()?;
            state.task = task.task;
            state.variant = Some(task.variant);
            let wiring = self.role.wiring(task.variant);
            if wiring.at_start.is_some() {
                self.produce(state, ctx, None)?;
            }
            ctx.awaits(wiring.awaits.event_type());
        } else if ty == SAGA_FAILED {
            let failed: Lifecycle = event.decode_as()?;
            if failed.saga != self.name() && Role::of(&failed.saga).is_some() {
                ctx.fail(format!(
                    "teammate {} failed: {}",
                    failed.saga,
                    failed.reason.as_deref().unwrap_or("no reason given")
                ));
            }
        } else if let (Some(artifact), Some(variant)) = (Artifact::of(ty), state.variant) {
            let wiring = self.role.wiring(variant);
            if artifact != wiring.awaits {
                return Ok(()); // the other variant's wiring
            }
            let input: Text = event.decode_as()?;
            if wiring.on_awaited.is_some() {
                self.produce(state, ctx, Some((artifact, &input.text)))?;
            }
            ctx.complete();
        }
        Ok(())
    }

    fn on_timeout(
        &self,
        _state: &mut AgentState,
        _timer: &str,
        _ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        Ok(()) // no timers: the agents wait forever
    }
}
