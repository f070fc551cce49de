//! The agent wrapper: a model-backed decision as a reactor, with every decision recorded.
//!
//! For each input the agent asks its model, emits an [`AgentDecision`] record (model, prompt
//! hash, output, token usage, latency) **first**, then the effects its [`Decide::act`] derives
//! from the output; the runtime publishes them as one atomic batch, so a decision and its effects
//! are on the log together or not at all. Replays and audits read the record; nobody asks the
//! model again. Per-correlation budgets (calls, tokens) stop runaway agents: over budget, the
//! agent emits [`BudgetExceeded`] instead of calling the model.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use choreo::{Bus, Event, EventType, Payload, ReactContext, ReactError, Reactor, RetryPolicy};
use serde::{Deserialize, Serialize};

use crate::budget::{Budget, BudgetStore};
use crate::model::{Message, Model, ModelError};

/// The record of one decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDecision {
    /// The agent.
    pub agent: String,
    /// The model that answered.
    pub model: String,
    /// A stable hash of the prompt (UUID v5 of its text).
    pub prompt_hash: String,
    /// The model's output, verbatim.
    pub output: String,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Time the model took.
    pub latency_ms: u64,
}
impl Payload for AgentDecision {
    const TYPE: &'static str = "agent.decision.v1";
}

/// Emitted instead of calling the model when a correlation's budget is spent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetExceeded {
    /// The agent.
    pub agent: String,
    /// Calls made for the correlation.
    pub calls: u64,
    /// Tokens spent for the correlation.
    pub tokens: u64,
    /// The limits.
    pub budget: Budget,
}
impl Payload for BudgetExceeded {
    const TYPE: &'static str = "agent.budget_exceeded.v1";
}

/// What an agent decides with, and how its model's output becomes events.
pub trait Decide: Send + Sync + 'static {
    /// The agent's name.
    fn name(&self) -> &str;
    /// Event types it reacts to.
    fn consumes(&self) -> Vec<EventType>;
    /// Effect types it may emit (the decision and budget records are added).
    fn emits(&self) -> Vec<EventType>;
    /// The conversation for the model.
    fn prompt(&self, input: &Event) -> Result<Vec<Message>, ReactError>;
    /// Turn the model's output into effects (may run tools).
    fn act(
        &self,
        input: &Event,
        output: &str,
        ctx: &mut ReactContext,
    ) -> impl Future<Output = Result<(), ReactError>> + Send;
}

/// A [`Decide`] plus a model (and optionally a budget) is a reactor.
pub struct Agent<D: Decide> {
    decide: D,
    model: Arc<dyn Model>,
    budget: Option<(Budget, BudgetStore)>,
}

impl<D: Decide> std::fmt::Debug for Agent<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.decide.name())
            .field("model", &self.model.name())
            .finish()
    }
}

impl<D: Decide> Agent<D> {
    /// An agent deciding with `model`.
    pub fn new(decide: D, model: Arc<dyn Model>) -> Self {
        Self {
            decide,
            model,
            budget: None,
        }
    }

    /// Limit model calls and tokens per correlation (kept in a JetStream KV bucket).
    pub async fn with_budget(
        mut self,
        bus: &Bus,
        budget: Budget,
    ) -> Result<Self, crate::AgentError> {
        self.budget = Some((budget, BudgetStore::open(bus).await?));
        Ok(self)
    }
}

fn prompt_hash(messages: &[Message]) -> String {
    let text: String = messages
        .iter()
        .map(|m| format!("{:?}:{}\n", m.role, m.content))
        .collect();
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes()).to_string()
}

impl<D: Decide> Reactor for Agent<D> {
    fn name(&self) -> &str {
        self.decide.name()
    }
    fn consumes(&self) -> Vec<EventType> {
        self.decide.consumes()
    }
    fn emits(&self) -> Vec<EventType> {
        let mut e = self.decide.emits();
        e.push(AgentDecision::event_type());
        e.push(BudgetExceeded::event_type());
        e
    }
    fn atomic_outputs(&self) -> bool {
        true
    }
    fn retry_policy(&self) -> RetryPolicy {
        // The model client retries its own transient failures.
        RetryPolicy::builder()
            .max_attempts(3)
            .build()
            .unwrap_or_default()
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let agent = self.decide.name().to_owned();
        if let Some((budget, store)) = &self.budget {
            let spent = store
                .get(&agent, &e.correlation)
                .await
                .map_err(ReactError::transient)?;
            if spent.calls >= budget.max_calls || spent.tokens >= budget.max_tokens {
                ctx.emit(&BudgetExceeded {
                    agent,
                    calls: spent.calls,
                    tokens: spent.tokens,
                    budget: *budget,
                })?;
                return Ok(());
            }
        }
        let messages = self.decide.prompt(e)?;
        let started = Instant::now();
        let completion = self
            .model
            .complete(&messages)
            .await
            .map_err(|err| match err {
                ModelError::Transient(m) => ReactError::Transient(m),
                ModelError::Permanent(m) => ReactError::Permanent(m),
            })?;
        if let Some((_, store)) = &self.budget {
            store
                .add(&agent, &e.correlation, 1, completion.usage.total())
                .await
                .map_err(ReactError::transient)?;
        }
        ctx.emit(&AgentDecision {
            agent,
            model: completion.model.clone(),
            prompt_hash: prompt_hash(&messages),
            output: completion.content.clone(),
            prompt_tokens: completion.usage.prompt_tokens,
            completion_tokens: completion.usage.completion_tokens,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })?;
        self.decide.act(e, &completion.content, ctx).await
    }
}
