//! The services against a real nats-server.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use choreo::{
    Bus, BusConfig, CorrelationId, Event, EventType, NatsServer, Node, Payload, ReactContext,
    ReactError, Reactor, RetryPolicy,
};
use choreo_services::{
    dry_run_type, emit_dry_run, gated_type, intake_type, Applied, DryRun, Ledger, PolicyGate,
    Rejected, Rule, SchemaValidator, Validate, Vetoed,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Transfer {
    from: String,
    to: String,
    cents: i64,
}
impl Payload for Transfer {
    const TYPE: &'static str = "bank.transfer.v1";
}
impl Validate for Transfer {
    fn validate(&self) -> Vec<String> {
        let mut r = Vec::new();
        if self.cents <= 0 {
            r.push(format!("cents must be positive, got {}", self.cents));
        }
        if self.from == self.to {
            r.push("from and to must differ".into());
        }
        r
    }
}
#[derive(Debug, Serialize, Deserialize)]
struct Transferred {
    applied: bool,
}
impl Payload for Transferred {
    const TYPE: &'static str = "bank.transferred.v1";
}

/// Moves money once per command, through the ledger. Its first attempt of every command fails
/// *after* recording the effect, so the retry is a true duplicate delivery of the command.
struct Bank {
    ledger: Ledger,
    attempts: Arc<AtomicU32>,
    seen: Arc<AtomicU32>,
}
impl Reactor for Bank {
    fn name(&self) -> &str {
        "bank"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![Transfer::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![
            Transferred::event_type(),
            dry_run_type(&Transfer::event_type()).expect("valid"),
        ]
    }
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::builder()
            .initial_delay(Duration::from_millis(10))
            .build()
            .expect("valid")
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        let t: Transfer = e.decode()?;
        if ctx.dry_run() {
            return emit_dry_run(
                ctx,
                e,
                &format!("move {} cents from {} to {}", t.cents, t.from, t.to),
            );
        }
        let applied = self
            .ledger
            .apply(&ctx.idempotency_key(), "transfer", &e.data)
            .await
            .map_err(ReactError::transient)?;
        if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(ReactError::transient("connection reset after the effect"));
        }
        ctx.emit(&Transferred {
            applied: applied == Applied::Applied,
        })?;
        Ok(())
    }
}

async fn next_of(bus: &Bus, ty: &EventType) -> Result<Event> {
    let mut s = bus
        .follow_events(&bus.subjects().type_filter(ty), true)
        .await?;
    let got = tokio::time::timeout(Duration::from_secs(30), s.next())
        .await
        .map_err(|_| anyhow!("timed out waiting for {ty}"))?
        .ok_or_else(|| anyhow!("stream ended"))??;
    Ok(got.event?)
}

