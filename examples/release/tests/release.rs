//! The release example end to end: approvals, rollbacks, recorded decisions and replay.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use choreo::{replay, Bus, BusConfig, CorrelationId, NatsServer, SagaId, Store};
use choreo_example_release::{predict, run, scripted_model, Outcome, ReleaseOptions, ReleaseSaga};

async fn types(bus: &Bus, c: &str) -> Result<Vec<String>> {
    Ok(bus
        .history(&CorrelationId::new(c)?)
        .await?
        .into_iter()
        .filter_map(|s| s.event.ok().map(|e| e.ty.to_string()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_decide_deploy_or_rollback_and_replay_never_asks_the_model() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let dir = tempfile::tempdir()?;
    let model = Arc::new(scripted_model());
    let mut opts = ReleaseOptions::new(10, 7, dir.path().to_path_buf());
    opts.model = model.clone();
    // Long enough that every auto-approval beats it on a loaded machine; only the silent
    // approver times out (outcomes are asserted exactly).
    opts.approval_timeout = std::time::Duration::from_secs(4);
    let cfg = BusConfig::builder().url(server.url()).build()?;
    let summary = run(cfg.clone(), &opts, |_, _, _, _| {}).await?;
    for (c, o) in &summary.releases {
        let index: u32 = c.split('-').nth(1).context("release-<i>-<run>")?.parse()?;
        assert_eq!(*o, predict(&opts, index), "{c}");
    }
    let counts: BTreeMap<Outcome, usize> = summary.counts.clone();
    assert_eq!(
        counts,
        BTreeMap::from([
            (Outcome::Deployed, 6),
            (Outcome::Denied, 3),
            (Outcome::TimedOut, 1)
        ])
    );

    let bus = Bus::connect(cfg).await?;
    let first = |o: Outcome| {
        summary
            .releases
            .iter()
            .find(|(_, x)| *x == o)
            .map(|(c, _)| c.clone())
            .context("present")
    };
    let deployed = types(&bus, &first(Outcome::Deployed)?).await?;
    assert!(
        deployed.contains(&"deploy.completed.v1".into())
            && !deployed.iter().any(|t| t.starts_with("rollback")),
        "{deployed:?}"
    );
    for o in [Outcome::Denied, Outcome::TimedOut] {
        let t = types(&bus, &first(o)?).await?;
        let rollbacks = t
            .iter()
            .filter(|x| x.as_str() == "rollback.requested.v1")
            .count();
        assert_eq!(
            rollbacks, 1,
            "{o:?}: the staging deploy is rolled back once: {t:?}"
        );
        assert!(
            t.contains(&"rollback.completed.v1".into())
                && !t.contains(&"deploy.requested.v1".into()),
            "{t:?}"
        );
    }
    let timed_out = types(&bus, &first(Outcome::TimedOut)?).await?;
    assert!(timed_out.contains(&"choreo.saga.timed_out".into()));
    // Every model answer is on the log, before the effects it caused.
    let decisions = deployed
        .iter()
        .filter(|t| t.as_str() == "agent.decision.v1")
        .count();
    assert_eq!(
        decisions, 5,
        "planner, three executor runs, verifier: {deployed:?}"
    );

    // Replay every release from the log: identical, and the model is never asked again.
    let calls = model.calls();
    assert_eq!(calls, 50, "5 decisions x 10 releases");
    let store = Store::open(dir.path())?;
    let saga = ReleaseSaga {
        step_timeout: opts.step_timeout,
        approval_timeout: opts.approval_timeout,
    };
    for (c, _) in &summary.releases {
        let report = replay(&saga, &bus, Some(&store), &SagaId::new(c.as_str())?).await?;
        assert!(report.is_identical(), "{report}");
    }
    assert_eq!(model.calls(), calls, "replay read the recorded decisions");
    Ok(())
}
