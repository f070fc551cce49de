//! Where a new actor starts reading the log, and what that means for a saga once fixed.

use async_nats::jetstream::consumer::DeliverPolicy;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Where an actor reads from the first time it runs; later runs (and other nodes) resume where
/// it left off. Reactors default to [`StartPosition::All`] (a new projection or service works
/// through the backlog, as Kafka Streams does), sagas to [`StartPosition::New`] (a new process
/// manager must not start instances, and send commands, for history).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPosition {
    /// Only events stored after the actor first ran.
    New,
    /// Every event still in the log.
    All,
    /// Events from this events-stream sequence on.
    Sequence(u64),
    /// Events stored at or after this time (the log's clock, not `ce-time`).
    Time(OffsetDateTime),
}

impl StartPosition {
    /// The consumer's delivery policy when it is first created.
    pub(crate) fn deliver_policy(self) -> DeliverPolicy {
        match self {
            Self::New => DeliverPolicy::New,
            Self::All => DeliverPolicy::All,
            Self::Sequence(start_sequence) => DeliverPolicy::ByStartSequence {
                start_sequence: start_sequence.max(1),
            },
            Self::Time(start_time) => DeliverPolicy::ByStartTime { start_time },
        }
    }
}

/// A saga's start, fixed the first time any node hosted it: a start event stored at or below
/// `after_seq`, or before `from_ms`, starts no instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SagaStart {
    /// Events-stream sequence the saga starts after.
    pub(crate) after_seq: u64,
    /// Unix ms (stored time) the saga starts at.
    pub(crate) from_ms: i64,
}

impl SagaStart {
    /// The start of a saga registered now, with the log's last sequence at `last_seq`.
    pub(crate) fn of(position: StartPosition, last_seq: u64) -> Self {
        match position {
            StartPosition::New => Self {
                after_seq: last_seq,
                from_ms: 0,
            },
            StartPosition::All => Self::default(),
            StartPosition::Sequence(n) => Self {
                after_seq: n.saturating_sub(1),
                from_ms: 0,
            },
            StartPosition::Time(t) => Self {
                after_seq: 0,
                from_ms: i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
            },
        }
    }

    /// Whether a start event at `seq`, stored at `at_ms`, may start an instance.
    pub(crate) fn admits(&self, seq: u64, at_ms: i64) -> bool {
        seq > self.after_seq && at_ms >= self.from_ms
    }
}

#[cfg(test)]
mod tests {
    use super::{SagaStart, StartPosition};

    #[test]
    fn each_position_admits_what_it_says() {
        let new = SagaStart::of(StartPosition::New, 41);
        assert!(!new.admits(41, 0) && new.admits(42, 0));
        let all = SagaStart::of(StartPosition::All, 41);
        assert!(all.admits(1, 0));
        let from = SagaStart::of(StartPosition::Sequence(10), 41);
        assert!(!from.admits(9, 0) && from.admits(10, 0));
        let t = time::OffsetDateTime::from_unix_timestamp(100).expect("valid");
        let at = SagaStart::of(StartPosition::Time(t), 41);
        assert!(!at.admits(50, 99_999) && at.admits(1, 100_000));
        // Sequences start at 1: a start "from 0" is from the first.
        assert!(SagaStart::of(StartPosition::Sequence(0), 9).admits(1, 0));
    }
}
