//! A travel booking: flight, hotel, car. The same itinerary as a hand-written saga and as a
//! routing slip, and the "agency" service that answers the booking commands.

use std::time::Duration;

use choreo::{
    Event, EventType, Payload, ReactContext, ReactError, Reactor, RoutingSlip, Saga, SagaContext,
    SagaError, SlipStep,
};
use serde::{Deserialize, Serialize};

/// How the agency behaves for a trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scenario {
    /// Every step is booked.
    Ok,
    /// The hotel fails.
    HotelFails,
    /// The car rental never answers.
    CarSilent,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TripRequested {
    pub trip: String,
    pub scenario: Scenario,
}
impl Payload for TripRequested {
    const TYPE: &'static str = "trip.requested.v1";
}

pub const STEPS: [&str; 3] = ["flight", "hotel", "car"];

pub fn ty(s: &str) -> EventType {
    EventType::new(s).expect("valid type")
}
pub fn book(step: &str) -> EventType {
    ty(&format!("{step}.book.v1"))
}
pub fn booked(step: &str) -> EventType {
    ty(&format!("{step}.booked.v1"))
}
pub fn failed(step: &str) -> EventType {
    ty(&format!("{step}.failed.v1"))
}
pub fn cancel(step: &str) -> EventType {
    ty(&format!("{step}.cancel.v1"))
}

/// Per-step timeouts: the car's is short, so a silent car times out quickly.
pub fn timeout_of(step: &str, car_timeout: Duration) -> Duration {
    if step == "car" {
        car_timeout
    } else {
        Duration::from_secs(60)
    }
}

/// The routing-slip version.
pub fn trip_slip(name: &str, car_timeout: Duration) -> RoutingSlip {
    trip_slip_from(name, car_timeout, choreo::StartPosition::New)
}

/// The routing-slip version, starting at `from`.
pub fn trip_slip_from(
    name: &str,
    car_timeout: Duration,
    from: choreo::StartPosition,
) -> RoutingSlip {
    let mut b = RoutingSlip::builder(name, TripRequested::event_type()).start_position(from);
    for s in STEPS {
        b = b.step(
            SlipStep::new(s, book(s), booked(s), failed(s))
                .compensate_with(cancel(s))
                .timeout(timeout_of(s, car_timeout)),
        );
    }
    b.build().expect("valid slip")
}

/// The hand-written version.
pub struct TripSaga {
    pub name: &'static str,
    pub car_timeout: Duration,
    /// A deliberately changed handler (for replay tests): after the flight it books the car,
    /// skipping the hotel.
    pub buggy: bool,
    /// Where it starts (tests that publish their trips before the saga first runs say `All`).
    pub from: choreo::StartPosition,
}

impl TripSaga {
    pub fn new(name: &'static str, car_timeout: Duration) -> Self {
        Self {
            name,
            car_timeout,
            buggy: false,
            from: choreo::StartPosition::New,
        }
    }

    /// This saga, started from `from`.
    pub fn starting(mut self, from: choreo::StartPosition) -> Self {
        self.from = from;
        self
    }
}

#[derive(Default, Serialize, Deserialize)]
pub struct TripState {
    pub step: usize,
    pub document: Vec<u8>,
}

impl TripSaga {
    fn start_step(&self, state: &TripState, ctx: &mut SagaContext) -> Result<(), SagaError> {
        let s = STEPS[state.step];
        ctx.emit_raw(book(s), state.document.clone())?;
        ctx.schedule(s, timeout_of(s, self.car_timeout));
        ctx.awaits(booked(s));
        Ok(())
    }
}

impl Saga for TripSaga {
    type State = TripState;
    fn name(&self) -> &str {
        self.name
    }
    fn start_position(&self) -> choreo::StartPosition {
        self.from
    }
    fn starts_on(&self) -> Vec<EventType> {
        vec![TripRequested::event_type()]
    }
    fn continues_on(&self) -> Vec<EventType> {
        STEPS.iter().flat_map(|s| [booked(s), failed(s)]).collect()
    }
    fn emits(&self) -> Vec<EventType> {
        STEPS.iter().flat_map(|s| [book(s), cancel(s)]).collect()
    }
    fn handle(
        &self,
        state: &mut TripState,
        e: &Event,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        if e.ty == TripRequested::event_type() {
            state.document = e.data.clone();
            return self.start_step(state, ctx);
        }
        let current = STEPS[state.step];
        if e.ty == booked(current) {
            ctx.cancel(current);
            ctx.push_compensation_raw(cancel(current), state.document.clone())?;
            state.step += 1;
            if self.buggy && state.step == 1 {
                state.step = 2;
            }
            if state.step == STEPS.len() {
                ctx.complete();
                Ok(())
            } else {
                self.start_step(state, ctx)
            }
        } else if e.ty == failed(current) {
            ctx.fail(format!("{current} failed"));
            Ok(())
        } else {
            Ok(())
        }
    }
    fn on_timeout(
        &self,
        state: &mut TripState,
        timer: &str,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        if timer == STEPS[state.step] {
            ctx.fail(format!("{timer} timed out"));
        }
        Ok(())
    }
}

/// Answers the booking commands according to the trip's scenario.
pub struct Agency;

impl Reactor for Agency {
    fn name(&self) -> &str {
        "agency"
    }
    fn consumes(&self) -> Vec<EventType> {
        STEPS.iter().map(|s| book(s)).collect()
    }
    fn emits(&self) -> Vec<EventType> {
        STEPS.iter().flat_map(|s| [booked(s), failed(s)]).collect()
    }
    async fn react(&self, e: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        let trip: TripRequested = e.decode_as()?;
        let step = e.ty.as_str().split('.').next().unwrap_or_default();
        match (step, trip.scenario) {
            ("hotel", Scenario::HotelFails) => ctx.emit_raw(failed(step), e.data.clone())?,
            ("car", Scenario::CarSilent) => return Ok(()),
            _ => ctx.emit_raw(booked(step), e.data.clone())?,
        };
        Ok(())
    }
}

/// The root event of a trip.
pub fn trip(id: &str, scenario: Scenario) -> Event {
    Event::root(
        "urn:test",
        choreo::CorrelationId::new(id).expect("valid id"),
        &TripRequested {
            trip: id.to_owned(),
            scenario,
        },
    )
    .expect("encodes")
}
