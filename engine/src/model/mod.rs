//! The records the saga runtime, the store and the changelog share: the lowest layer of the
//! engine above the wire types. No I/O here.

mod effect;
mod head;
mod record;
mod transition;
mod wait;

pub(crate) use effect::Answer;
pub use effect::{EffectState, PendingEffect, PendingUndo};
pub use head::PartitionHead;
pub use record::{
    Compensation, FaultedBy, InstanceRecord, PendingEvent, SagaStatus, RECENT_INPUTS,
};
pub use transition::TimerEntry;
pub(crate) use transition::{TimerChange, Transition};
pub use wait::{StallKind, Wait};
