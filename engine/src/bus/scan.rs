//! Which messages a subject filter matches after a sequence: a cheap look at the stored log
//! (subjects and sequences only), for the deadlock detector's "in flight" check.

use super::Bus;
use crate::error::BusError;

impl Bus {
    /// Subjects and sequences of the messages of `stream` after `after` that match `filter`,
    /// in order; `None` when there are more than `limit`.
    pub(crate) async fn scan_after(
        &self,
        stream: &str,
        after: u64,
        filter: &str,
        limit: usize,
    ) -> Result<Option<Vec<(u64, String)>>, BusError> {
        let mut out = Vec::new();
        let mut cursor = after.saturating_add(1);
        while let Some(m) = self.get_unparsed(stream, cursor, filter).await? {
            if out.len() >= limit {
                return Ok(None);
            }
            cursor = m.sequence.saturating_add(1);
            out.push((m.sequence, m.subject));
        }
        Ok(Some(out))
    }

    /// How far a durable consumer of `stream` has got: the stream sequence through which it has
    /// acknowledged everything (its ack floor; 0 when it does not exist). Floors only grow, so
    /// a floor read earlier is a safe lower bound later.
    pub(crate) async fn consumed_through(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Result<u64, BusError> {
        let s = self
            .jetstream()
            .get_stream_no_info(stream)
            .await
            .map_err(|e| BusError::js(format!("get stream {stream}"), e))?;
        match s.consumer_info(consumer).await {
            Ok(info) => Ok(info.ack_floor.stream_sequence),
            Err(e)
                if e.kind() == async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound =>
            {
                Ok(0)
            }
            Err(e) => Err(BusError::js(format!("consumer {consumer}"), e)),
        }
    }
}
