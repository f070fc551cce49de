//! A reactor process killed (SIGKILL) after publishing its outputs but before acking: after a
//! restart, the log holds each output exactly once.
//!
//! The child is this test binary re-executed with `--ignored --exact crash_child`; the
//! `failpoints` feature pauses it at `reactor-after-publish-before-ack`.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use choreo::{
    Bus, BusConfig, CorrelationId, Event, EventId, EventType, Node, Payload, ReactContext,
    ReactError, Reactor,
};
use common::{wait_events, Harness, WAIT};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

const ENV_URL: &str = "CHOREO_CRASH_CHILD_URL";
const JOBS: u32 = 3;

#[derive(Serialize, Deserialize)]
struct Job {
    n: u32,
}
impl Payload for Job {
    const TYPE: &'static str = "crash.job.v1";
}
#[derive(Serialize, Deserialize)]
struct Part {
    n: u32,
    half: u8,
}
impl Payload for Part {
    const TYPE: &'static str = "crash.part.v1";
}

/// Splits each job into two parts; tells the test which inputs it handled.
struct Splitter(Option<mpsc::UnboundedSender<EventId>>);

impl Reactor for Splitter {
    fn name(&self) -> &str {
        "splitter"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![Job::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![Part::event_type()]
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let job: Job = e.decode()?;
        ctx.emit(&Part { n: job.n, half: 0 })?;
        ctx.emit(&Part { n: job.n, half: 1 })?;
        if let Some(tx) = &self.0 {
            let _ = tx.send(e.id);
        }
        Ok(())
    }
}

fn node(cfg: BusConfig, tx: Option<mpsc::UnboundedSender<EventId>>) -> Result<Node> {
    Ok(Node::builder()
        .bus(cfg)
        .register::<Job>()
        .ack_wait(Duration::from_secs(2))
        .reactor(Splitter(tx))
        .build()?)
}

/// Child role only: runs a node that pauses after publishing outputs, before acking.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
#[ignore = "child process of crash_after_publish_before_ack_leaves_each_output_once"]
async fn crash_child() -> Result<()> {
    let Ok(url) = std::env::var(ENV_URL) else {
        bail!("{ENV_URL} is not set: this test is the child of another test");
    };
    fail::cfg("reactor-after-publish-before-ack", "pause").map_err(anyhow::Error::msg)?;
    let cfg = BusConfig::builder().url(url).partitions(4).build()?;
    let _node = node(cfg, None)?.start().await?;
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_publish_before_ack_leaves_each_output_once() -> Result<()> {
    let h = Harness::start().await?;
    let jobs: Vec<Event> = (0..JOBS)
        .map(|n| {
            Event::root(
                "urn:test",
                CorrelationId::new(format!("job-{n}"))?,
                &Job { n },
            )
            .map_err(Into::into)
        })
        .collect::<Result<_>>()?;
    h.bus.publish_all(&jobs).await?;

    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_URL, h.server.url())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawn child node")?;

    // Every output is on the log (JetStream acked the publishes); the child is paused before acking.
    let parts_filter = h.bus.subjects().type_filter(&Part::event_type());
    let first_run = wait_events(&h.bus, &parts_filter, (JOBS * 2) as usize).await?;
    if let Some(status) = child.try_wait()? {
        bail!("child exited early with {status}");
    }
    child.kill().await?; // SIGKILL
    let consumer_info = h
        .bus
        .jetstream()
        .get_stream("CHOREO_EVENTS")
        .await?
        .consumer_info("splitter")
        .await?;
    assert_eq!(
        consumer_info.num_ack_pending as u32, JOBS,
        "no input was acked before the kill"
    );

    // Restart: the inputs are redelivered after ack_wait and handled again.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let restarted = node(h.config()?, Some(tx))?.start().await?;
    let mut handled = BTreeSet::new();
    while handled.len() < JOBS as usize {
        let id = tokio::time::timeout(WAIT, rx.recv())
            .await
            .context("timed out waiting for redelivery")?
            .context("reactor dropped")?;
        handled.insert(id);
    }
    restarted.shutdown().await?; // publishes (duplicates) and acks what is in flight

    let all_parts = Bus::read_events(&h.bus, &parts_filter).await?;
    let ids: BTreeSet<EventId> = all_parts
        .iter()
        .map(|s| s.event.clone().map(|e| e.id))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        all_parts.len(),
        (JOBS * 2) as usize,
        "each output exactly once on the log"
    );
    assert_eq!(
        ids,
        first_run.iter().map(|e| e.id).collect(),
        "the re-run emitted the same ids"
    );
    let info = h
        .bus
        .jetstream()
        .get_stream("CHOREO_EVENTS")
        .await?
        .consumer_info("splitter")
        .await?;
    assert_eq!(
        (info.num_ack_pending, info.num_pending),
        (0, 0),
        "all inputs acked after restart"
    );
    Ok(())
}
