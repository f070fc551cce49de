//! `choreo demo`: a small order choreography, end to end.
//!
//! inventory reacts to `order.placed.v1` (reserves stock, or reports it unavailable);
//! payment reacts to `stock.reserved.v1` (fails transiently once for some orders, so retries
//! show; declines huge amounts permanently, which dead-letters the input); shipping reacts to
//! `payment.captured.v1`. Nobody calls anybody.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context as _};
use choreo::{
    CorrelationId, Event, EventId, EventType, NatsServer, Node, Payload, ReactContext, ReactError,
    Reactor, RetryPolicy,
};
use clap::Args;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::format;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// NATS URL; without it (and without CHOREO_NATS_URL) a temporary nats-server is started.
    #[arg(long, env = "CHOREO_NATS_URL")]
    nats: Option<String>,
    /// Number of orders.
    #[arg(long, default_value_t = 6)]
    orders: u32,
    /// Seconds to wait for every order to finish.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    order: u32,
    sku: String,
    qty: u32,
    cents: u64,
}
impl Payload for OrderPlaced {
    const TYPE: &'static str = "order.placed.v1";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StockReserved {
    order: u32,
    qty: u32,
    cents: u64,
}
impl Payload for StockReserved {
    const TYPE: &'static str = "stock.reserved.v1";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StockUnavailable {
    order: u32,
    wanted: u32,
    available: u32,
}
impl Payload for StockUnavailable {
    const TYPE: &'static str = "stock.unavailable.v1";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PaymentCaptured {
    order: u32,
    cents: u64,
}
impl Payload for PaymentCaptured {
    const TYPE: &'static str = "payment.captured.v1";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderShipped {
    order: u32,
}
impl Payload for OrderShipped {
    const TYPE: &'static str = "order.shipped.v1";
}

const STOCK_PER_ORDER: u32 = 5;
const CARD_LIMIT_CENTS: u64 = 100_000;

struct Inventory;
impl Reactor for Inventory {
    fn name(&self) -> &str {
        "inventory"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![OrderPlaced::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![StockReserved::event_type(), StockUnavailable::event_type()]
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let o: OrderPlaced = e.decode()?;
        if o.qty > STOCK_PER_ORDER {
            ctx.emit(&StockUnavailable {
                order: o.order,
                wanted: o.qty,
                available: STOCK_PER_ORDER,
            })?;
        } else {
            ctx.emit(&StockReserved {
                order: o.order,
                qty: o.qty,
                cents: o.cents,
            })?;
        }
        Ok(())
    }
}

struct Payments;
impl Reactor for Payments {
    fn name(&self) -> &str {
        "payment"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![StockReserved::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![PaymentCaptured::event_type()]
    }
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::builder()
            .max_attempts(4)
            .initial_delay(Duration::from_millis(50))
            .build()
            .unwrap_or_default()
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let r: StockReserved = e.decode()?;
        if r.cents > CARD_LIMIT_CENTS {
            return Err(ReactError::permanent(format!(
                "card declined: {} cents is over the limit of {CARD_LIMIT_CENTS}",
                r.cents
            )));
        }
        if r.order % 3 == 0 && ctx.attempt() == 1 {
            return Err(ReactError::transient("payment gateway timed out"));
        }
        ctx.emit(&PaymentCaptured {
            order: r.order,
            cents: r.cents,
        })?;
        Ok(())
    }
}

struct Shipping;
impl Reactor for Shipping {
    fn name(&self) -> &str {
        "shipping"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![PaymentCaptured::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![OrderShipped::event_type()]
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let p: PaymentCaptured = e.decode()?;
        ctx.emit(&OrderShipped { order: p.order })?;
        Ok(())
    }
}

fn order(n: u32) -> OrderPlaced {
    OrderPlaced {
        order: n,
        sku: format!("sku-{}", n % 4),
        qty: if n % 5 == 2 {
            STOCK_PER_ORDER + 4
        } else {
            1 + n % 3
        },
        cents: if n % 5 == 4 {
            CARD_LIMIT_CENTS * 3
        } else {
            1_000 + u64::from(n) * 250
        },
    }
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.orders == 0 {
        bail!("--orders must be at least 1");
    }
    let mut own_server = None;
    let url = match args.nats {
        Some(url) => url,
        None => {
            let s = NatsServer::start_temp()
                .await
                .context("start a temporary nats-server")?;
            let url = s.url();
            own_server = Some(s);
            url
        }
    };
    let result = run_on(
        &url,
        args.orders,
        Duration::from_secs(args.timeout),
        own_server.is_some(),
    )
    .await;
    if let Some(mut s) = own_server {
        s.stop().await?;
    }
    result
}

async fn run_on(url: &str, orders: u32, timeout: Duration, temporary: bool) -> anyhow::Result<()> {
    let cfg = choreo::BusConfig::builder()
        .url(url)
        .client_name("choreo-demo")
        .build()?;
    let node = Node::builder()
        .bus(cfg)
        .register::<OrderPlaced>()
        .register::<StockReserved>()
        .register::<PaymentCaptured>()
        .reactor(Inventory)
        .reactor(Payments)
        .reactor(Shipping)
        .build()?
        .start()
        .await?;
    let bus = node.bus().clone();
    println!(
        "choreo demo: nats-server {} at {url}{}",
        bus.server_version(),
        if temporary {
            " (temporary, stopped at the end)"
        } else {
            ""
        }
    );
    println!("actors: inventory (order.placed → stock.*), payment (stock.reserved → payment.captured), shipping (payment.captured → order.shipped)\n");

    let run = EventId::new_root()
        .to_string()
        .chars()
        .rev()
        .take(6)
        .collect::<String>();
    let correlations: Vec<CorrelationId> = (1..=orders)
        .map(|n| CorrelationId::new(format!("order-{n}-{run}")))
        .collect::<Result<_, _>>()?;
    let by_corr: BTreeMap<String, u32> = correlations
        .iter()
        .zip(1..)
        .map(|(c, n)| (c.to_string(), n))
        .collect();

    let mut events = bus
        .follow_events(&bus.subjects().all_events(), false)
        .await?;
    let mut letters = bus.follow_dead_letters(false).await?;
    let roots: Vec<Event> = correlations
        .iter()
        .zip(1..)
        .map(|(c, n)| Event::root("/cli/demo", c.clone(), &order(n)))
        .collect::<Result<_, _>>()?;
    bus.publish_all(&roots).await?;
    println!("published {} orders", roots.len());

    let mut outcome: BTreeMap<String, &'static str> = BTreeMap::new();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    while outcome.len() < correlations.len() {
        tokio::select! {
            () = &mut deadline => bail!("timed out after {timeout:?}: {} of {} orders finished", outcome.len(), correlations.len()),
            next = events.next() => {
                let stored = next.context("event stream closed")??;
                let Ok(e) = stored.event else { continue };
                if !by_corr.contains_key(e.correlation.as_str()) { continue; }
                let done = match e.ty.as_str() {
                    "order.shipped.v1" => Some("shipped"),
                    "stock.unavailable.v1" => Some("out of stock"),
                    _ => None,
                };
                if let Some(d) = done {
                    println!("  {:<20} {d}", e.correlation);
                    outcome.insert(e.correlation.to_string(), d);
                }
            }
            next = letters.next() => {
                let l = next.context("dead-letter stream closed")??;
                let Ok(e) = &l.event else { continue };
                if !by_corr.contains_key(e.correlation.as_str()) { continue; }
                println!("  {:<20} dead-lettered by {} [{}] {}", e.correlation, l.actor, l.reason, l.detail);
                outcome.insert(e.correlation.to_string(), "dead-lettered");
            }
        }
    }
    let metrics = node.metrics().clone();
    node.shutdown().await?;

