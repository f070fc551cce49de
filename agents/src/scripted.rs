//! A deterministic model for tests and the demo: answers chosen by rules on the prompt.

use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;

use crate::model::{Completion, Message, Model, ModelError, Usage};

/// Answers with the first rule whose pattern occurs in the last user message, else the default.
/// Counts its calls, so tests can prove that a replay never asks it.
#[derive(Debug, Default)]
pub struct ScriptedModel {
    rules: Vec<(String, String)>,
    default: String,
    calls: AtomicU64,
}

impl ScriptedModel {
    /// A model answering `default` unless a rule matches.
    pub fn new(default: impl Into<String>) -> Self {
        Self {
            rules: Vec::new(),
            default: default.into(),
            calls: AtomicU64::new(0),
        }
    }

    /// When the prompt contains `pattern`, answer `answer`.
    pub fn when(mut self, pattern: impl Into<String>, answer: impl Into<String>) -> Self {
        self.rules.push((pattern.into(), answer.into()));
        self
    }

    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn answer(&self, prompt: &str) -> &str {
        self.rules
            .iter()
            .find(|(p, _)| prompt.contains(p.as_str()))
            .map_or(self.default.as_str(), |(_, a)| a.as_str())
    }
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

impl Model for ScriptedModel {
    fn name(&self) -> &str {
        "scripted"
    }

    fn complete<'a>(
        &'a self,
        messages: &'a [Message],
    ) -> BoxFuture<'a, Result<Completion, ModelError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let prompt = messages.last().map_or("", |m| m.content.as_str());
            let content = self.answer(prompt).to_owned();
            Ok(Completion {
                model: "scripted".into(),
                usage: Usage {
                    prompt_tokens: messages.iter().map(|m| words(&m.content)).sum(),
                    completion_tokens: words(&content),
                },
                content,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_by_rule_and_counts() -> Result<(), ModelError> {
        let m = ScriptedModel::new("PASS").when("plan", "1. build\n2. test");
        let a = m
            .complete(&[Message::user("please plan the release")])
            .await?;
        assert_eq!(a.content, "1. build\n2. test");
        let b = m.complete(&[Message::user("verify")]).await?;
        assert_eq!(
            (b.content.as_str(), b.usage.prompt_tokens, m.calls()),
            ("PASS", 1, 2)
        );
        Ok(())
    }
}
