//! The reactor's pure decision core: what to do after an attempt (admission is shared with
//! the saga runtime, in `delivery::admit`).
//! No I/O, no clock; the driver performs what these functions decide.

use super::ReactError;
use crate::bus::DlqReason;

/// What came out of one handler attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The handler returned Ok with this many outputs.
    Succeeded { outputs: usize },
    /// The handler failed (a panic is reported as a transient failure).
    Failed(ReactError),
}

/// The next step after an attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Publish the outputs, then ack the input.
    Publish,
    /// Wait (backoff) and try again.
    Retry,
    /// Give up: dead-letter the input and term-ack it.
    DeadLetter(DlqReason),
}

/// Decide after attempt number `attempt` (1-based).
pub(crate) fn after_attempt(
    attempt: u32,
    max_attempts: u32,
    input_depth: u32,
    max_depth: u32,
    outcome: Attempt,
) -> Next {
    match outcome {
        Attempt::Succeeded { outputs } => {
            let depth = input_depth.saturating_add(1);
            if outputs > 0 && depth > max_depth {
                Next::DeadLetter(DlqReason::DepthExceeded {
                    depth,
                    limit: max_depth,
                })
            } else {
                Next::Publish
            }
        }
        Attempt::Failed(ReactError::Permanent(e)) => Next::DeadLetter(DlqReason::Rejected(e)),
        Attempt::Failed(ReactError::BadPayload(e)) => Next::DeadLetter(DlqReason::BadPayload(e)),
        Attempt::Failed(ReactError::Transient(e)) => {
            if attempt >= max_attempts {
                Next::DeadLetter(DlqReason::MaxAttempts { last_error: e })
            } else {
                Next::Retry
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_until_max_attempts_then_dead_letters() {
        let t = || Attempt::Failed(ReactError::Transient("x".into()));
        assert_eq!(after_attempt(1, 3, 0, 4, t()), Next::Retry);
        assert_eq!(after_attempt(2, 3, 0, 4, t()), Next::Retry);
        assert!(matches!(
            after_attempt(3, 3, 0, 4, t()),
            Next::DeadLetter(DlqReason::MaxAttempts { .. })
        ));
        assert!(matches!(
            after_attempt(
                1,
                3,
                0,
                4,
                Attempt::Failed(ReactError::Permanent("p".into()))
            ),
            Next::DeadLetter(DlqReason::Rejected(_))
        ));
        assert!(matches!(
            after_attempt(
                1,
                3,
                0,
                4,
                Attempt::Failed(ReactError::BadPayload("b".into()))
            ),
            Next::DeadLetter(DlqReason::BadPayload(_))
        ));
    }

    #[test]
    fn outputs_past_the_depth_limit_are_cut() {
        assert_eq!(
            after_attempt(1, 3, 3, 4, Attempt::Succeeded { outputs: 1 }),
            Next::Publish
        );
        assert!(matches!(
            after_attempt(1, 3, 4, 4, Attempt::Succeeded { outputs: 1 }),
            Next::DeadLetter(DlqReason::DepthExceeded { depth: 5, limit: 4 })
        ));
        // A sink at the limit emits nothing, so nothing is cut.
        assert_eq!(
            after_attempt(1, 3, 4, 4, Attempt::Succeeded { outputs: 0 }),
            Next::Publish
        );
    }
}
