//! The inputs of one partition: an ordered consumer of the events stream over the partition's
//! input subjects of every hosted saga (and their redrive subjects), starting after the
//! partition's applied sequence. The changelog head is the checkpoint, so nothing is acked and
//! a new owner starts reading at once (no ack-wait to sit out).

use std::collections::BTreeSet;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};

use super::PartitionEnv;
use crate::error::BusError;

/// The ordered message stream of a partition's inputs.
pub(crate) type Inputs = async_nats::jetstream::consumer::pull::Ordered;

/// The partition's input filters.
pub(crate) fn filters(env: &PartitionEnv, partition: u16) -> Vec<String> {
    let root = env.bus.subjects().root();
    let mut types = BTreeSet::new();
    for s in env.sagas.iter() {
        types.extend(s.inputs().iter().cloned());
    }
    let mut out: Vec<String> = types
        .iter()
        .map(|t| format!("{root}.evt.{partition}.*.{t}"))
        .collect();
    for s in env.sagas.iter() {
        out.push(
            env.bus
                .subjects()
                .redrive_partition_filter(s.name(), partition),
        );
    }
    out
}

/// Open the partition's inputs after `applied_seq`; also returns how many were pending then.
pub(crate) async fn open(
    env: &PartitionEnv,
    partition: u16,
    applied_seq: u64,
) -> Result<(Inputs, u64), BusError> {
    let stream_name = env.bus.config().events_stream();
    let what = format!("inputs of partition {partition}");
    let stream = env
        .bus
        .jetstream()
        .get_stream_no_info(&stream_name)
        .await
        .map_err(|e| BusError::js(what.clone(), e))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subjects: filters(env, partition),
            deliver_policy: match applied_seq {
                0 => DeliverPolicy::All,
                s => DeliverPolicy::ByStartSequence {
                    start_sequence: s.saturating_add(1),
                },
            },
            description: Some(format!("choreo partition {partition} inputs")),
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::js(what.clone(), e))?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| BusError::js(what, e))?;
    Ok((messages, pending))
}
