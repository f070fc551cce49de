//! History as a first-class primitive: the events of one correlation in log order (one
//! literal-prefixed subject filter, no scan), its dead letters, and the causal tree.

mod render;
mod tree;

use choreo_schemas::{CorrelationId, Event};

use crate::bus::{Bus, DeadLetter};
use crate::error::BusError;
use crate::saga::LIFECYCLE_TYPES;

pub use tree::{CausalTree, NodeKind, TreeNode};

/// One stored event of a history.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    /// Stream sequence.
    pub sequence: u64,
    /// When JetStream stored it (Unix ms): the clock sagas decide by.
    pub stored_ms: i64,
    /// The event.
    pub event: Event,
    /// Set when this copy was redriven from the DLQ: the DLQ sequence it came from.
    pub redriven_from: Option<u64>,
    /// Set when this copy was redriven: the only actor it was redriven to.
    pub redriven_to: Option<String>,
}

impl HistoryEntry {
    /// Whether the event is a saga lifecycle decision (`choreo.saga.*`).
    pub fn is_saga_decision(&self) -> bool {
        LIFECYCLE_TYPES.contains(&self.event.ty.as_str())
    }
}

/// Everything the log knows about one correlation.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Events in log order.
    pub events: Vec<HistoryEntry>,
    /// Dead letters of the correlation, in DLQ order.
    pub dead_letters: Vec<DeadLetter>,
    /// Messages on the correlation's subjects that are not choreo events (sequence, reason).
    pub undecodable: Vec<(u64, String)>,
}

impl History {
    /// The causal tree of the history.
    pub fn tree(&self) -> CausalTree {
        CausalTree::build(self)
    }
}

impl Bus {
    /// The history of a correlation: its events (including redriven copies) and its dead letters.
    pub async fn correlation_history(
        &self,
        correlation: &CorrelationId,
    ) -> Result<History, BusError> {
        let p = self.partition_of(correlation);
        let s = self.subjects();
        let filters = vec![
            s.correlation_filter(p, correlation),
            s.redrive_correlation_filter(p, correlation),
        ];
        let raw = self
            .read_raw_multi(&self.config().events_stream(), filters)
            .await?;
        let mut history = History::default();
        for m in raw {
            match m.decode(s) {
                Ok(event) => history.events.push(HistoryEntry {
                    sequence: m.sequence,
                    stored_ms: m.stored_ms,
                    event,
                    redriven_to: m
                        .subject
                        .strip_prefix(&format!("{}.redrive.", s.root()))
                        .and_then(|rest| rest.split('.').next())
                        .map(str::to_owned),
                    redriven_from: m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(crate::bus::REDRIVEN_FROM))
                        .and_then(|v| v.as_str().parse().ok()),
                }),
                Err(e) => history.undecodable.push((m.sequence, e.to_string())),
            }
        }
        let dlq = self
            .read_raw_multi(
                &self.config().dlq_stream(),
                vec![s.dead_letters_of(correlation.as_str())],
            )
            .await?;
        history.dead_letters = dlq
            .into_iter()
            .map(|m| DeadLetter::from_message(m.sequence, m.headers.as_ref(), &m.payload))
            .collect();
        Ok(history)
    }
}
