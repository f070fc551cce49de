//! Shared test harness: a real nats-server per test, and waits that await events with a timeout.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod trip;

use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use choreo::{Bus, BusConfig, DeadLetter, Event, NatsServer, StoredEvent};
use futures::StreamExt;

pub const WAIT: Duration = Duration::from_secs(30);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub struct Harness {
    pub server: NatsServer,
    pub bus: Bus,
    pub partitions: u16,
}

impl Harness {
    pub async fn start() -> Result<Self> {
        Self::with_partitions(4).await
    }

    pub async fn with_partitions(partitions: u16) -> Result<Self> {
        init_tracing();
        let server = NatsServer::start_temp()
            .await
            .context("start nats-server")?;
        let bus = Bus::connect(Self::config_for(&server, partitions)?).await?;
        Ok(Self {
            server,
            bus,
            partitions,
        })
    }

    pub fn config_for(server: &NatsServer, partitions: u16) -> Result<BusConfig> {
        Ok(BusConfig::builder()
            .url(server.url())
            .partitions(partitions)
            .request_timeout(Duration::from_secs(5))
            .build()?)
    }

    pub fn config(&self) -> Result<BusConfig> {
        Self::config_for(&self.server, self.partitions)
    }
}

/// Await `n` events matching `filter` (from the start of the log), or fail after `WAIT`.
pub async fn wait_events(bus: &Bus, filter: &str, n: usize) -> Result<Vec<Event>> {
    let stream = bus.follow_events(filter, true).await?;
    let got: Vec<Result<StoredEvent, _>> = tokio::time::timeout(WAIT, stream.take(n).collect())
        .await
        .map_err(|_| anyhow!("timed out waiting for {n} events on {filter}"))?;
    got.into_iter().map(|r| Ok(r?.event?)).collect()
}

/// Await `n` dead letters (from the start of the DLQ), or fail after `WAIT`.
pub async fn wait_dead_letters(bus: &Bus, n: usize) -> Result<Vec<DeadLetter>> {
    let stream = bus.follow_dead_letters(true).await?;
    let got: Vec<Result<DeadLetter, _>> = tokio::time::timeout(WAIT, stream.take(n).collect())
        .await
        .map_err(|_| anyhow!("timed out waiting for {n} dead letters"))?;
    got.into_iter().map(|r| Ok(r?)).collect()
}

/// Await a condition on state (e.g. consumer info), checking every 50 ms, failing after `WAIT`.
pub async fn wait_until<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        tick.tick().await;
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(anyhow!("timed out waiting until {what}"));
        }
    }
}

/// Event types of a correlation's history, in log order.
pub async fn history_types(bus: &Bus, correlation: &str) -> Result<Vec<String>> {
    let c = choreo::CorrelationId::new(correlation)?;
    Ok(bus
        .history(&c)
        .await?
        .into_iter()
        .map(|s| s.event.map(|e| e.ty.to_string()))
        .collect::<Result<_, _>>()?)
}
