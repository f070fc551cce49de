//! The operator commands (`events`, `trace`, `dlq`, `stats`, `replay`) end to end.
//! `sagas` and `partitions` are in `sagas.rs`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use choreo::{
    BusConfig, CorrelationId, Event, EventType, NatsServer, Node, Payload, ReactContext,
    ReactError, Reactor, Saga, SagaContext, SagaError,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

#[derive(Serialize, Deserialize)]
struct Ping {
    n: u32,
}
impl Payload for Ping {
    const TYPE: &'static str = "ping.v1";
}
#[derive(Serialize, Deserialize)]
struct Pong {
    n: u32,
}
impl Payload for Pong {
    const TYPE: &'static str = "pong.v1";
}

/// Answers pings; rejects n = 13.
struct Ponger;
impl Reactor for Ponger {
    fn name(&self) -> &str {
        "ponger"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![Ping::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![Pong::event_type()]
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let p: Ping = e.decode()?;
        if p.n == 13 {
            return Err(ReactError::permanent("unlucky number"));
        }
        ctx.emit(&Pong { n: p.n })?;
        Ok(())
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Count {
    pongs: u32,
}

/// Completes after two pongs; the `changed` variant after one.
struct Rally {
    changed: bool,
}
impl Saga for Rally {
    type State = Count;
    fn name(&self) -> &str {
        "rally"
    }
    fn starts_on(&self) -> Vec<EventType> {
        vec![Ping::event_type()]
    }
    fn continues_on(&self) -> Vec<EventType> {
        vec![Pong::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![]
    }
    fn handle(&self, s: &mut Count, e: &Event, ctx: &mut SagaContext) -> Result<(), SagaError> {
        if e.ty == Pong::event_type() {
            s.pongs += 1;
            if s.pongs == 2 || self.changed {
                ctx.complete();
            }
        }
        Ok(())
    }
    fn on_timeout(&self, _: &mut Count, _: &str, _: &mut SagaContext) -> Result<(), SagaError> {
        Ok(())
    }
}

async fn choreo(args: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_choreo"))
        .args(args)
        .env_remove("CHOREO_NATS_URL")
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

struct Setup {
    server: NatsServer,
    /// The (stopped) node's data directory, kept for the test's duration.
    _data: tempfile::TempDir,
}

/// A server with a finished rally ("rally-1": ping 1, ping 2) and a dead letter (ping 13).
async fn setup() -> Result<Setup> {
    let server = NatsServer::start_temp().await?;
    let data = tempfile::tempdir()?;
    let node = Node::builder()
        .bus(BusConfig::builder().url(server.url()).build()?)
        .data_dir(data.path())
        .register::<Ping>()
        .reactor(Ponger)
        .saga(Rally { changed: false })
        .build()?
        .start()
        .await?;
    let bus = node.bus().clone();
    let done = bus
        .subjects()
        .type_filter(&EventType::new(choreo::SAGA_COMPLETED)?);
    let mut completed = bus.follow_events(&done, true).await?;
    let mut letters = bus.follow_dead_letters(true).await?;
    let c = CorrelationId::new("rally-1")?;
    for n in [1, 2] {
        bus.publish(&Event::root("urn:t", c.clone(), &Ping { n })?)
            .await?;
    }
    bus.publish(&Event::root(
        "urn:t",
        CorrelationId::new("bad-1")?,
        &Ping { n: 13 },
    )?)
    .await?;
    tokio::time::timeout(Duration::from_secs(30), completed.next())
        .await?
        .context("done")??;
    tokio::time::timeout(Duration::from_secs(30), letters.next())
        .await?
        .context("dlq")??;
    node.shutdown().await?;
    Ok(Setup {
        server,
        _data: data,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_trace_stats_and_dlq_commands() -> Result<()> {
    let s = setup().await?;
    let url = s.server.url();
    let nats = ["--nats", url.as_str()];

    let (ok, out, err) = choreo(&[&["events", "rally-1"][..], &nats].concat()).await?;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].trim_start().starts_with("SEQ"), "{out}");
    assert!(
        out.contains("choreo.saga.started") && out.contains("pong.v1"),
        "{out}"
    );
    let (_, json, _) = choreo(&[&["events", "rally-1", "--json"][..], &nats].concat()).await?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    let seqs: Vec<u64> = v["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(
        seqs.len() >= 5 && seqs.windows(2).all(|w| w[0] < w[1]),
        "{seqs:?}"
    );

    let (ok, tree, _) = choreo(&[&["trace", "rally-1"][..], &nats].concat()).await?;
    assert!(
        ok && tree.contains("└─ pong.v1") && tree.contains("[saga]"),
        "{tree}"
    );
    let (_, dot, _) =
        choreo(&[&["trace", "rally-1", "--format", "dot"][..], &nats].concat()).await?;
    assert!(dot.starts_with("digraph") && dot.contains(" -> "), "{dot}");
    let (_, mermaid, _) =
        choreo(&[&["trace", "rally-1", "--format", "mermaid"][..], &nats].concat()).await?;
    assert!(
        mermaid.starts_with("flowchart TD") && mermaid.contains(" --> "),
        "{mermaid}"
    );
    let (ok, _, err) = choreo(&[&["events", "nobody"][..], &nats].concat()).await?;
    assert!(
        !ok && err.contains("no events for correlation nobody"),
        "{err}"
    );

    let (ok, stats, err) = choreo(&[&["stats", "--json"][..], &nats].concat()).await?;
    assert!(ok, "{err}");
    let st: serde_json::Value = serde_json::from_str(&stats)?;
    assert_eq!(st["dead_letters"]["rejected"]["ponger"], 1);
    let names: Vec<&str> = st["consumers"]
        .as_array()
        .context("consumers")?
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains(&"ponger"), "{names:?}");
    assert!(st["events"]["messages"].as_u64().is_some_and(|m| m >= 6));
    // One row per saga: its instances by status, its partitions collapsed.
    let rally = &st["sagas"]["rally"];
    let instances: u64 = [
        "running",
        "compensating",
        "faulted",
        "completed",
        "compensated",
    ]
    .iter()
    .filter_map(|k| rally[*k].as_u64())
    .sum();
    assert!(
        instances >= 1 && rally["partitions"].as_u64() >= Some(1),
        "{st}"
    );
    assert_eq!(st["partitions"]["count"], 16, "{st}");
    let (ok, text, err) = choreo(&[&["stats"][..], &nats].concat()).await?;
    assert!(ok, "{err}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("SAGA ") && l.contains("COMPENSATED"))
            && text.lines().any(|l| l.starts_with("rally "))
            && text.contains("16 partition(s)"),
        "{text}"
    );

    let (ok, list, _) = choreo(&[&["dlq", "list", "--json"][..], &nats].concat()).await?;
    assert!(ok);
    let l: serde_json::Value = serde_json::from_str(&list)?;
    assert_eq!(
        l["counts"][0],
        serde_json::json!({"reason": "rejected", "actor": "ponger", "count": 1})
    );
    let seq = l["entries"][0]["seq"].as_u64().context("seq")?.to_string();
    assert_eq!(l["entries"][0]["data"], serde_json::json!({"n": 13}));
    let (ok, show, _) = choreo(&[&["dlq", "show", seq.as_str()][..], &nats].concat()).await?;
    assert!(ok && show.contains("unlucky number"), "{show}");

    let (ok, _, err) = choreo(&[&["dlq", "purge", seq.as_str()][..], &nats].concat()).await?;
    assert!(!ok && err.contains("--yes"), "{err}");
    let (ok, out, err) = choreo(&[&["dlq", "redrive", seq.as_str()][..], &nats].concat()).await?;
    assert!(ok && out.contains("to ponger"), "{out}{err}");
    let (_, events, _) = choreo(&[&["events", "bad-1"][..], &nats].concat()).await?;
    assert!(
        events.contains(&format!("(redriven from DLQ #{seq})")),
        "{events}"
    );
    // A node sees the redriven copy; still unlucky: back in the DLQ. Then purge everything.
    let bus = choreo::Bus::connect(BusConfig::builder().url(url.clone()).build()?).await?;
    assert!(
        bus.dead_letters_of_actor(None).await?.is_empty(),
        "redrive removed the entry"
    );
    let mut letters = bus.follow_dead_letters(true).await?;
    let node = Node::builder()
        .bus(BusConfig::builder().url(url.clone()).build()?)
        .reactor(Ponger)
        .build()?
        .start()
        .await?;
    let back = tokio::time::timeout(Duration::from_secs(30), letters.next())
        .await?
        .context("back in the DLQ")??;
    assert_eq!(
        (back.actor.as_str(), back.reason.as_str()),
        ("ponger", "rejected")
    );
    node.shutdown().await?;
    let (ok, out, _) = choreo(&[&["dlq", "purge", "--all", "--yes"][..], &nats].concat()).await?;
    assert!(ok && out.contains("purged 1"), "{out}");
    assert!(bus.dead_letters_of_actor(None).await?.is_empty());
    Ok(())
}

#[test]
fn replay_runs_registered_sagas_and_fails_on_divergence() -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let s = rt.block_on(setup())?;
    let url = s.server.url();
    // No node runs: the record replay compares with comes from the changelog.
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["choreo", "replay", "rally", "rally-1", "--nats", &url]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let code = |c: ExitCode| format!("{c:?}");
    assert_eq!(
        code(
            choreo_ops::Operator::new()
                .saga(Rally { changed: false })
                .main_from(args(&[]))
        ),
        code(ExitCode::SUCCESS)
    );
    assert_eq!(
        code(
            choreo_ops::Operator::new()
                .saga(Rally { changed: true })
                .main_from(args(&[]))
        ),
        code(ExitCode::FAILURE)
    );
    // The shipped binary has no such saga: a clear refusal.
    let out = rt.block_on(choreo(&["replay", "rally", "rally-1", "--nats", &url]))?;
    assert!(
        !out.0 && out.2.contains("not registered in this binary"),
        "{}",
        out.2
    );
    rt.block_on(async move { drop(s) });
    Ok(())
}
