//! The README's quickstart: one reactor on a node that runs until Ctrl-C.
use choreo::{BusConfig, Event, EventType, Node, Payload, ReactContext, ReactError, Reactor};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct OrderPlaced {
    order: String,
}
impl Payload for OrderPlaced {
    const TYPE: &'static str = "order.placed.v1";
}

#[derive(Serialize, Deserialize)]
struct InvoiceIssued {
    order: String,
}
impl Payload for InvoiceIssued {
    const TYPE: &'static str = "invoice.issued.v1";
}

/// Issues an invoice for every order placed.
struct Billing;
impl Reactor for Billing {
    fn name(&self) -> &str {
        "billing"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![OrderPlaced::event_type()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![InvoiceIssued::event_type()]
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let order: OrderPlaced = e.decode()?; // bad data: DLQ "bad_payload"
        ctx.emit(&InvoiceIssued { order: order.order })?; // same correlation, caused by e
        Ok(()) // Err(ReactError::transient(..)): retried with backoff
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    choreo::logging::init()?; // CHOREO_LOG, default "info"
    let bus = BusConfig::builder().build()?; // CHOREO_NATS_URL, default nats://127.0.0.1:4222
    let node = Node::builder()
        .bus(bus)
        .register::<OrderPlaced>()
        .reactor(Billing)
        .build()?
        .start()
        .await?;
    println!("billing is running; Ctrl-C stops it");
    tokio::signal::ctrl_c().await?;
    node.shutdown().await?; // finishes what it holds, acks, then returns
    Ok(())
}