fn corr(s: &str) -> CorrelationId {
    CorrelationId::new(s).expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validator_rejects_with_reasons_and_the_consumer_never_sees_it() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let cfg = BusConfig::builder().url(server.url()).build()?;
    let bus = Bus::connect(cfg.clone()).await?;
    let seen = Arc::new(AtomicU32::new(0));
    let node = Node::builder()
        .bus(cfg)
        .reactor(SchemaValidator::new("bank-intake").check::<Transfer>())
        .reactor(Bank {
            ledger: Ledger::open(&bus, "LEDGER_V").await?,
            attempts: Arc::new(AtomicU32::new(1)),
            seen: seen.clone(),
        })
        .build()?
        .start()
        .await?;
    let intake = intake_type(&Transfer::event_type())?;
    let bad = choreo::schemas::encode_data(&Transfer {
        from: "a".into(),
        to: "a".into(),
        cents: -5,
    })?;
    bus.publish(&Event::root_raw(
        "urn:t",
        corr("v-bad"),
        intake.clone(),
        bad,
    ))
    .await?;
    let good = choreo::schemas::encode_data(&Transfer {
        from: "a".into(),
        to: "b".into(),
        cents: 5,
    })?;
    bus.publish(&Event::root_raw("urn:t", corr("v-good"), intake, good))
        .await?;

    let rejected = next_of(&bus, &EventType::new("bank.transfer.v1.rejected")?).await?;
    let r: Rejected = rejected.decode_as()?;
    assert_eq!(rejected.correlation.as_str(), "v-bad");
    assert_eq!(
        r.reasons,
        ["cents must be positive, got -5", "from and to must differ"]
    );
    next_of(&bus, &Transferred::event_type()).await?; // the good one went through
    let metrics = node.metrics().clone();
    node.shutdown().await?;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the bank saw only the valid transfer"
    );
    assert_eq!(metrics.snapshot("bank").handled, 1);
    let bad_history = bus.history(&corr("v-bad")).await?;
    assert!(bad_history.iter().all(|s| s
        .event
        .as_ref()
        .map(|e| e.ty != Transfer::event_type())
        .unwrap_or(true)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_delivered_twice_applies_its_effect_once() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let cfg = BusConfig::builder().url(server.url()).build()?;
    let bus = Bus::connect(cfg.clone()).await?;
    let ledger = Ledger::open(&bus, "LEDGER_T").await?;
    let seen = Arc::new(AtomicU32::new(0));
    let node = Node::builder()
        .bus(cfg)
        .reactor(Bank {
            ledger: ledger.clone(),
            attempts: Arc::new(AtomicU32::new(0)),
            seen: seen.clone(),
        })
        .build()?
        .start()
        .await?;
    bus.publish(&Event::root(
        "urn:t",
        corr("l-1"),
        &Transfer {
            from: "a".into(),
            to: "b".into(),
            cents: 7,
        },
    )?)
    .await?;
    let done = next_of(&bus, &Transferred::event_type()).await?;
    node.shutdown().await?;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "delivered to the handler twice"
    );
    assert!(
        !done.decode::<Transferred>()?.applied,
        "the second delivery found it already applied"
    );
    assert_eq!(ledger.len().await?, 1, "one effect recorded");
    // The API directly.
    assert_eq!(ledger.apply("k", "x", b"1").await?, Applied::Applied);
    assert!(
        matches!(ledger.apply("k", "y", b"2").await?, Applied::AlreadyApplied(e) if e.effect == "x")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_records_no_effect_and_reports_what_it_would_do() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let cfg = BusConfig::builder().url(server.url()).build()?;
    let bus = Bus::connect(cfg.clone()).await?;
    let ledger = Ledger::open(&bus, "LEDGER_D").await?;
    let node = Node::builder()
        .bus(cfg)
        .dry_run(true)
        .reactor(Bank {
            ledger: ledger.clone(),
            attempts: Arc::new(AtomicU32::new(0)),
            seen: Arc::new(AtomicU32::new(0)),
        })
        .build()?
        .start()
        .await?;
    bus.publish(&Event::root(
        "urn:t",
        corr("d-1"),
        &Transfer {
            from: "a".into(),
            to: "b".into(),
            cents: 9,
        },
    )?)
    .await?;
    let dry = next_of(&bus, &dry_run_type(&Transfer::event_type())?).await?;
    node.shutdown().await?;
    let d: DryRun = dry.decode_as()?;
    assert_eq!(
        (d.service.as_str(), d.would.as_str()),
        ("bank", "move 9 cents from a to b")
    );
    assert!(ledger.is_empty().await?, "no effect recorded in dry-run");
    let types: BTreeSet<String> = bus
        .history(&corr("d-1"))
        .await?
        .into_iter()
        .filter_map(|s| s.event.ok().map(|e| e.ty.to_string()))
        .collect();
    assert!(!types.contains("bank.transferred.v1"), "{types:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_gate_forwards_or_vetoes() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let cfg = BusConfig::builder().url(server.url()).build()?;
    let bus = Bus::connect(cfg.clone()).await?;
    let gate = PolicyGate::new("bank-policy").policy(
        Transfer::event_type(),
        vec![
            (
                "limit".into(),
                Rule::MaxAmount {
                    field: "cents".into(),
                    max: 1000.0,
                },
            ),
            (
                "sanctions".into(),
                Rule::Forbidden {
                    field: "to".into(),
                    values: vec!["mallory".into()],
                },
            ),
        ],
    )?;
    let node = Node::builder()
        .bus(cfg)
        .reactor(gate)
        .build()?
        .start()
        .await?;
    let gated = gated_type(&Transfer::event_type())?;
    let data = |to: &str, cents| {
        choreo::schemas::encode_data(&Transfer {
            from: "a".into(),
            to: to.into(),
            cents,
        })
    };
    bus.publish(&Event::root_raw(
        "urn:t",
        corr("p-ok"),
        gated.clone(),
        data("bob", 10)?,
    ))
    .await?;
    bus.publish(&Event::root_raw(
        "urn:t",
        corr("p-bad"),
        gated,
        data("mallory", 10)?,
    ))
    .await?;
    let passed = next_of(&bus, &Transfer::event_type()).await?;
    let vetoed = next_of(&bus, &Vetoed::event_type()).await?;
    node.shutdown().await?;
    assert_eq!(passed.correlation.as_str(), "p-ok");
    assert_eq!(vetoed.correlation.as_str(), "p-bad");
    let v: Vetoed = vetoed.decode()?;
    assert_eq!(
        (v.rule.as_str(), v.command.as_str()),
        ("sanctions", "bank.transfer.v1")
    );
    Ok(())
}
