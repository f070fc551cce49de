//! Per-correlation budgets of model calls and tokens, kept in a JetStream KV bucket.

use async_nats::jetstream::kv;
use choreo::{Bus, CorrelationId};
use serde::{Deserialize, Serialize};

use crate::AgentError;

/// Bucket holding the budgets.
pub const BUDGET_BUCKET: &str = "CHOREO_AGENT_BUDGETS";

/// Limits per correlation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Model calls allowed.
    pub max_calls: u64,
    /// Tokens allowed (prompt + completion).
    pub max_tokens: u64,
}

/// Spent so far for one (agent, correlation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spent {
    /// Calls made.
    pub calls: u64,
    /// Tokens spent.
    pub tokens: u64,
}

/// The budget bucket.
#[derive(Clone, Debug)]
pub struct BudgetStore {
    kv: kv::Store,
}

fn key(agent: &str, c: &CorrelationId) -> String {
    format!("{agent}.{c}")
}

impl BudgetStore {
    /// Open (or create) the bucket.
    pub async fn open(bus: &Bus) -> Result<Self, AgentError> {
        let js = bus.jetstream();
        let kv = match js.get_key_value(BUDGET_BUCKET).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: BUDGET_BUCKET.to_owned(),
                    description: "choreo agent budgets per correlation".to_owned(),
                    history: 1,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    num_replicas: bus.config().replica_count(),
                    ..Default::default()
                })
                .await
                .map_err(|e| AgentError::Kv(e.to_string()))?,
        };
        Ok(Self { kv })
    }

    /// What an agent spent on a correlation.
    pub async fn get(&self, agent: &str, c: &CorrelationId) -> Result<Spent, AgentError> {
        match self
            .kv
            .get(key(agent, c))
            .await
            .map_err(|e| AgentError::Kv(e.to_string()))?
        {
            Some(b) => serde_json::from_slice(&b).map_err(|e| AgentError::Kv(e.to_string())),
            None => Ok(Spent::default()),
        }
    }

    /// Add a call's spending (compare-and-set, retried on conflict).
    pub async fn add(
        &self,
        agent: &str,
        c: &CorrelationId,
        calls: u64,
        tokens: u64,
    ) -> Result<Spent, AgentError> {
        let k = key(agent, c);
        for _ in 0..16 {
            let entry = self
                .kv
                .entry(k.clone())
                .await
                .map_err(|e| AgentError::Kv(e.to_string()))?;
            let (mut spent, revision) = match &entry {
                Some(e) if !e.value.is_empty() => (
                    serde_json::from_slice::<Spent>(&e.value)
                        .map_err(|e| AgentError::Kv(e.to_string()))?,
                    Some(e.revision),
                ),
                _ => (Spent::default(), None),
            };
            spent.calls += calls;
            spent.tokens += tokens;
            let value = serde_json::to_vec(&spent).map_err(|e| AgentError::Kv(e.to_string()))?;
            let written = match revision {
                Some(r) => self
                    .kv
                    .update(&k, value.into(), r)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => self
                    .kv
                    .create(&k, value.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            if written.is_ok() {
                return Ok(spent);
            }
        }
        Err(AgentError::Kv(format!(
            "budget {k}: too many concurrent updates"
        )))
    }
}
