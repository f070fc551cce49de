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
    let out = choreo().args(["demo", "--trips", "12"]).output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("the travel example, 12 trips, seed 7") && stdout.contains("(temporary)"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("/12] trip-").count(),
        12,
        "progress for every trip: {stdout}"
    );
    assert!(
        stdout.contains("summary:") && stdout.contains("completed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("causal tree of trip-") && stdout.contains("[saga]"),
        "{stdout}"
    );
    assert!(stdout.contains("choreo replay trip "), "{stdout}");
    Ok(())
}

#[tokio::test]
async fn demo_on_a_given_server_keeps_a_store_the_operator_commands_can_read() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("store");
    let data_arg = data.to_str().context("utf-8")?;
    let run = |seed: &'static str| {
        let url = server.url();
        let data_arg = data_arg.to_owned();
        async move {
            let out = choreo()
                .args([
                    "demo",
                    "--nats",
                    &url,
                    "--trips",
                    "8",
                    "--seed",
                    seed,
                    "--json",
                    "--data-dir",
                    &data_arg,
                ])
                .output()
                .await?;
            anyhow::ensure!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok::<serde_json::Value, anyhow::Error>(serde_json::from_slice(&out.stdout)?)
        }
    };
    let first = run("3").await?;
    let second = run("3").await?;
    assert_eq!(
        first["counts"], second["counts"],
        "same seed, same outcome counts"
    );
    let total: u64 = first["counts"]
        .as_object()
        .context("counts")?
        .values()
        .filter_map(|v| v.as_u64())
        .sum();
    assert_eq!(total, 8);

    // The changelog holds both runs: list it, and replay a trip with the shipped binary.
    let list = choreo()
        .args([
            "sagas",
            "list",
            "--saga",
            "trip",
            "--json",
            "--nats",
            &server.url(),
        ])
        .output()
        .await?;
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout)?;
    assert_eq!(
        rows.as_array().map(Vec::len),
        Some(16),
        "two runs of 8 trips"
    );
    let some_trip = first["correlations"]
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(|v| v[0].as_str())
        .context("a correlation")?
        .to_owned();
    let replay = choreo()
        .args(["replay", "trip", &some_trip, "--nats", &server.url()])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.status.success() && text.starts_with("identical"),
        "{text}{}",
        String::from_utf8_lossy(&replay.stderr)
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
async fn operator_actions_on_an_unknown_instance_say_so() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    Bus::connect(BusConfig::builder().url(server.url()).build()?).await?;
    for action in ["compensate", "retry"] {
        let out = choreo()
            .args(["sagas", action, "trip", "nosuch", "--nats", &server.url()])
            .output()
            .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{action} should fail");
        assert!(
            stderr.contains("no instance nosuch of saga trip in the changelog"),
            "{action}: {stderr}"
        );
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

#[tokio::test]
async fn a_config_file_supplies_defaults_and_a_bad_one_is_a_clear_error() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    Bus::connect(BusConfig::builder().url(server.url()).build()?).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("choreo.toml"),
        format!("nats = \"{}\"\npartitions = 16\n", server.url()),
    )?;
    let out = choreo()
        .args(["stats", "--json"])
        .current_dir(dir.path())
        .output()
        .await?;
    assert!(
        out.status.success(),
        "./choreo.toml is read: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let elsewhere = tempfile::tempdir()?;
    let cfg = dir.path().join("choreo.toml");
    let out = choreo()
        .args(["--config", cfg.to_str().context("utf-8")?, "stats"])
        .current_dir(elsewhere.path())
        .output()
        .await?;
    assert!(
        out.status.success(),
        "--config FILE: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(elsewhere.path().join("choreo.toml"), "natz = 1\n")?;
    let out = choreo()
        .args(["stats"])
        .current_dir(elsewhere.path())
        .output()
        .await?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.starts_with("error: choreo.toml is not a valid choreo config"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_closed_reader_ends_a_command_quietly() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let url = server.url();
    let publish = || {
        let url = url.clone();
        async move {
            let out = choreo()
                .args(["publish", "--nats", &url, "--type", "note.added.v1"])
                .args(["--correlation", "pipe-1", "--data", r#"{"n":1}"#])
                .output()
                .await?;
            anyhow::ensure!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok::<_, anyhow::Error>(())
        }
    };
    publish().await?;
    // `choreo tail | head -1`: the reader goes away after the first line.
    let mut tail = choreo()
        .args(["tail", "--nats", &url, "--from-start"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = tail.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    read_until(&mut lines, |l| l.contains("note.added.v1")).await?;
    drop(lines);
    // The next line written meets the closed pipe.
    publish().await?;
    let out = tokio::time::timeout(WAIT, tail.wait_with_output())
        .await
        .context("tail did not end after its reader closed")??;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
    Ok(())
}

#[tokio::test]
async fn read_commands_on_an_unused_namespace_say_so_and_create_nothing() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let url = server.url();
    let reads: [&[&str]; 10] = [
        &["events", "c-1"],
        &["trace", "c-1"],
        &["sagas", "list"],
        &["sagas", "show", "trip", "c-1"],
        &["partitions"],
        &["dlq", "list"],
        &["stats"],
        &["stalls"],
        &["replay", "trip", "c-1"],
        &["tail"],
    ];
    for args in reads {
        let out = tokio::time::timeout(
            WAIT,
            choreo()
                .args(args)
                .args(["--nats", &url, "--namespace", "other"])
                .output(),
        )
        .await
        .with_context(|| format!("{args:?} did not end"))??;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            err.starts_with("error: namespace \"other\" has no choreo log at")
                && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // Nothing was created: no stream, so no KV bucket either (buckets are streams).
    let client = async_nats::connect(&url).await?;
    let js = async_nats::jetstream::new(client);
    let account = js.query_account().await?;
    assert_eq!((account.streams, account.consumers), (0, 0), "{account:?}");
    Ok(())
}

#[tokio::test]
async fn colour_only_on_a_terminal_or_when_forced_and_never_with_no_color() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let url = server.url();
    Bus::connect(BusConfig::builder().url(url.clone()).build()?).await?;
    let partitions = |env: &'static [(&'static str, &'static str)]| {
        let url = url.clone();
        async move {
            let mut c = choreo();
            c.args(["partitions", "--nats", &url])
                .env_remove("NO_COLOR")
                .env_remove("CLICOLOR_FORCE")
                .envs(env.iter().copied());
            let out = c.output().await?;
            anyhow::ensure!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok::<_, anyhow::Error>(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let piped = partitions(&[]).await?;
    assert!(
        piped.starts_with("PARTITION") && !piped.contains('\x1b'),
        "{piped:?}"
    );
    let forced = partitions(&[("CLICOLOR_FORCE", "1")]).await?;
    assert!(forced.starts_with("\x1b[1mPARTITION"), "{forced:?}");
    let refused = partitions(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).await?;
    assert_eq!(refused, piped, "NO_COLOR wins");
    Ok(())
}

#[tokio::test]
async fn tail_deletes_its_consumer_when_it_ends() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let url = server.url();
    let bus = Bus::connect(BusConfig::builder().url(url.clone()).build()?).await?;
    let events = bus.config().events_stream();
    let consumers = || {
        let js = bus.jetstream().clone();
        let events = events.clone();
        async move {
            let info = js.get_stream(&events).await?.info().await?.clone();
            Ok::<_, anyhow::Error>(info.state.consumer_count)
        }
    };
    let mut tail = choreo()
        .args(["tail", "--nats", &url])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = tail.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    // The header is printed once the follow's consumer exists.
    read_until(&mut lines, |l| l.starts_with("TIME")).await?;
    assert_eq!(consumers().await?, 1, "tail follows with one consumer");
    let pid = tail.id().context("tail's pid")?;
    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await?;
    assert!(kill.success());
    let status = tokio::time::timeout(WAIT, tail.wait())
        .await
        .context("tail did not end on SIGINT")??;
    assert!(status.success(), "{status:?}");
    assert_eq!(consumers().await?, 0, "tail left its consumer behind");
    Ok(())
}

#[tokio::test]
async fn trace_of_a_correlation_with_nothing_valid_says_so_and_fails() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let url = server.url();
    let bus = Bus::connect(BusConfig::builder().url(url.clone()).build()?).await?;
    // A message on the correlation's subject that is not a CloudEvent (no headers at all).
    let c = choreo::CorrelationId::new("bad-1")?;
    let p = choreo::schemas::partition_of(&c, bus.config().partitions());
    let subject = format!("{}.evt.{p}.bad-1.note.added.v1", bus.subjects().root());
    bus.jetstream()
        .publish(subject, "not an event".into())
        .await?
        .await?;
    for cmd in ["trace", "events"] {
        let out = choreo()
            .args([cmd, "bad-1", "--nats", &url])
            .output()
            .await?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd} should fail");
        assert!(
            err.starts_with("error: no valid events for correlation bad-1")
                && err.contains("1 stored message(s) that are not choreo events"),
            "{cmd}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    Ok(())
}

#[tokio::test]
async fn completions_cover_every_command_in_each_shell() -> Result<()> {
    for (shell, marker) in [
        ("bash", "_choreo()"),
        ("zsh", "#compdef choreo"),
        ("fish", "complete -c choreo"),
    ] {
        let out = choreo().args(["completions", shell]).output().await?;
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        for cmd in ["demo", "sagas", "stalls", "trace", "dlq", "completions"] {
            assert!(script.contains(cmd), "{shell} completes {cmd}");
        }
    }
    let out = choreo().args(["completions", "tcsh"]).output().await?;
    assert!(!out.status.success(), "an unknown shell is refused");
    Ok(())
}

#[tokio::test]
async fn dev_that_cannot_start_says_why_in_one_line() -> Result<()> {
    // Another process holds the port (a second `choreo dev`, say).
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port().to_string();
    let store = tempfile::tempdir()?;
    let out = tokio::time::timeout(
        WAIT,
        choreo()
            .args(["dev", "--port", &port, "--store-dir"])
            .arg(store.path())
            .output(),
    )
    .await??;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: nats-server could not start on port {port}:"
        )) && err.contains("address already in use"),
        "{err}"
    );
    Ok(())
}
