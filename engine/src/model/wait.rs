//! What a saga instance declared it awaits: read by the deadlock detector and the stall
//! watchdog (`coordination`). Kept in the instance's record, so it survives failover and replay.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a wait was reported stalled (once per wait).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StallKind {
    /// Its deadline passed, nothing it awaits came, and no timer of the instance is pending
    /// to handle that.
    DeadlinePassed,
    /// No live node hosts any actor that can produce what it awaits (past the stall grace).
    NoLiveProducer,
}

impl StallKind {
    /// `deadline_passed` or `no_live_producer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeadlinePassed => "deadline_passed",
            Self::NoLiveProducer => "no_live_producer",
        }
    }
}

impl fmt::Display for StallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One wait: any one of `types`, on the instance's correlation, ends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WaitForm")]
pub struct Wait {
    /// Event types, any of which ends the wait.
    pub types: Vec<String>,
    /// Stream sequence of the input whose decision declared it (for a timer, the instance's
    /// watermark then): the deadlock breaker fails the member with the youngest wait.
    pub since_seq: u64,
    /// When it was declared (Unix ms, the input's time).
    pub since_ms: i64,
    /// When it should have ended (Unix ms); none: no deadline.
    pub deadline_ms: Option<i64>,
    /// Set once the wait was reported stalled, so it is reported once.
    pub stalled: Option<StallKind>,
}

impl Wait {
    /// Whether an event of type `ty` ends this wait.
    pub fn ends_on(&self, ty: &str) -> bool {
        self.types.iter().any(|t| t == ty)
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.types.join(" | "))
    }
}

/// The stored forms: a bare type (records written before waits had deadlines) or the full wait.
#[derive(Deserialize)]
#[serde(untagged)]
enum WaitForm {
    Type(String),
    Full {
        types: Vec<String>,
        #[serde(default)]
        since_seq: u64,
        #[serde(default)]
        since_ms: i64,
        #[serde(default)]
        deadline_ms: Option<i64>,
        #[serde(default)]
        stalled: Option<StallKind>,
    },
}

impl From<WaitForm> for Wait {
    fn from(f: WaitForm) -> Self {
        match f {
            WaitForm::Type(t) => Self {
                types: vec![t],
                since_seq: 0,
                since_ms: 0,
                deadline_ms: None,
                stalled: None,
            },
            WaitForm::Full {
                types,
                since_seq,
                since_ms,
                deadline_ms,
                stalled,
            } => Self {
                types,
                since_seq,
                since_ms,
                deadline_ms,
                stalled,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_stored_as_a_bare_type_still_reads() {
        let old: Vec<Wait> = rmp_serde::from_slice(
            &rmp_serde::to_vec_named(&vec!["car.booked.v1".to_owned()]).expect("encode"),
        )
        .expect("decode");
        assert_eq!(old[0].types, ["car.booked.v1"]);
        assert_eq!(old[0].deadline_ms, None);
        let new = Wait {
            types: vec!["a.v1".into(), "b.v1".into()],
            since_seq: 7,
            since_ms: 9,
            deadline_ms: Some(11),
            stalled: Some(StallKind::NoLiveProducer),
        };
        let back: Wait =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&new).expect("encode")).expect("decode");
        assert_eq!(back, new);
        assert!(back.ends_on("b.v1") && !back.ends_on("c.v1"));
        assert_eq!(back.to_string(), "a.v1 | b.v1");
    }
}
