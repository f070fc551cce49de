//! Bad input from outside clients against a running travel node: each ends in the DLQ with its
//! own reason, the node keeps working, and a control trip in the same partition ends as the
//! seed predicts.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use choreo::{
    schemas::partition_of, Bus, BusConfig, CorrelationId, DeadLetter, Event, EventType, NatsServer,
    RunningNode, QUARANTINE_ACTOR,
};
use choreo_example_travel::{classify, node, predict, price, TravelOptions, TripRequested};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const WAIT: Duration = Duration::from_secs(90);
const SEED: u64 = 7;

struct Rig {
    _server: NatsServer,
    _dir: tempfile::TempDir,
    url: String,
    opts: TravelOptions,
    node: RunningNode,
    bus: Bus,
}

async fn rig() -> Result<Rig> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let server = NatsServer::start_temp().await?;
    let dir = tempfile::tempdir()?;
    let mut opts = TravelOptions::new(0, SEED, dir.path().to_path_buf());
    opts.step_timeout = Duration::from_secs(30);
    let cfg = BusConfig::builder().url(server.url()).build()?;
    let node = node(cfg, &opts).await?;
    let bus = node.bus().clone();
    Ok(Rig {
        url: server.url(),
        _server: server,
        _dir: dir,
        opts,
        node,
        bus,
    })
}

/// A correlation (`<prefix>-<n>`) that lands in `partition`.
fn in_partition(bus: &Bus, prefix: &str, partition: u16) -> Result<CorrelationId> {
    for n in 0..10_000 {
        let c = CorrelationId::new(format!("{prefix}-{n}"))?;
        if partition_of(&c, bus.config().partitions()) == partition {
            return Ok(c);
        }
    }
    bail!("no correlation for partition {partition}")
}

/// Run trip `index` under `correlation` and check it ends as the seed predicts.
async fn control_trip(rig: &Rig, correlation: CorrelationId, index: u32) -> Result<()> {
    let trip = Event::root(
        "/tests/poison",
        correlation.clone(),
        &TripRequested {
            trip: correlation.to_string(),
            index,
            seed: SEED,
            cents: price(SEED, index),
        },
    )?;
    let records = choreo::run_to_end(&rig.bus, None, "trip", &[trip], WAIT, |_, _, _| {}).await?;
    let record = records.first().context("the control trip ended")?;
    assert_eq!(
        classify(record),
        predict(&rig.opts, index),
        "control trip {correlation}"
    );
    Ok(())
}

/// The first dead letter matching `pred`, awaited on a follow of the DLQ.
async fn dead_letter(bus: &Bus, pred: impl Fn(&DeadLetter) -> bool) -> Result<DeadLetter> {
    let mut letters = bus.follow_dead_letters(true).await?;
    tokio::time::timeout(WAIT, async {
        while let Some(l) = letters.next().await {
            let l = l?;
            if pred(&l) {
                return Ok(l);
            }
        }
        bail!("the DLQ follow ended")
    })
    .await
    .context("timed out waiting for the dead letter")?
}

