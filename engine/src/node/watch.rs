//! Start saga instances and wait until each has ended: what a batch job, a demo or a test does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use choreo_schemas::{Event, EventType};
use futures::StreamExt;

use crate::bus::Bus;
use crate::changelog::Changelog;
use crate::error::NodeError;
use crate::model::InstanceRecord;
use crate::node::RunningNode;
use crate::saga::{SAGA_COMPENSATED, SAGA_COMPLETED, SAGA_FAULTED};
use crate::store::Store;

impl RunningNode {
    /// Publish `roots` (each starts an instance of `saga`, keyed by its correlation) and wait
    /// until every instance has ended (completed, compensated or faulted), or `deadline` passed.
    /// `on_end(record, ended, total)` is called as each ends. Returns the final records in the
    /// order of `roots`. The instances may be owned by any node of the cluster.
    pub async fn run_to_end(
        &self,
        saga: &str,
        roots: &[Event],
        deadline: Duration,
        on_end: impl FnMut(&InstanceRecord, usize, usize),
    ) -> Result<Vec<InstanceRecord>, NodeError> {
        run_to_end(self.bus(), self.store(), saga, roots, deadline, on_end).await
    }
}

/// [`RunningNode::run_to_end`] from a process that hosts nothing (the nodes run elsewhere):
/// outcomes are read from the changelog (and from `store` first, when given).
pub async fn run_to_end(
    bus: &Bus,
    store: Option<&Store>,
    saga: &str,
    roots: &[Event],
    deadline: Duration,
    mut on_end: impl FnMut(&InstanceRecord, usize, usize),
) -> Result<Vec<InstanceRecord>, NodeError> {
    {
        let changelog = Changelog::new(bus);
        let filters = [SAGA_COMPLETED, SAGA_COMPENSATED, SAGA_FAULTED]
            .iter()
            .filter_map(|t| EventType::new(*t).ok())
            .map(|t| bus.subjects().type_filter(&t))
            .collect();
        let mut ends = bus.follow_events_matching(filters, false).await?;
        let waiting: BTreeSet<String> = roots.iter().map(|e| e.correlation.to_string()).collect();
        let source = format!("/sagas/{saga}");
        bus.publish_all(roots).await?;
        let mut ended: BTreeMap<String, InstanceRecord> = BTreeMap::new();
        let timeout = tokio::time::sleep(deadline);
        tokio::pin!(timeout);
        while ended.len() < waiting.len() {
            let next = tokio::select! {
                () = &mut timeout => {
                    return Err(NodeError::Deadline { ended: ended.len(), total: waiting.len(), waited: deadline });
                }
                next = ends.next() => next,
            };
            let Some(stored) = next else {
                return Err(NodeError::Task("the lifecycle event stream closed".into()));
            };
            // A transient error of the follow (a server failing over) is not the end of the run.
            let stored = match stored {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "lifecycle follow error; continuing");
                    continue;
                }
            };
            let Ok(e) = stored.event else { continue };
            let corr = e.correlation.to_string();
            if e.source != source || !waiting.contains(&corr) || ended.contains_key(&corr) {
                continue;
            }
            // The instance may live on another node: read it from the changelog, which holds
            // the commit before its lifecycle event is published.
            let record = match store.map(|s| s.get(saga, &corr)) {
                Some(Ok(Some(r))) if r.status.is_terminal() => Some(r),
                _ => loop {
                    // Retried until the deadline: a changelog read can time out while a server
                    // fails over. The changelog holds the ending commit before its lifecycle event is
                    // published, and the read goes to the stream's leader; a record read not
                    // ended is retried rather than taken as the answer (it would never be
                    // asked again: the lifecycle event was this instance's only one).
                    match changelog.find(saga, &corr, Some(&corr)).await {
                        Ok(r) if r.as_ref().is_none_or(|r| r.status.is_terminal()) => break r,
                        other => {
                            match other {
                                Err(err) => {
                                    tracing::warn!(error = %err, "reading the changelog failed; retrying")
                                }
                                Ok(_) => {
                                    tracing::warn!(instance = %corr, "ended by its lifecycle event but not yet in the changelog; retrying")
                                }
                            }
                            tokio::select! {
                                () = &mut timeout => {
                                    return Err(NodeError::Deadline { ended: ended.len(), total: waiting.len(), waited: deadline });
                                }
                                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                            }
                        }
                    }
                },
            };
            let Some(record) = record else {
                continue;
            };
            if record.status.is_terminal() {
                on_end(&record, ended.len() + 1, waiting.len());
                ended.insert(corr, record);
            }
        }
        Ok(roots
            .iter()
            .filter_map(|e| ended.remove(e.correlation.as_str()))
            .collect())
    }
}
