//! The live picture, read from JetStream itself: stream sizes, consumer queues, DLQ by reason.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::Serialize;

use super::Bus;
use crate::error::BusError;

/// Size of one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    /// Stream name.
    pub name: String,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// First sequence.
    pub first_sequence: u64,
    /// Last sequence.
    pub last_sequence: u64,
}

/// The queue of one consumer (a reactor, or a saga partition).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConsumerStats {
    /// Consumer name.
    pub name: String,
    /// Messages not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acked.
    pub ack_pending: u64,
    /// Delivered more than once.
    pub redelivered: u64,
    /// Pull requests waiting.
    pub waiting: u64,
}

/// Everything `choreo stats` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LogStats {
    /// The events stream.
    pub events: StreamStats,
    /// The dead-letter stream.
    pub dlq: StreamStats,
    /// Durable consumers of the events stream, by name.
    pub consumers: Vec<ConsumerStats>,
    /// Dead letters counted by (reason, actor).
    pub dead_letters: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Bus {
    /// Read the live picture from JetStream.
    pub async fn stats(&self) -> Result<LogStats, BusError> {
        let mut stats = LogStats::default();
        for (name, slot) in [
            (self.config().events_stream(), &mut stats.events),
            (self.config().dlq_stream(), &mut stats.dlq),
        ] {
            let mut stream = self
                .jetstream()
                .get_stream(&name)
                .await
                .map_err(|e| BusError::js(format!("get stream {name}"), e))?;
            let info = stream
                .info()
                .await
                .map_err(|e| BusError::js(format!("stream info {name}"), e))?;
            *slot = StreamStats {
                name: name.clone(),
                messages: info.state.messages,
                bytes: info.state.bytes,
                first_sequence: info.state.first_sequence,
                last_sequence: info.state.last_sequence,
            };
        }
        let name = self.config().events_stream();
        let stream = self
            .jetstream()
            .get_stream_no_info(&name)
            .await
            .map_err(|e| BusError::js(format!("get stream {name}"), e))?;
        let mut consumers = stream.consumers();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(|e| BusError::js("list consumers", e))?;
            if info.config.durable_name.is_none() {
                continue; // ordered readers (history, tail), not actors
            }
            stats.consumers.push(ConsumerStats {
                name: info.name,
                pending: info.num_pending,
                ack_pending: info.num_ack_pending as u64,
                redelivered: info.num_redelivered as u64,
                waiting: info.num_waiting as u64,
            });
        }
        stats
            .consumers
            .sort_by(|a, b| natural_key(&a.name).cmp(&natural_key(&b.name)));
        for l in self.dead_letters_of_actor(None).await? {
            *stats
                .dead_letters
                .entry(l.reason)
                .or_default()
                .entry(l.actor)
                .or_default() += 1;
        }
        Ok(stats)
    }
}

/// A name's sort key with its trailing number compared as a number (`p2` before `p10`).
fn natural_key(name: &str) -> (&str, u64, &str) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, tail) = name.split_at(name.len() - digits);
    (head, tail.parse().unwrap_or(0), name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_sort_with_their_numbers_as_numbers() {
        let mut names = vec!["p10", "p2", "trip", "p1", "p11", "a-0"];
        names.sort_by(|a, b| super::natural_key(a).cmp(&super::natural_key(b)));
        assert_eq!(names, ["a-0", "p1", "p2", "p10", "p11", "trip"]);
    }
}