/// Publish with the raw protocol (`HPUB`), the way any client in any language can, and return
/// the stream sequence from JetStream's ack.
async fn raw_hpub(url: &str, subject: &str, header_block: &[u8], payload: &[u8]) -> Result<u64> {
    let addr = url.trim_start_matches("nats://");
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    read.read_line(&mut line).await?;
    if !line.starts_with("INFO") {
        bail!("expected INFO, got {line:?}");
    }
    let mut out = Vec::new();
    out.extend_from_slice(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}\r\n",
    );
    out.extend_from_slice(b"SUB _INBOX.raw 1\r\n");
    let total = header_block.len() + payload.len();
    out.extend_from_slice(
        format!(
            "HPUB {subject} _INBOX.raw {} {total}\r\n",
            header_block.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(header_block);
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    write.write_all(&out).await?;
    tokio::time::timeout(WAIT, async {
        loop {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                bail!("server closed the connection");
            }
            if line.starts_with("PING") {
                write.write_all(b"PONG\r\n").await?;
            } else if line.starts_with("-ERR") {
                bail!("server refused: {line}");
            } else if let Some(rest) = line.strip_prefix("MSG _INBOX.raw 1 ") {
                let n: usize = rest.trim().parse()?;
                let mut body = vec![0; n + 2];
                read.read_exact(&mut body).await?;
                let ack: serde_json::Value = serde_json::from_slice(&body[..n])?;
                return ack["seq"]
                    .as_u64()
                    .with_context(|| format!("not a publish ack: {ack}"));
            }
        }
    })
    .await
    .context("no publish ack")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_header_is_quarantined_and_its_partition_goes_on() -> Result<()> {
    let rig = rig().await?;
    let ty = EventType::new("trip.requested.v1")?;
    let poison = CorrelationId::new("poison-trip")?;
    let p = partition_of(&poison, rig.bus.config().partitions());
    let subject = rig.bus.subjects().event(p, &poison, &ty);
    // A header value that is not UTF-8: the server stores it, async-nats refuses to parse it.
    let seq = raw_hpub(
        &rig.url,
        &subject,
        b"NATS/1.0\r\nce-type: trip.requested.v1\r\nce-note: caf\xe9 \xff\r\n\r\n",
        b"not even msgpack",
    )
    .await?;
    // A trip in the same partition, published right behind it, ends as predicted.
    control_trip(&rig, in_partition(&rig.bus, "control", p)?, 0).await?;
    let letter = dead_letter(&rig.bus, |l| l.reason == "unreadable").await?;
    assert_eq!(letter.actor, QUARANTINE_ACTOR);
    assert_eq!(letter.original_sequence, seq);
    assert_eq!(letter.original_subject, subject);
    assert!(letter.detail.contains("not UTF-8"), "{}", letter.detail);
    assert!(
        letter.raw_headers.contains("ce-note: caf"),
        "{:?}",
        letter.raw_headers
    );
    assert_eq!(letter.body, b"not even msgpack");
    // Moved, not copied: the stream no longer holds it, so no consumer meets it again.
    let stream = rig
        .bus
        .jetstream()
        .get_stream(rig.bus.config().events_stream())
        .await?;
    assert!(
        stream.get_raw_message(seq).await.is_err(),
        "#{seq} is still in the events stream"
    );
    // The node still works: a second trip in that partition, after the quarantine.
    control_trip(&rig, in_partition(&rig.bus, "after", p)?, 1).await?;
    assert!(
        rig.node.health().iter().all(|h| h.alive),
        "{:?}",
        rig.node.health()
    );
    assert_eq!(
        rig.bus
            .dead_letters()
            .await?
            .iter()
            .filter(|l| l.reason == "unreadable")
            .count(),
        1,
        "quarantined once"
    );
    rig.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_to_copy_refers_to_its_original() -> Result<()> {
    let rig = rig().await?;
    let big = CorrelationId::new("big-trip")?;
    let p = partition_of(&big, rig.bus.config().partitions());
    let max = rig.bus.client().server_info().max_payload;
    // A valid envelope whose data is not a TripRequested, just under max_payload: it is dead-
    // lettered as a bad payload, and its copy plus the DLQ headers would not fit.
    let mut event = Event::root_raw(
        "/tests/poison",
        big.clone(),
        EventType::new("trip.requested.v1")?,
        Vec::new(),
    );
    let headers: usize = choreo::headers_of(&event)
        .iter()
        .map(|(n, vs)| {
            let n: &str = n.as_ref();
            vs.iter()
                .map(|v| n.len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum();
    event.data = vec![0xc1; max - headers - 64];
    let published = rig.bus.publish(&event).await?;
    control_trip(&rig, in_partition(&rig.bus, "control", p)?, 2).await?;
    let letter = dead_letter(&rig.bus, |l| {
        l.original_sequence == published.stream_sequence
    })
    .await?;
    assert_eq!(letter.reason, "bad_payload", "{}", letter.detail);
    assert!(letter.body_is_reference, "the body was copied");
    assert!(letter.body.is_empty());
    // Redriving it reads the original back from the events stream.
    let redriven = rig.bus.redrive(letter.dlq_sequence).await?;
    let stream = rig
        .bus
        .jetstream()
        .get_stream(rig.bus.config().events_stream())
        .await?;
    let copy = stream
        .get_raw_message(redriven.published.stream_sequence)
        .await?;
    assert_eq!(copy.payload.len(), event.data.len());
    rig.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_faults_its_trip_and_the_trip_compensates() -> Result<()> {
    let rig = rig().await?;
    let garbled = CorrelationId::new("garbled-trip")?;
    let index = 3;
    let trip = Event::root(
        "/tests/poison",
        garbled.clone(),
        &TripRequested {
            trip: garbled.to_string(),
            index,
            seed: SEED,
            cents: price(SEED, index),
        },
    )?;
    // An answer that is not a Booking, stored right behind the request (before the provider's).
    let answer = Event::root_raw(
        "/tests/poison",
        garbled.clone(),
        EventType::new("flight.booked.v1")?,
        vec![0xc1, 0x00, 0xff],
    );
    let filter = rig.bus.subjects().correlation_filter(
        partition_of(&garbled, rig.bus.config().partitions()),
        &garbled,
    );
    let mut follow = rig.bus.follow_events(&filter, false).await?;
    rig.bus.publish_all(&[trip, answer]).await?;
    tokio::time::timeout(WAIT, async {
        while let Some(e) = follow.next().await {
            if e?
                .event
                .is_ok_and(|e| e.ty.as_str() == choreo::SAGA_COMPENSATED)
            {
                return Ok(());
            }
        }
        bail!("the follow ended")
    })
    .await
    .context("the garbled trip never compensated")??;
    let record = choreo::Changelog::new(&rig.bus)
        .find("trip", garbled.as_str(), None)
        .await?
        .context("the trip's record")?;
    assert_eq!(record.status, choreo::SagaStatus::Compensated);
    let reason = record.reason.unwrap_or_default();
    assert!(reason.contains("compensated on fault"), "{reason}");
    let letter = dead_letter(&rig.bus, |l| l.original_subject.contains("garbled-trip")).await?;
    assert_eq!(letter.reason, "saga_faulted", "{}", letter.detail);
    // The flight it had asked for is cancelled once, whichever answer confirmed it.
    let types: Vec<String> = rig
        .bus
        .history(&garbled)
        .await?
        .into_iter()
        .filter_map(|s| s.event.ok().map(|e| e.ty.to_string()))
        .collect();
    let cancels = types.iter().filter(|t| *t == "flight.cancel.v1").count();
    assert_eq!(cancels, 1, "{types:?}");
    rig.node.shutdown().await?;
    Ok(())
}
