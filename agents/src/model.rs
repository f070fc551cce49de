//! The model interface: messages in, a completion with usage out.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Who speaks a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The request.
    User,
    /// A previous answer.
    Assistant,
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Speaker.
    pub role: Role,
    /// Text.
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
}

/// Tokens spent on one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt plus completion.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// A model's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The model that answered.
    pub model: String,
    /// The text.
    pub content: String,
    /// Tokens spent.
    pub usage: Usage,
}

/// A model call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    /// Worth retrying: timeout, rate limit, server error, connection trouble.
    #[error("model call failed transiently: {0}")]
    Transient(String),
    /// Will not succeed as asked: bad request, authentication, a malformed answer.
    #[error("model call failed: {0}")]
    Permanent(String),
}

/// A chat model. Implementations must be cheap to share (`Arc`).
pub trait Model: Send + Sync + 'static {
    /// The model's name, recorded with each decision.
    fn name(&self) -> &str;

    /// Complete a conversation.
    fn complete<'a>(
        &'a self,
        messages: &'a [Message],
    ) -> BoxFuture<'a, Result<Completion, ModelError>>;
}
