//! Command deadlines. A command may carry a `deadline` (CloudEvents extension, set by sagas
//! from the step timeout); the reactor runtime never runs a handler on a command past it and
//! publishes [`COMMAND_EXPIRED`] instead, caused by the command, so the saga that issued it
//! learns that it will never take effect.

use choreo_schemas::Event;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A command reached its handler after its deadline and was not executed.
pub const COMMAND_EXPIRED: &str = "choreo.command.expired";

/// The data of a [`COMMAND_EXPIRED`] event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandExpired {
    /// The actor that refused it.
    pub actor: String,
    /// The command's type.
    pub command_type: String,
    /// The command's own causation id: when a reactor forwarded the command (a policy gate),
    /// the command the saga issued.
    pub command_cause: String,
    /// Its deadline (RFC 3339).
    pub deadline: String,
    /// Delivery count when refused: above 1, an earlier delivery may have run the handler
    /// (and crashed before acking), so the effect may exist.
    pub delivered: u64,
}

impl CommandExpired {
    /// Whether an earlier delivery may have executed the command.
    pub fn maybe_ran(&self) -> bool {
        self.delivered > 1
    }
}

/// Whether `event` carries a deadline that is past at `now`.
pub(crate) fn is_expired(event: &Event, now: OffsetDateTime) -> bool {
    event.deadline.is_some_and(|d| d < now)
}
