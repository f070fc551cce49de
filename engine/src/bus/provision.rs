//! Idempotent provisioning of the choreo streams, and the partition-count check.

use async_nats::jetstream::{self, stream};

use crate::config::BusConfig;
use crate::error::BusError;

/// Stream metadata key holding the partition count fixed at creation.
pub const PARTITIONS_METADATA_KEY: &str = "choreo.partitions";

pub(crate) fn events_stream_config(cfg: &BusConfig) -> stream::Config {
    let mut metadata = std::collections::HashMap::new();
    metadata.insert(
        PARTITIONS_METADATA_KEY.to_owned(),
        cfg.partitions.to_string(),
    );
    stream::Config {
        name: cfg.events_stream(),
        description: Some("choreo event log".to_owned()),
        subjects: vec![
            format!("{}.evt.>", cfg.namespace),
            format!("{}.redrive.>", cfg.namespace),
        ],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: cfg.max_age.unwrap_or_default(),
        max_bytes: cfg.max_bytes.unwrap_or(-1),
        num_replicas: cfg.replicas.count(),
        duplicate_window: cfg.duplicate_window,
        allow_direct: true,
        // Agents publish a decision and its effects as one atomic batch.
        allow_atomic_publish: true,
        metadata,
        ..Default::default()
    }
}

pub(crate) fn dlq_stream_config(cfg: &BusConfig) -> stream::Config {
    stream::Config {
        name: cfg.dlq_stream(),
        description: Some("choreo dead letters".to_owned()),
        subjects: vec![format!("{}.dlq.>", cfg.namespace)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        num_replicas: cfg.replicas.count(),
        duplicate_window: cfg.duplicate_window,
        allow_direct: true,
        ..Default::default()
    }
}

/// The saga state changelog: the latest value of every instance and partition head.
pub(crate) fn state_stream_config(cfg: &BusConfig) -> stream::Config {
    stream::Config {
        name: cfg.state_stream(),
        description: Some(
            "choreo saga state changelog (latest record per instance, head per partition)"
                .to_owned(),
        ),
        subjects: vec![format!("{}.state.>", cfg.namespace)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_messages_per_subject: 1,
        num_replicas: cfg.replicas.count(),
        duplicate_window: cfg.duplicate_window,
        allow_direct: true,
        // Every commit of a partition is one atomic batch, fenced by its head.
        allow_atomic_publish: true,
        // Records of ended instances expire after the nodes' retention (`Nats-TTL`).
        allow_message_ttl: true,
        ..Default::default()
    }
}

/// Check the partition count recorded on an existing events stream.
pub(crate) fn check_partitions(
    stream_name: &str,
    recorded: Option<&String>,
    configured: u16,
) -> Result<(), BusError> {
    let Some(recorded) = recorded else {
        return Err(BusError::IncompatibleStream {
            stream: stream_name.to_owned(),
            reason: format!(
                "it has no {PARTITIONS_METADATA_KEY} metadata; it was not created by choreo"
            ),
        });
    };
    let log: u16 = recorded.parse().map_err(|_| BusError::IncompatibleStream {
        stream: stream_name.to_owned(),
        reason: format!("{PARTITIONS_METADATA_KEY} = {recorded:?} is not a number"),
    })?;
    if log != configured {
        return Err(BusError::PartitionMismatch {
            stream: stream_name.to_owned(),
            log,
            configured,
        });
    }
    Ok(())
}

/// Create the streams if missing; verify them if present. Safe to call from every node start.
pub(crate) async fn provision(js: &jetstream::Context, cfg: &BusConfig) -> Result<(), BusError> {
    for wanted in [
        events_stream_config(cfg),
        dlq_stream_config(cfg),
        state_stream_config(cfg),
    ] {
        let name = wanted.name.clone();
        let mut stream = js
            .get_or_create_stream(wanted.clone())
            .await
            .map_err(|e| BusError::js(format!("create stream {name}"), e))?;
        let mut info = stream
            .info()
            .await
            .map_err(|e| BusError::js(format!("stream info {name}"), e))?
            .clone();
        if wanted.allow_message_ttl && !info.config.allow_message_ttl {
            // A changelog created before retention existed: enable per-message TTLs.
            let mut cfg = info.config.clone();
            cfg.allow_message_ttl = true;
            info = js
                .update_stream(cfg)
                .await
                .map_err(|e| BusError::js(format!("enable message TTLs on {name}"), e))?;
        }
        if name == cfg.events_stream()
            && info.config.max_age.is_zero()
            && info.config.max_bytes < 0
            && info.config.max_messages < 0
        {
            tracing::warn!(
                stream = %name,
                "the events stream has no limits (max_age, max_bytes, max_msgs): it grows forever; set BusConfig::max_age or max_bytes, or the stream's limits"
            );
        }
        if info.config.subjects != wanted.subjects {
            return Err(BusError::IncompatibleStream {
                stream: name,
                reason: format!(
                    "its subjects are {:?}, expected {:?}",
                    info.config.subjects, wanted.subjects
                ),
            });
        }
        if name == cfg.events_stream() {
            check_partitions(
                &name,
                info.config.metadata.get(PARTITIONS_METADATA_KEY),
                cfg.partitions,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_check_names_both_counts() {
        assert!(check_partitions("S", Some(&"8".to_owned()), 8).is_ok());
        let err = check_partitions("S", Some(&"8".to_owned()), 4).expect_err("mismatch");
        let msg = err.to_string();
        assert!(
            msg.contains("8 partitions") && msg.contains("configured with 4"),
            "{msg}"
        );
        assert!(check_partitions("S", None, 4).is_err());
        assert!(check_partitions("S", Some(&"x".to_owned()), 4).is_err());
    }
}
