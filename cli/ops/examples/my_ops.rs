//! A team's operator binary: choreo's operator commands with the team's own saga registered,
//! so `replay` can run it. `cargo run -p choreo-ops --example my_ops -- --help`;
//! `my_ops replay checkout ORDER-42`, `my_ops events ORDER-42`, `my_ops dlq list`, ...

use choreo::{Event, EventType, Saga, SagaContext, SagaError};
use serde::{Deserialize, Serialize};

/// The state of one checkout.
#[derive(Default, Serialize, Deserialize)]
struct Checkout {
    placed: bool,
}

/// A checkout saga that only notes that the order was placed (a team's real saga lives in its
/// own crate, shared by its node binary and this one).
struct CheckoutSaga;

impl Saga for CheckoutSaga {
    type State = Checkout;
    fn name(&self) -> &str {
        "checkout"
    }
    fn starts_on(&self) -> Vec<EventType> {
        EventType::new("order.placed.v1").into_iter().collect()
    }
    fn continues_on(&self) -> Vec<EventType> {
        Vec::new()
    }
    fn emits(&self) -> Vec<EventType> {
        Vec::new()
    }
    fn handle(
        &self,
        state: &mut Checkout,
        _event: &Event,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        state.placed = true;
        ctx.complete();
        Ok(())
    }
    fn on_timeout(
        &self,
        _state: &mut Checkout,
        _timer: &str,
        _ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    choreo_ops::Operator::new().saga(CheckoutSaga).main()
}
