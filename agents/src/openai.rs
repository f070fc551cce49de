//! An OpenAI-compatible chat-completions client (`POST {base}/chat/completions`). Works with any
//! compatible server (a local one included). Transient failures (timeouts, connection errors,
//! 429, 5xx) are retried with the engine's [`RetryPolicy`]; other HTTP errors and malformed
//! answers are permanent.

use std::time::Duration;

use choreo::RetryPolicy;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::model::{Completion, Message, Model, ModelError, Usage};

/// Where and how to call the model.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// Base URL including the version prefix, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// API key (sent as a bearer token), if the server wants one.
    pub api_key: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl OpenAiConfig {
    /// From the environment: `CHOREO_OPENAI_BASE_URL` (or `OPENAI_BASE_URL`), `CHOREO_OPENAI_MODEL`
    /// (or `OPENAI_MODEL`), `OPENAI_API_KEY`. `None` when no base URL is set.
    pub fn from_env() -> Option<Self> {
        let var = |a: &str, b: &str| std::env::var(a).or_else(|_| std::env::var(b)).ok();
        let base_url = var("CHOREO_OPENAI_BASE_URL", "OPENAI_BASE_URL")?;
        Some(Self {
            base_url,
            model: var("CHOREO_OPENAI_MODEL", "OPENAI_MODEL")
                .unwrap_or_else(|| "gpt-4o-mini".to_owned()),
            api_key: std::env::var("OPENAI_API_KEY").ok(),
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        })
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: &'a [Message],
}

#[derive(Deserialize)]
struct Response {
    model: Option<String>,
    choices: Vec<Choice>,
    usage: Option<ResponseUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct ResponseUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// The client.
#[derive(Clone, Debug)]
pub struct OpenAiModel {
    cfg: OpenAiConfig,
    http: reqwest::Client,
}

impl OpenAiModel {
    /// Build a client.
    pub fn new(cfg: OpenAiConfig) -> Result<Self, ModelError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| ModelError::Permanent(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { cfg, http })
    }

    async fn once(&self, messages: &[Message]) -> Result<Completion, ModelError> {
        let url = format!(
            "{}/chat/completions",
            self.cfg.base_url.trim_end_matches('/')
        );
        let mut req = self.http.post(&url).json(&Request {
            model: &self.cfg.model,
            messages,
        });
        if let Some(key) = &self.cfg.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                ModelError::Transient(format!("{url}: timed out after {:?}", self.cfg.timeout))
            } else {
                ModelError::Transient(format!("{url}: {e}"))
            }
        })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let excerpt: String = body.chars().take(300).collect();
            let msg = format!("{url}: HTTP {status}: {excerpt}");
            return Err(if status.as_u16() == 429 || status.is_server_error() {
                ModelError::Transient(msg)
            } else {
                ModelError::Permanent(msg)
            });
        }
        let body: Response = resp
            .json()
            .await
            .map_err(|e| ModelError::Permanent(format!("{url}: malformed response: {e}")))?;
        let content = body
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| {
                ModelError::Permanent(format!("{url}: the response has no message content"))
            })?;
        let usage = body.usage.map_or(Usage::default(), |u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        });
        Ok(Completion {
            model: body.model.unwrap_or_else(|| self.cfg.model.clone()),
            content,
            usage,
        })
    }
}

impl Model for OpenAiModel {
    fn name(&self) -> &str {
        &self.cfg.model
    }

    fn complete<'a>(
        &'a self,
        messages: &'a [Message],
    ) -> BoxFuture<'a, Result<Completion, ModelError>> {
        Box::pin(async move {
            let mut delays = self.cfg.retry.delays();
            loop {
                match self.once(messages).await {
                    Err(ModelError::Transient(e)) => match delays.next() {
                        Some(d) => {
                            tracing::warn!(error = %e, retry_in = ?d, "model call failed; retrying");
                            tokio::time::sleep(d).await;
                        }
                        None => return Err(ModelError::Transient(e)),
                    },
                    other => return other,
                }
            }
        })
    }
}
