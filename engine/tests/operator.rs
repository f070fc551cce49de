//! Faulted instances are not abandoned: a handler that panics is retried then faulted (its
//! partition goes on), an operator compensates or retries a faulted instance, and a saga can
//! compensate on fault by itself. Real nats-server, sled on a temp dir.

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use choreo::schemas::partition_of;
use choreo::{
    request_compensation, request_retry, CorrelationId, Effect, Event, EventType, Node, OnFault,
    ReactContext, ReactError, Reactor, RetryPolicy, RunningNode, Saga, SagaContext, SagaError,
    SagaStatus, SAGA_COMPENSATED, SAGA_COMPLETED, SAGA_FAULTED,
};
use common::{history_types, wait_dead_letters, wait_events, Harness};

/// How the order saga's handler treats a reservation.
const FAULT: u8 = 0;
const PANIC: u8 = 1;
const COMPLETE: u8 = 2;

fn ty(s: &str) -> EventType {
    EventType::new(s).expect("a valid type")
}

/// Places an order: reserves stock (an effect, released by compensation), then completes, or
/// faults, or panics on the reservation, as `mode` says for instances named `bad-*`.
struct OrderSaga {
    mode: Arc<AtomicU8>,
    on_fault: OnFault,
}

impl Saga for OrderSaga {
    type State = ();
    fn name(&self) -> &str {
        "order"
    }
    fn starts_on(&self) -> Vec<EventType> {
        vec![ty("order.placed.v1")]
    }
    fn continues_on(&self) -> Vec<EventType> {
        vec![ty("stock.reserved.v1"), ty("stock.released.v1")]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![ty("stock.reserve.v1"), ty("stock.release.v1")]
    }
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::builder()
            .max_attempts(3)
            .initial_delay(Duration::from_millis(10))
            .max_delay(Duration::from_millis(20))
            .build()
            .expect("a valid policy")
    }
    fn on_fault(&self) -> OnFault {
        self.on_fault
    }
    fn handle(&self, _: &mut (), e: &Event, ctx: &mut SagaContext) -> Result<(), SagaError> {
        match e.ty.as_str() {
            "order.placed.v1" => {
                let effect = Effect::confirmed_by(ty("stock.reserved.v1")).compensate_with_raw(
                    ty("stock.release.v1"),
                    Vec::new(),
                    Some(ty("stock.released.v1")),
                );
                ctx.issue_raw(ty("stock.reserve.v1"), Vec::new(), effect)?;
                Ok(())
            }
            "stock.reserved.v1" if e.correlation.as_str().starts_with("bad-") => {
                match self.mode.load(Ordering::SeqCst) {
                    FAULT => Err(SagaError::Permanent("the pricing table is missing".into())),
                    PANIC => panic!("index out of bounds in the pricing table"),
                    _ => {
                        ctx.complete();
                        Ok(())
                    }
                }
            }
            "stock.reserved.v1" => {
                ctx.complete();
                Ok(())
            }
            _ => Ok(()),
        }
    }
    fn on_timeout(&self, _: &mut (), _: &str, _: &mut SagaContext) -> Result<(), SagaError> {
        Ok(())
    }
}

/// Answers reservations and releases.
struct Warehouse;

impl Reactor for Warehouse {
    fn name(&self) -> &str {
        "warehouse"
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![ty("stock.reserve.v1"), ty("stock.release.v1")]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![ty("stock.reserved.v1"), ty("stock.released.v1")]
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        if e.ty.as_str() == "stock.release.v1" && e.correlation.as_str().starts_with("bad-stuck") {
            return Err(ReactError::Permanent(
                "the release API refuses this order".into(),
            ));
        }
        let answer = match e.ty.as_str() {
            "stock.reserve.v1" => "stock.reserved.v1",
            _ => "stock.released.v1",
        };
        ctx.emit_raw(ty(answer), Vec::new())?;
        Ok(())
    }
}

