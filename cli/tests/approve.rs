//! `choreo approve` drives a release waiting at the approval gate.

use std::time::Duration;

use anyhow::{Context as _, Result};
use choreo::{BusConfig, EventType, NatsServer, Payload};
use choreo_example_release::{node, release_event, ReleaseOptions};
use choreo_services::ApprovalRequested;
use futures::StreamExt;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_and_deny_from_the_command_line() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let dir = tempfile::tempdir()?;
    let mut opts = ReleaseOptions::new(2, 1, dir.path().to_path_buf());
    opts.auto_approve = false;
    opts.approval_timeout = Duration::from_secs(120);
    opts.model = std::sync::Arc::new(choreo_example_release::scripted_model());
    let release = node(BusConfig::builder().url(server.url()).build()?, &opts).await?;
    let bus = release.bus().clone();
    let mut requests = bus
        .follow_events(
            &bus.subjects().type_filter(&ApprovalRequested::event_type()),
            true,
        )
        .await?;
    let (yes, no) = (release_event(0, "cli")?, release_event(1, "cli")?);
    bus.publish_all(&[yes.clone(), no.clone()]).await?;
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(30), requests.next())
            .await?
            .context("request")??;
    }
    let mut ends = bus
        .follow_events(
            &bus.filter_for(None, Some(&EventType::new(choreo::SAGA_COMPLETED)?)),
            true,
        )
        .await?;
    let mut rollbacks = bus
        .follow_events(
            &bus.subjects()
                .type_filter(&EventType::new("rollback.completed.v1")?),
            true,
        )
        .await?;

    let approve = |args: Vec<String>| async move {
        let out = Command::new(env!("CARGO_BIN_EXE_choreo"))
            .args(&args)
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok::<String, anyhow::Error>(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let url = server.url();
    let out = approve(vec![
        "approve".into(),
        yes.correlation.to_string(),
        "--by".into(),
        "alice".into(),
        "--nats".into(),
        url.clone(),
    ])
    .await?;
    assert!(
        out.starts_with(&format!("approved {} as alice", yes.correlation)),
        "{out}"
    );
    let out = approve(vec![
        "approve".into(),
        no.correlation.to_string(),
        "--deny".into(),
        "--reason".into(),
        "freeze".into(),
        "--nats".into(),
        url.clone(),
    ])
    .await?;
    assert!(out.starts_with("denied"), "{out}");

    let done = tokio::time::timeout(Duration::from_secs(30), ends.next())
        .await?
        .context("completed")??;
    assert_eq!(
        done.event?.correlation, yes.correlation,
        "the approved release deployed"
    );
    let rolled = tokio::time::timeout(Duration::from_secs(30), rollbacks.next())
        .await?
        .context("rollback")??;
    assert_eq!(
        rolled.event?.correlation, no.correlation,
        "the denied release rolled back"
    );
    let store = release.store().context("store")?.clone();
    release.shutdown().await?;
    let denied = store
        .get("release", no.correlation.as_str())?
        .context("record")?;
    assert!(
        denied
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("denied") && r.contains("freeze")),
        "{:?}",
        denied.reason
    );

    let none = Command::new(env!("CARGO_BIN_EXE_choreo"))
        .args(["approve", "nobody", "--nats", &url])
        .output()
        .await?;
    assert!(
        !none.status.success()
            && String::from_utf8_lossy(&none.stderr).contains("no approval request")
    );
    Ok(())
}
