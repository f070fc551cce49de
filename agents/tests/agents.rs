//! Agents against a real nats-server: decisions recorded before their effects, budgets, tools.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use choreo::{Bus, BusConfig, CorrelationId, Event, EventType, NatsServer, Node, Payload};
use choreo_agents::{
    Agent, AgentDecision, Budget, BudgetExceeded, Executor, GoalSubmitted, PlanCreated, Planner,
    ScriptedModel, TaskAssigned, TaskCompleted, TaskFailed, Tool, VerificationFailed,
    VerificationPassed, VerificationRequested, Verifier,
};
use futures::future::BoxFuture;
use futures::StreamExt;

async fn wait_n(bus: &Bus, ty: &EventType, n: usize) -> Result<Vec<Event>> {
    let s = bus
        .follow_events(&bus.subjects().type_filter(ty), true)
        .await?;
    let got: Vec<_> = tokio::time::timeout(Duration::from_secs(30), s.take(n).collect::<Vec<_>>())
        .await
        .map_err(|_| anyhow!("timed out waiting for {n} {ty}"))?;
    got.into_iter().map(|r| Ok(r?.event?)).collect()
}

fn corr(s: &str) -> CorrelationId {
    CorrelationId::new(s).expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_is_recorded_before_its_effects_and_budgets_stop_the_model() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let cfg = BusConfig::builder().url(server.url()).build()?;
    let bus = Bus::connect(cfg.clone()).await?;
    let model = Arc::new(ScriptedModel::new(
        "1. build\n2. test\n3. deploy to staging",
    ));
    let planner = Agent::new(Planner, model.clone())
        .with_budget(
            &bus,
            Budget {
                max_calls: 1,
                max_tokens: 10_000,
            },
        )
        .await?;
    let node = Node::builder()
        .bus(cfg)
        .reactor(planner)
        .build()?
        .start()
        .await?;

    let goal = Event::root(
        "urn:t",
        corr("rel-1"),
        &GoalSubmitted {
            goal: "release 1.2".into(),
        },
    )?;
    bus.publish(&goal).await?;
    let plan = wait_n(&bus, &PlanCreated::event_type(), 1).await?;
    assert_eq!(
        plan[0].decode::<PlanCreated>()?.tasks,
        ["build", "test", "deploy to staging"]
    );

    // A second goal in the same correlation is over budget: no model call.
    bus.publish(&Event::root(
        "urn:t",
        corr("rel-1"),
        &GoalSubmitted {
            goal: "again".into(),
        },
    )?)
    .await?;
    let over = wait_n(&bus, &BudgetExceeded::event_type(), 1).await?;
    node.shutdown().await?;
    let b: BudgetExceeded = over[0].decode()?;
    assert_eq!((b.agent.as_str(), b.calls), ("planner", 1));
    assert_eq!(model.calls(), 1, "the model was asked once");

    let history = bus.history(&corr("rel-1")).await?;
    let types: Vec<String> = history
        .iter()
        .map(|s| {
            s.event
                .as_ref()
                .map(|e| e.ty.to_string())
                .unwrap_or_default()
        })
        .collect();
    let decision_at = types
        .iter()
        .position(|t| t == "agent.decision.v1")
        .ok_or_else(|| anyhow!("no decision: {types:?}"))?;
    let plan_at = types
        .iter()
        .position(|t| t == "plan.created.v1")
        .ok_or_else(|| anyhow!("no plan"))?;
    assert!(
        decision_at < plan_at,
        "decision recorded before its effect: {types:?}"
    );
    let decision: AgentDecision = history[decision_at].event.clone()?.decode()?;
    assert_eq!(decision.output, "1. build\n2. test\n3. deploy to staging");
    assert_eq!(
        (decision.agent.as_str(), decision.model.as_str()),
        ("planner", "scripted")
    );
    assert!(decision.prompt_tokens > 0 && !decision.prompt_hash.is_empty());
    let decision_event = history[decision_at].event.clone()?;
    assert_eq!(
        decision_event.causation, goal.id,
        "the decision is caused by the input"
    );
    Ok(())
}

struct Shell;
impl Tool for Shell {
    fn name(&self) -> &str {
        "shell"
    }
    fn run<'a>(&'a self, argument: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            if argument.contains("fail") {
                Err(format!("`{argument}` exited with status 1"))
            } else {
                Ok(format!("`{argument}` ok"))
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_runs_tools_and_verifier_judges() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let cfg = BusConfig::builder().url(server.url()).build()?;
    let bus = Bus::connect(cfg.clone()).await?;
    let exec_model = Arc::new(
        ScriptedModel::new("ask: nothing")
            .when("Task: build", "shell: cargo build")
            .when("Task: break", "shell: make fail"),
    );
    let verify_model =
        Arc::new(ScriptedModel::new("FAIL\n- tests were skipped").when("ok", "PASS all green"));
    let node = Node::builder()
        .bus(cfg)
        .reactor(Agent::new(Executor::new().tool(Shell), exec_model))
        .reactor(Agent::new(Verifier, verify_model))
        .build()?
        .start()
        .await?;
    for (c, task) in [("x-1", "build"), ("x-2", "break"), ("x-3", "dance")] {
        bus.publish(&Event::root(
            "urn:t",
            corr(c),
            &TaskAssigned {
                task: task.into(),
                index: 0,
            },
        )?)
        .await?;
    }
    bus.publish(&Event::root(
        "urn:t",
        corr("v-1"),
        &VerificationRequested {
            goal: "g".into(),
            results: vec![("build".into(), "ok".into())],
        },
    )?)
    .await?;
    bus.publish(&Event::root(
        "urn:t",
        corr("v-2"),
        &VerificationRequested {
            goal: "g".into(),
            results: vec![("build".into(), "skipped".into())],
        },
    )?)
    .await?;
    let done = wait_n(&bus, &TaskCompleted::event_type(), 1).await?;
    let failed = wait_n(&bus, &TaskFailed::event_type(), 2).await?;
    let passed = wait_n(&bus, &VerificationPassed::event_type(), 1).await?;
    let rejected = wait_n(&bus, &VerificationFailed::event_type(), 1).await?;
    node.shutdown().await?;
    let d: TaskCompleted = done[0].decode()?;
    assert_eq!(
        (d.tool.as_str(), d.output.as_str()),
        ("shell", "`cargo build` ok")
    );
    let mut errors: Vec<String> = failed
        .iter()
        .map(|e| e.decode::<TaskFailed>().map(|f| f.error))
        .collect::<Result<_, _>>()?;
    errors.sort();
    assert_eq!(
        errors,
        [
            "`make fail` exited with status 1",
            "the model chose unknown tool \"ask\""
        ]
    );
    assert_eq!(passed[0].decode::<VerificationPassed>()?.notes, "all green");
    assert_eq!(
        rejected[0].decode::<VerificationFailed>()?.reasons,
        ["tests were skipped"]
    );
    Ok(())
}