async fn node(
    h: &Harness,
    dir: &std::path::Path,
    mode: u8,
    on_fault: OnFault,
) -> Result<(RunningNode, Arc<AtomicU8>)> {
    let mode = Arc::new(AtomicU8::new(mode));
    let node = Node::builder()
        .bus(h.config()?)
        .data_dir(dir)
        .reactor(Warehouse)
        .saga(OrderSaga {
            mode: Arc::clone(&mode),
            on_fault,
        })
        .build()?
        .start()
        .await?;
    Ok((node, mode))
}

fn order(id: &str) -> Result<Event> {
    Ok(Event::root_raw(
        "urn:test",
        CorrelationId::new(id)?,
        ty("order.placed.v1"),
        Vec::new(),
    ))
}

/// `<prefix>-<n>` in the same partition as `other`.
fn beside(h: &Harness, prefix: &str, other: &str) -> Result<String> {
    let p = partition_of(&CorrelationId::new(other)?, h.partitions);
    (0..10_000)
        .map(|n| format!("{prefix}-{n}"))
        .find(|c| CorrelationId::new(c.as_str()).is_ok_and(|c| partition_of(&c, h.partitions) == p))
        .context("a correlation in the same partition")
}

async fn lifecycle(h: &Harness, t: &str, n: usize) -> Result<Vec<Event>> {
    wait_events(&h.bus, &h.bus.subjects().type_filter(&ty(t)), n).await
}

