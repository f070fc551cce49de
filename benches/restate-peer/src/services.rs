//! The benchmark saga written against Restate: three step services and an orchestrator that
//! calls them in order and, when a step fails, sends the compensations of the completed steps
//! in reverse order. The same itinerary as choreo's `saga` workload (see
//! `choreo_benches::workloads::saga`): step `n` fails when the request says so, and the
//! failing step of a saga is chosen by [`fail_step`] from its id, as on the choreo side.

use std::sync::atomic::{AtomicU64, Ordering};

use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// Handled `act` calls per step (index 0..3) and `undo` calls per step.
pub static ACTS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
/// Handled compensations per step.
pub static UNDOS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
static UNDO_HANDLED: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();

/// Woken after every handled compensation.
pub fn undo_handled() -> &'static tokio::sync::Notify {
    UNDO_HANDLED.get_or_init(tokio::sync::Notify::new)
}

/// Which step (2 or 3) fails for saga `id`, or 0 when it succeeds: the same rule as
/// `choreo_benches::workloads::saga::fail_step`.
pub fn fail_step(id: u64, fail_fraction: f64) -> u8 {
    let bucket = id.wrapping_mul(2_654_435_761) % 10_000;
    if (bucket as f64) < fail_fraction * 10_000.0 {
        2 + (id % 2) as u8
    } else {
        0
    }
}

/// What the load generator sends to `Saga/run`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SagaRequest {
    /// Saga id.
    pub id: u64,
    /// Step that fails (0: none).
    pub fail_step: u8,
    /// Opaque payload (same size as the choreo events' data).
    pub pad: String,
}

/// How a saga ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SagaOutcome {
    /// True when it ended compensated.
    pub compensated: bool,
}

/// What a step service receives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRequest {
    /// Saga id.
    pub id: u64,
    /// Fail this step.
    pub fail: bool,
    /// Opaque payload.
    pub pad: String,
}

macro_rules! step_service {
    ($name:ident, $index:expr) => {
        /// One step of the itinerary: `act` does it (or fails terminally), `undo` compensates it.
        pub struct $name;

        #[restate_sdk::service]
        impl $name {
            #[handler]
            async fn act(
                &self,
                _ctx: Context<'_>,
                req: Json<StepRequest>,
            ) -> Result<(), TerminalError> {
                ACTS[$index].fetch_add(1, Ordering::Relaxed);
                if req.0.fail {
                    return Err(TerminalError::new("step failed"));
                }
                Ok(())
            }

            #[handler]
            async fn undo(
                &self,
                _ctx: Context<'_>,
                _req: Json<StepRequest>,
            ) -> Result<(), TerminalError> {
                UNDOS[$index].fetch_add(1, Ordering::Relaxed);
                undo_handled().notify_waiters();
                Ok(())
            }
        }
    };
}

step_service!(Step1, 0);
step_service!(Step2, 1);
step_service!(Step3, 2);

/// The orchestrator: each step is a durable request-response call; on a terminal failure the
/// completed steps' `undo`s are sent (durable one-way calls) in reverse order.
pub struct Saga;

#[restate_sdk::service]
impl Saga {
    #[handler]
    async fn run(
        &self,
        ctx: Context<'_>,
        req: Json<SagaRequest>,
    ) -> Result<Json<SagaOutcome>, HandlerError> {
        let req = req.into_inner();
        let mut done: Vec<u8> = Vec::with_capacity(3);
        for step in 1..=3u8 {
            let sreq = Json(StepRequest {
                id: req.id,
                fail: req.fail_step == step,
                pad: req.pad.clone(),
            });
            let result = match step {
                1 => ctx.service_client::<Step1Client>().act(sreq).call().await,
                2 => ctx.service_client::<Step2Client>().act(sreq).call().await,
                _ => ctx.service_client::<Step3Client>().act(sreq).call().await,
            };
            match result {
                Ok(()) => done.push(step),
                Err(_) => {
                    for s in done.iter().rev() {
                        let u = Json(StepRequest {
                            id: req.id,
                            fail: false,
                            pad: String::new(),
                        });
                        match s {
                            1 => ctx.service_client::<Step1Client>().undo(u).send(),
                            2 => ctx.service_client::<Step2Client>().undo(u).send(),
                            _ => ctx.service_client::<Step3Client>().undo(u).send(),
                        };
                    }
                    return Ok(Json(SagaOutcome { compensated: true }));
                }
            }
        }
        Ok(Json(SagaOutcome { compensated: false }))
    }
}