    println!("\nsummary:");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for o in outcome.values() {
        *counts.entry(o).or_default() += 1;
    }
    for (k, v) in &counts {
        println!("  {k:<14} {v}");
    }

    println!("\nevents per correlation:");
    let mut longest: Option<(usize, CorrelationId)> = None;
    for c in &correlations {
        let history = bus.history(c).await?;
        let types: Vec<String> = history
            .iter()
            .map(|s| {
                s.event
                    .as_ref()
                    .map(|e| e.ty.to_string())
                    .unwrap_or_else(|_| "?".into())
            })
            .collect();
        println!(
            "  {:<20} {:>2} events: {}",
            c,
            history.len(),
            types.join(" → ")
        );
        if longest.as_ref().is_none_or(|(n, _)| history.len() > *n) {
            longest = Some((history.len(), c.clone()));
        }
    }

    if let Some((_, c)) = longest {
        let tree = bus.correlation_history(&c).await?.tree();
        println!("\ncausal chain of {c}:");
        print!("{}", indent(&tree.to_text()));
        println!("\nevents of {c} as on the log:");
        println!("  {}", format::TAIL_HEADER);
        for e in bus.history(&c).await? {
            println!("  {}", format::tail_line(&e));
        }
    }

    println!("\nactors:");
    println!(
        "  {:<10} {:>7} {:>7} {:>7} {:>13} {:>12}",
        "actor", "handled", "failed", "retried", "dead-lettered", "p99 latency"
    );
    for (name, m) in metrics.all() {
        let p99 = m
            .latency_quantile_us(0.99)
            .map_or("-".to_owned(), |us| format!("<{us} µs"));
        println!(
            "  {name:<10} {:>7} {:>7} {:>7} {:>13} {:>12}",
            m.handled, m.failed, m.retried, m.dead_lettered, p99
        );
    }

    if !counts.contains_key("shipped") {
        bail!("no order was shipped: the choreography did not run end to end");
    }
    println!("\nlook further against a running server (`choreo dev` in another terminal, then `choreo demo --nats nats://127.0.0.1:4222`):");
    println!(
        "  choreo tail --from-start --correlation {}",
        correlations[0]
    );
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}