async fn record(h: &Harness, id: &str) -> Result<choreo::InstanceRecord> {
    choreo::Changelog::new(&h.bus)
        .find("order", id, None)
        .await?
        .context("the instance is in the changelog")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_retried_then_faulted_and_its_partition_goes_on() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let (node, _) = node(&h, dir.path(), PANIC, OnFault::Hold).await?;
    let good = beside(&h, "good", "bad-1")?;
    h.bus.publish_all(&[order("bad-1")?, order(&good)?]).await?;
    let faulted = lifecycle(&h, SAGA_FAULTED, 1).await?;
    assert_eq!(faulted[0].correlation.as_str(), "bad-1");
    lifecycle(&h, SAGA_COMPLETED, 1).await?;
    // Retried like a transient error (three attempts), then given up on.
    let letters = wait_dead_letters(&h.bus, 1).await?;
    assert_eq!(letters[0].reason, "max_attempts");
    assert!(
        letters[0]
            .detail
            .contains("handler panicked: index out of bounds"),
        "{}",
        letters[0].detail
    );
    let bad = record(&h, "bad-1").await?;
    assert_eq!(bad.status, SagaStatus::Faulted);
    assert!(
        bad.reason
            .as_deref()
            .is_some_and(|r| r.contains("index out of bounds")),
        "{:?}",
        bad.reason
    );
    assert_eq!(record(&h, &good).await?.status, SagaStatus::Completed);
    let metrics = node.metrics().snapshot("order");
    assert!(metrics.failed >= 3, "three attempts failed: {metrics:?}");
    assert!(node.health().iter().all(|p| p.alive), "{:?}", node.health());
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_compensates_a_faulted_instance() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let (node, _) = node(&h, dir.path(), FAULT, OnFault::Hold).await?;
    h.bus.publish(&order("bad-1")?).await?;
    lifecycle(&h, SAGA_FAULTED, 1).await?;
    // Faulted holds its effects: the reservation stays until someone decides.
    let held = record(&h, "bad-1").await?;
    assert_eq!(held.status, SagaStatus::Faulted);
    assert!(held.faulted_by.is_some());
    assert_eq!(held.compensations.len(), 1, "{held:?}");
    // A running instance cannot be compensated by an operator.
    let err = request_retry(&h.bus, "order", "nobody", "test").await;
    assert!(err.is_err(), "no such instance");

    request_compensation(&h.bus, "order", "bad-1", "ops@test").await?;
    lifecycle(&h, SAGA_COMPENSATED, 1).await?;
    let types = history_types(&h.bus, "bad-1").await?;
    let count = |t: &str| types.iter().filter(|x| x.as_str() == t).count();
    assert_eq!(
        (count("stock.release.v1"), count("stock.released.v1")),
        (1, 1),
        "{types:?}"
    );
    let done = record(&h, "bad-1").await?;
    assert_eq!(done.status, SagaStatus::Compensated);
    assert!(
        done.reason
            .as_deref()
            .is_some_and(|r| r.contains("the pricing table is missing")
                && r.contains("compensation requested by ops@test")),
        "{:?}",
        done.reason
    );
    // Asking again is refused: it is no longer faulted.
    assert!(request_compensation(&h.bus, "order", "bad-1", "ops@test")
        .await
        .is_err()); // The operator's action is on the log: a replay decides the same.
    let saga = OrderSaga {
        mode: Arc::new(AtomicU8::new(FAULT)),
        on_fault: OnFault::Hold,
    };
    choreo::assert_replays(&saga, &h.bus, None, &choreo::SagaId::new("bad-1")?).await;

    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_applies_the_faulting_input_again_after_a_fix() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let (node, mode) = node(&h, dir.path(), FAULT, OnFault::Hold).await?;
    h.bus.publish(&order("bad-1")?).await?;
    lifecycle(&h, SAGA_FAULTED, 1).await?;
    // The fix is deployed; the operator retries.
    mode.store(COMPLETE, Ordering::SeqCst);
    request_retry(&h.bus, "order", "bad-1", "ops@test").await?;
    lifecycle(&h, SAGA_COMPLETED, 1).await?;
    let r = record(&h, "bad-1").await?;
    assert_eq!(r.status, SagaStatus::Completed);
    assert!(r.faulted_by.is_none() && r.reason.is_none(), "{r:?}");
    let types = history_types(&h.bus, "bad-1").await?;
    assert!(!types.iter().any(|t| t == "stock.release.v1"), "{types:?}");
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_can_compensate_on_fault_by_itself() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let (node, _) = node(&h, dir.path(), FAULT, OnFault::Compensate).await?;
    h.bus.publish(&order("bad-1")?).await?;
    lifecycle(&h, SAGA_COMPENSATED, 1).await?;
    let types = history_types(&h.bus, "bad-1").await?;
    let faulted = types.iter().position(|t| t == SAGA_FAULTED);
    let release = types.iter().position(|t| t == "stock.release.v1");
    assert!(
        faulted.is_some() && release.is_some() && faulted < release,
        "{types:?}"
    );
    let r = record(&h, "bad-1").await?;
    assert_eq!(r.status, SagaStatus::Compensated);
    assert!(
        r.reason
            .as_deref()
            .is_some_and(|x| x.contains("compensated on fault")),
        "{:?}",
        r.reason
    );
    // The input that faulted it is still dead-lettered: visible, redrivable.
    let letters = wait_dead_letters(&h.bus, 1).await?;
    assert_eq!(letters[0].reason, "saga_faulted");
    let saga = OrderSaga {
        mode: Arc::new(AtomicU8::new(FAULT)),
        on_fault: OnFault::Compensate,
    };
    choreo::assert_replays(&saga, &h.bus, None, &choreo::SagaId::new("bad-1")?).await;
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_its_service_gives_up_on_ends_the_instance_visibly() -> Result<()> {
    let h = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let (node, _) = node(&h, dir.path(), FAULT, OnFault::Compensate).await?;
    h.bus.publish(&order("bad-stuck-1")?).await?;
    // The release is dead-lettered by the warehouse; the notice tells the saga, which stops
    // waiting for a confirmation that cannot come.
    lifecycle(&h, SAGA_COMPENSATED, 1).await?;
    let r = record(&h, "bad-stuck-1").await?;
    assert_eq!(r.status, SagaStatus::Compensated);
    assert!(r.undoing.is_empty(), "{r:?}");
    let reason = r.reason.unwrap_or_default();
    assert!(
        reason.contains("compensation stock.release.v1 dead-lettered by warehouse (rejected)"),
        "{reason}"
    );
    let letters = wait_dead_letters(&h.bus, 2).await?;
    assert!(
        letters
            .iter()
            .any(|l| l.actor == "warehouse" && l.reason == "rejected"),
        "{letters:?}"
    );
    node.shutdown().await?;
    Ok(())
}
