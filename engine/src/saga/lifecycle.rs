//! Lifecycle events: every decision of a saga is on the log.

use serde::{Deserialize, Serialize};

/// An instance started.
pub const SAGA_STARTED: &str = "choreo.saga.started";
/// An instance completed.
pub const SAGA_COMPLETED: &str = "choreo.saga.completed";
/// An instance failed (its compensations follow).
pub const SAGA_FAILED: &str = "choreo.saga.failed";
/// Compensations are being emitted.
pub const SAGA_COMPENSATING: &str = "choreo.saga.compensating";
/// All compensations were emitted; the instance ended `Compensated`.
pub const SAGA_COMPENSATED: &str = "choreo.saga.compensated";
/// A timer fired (recorded for every firing, fatal or not: replay reads it).
pub const SAGA_TIMED_OUT: &str = "choreo.saga.timed_out";
/// An instance faulted (state unreadable or handler errors past the limit).
pub const SAGA_FAULTED: &str = "choreo.saga.faulted";

/// Every lifecycle type.
pub const LIFECYCLE_TYPES: [&str; 7] = [
    SAGA_STARTED,
    SAGA_COMPLETED,
    SAGA_FAILED,
    SAGA_COMPENSATING,
    SAGA_COMPENSATED,
    SAGA_TIMED_OUT,
    SAGA_FAULTED,
];

/// The data of every lifecycle event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Saga name.
    pub saga: String,
    /// Instance id.
    pub instance: String,
    /// Failure or fault reason.
    pub reason: Option<String>,
    /// The timer that fired (`timed_out`).
    pub timer: Option<String>,
    /// Due time of that timer (Unix ms).
    pub due_ms: Option<i64>,
    /// How many inputs the instance had applied before the input that produced this event:
    /// replay uses it to put timer firings back between the right events.
    pub applied: u64,
}
