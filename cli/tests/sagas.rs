//! `choreo sagas list/show` read a node's sled store, and refuse clearly while the node runs.

use std::time::Duration;

use anyhow::{Context as _, Result};
use choreo::{
    BusConfig, CorrelationId, Event, EventType, NatsServer, Node, Payload, Saga, SagaContext,
    SagaError,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

#[derive(Serialize, Deserialize)]
struct Hello {
    who: String,
}
impl Payload for Hello {
    const TYPE: &'static str = "hello.v1";
}
#[derive(Serialize, Deserialize)]
struct Bye;
impl Payload for Bye {
    const TYPE: &'static str = "bye.v1";
}
#[derive(Serialize, Deserialize)]
struct Undo {
    who: String,
}
impl Payload for Undo {
    const TYPE: &'static str = "hello.undo.v1";
}

#[derive(Default, Serialize, Deserialize)]
struct Greeting {
    who: String,
    greeted: u32,
}

/// Greets, waits for a bye (reminder timer meanwhile), completes.
struct Greeter;
impl Saga for Greeter {
    type State = Greeting;
    fn name(&self) -> &str {
        "greeter"
    }
    fn starts_on(&self) -> Vec<EventType> {
        vec![Hello::event_type()]
    }
    fn continues_on(&self) -> Vec<EventType> {
        vec![Bye::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![Undo::event_type()]
    }
    fn handle(&self, s: &mut Greeting, e: &Event, ctx: &mut SagaContext) -> Result<(), SagaError> {
        if e.ty == Hello::event_type() {
            s.who = e.decode::<Hello>()?.who;
            s.greeted += 1;
            ctx.push_compensation(&Undo { who: s.who.clone() })?;
            ctx.schedule("remind", Duration::from_secs(3600));
            ctx.awaits(Bye::event_type());
        } else {
            ctx.complete();
        }
        Ok(())
    }
    fn on_timeout(&self, _: &mut Greeting, _: &str, _: &mut SagaContext) -> Result<(), SagaError> {
        Ok(())
    }
}

fn choreo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_choreo"));
    c.kill_on_drop(true);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_show_read_the_store_and_refuse_while_locked() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let node = Node::builder()
        .bus(BusConfig::builder().url(server.url()).build()?)
        .data_dir(&data)
        .saga(Greeter)
        .build()?
        .start()
        .await?;
    let bus = node.bus().clone();
    let done = bus
        .subjects()
        .type_filter(&EventType::new(choreo::SAGA_COMPLETED)?);
    let mut completed = bus.follow_events(&done, true).await?;
    let a = CorrelationId::new("g-1")?;
    let b = CorrelationId::new("g-2")?;
    bus.publish(&Event::root(
        "urn:t",
        a.clone(),
        &Hello { who: "ada".into() },
    )?)
    .await?;
    bus.publish(&Event::root("urn:t", b, &Hello { who: "bob".into() })?)
        .await?;
    bus.publish(&Event::root("urn:t", a, &Bye)?).await?;
    tokio::time::timeout(Duration::from_secs(30), completed.next())
        .await
        .context("g-1 completes")?
        .context("stream")??;

    // While the node holds the store: a clear refusal, nothing touched.
    let locked = choreo()
        .args(["sagas", "list", "--data-dir"])
        .arg(&data)
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&locked.stderr);
    assert!(!locked.status.success());
    assert!(stderr.contains("locked by another process"), "{stderr}");
    let store = node.store().context("store")?.clone();
    node.shutdown().await?;
    drop(store);

    let list = choreo()
        .args(["sagas", "list", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .await?;
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout)?;
    let statuses: Vec<(&str, &str)> = rows
        .as_array()
        .context("array")?
        .iter()
        .map(|r| {
            (
                r["instance"].as_str().unwrap_or(""),
                r["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(statuses, [("g-1", "completed"), ("g-2", "running")]);

    let running = choreo()
        .args(["sagas", "list", "--status", "running", "--data-dir"])
        .arg(&data)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&running.stdout);
    assert!(
        text.contains("g-2") && !text.contains("g-1") && text.contains("1 instance(s)"),
        "{text}"
    );

    let show = choreo()
        .args(["sagas", "show", "greeter", "g-2", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .await?;
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    let d: serde_json::Value = serde_json::from_slice(&show.stdout)?;
    assert_eq!(d["state"], serde_json::json!({"who": "bob", "greeted": 1}));
    assert_eq!(d["status"], "running");
    assert_eq!(d["timers"][0]["name"], "remind");
    assert_eq!(d["compensations"][0]["type"], "hello.undo.v1");
    assert_eq!(d["compensations"][0]["data"]["who"], "bob");
    assert_eq!(d["awaits"], serde_json::json!(["bye.v1"]));
    assert!(d["last_applied_sequence"].as_u64().is_some_and(|s| s > 0));

    let human = choreo()
        .args(["sagas", "show", "greeter", "g-2", "--data-dir"])
        .arg(&data)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("remind") && text.contains("\"who\": \"bob\""),
        "{text}"
    );

    let missing = choreo()
        .args(["sagas", "show", "greeter", "nope", "--data-dir"])
        .arg(&data)
        .output()
        .await?;
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("error: no instance nope"));
    let nowhere = choreo()
        .args(["sagas", "list", "--data-dir"])
        .arg(dir.path().join("absent"))
        .output()
        .await?;
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("no saga store"));
    assert!(
        !dir.path().join("absent").exists(),
        "no store created by reading"
    );
    Ok(())
}
