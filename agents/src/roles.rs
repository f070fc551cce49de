//! Ready agents: planner (goal → ordered sub-tasks), executor (a sub-task through a tool),
//! verifier (results → pass/fail with reasons). Each is a [`Decide`]; wrap it in an
//! [`crate::Agent`] with a model.

use std::sync::Arc;

use choreo::{Event, EventType, Payload, ReactContext, ReactError};
use futures::future::BoxFuture;

use crate::agent::Decide;
use crate::model::Message;
use crate::protocol::{
    GoalSubmitted, PlanCreated, TaskAssigned, TaskCompleted, TaskFailed, VerificationFailed,
    VerificationPassed, VerificationRequested,
};

/// Something an executor can run. Tools perform the effects; keep them idempotent.
pub trait Tool: Send + Sync + 'static {
    /// The name the model uses to pick it.
    fn name(&self) -> &str;
    /// Run with the model's argument; `Err` is a failed sub-task.
    fn run<'a>(&'a self, argument: &'a str) -> BoxFuture<'a, Result<String, String>>;
}

/// Lines of a model answer without numbering or bullets.
pub fn parse_list(output: &str) -> Vec<String> {
    output
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start_matches(['.', ')', '-', '*'])
                .trim()
                .to_owned()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// Goal → ordered sub-tasks.
#[derive(Clone, Debug, Default)]
pub struct Planner;

impl Decide for Planner {
    fn name(&self) -> &str {
        "planner"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![GoalSubmitted::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![PlanCreated::event_type()]
    }
    fn prompt(&self, input: &Event) -> Result<Vec<Message>, ReactError> {
        let g: GoalSubmitted = input.decode()?;
        Ok(vec![
            Message::system("You are a release planner. Answer with one sub-task per line, in execution order, nothing else."),
            Message::user(format!("Plan the sub-tasks for: {}", g.goal)),
        ])
    }
    async fn act(
        &self,
        input: &Event,
        output: &str,
        ctx: &mut ReactContext,
    ) -> Result<(), ReactError> {
        let g: GoalSubmitted = input.decode()?;
        ctx.emit(&PlanCreated {
            goal: g.goal,
            tasks: parse_list(output),
        })?;
        Ok(())
    }
}

/// A sub-task → a tool run.
#[derive(Clone, Default)]
pub struct Executor {
    tools: Vec<Arc<dyn Tool>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tools.iter().map(|t| t.name()).collect();
        f.debug_struct("Executor").field("tools", &names).finish()
    }
}

impl Executor {
    /// An executor with no tools yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offer a tool.
    pub fn tool(mut self, tool: impl Tool) -> Self {
        self.tools.push(Arc::new(tool));
        self
    }
}

impl Decide for Executor {
    fn name(&self) -> &str {
        "executor"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![TaskAssigned::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![TaskCompleted::event_type(), TaskFailed::event_type()]
    }
    fn prompt(&self, input: &Event) -> Result<Vec<Message>, ReactError> {
        let t: TaskAssigned = input.decode()?;
        let names: Vec<&str> = self.tools.iter().map(|t| t.name()).collect();
        Ok(vec![
            Message::system(format!(
                "You run release sub-tasks with tools: {}. Answer exactly `tool: argument`.",
                names.join(", ")
            )),
            Message::user(format!("Task: {}", t.task)),
        ])
    }
    async fn act(
        &self,
        input: &Event,
        output: &str,
        ctx: &mut ReactContext,
    ) -> Result<(), ReactError> {
        let t: TaskAssigned = input.decode()?;
        let (name, argument) = output
            .split_once(':')
            .map_or((output.trim(), ""), |(n, a)| (n.trim(), a.trim()));
        let result = match self.tools.iter().find(|tool| tool.name() == name) {
            None => Err(format!("the model chose unknown tool {name:?}")),
            Some(tool) => tool
                .run(argument)
                .await
                .map(|out| (tool.name().to_owned(), out)),
        };
        match result {
            Ok((tool, output)) => ctx.emit(&TaskCompleted {
                task: t.task,
                index: t.index,
                tool,
                output,
            })?,
            Err(error) => ctx.emit(&TaskFailed {
                task: t.task,
                index: t.index,
                error,
            })?,
        };
        Ok(())
    }
}

/// Results → pass or fail with reasons. The model answers `PASS …` or `FAIL` and reasons.
#[derive(Clone, Debug, Default)]
pub struct Verifier;

impl Decide for Verifier {
    fn name(&self) -> &str {
        "verifier"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![VerificationRequested::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![
            VerificationPassed::event_type(),
            VerificationFailed::event_type(),
        ]
    }
    fn prompt(&self, input: &Event) -> Result<Vec<Message>, ReactError> {
        let v: VerificationRequested = input.decode()?;
        let results: String = v
            .results
            .iter()
            .map(|(t, o)| format!("- {t}: {o}\n"))
            .collect();
        Ok(vec![
            Message::system("You verify release results. Answer `PASS` and a note, or `FAIL` and one reason per line."),
            Message::user(format!("Verify the results for {}:\n{results}", v.goal)),
        ])
    }
    async fn act(
        &self,
        _input: &Event,
        output: &str,
        ctx: &mut ReactContext,
    ) -> Result<(), ReactError> {
        let trimmed = output.trim();
        if let Some(notes) = trimmed.strip_prefix("PASS") {
            ctx.emit(&VerificationPassed {
                notes: notes.trim().to_owned(),
            })?;
        } else {
            let reasons = parse_list(trimmed.trim_start_matches("FAIL"));
            ctx.emit(&VerificationFailed {
                reasons: if reasons.is_empty() {
                    vec![trimmed.to_owned()]
                } else {
                    reasons
                },
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_list;

    #[test]
    fn lists_lose_their_numbering() {
        assert_eq!(
            parse_list("1. build\n2) test\n- deploy to staging\n\n* done"),
            ["build", "test", "deploy to staging", "done"]
        );
    }
}
