//! The `choreo` binary, end to end, against real nats-servers.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use choreo::{Bus, BusConfig, NatsServer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(60);

fn choreo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_choreo"));
    c.env_remove("CHOREO_NATS_URL").kill_on_drop(true);
    c
}

/// Read lines from a child's stdout until one satisfies `pred`; returns every line read.
async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pred: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await? {
            let hit = pred(&line);
            seen.push(line);
            if hit {
                return Ok::<_, anyhow::Error>(());
            }
        }
        bail!("output ended before the expected line: {seen:?}")
    })
    .await
    .with_context(|| "timed out reading output".to_owned())??;
    Ok(seen)
}

#[tokio::test]
async fn demo_starts_its_own_server_and_exits_zero() -> Result<()> {
    let out = choreo().arg("demo").output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("(temporary, stopped at the end)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("shipped") && stdout.contains("out of stock"),
        "{stdout}"
    );
    assert!(
        stdout.contains("dead-lettered by payment [rejected]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("└─ stock.reserved.v1"),
        "causal chain printed: {stdout}"
    );
    Ok(())
}

#[tokio::test]
async fn demo_runs_against_a_given_server() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let out = choreo()
        .args(["demo", "--nats", &server.url(), "--orders", "3"])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("temporary"), "{stdout}");
    // The events are on the given server's log.
    let bus = Bus::connect(BusConfig::builder().url(server.url()).build()?).await?;
    let all = bus.read_events(&bus.subjects().all_events()).await?;
    assert!(
        all.len() >= 6,
        "3 orders made at least 6 events, got {}",
        all.len()
    );
    Ok(())
}

#[tokio::test]
async fn publish_then_tail_shows_the_event() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let url = server.url();
    let out = choreo()
        .args([
            "publish",
            "--nats",
            &url,
            "--type",
            "note.added.v1",
            "--correlation",
            "cli-1",
        ])
        .args(["--data", r#"{"text":"hello","n":3}"#])
        .output()
        .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("published note.added.v1"));

    let mut tail = choreo()
        .args([
            "tail",
            "--nats",
            &url,
            "--correlation",
            "cli-1",
            "--from-start",
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = tail.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let seen = read_until(&mut lines, |l| l.contains("note.added.v1")).await?;
    let line = seen.last().context("a line")?;
    assert!(
        line.contains("cli-1") && line.contains("/cli") && line.trim_end().ends_with('0'),
        "{line}"
    );
    tail.kill().await?;

    // The data was stored as msgpack.
    let bus = Bus::connect(BusConfig::builder().url(url).build()?).await?;
    let history = bus.history(&choreo::CorrelationId::new("cli-1")?).await?;
    let event = history[0].event.clone()?;
    let value: serde_json::Value = event.decode_as()?;
    assert_eq!(value, serde_json::json!({"text": "hello", "n": 3}));
    Ok(())
}

#[tokio::test]
async fn user_errors_are_one_line_without_panic() -> Result<()> {
    let cases: [&[&str]; 3] = [
        &["publish", "--type", "not a type", "--correlation", "c"],
        &[
            "publish",
            "--type",
            "a.v1",
            "--correlation",
            "c",
            "--data",
            "{oops",
        ],
        &[
            "publish",
            "--type",
            "a.v1",
            "--correlation",
            "c",
            "--nats",
            "nats://127.0.0.1:1",
        ],
    ];
    for args in cases {
        let out = choreo().args(args).output().await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    Ok(())
}

#[tokio::test]
async fn dev_serves_until_interrupted() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = choreo::free_port()?;
    let mut dev = choreo()
        .args(["dev", "--port", &port.to_string(), "--store-dir"])
        .arg(dir.path().join("nats"))
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = dev.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let seen = read_until(&mut lines, |l| l.starts_with("URL: ")).await?;
    let url = format!("nats://127.0.0.1:{port}");
    assert!(seen.iter().any(|l| l == &format!("URL: {url}")), "{seen:?}");
    let bus = Bus::connect(BusConfig::builder().url(url.clone()).build()?).await?;
    bus.jetstream().get_stream("CHOREO_EVENTS").await?;
    bus.jetstream().get_stream("CHOREO_DLQ").await?;

    let pid = dev.id().context("pid")?;
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await?;
    assert!(status.success());
    let exit = tokio::time::timeout(WAIT, dev.wait()).await??;
    assert!(exit.success(), "{exit}");
    // The server is gone with it.
    let gone = Bus::connect(
        BusConfig::builder()
            .url(url)
            .request_timeout(Duration::from_secs(1))
            .build()?,
    )
    .await;
    assert!(gone.is_err());
    Ok(())
}
