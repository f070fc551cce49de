//! # choreo-services
//!
//! Deterministic building blocks, each a reactor (or a protocol) users register on a node:
//!
//! - [`SchemaValidator`]: validates `intake.<type>` submissions and forwards them as `<type>`,
//!   or emits `<type>.rejected` with the reasons; consumers never see an invalid event.
//! - [`Ledger`]: records an effect under an idempotency key in a JetStream KV bucket, so a
//!   redelivered command cannot apply it twice; [`emit_dry_run`] for dry-run mode.
//! - [`PolicyGate`]: typed rules on `gated.<command>` before it reaches its executor; a veto is
//!   `policy.vetoed.v1` naming the rule.
//! - Approval gate: [`ApprovalRequested`] / [`ApprovalGranted`] / [`ApprovalDenied`],
//!   [`approval_step`] for routing slips and [`answer`] behind `choreo approve`.
//!
//! ```
//! use choreo::EventType;
//! use choreo_services::{gated_type, PolicyGate, Rule};
//!
//! let charge = EventType::new("payment.charge.v1")?;
//! let gate = PolicyGate::new("payments-policy").policy(
//!     charge.clone(),
//!     vec![("limit".into(), Rule::MaxAmount { field: "cents".into(), max: 100_000.0 })],
//! )?;
//! assert_eq!(gated_type(&charge)?.as_str(), "gated.payment.charge.v1");
//! # let _ = gate;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod approval;
mod error;
mod ledger;
mod policy;
mod validator;

pub use approval::{answer, approval_step, ApprovalDenied, ApprovalGranted, ApprovalRequested};
pub use error::ServiceError;
pub use ledger::{dry_run_type, emit_dry_run, Applied, DryRun, Ledger, LedgerEntry};
pub use policy::{evaluate, gated_type, PolicyGate, Rule, Vetoed, GATED_PREFIX};
pub use validator::{
    intake_type, rejected_type, Rejected, SchemaValidator, Validate, INTAKE_PREFIX,
};
