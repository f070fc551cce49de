//! The seed-002 swarm end to end on a real nats-server: the cyclic task deadlocks, the engine
//! detects it and fails one victim, the swarm gives up together; the acyclic task completes;
//! both replay identically from the log.

use std::time::Duration;

use anyhow::{Context as _, Result};
use choreo::{replay, Bus, BusConfig, NatsServer, SagaId, SagaStatus, Store, VICTIM_RULE};
use choreo_example_deadlock::{
    run, AgentOutcome, CorrelationSummary, DeadlockOptions, Role, Summary, SwarmAgent,
    ACYCLIC_CORRELATION, CYCLIC_CORRELATION,
};

/// How long the run may wait for every agent to end.
const WAIT: Duration = Duration::from_secs(30);

/// A finished run, with its server and its store still there.
struct Swarm {
    summary: Summary,
    cfg: BusConfig,
    dir: tempfile::TempDir,
    _server: NatsServer,
}

/// One run of the swarm against its own temporary server.
async fn swarm() -> Result<Swarm> {
    let server = NatsServer::start_temp().await?;
    let dir = tempfile::tempdir()?;
    let mut opts = DeadlockOptions::new(dir.path().to_path_buf());
    opts.deadline = WAIT;
    let cfg = BusConfig::builder().url(server.url()).build()?;
    let summary = run(cfg.clone(), &opts).await?;
    Ok(Swarm {
        summary,
        cfg,
        dir,
        _server: server,
    })
}

fn agent<'a>(c: &'a CorrelationSummary, saga: &str) -> Result<&'a AgentOutcome> {
    c.agent(saga)
        .with_context(|| format!("{saga} on {}", c.correlation))
}

fn reason(a: &AgentOutcome) -> &str {
    a.reason.as_deref().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cycle_is_detected_and_broken_and_the_swarm_gives_up_together() -> Result<()> {
    let s = swarm().await?;
    // One deadlock, among the coder, the tester and the docs writer.
    let c = &s.summary.cyclic;
    assert_eq!(c.correlation, CYCLIC_CORRELATION);
    assert_eq!(c.deadlocks.len(), 1, "{:#?}", c.deadlocks);
    let d = &c.deadlocks[0];
    let members: Vec<&str> = d.cycle.members.iter().map(|m| m.saga.as_str()).collect();
    assert_eq!(
        members,
        ["coder", "docs", "tester"],
        "the planner hangs off it"
    );
    for m in &d.cycle.members {
        assert_eq!(m.instance, CYCLIC_CORRELATION);
    }
    // The victim is the rule's: the youngest wait, ties broken by the greatest saga name.
    let victim = d.cycle.victim().context("a victim")?;
    assert_eq!(&d.victim, victim);
    assert_eq!(d.rule, VICTIM_RULE);
    let v = agent(c, &victim.saga)?;
    assert_eq!(v.status, SagaStatus::Compensated, "{v:?}");
    assert!(reason(v).starts_with("deadlock"), "{v:?}");
    // The others give up with it.
    for role in Role::ALL {
        let a = agent(c, role.name())?;
        assert!(a.status.is_terminal(), "{a:?}");
        assert_eq!(a.produced, None, "nobody could start: {a:?}");
        if a.saga != victim.saga {
            assert_eq!(a.status, SagaStatus::Compensated, "{a:?}");
            assert!(
                reason(a).starts_with(&format!("teammate {} failed: deadlock", victim.saga)),
                "{a:?}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_completes_and_nothing_is_detected() -> Result<()> {
    let s = swarm().await?;
    let a = &s.summary.acyclic;
    assert_eq!(a.correlation, ACYCLIC_CORRELATION);
    for role in Role::ALL {
        let o = agent(a, role.name())?;
        assert_eq!(o.status, SagaStatus::Completed, "{o:?}");
        assert_eq!(o.reason, None, "{o:?}");
        assert!(
            o.produced.is_some(),
            "every agent wrote its artifact: {o:?}"
        );
    }
    assert!(a.deadlocks.is_empty(), "{:#?}", a.deadlocks);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_tasks_replay_identically_from_the_log() -> Result<()> {
    let s = swarm().await?;
    let bus = Bus::connect(s.cfg.clone()).await?;
    let store = Store::open(s.dir.path())?;
    for corr in [CYCLIC_CORRELATION, ACYCLIC_CORRELATION] {
        for role in Role::ALL {
            let report = replay(
                &SwarmAgent::new(role),
                &bus,
                Some(&store),
                &SagaId::new(corr)?,
            )
            .await?;
            assert!(report.is_identical(), "{} on {corr}: {report}", role.name());
        }
    }
    Ok(())
}
