//! Idempotent provisioning of the choreo streams, and the partition-count check.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
use async_nats::jetstream::{self, stream};

use choreo_schemas::{PartitionHash, Partitioner, Subjects};

use crate::config::BusConfig;
use crate::error::BusError;

/// Stream metadata key holding the partition count fixed at creation.
pub const PARTITIONS_METADATA_KEY: &str = "choreo.partitions";

/// Stream metadata key holding the partition hash fixed at creation
/// ([`PartitionHash::as_str`]); a stream without it uses [`PartitionHash::Fnv1a64`].
pub const PARTITION_HASH_METADATA_KEY: &str = "choreo.partition_hash";

/// The events stream's subjects for a namespace with `hash`: the ingress exists only where
/// the server can compute the partition (the current hash).
fn events_subjects(cfg: &BusConfig, hash: PartitionHash) -> Vec<String> {
    let mut subjects = vec![
        format!("{}.evt.>", cfg.namespace),
        format!("{}.redrive.>", cfg.namespace),
    ];
    if hash == PartitionHash::Fnv1a32 {
        subjects.push(Subjects::new(cfg.namespace.clone()).ingress_filter());
    }
    subjects
}

/// The ingress transform: `<ns>.in.<correlation>.<type>` to
/// `<ns>.evt.<partition(correlation)>.<correlation>.<type>`.
fn ingress_transform(cfg: &BusConfig) -> stream::SubjectTransform {
    let subjects = Subjects::new(cfg.namespace.clone());
    stream::SubjectTransform {
        source: subjects.ingress_filter(),
        destination: subjects.ingress_destination(cfg.partitions),
    }
}

pub(crate) fn events_stream_config(cfg: &BusConfig) -> stream::Config {
    let mut metadata = std::collections::HashMap::new();
    metadata.insert(
        PARTITIONS_METADATA_KEY.to_owned(),
        cfg.partitions.to_string(),
    );
    metadata.insert(
        PARTITION_HASH_METADATA_KEY.to_owned(),
        PartitionHash::Fnv1a32.as_str().to_owned(),
    );
    stream::Config {
        name: cfg.events_stream(),
        description: Some("choreo event log".to_owned()),
        subjects: events_subjects(cfg, PartitionHash::Fnv1a32),
        subject_transform: Some(ingress_transform(cfg)),
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

/// The partition hash recorded on an existing events stream (none recorded: the earlier hash).
pub(crate) fn recorded_hash(
    stream_name: &str,
    recorded: Option<&String>,
) -> Result<PartitionHash, BusError> {
    match recorded {
        None => Ok(PartitionHash::Fnv1a64),
        Some(value) => PartitionHash::parse(value).ok_or_else(|| BusError::IncompatibleStream {
            stream: stream_name.to_owned(),
            reason: format!(
                "{PARTITION_HASH_METADATA_KEY} = {value:?} is not a hash this version knows"
            ),
        }),
    }
}

/// Create the streams if missing; verify them if present. Safe to call from every node start.
/// Returns the namespace's partitioning, as recorded on its events stream.
pub(crate) async fn provision(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> Result<Partitioner, BusError> {
    let mut partitioner = Partitioner::new(cfg.partitions);
    for wanted in [
        events_stream_config(cfg),
        dlq_stream_config(cfg),
        state_stream_config(cfg),
    ] {
        let name = wanted.name.clone();
        let deadline = tokio::time::Instant::now() + PROVISION_RETRY_FOR;
        let stream = retrying(&format!("create stream {name}"), deadline, || {
            js.get_or_create_stream(wanted.clone())
        })
        .await?;
        let mut info = retrying(&format!("stream info {name}"), deadline, || async {
            stream.get_info().await.map_err(|e| {
                let kind = match e.kind() {
                    async_nats::jetstream::context::RequestErrorKind::TimedOut => {
                        CreateStreamErrorKind::TimedOut
                    }
                    _ => CreateStreamErrorKind::Response,
                };
                CreateStreamError::with_source(kind, e)
            })
        })
        .await?;
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
        let mut expected_subjects = wanted.subjects.clone();
        if name == cfg.events_stream() {
            partitioner = recorded_partitioner(&name, &info.config.metadata, cfg.partitions)?;
            if partitioner.hash != PartitionHash::Fnv1a32
                && PartitionHash::hashes_agree(cfg.partitions)
                && info.config.subjects == events_subjects(cfg, partitioner.hash)
            {
                // Both hashes place every correlation alike here: move the namespace to the
                // current one in place, and open its ingress. Nothing moves.
                let mut upgraded = info.config.clone();
                upgraded.subjects = wanted.subjects.clone();
                upgraded.subject_transform = wanted.subject_transform.clone();
                upgraded.metadata.insert(
                    PARTITION_HASH_METADATA_KEY.to_owned(),
                    PartitionHash::Fnv1a32.as_str().to_owned(),
                );
                info = js
                    .update_stream(upgraded)
                    .await
                    .map_err(|e| BusError::js(format!("open the ingress of {name}"), e))?;
                tracing::info!(stream = %name, "the namespace moved to the server's partition hash (same placement for {} partitions) and has an ingress now", cfg.partitions);
                partitioner.hash = PartitionHash::Fnv1a32;
            }
            expected_subjects = events_subjects(cfg, partitioner.hash);
            let expected_transform = wanted
                .subject_transform
                .clone()
                .filter(|_| partitioner.hash == PartitionHash::Fnv1a32);
            if info.config.subject_transform != expected_transform {
                return Err(differs(
                    name,
                    "subject transform",
                    &info.config.subject_transform,
                    &expected_transform,
                ));
            }
            if partitioner.hash != PartitionHash::Fnv1a32 {
                tracing::warn!(
                    stream = %name,
                    hash = %partitioner.hash,
                    "this namespace was created before the ingress existed, with a partition count that does not divide 32: it keeps its partition hash and has no <ns>.in.> ingress (see schemas/docs/wire.md, \"Migration\")"
                );
            }
        }
        if info.config.subjects != expected_subjects {
            return Err(differs(
                name,
                "subjects",
                &info.config.subjects,
                &expected_subjects,
            ));
        }
    }
    Ok(partitioner)
}

/// Look the namespace up without creating or changing anything (read-only commands): its
/// events stream must exist; its partition count must be the configured one; its recorded hash
/// is used as it is (no in-place upgrade).
pub(crate) async fn inspect(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> Result<Partitioner, BusError> {
    let name = cfg.events_stream();
    let mut stream = match js.get_stream(&name).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            return Err(BusError::NoNamespace {
                namespace: cfg.namespace.clone(),
                url: cfg.url.clone(),
                stream: name,
            });
        }
        Err(e) => return Err(BusError::js(format!("stream info {name}"), e)),
    };
    let info = stream
        .info()
        .await
        .map_err(|e| BusError::js(format!("stream info {name}"), e))?;
    recorded_partitioner(&name, &info.config.metadata, cfg.partitions)
}

/// The partitioning recorded on an existing events stream: its count must be `configured`.
fn recorded_partitioner(
    stream_name: &str,
    metadata: &std::collections::HashMap<String, String>,
    configured: u16,
) -> Result<Partitioner, BusError> {
    check_partitions(
        stream_name,
        metadata.get(PARTITIONS_METADATA_KEY),
        configured,
    )?;
    Ok(Partitioner {
        count: configured,
        hash: recorded_hash(stream_name, metadata.get(PARTITION_HASH_METADATA_KEY))?,
    })
}

/// An existing stream whose `what` is not what this version expects.
fn differs(
    stream: String,
    what: &str,
    found: &dyn std::fmt::Debug,
    expected: &dyn std::fmt::Debug,
) -> BusError {
    BusError::IncompatibleStream {
        stream,
        reason: format!("its {what}: {found:?}, expected {expected:?}"),
    }
}

/// Open the KV bucket `config.bucket`, creating it with `config` (file storage, the log's
/// replica count) if it does not exist. Shared by every bucket the engine owns.
pub(crate) async fn kv_bucket(
    bus: &super::Bus,
    config: async_nats::jetstream::kv::Config,
) -> Result<async_nats::jetstream::kv::Store, BusError> {
    let js = bus.jetstream();
    if let Ok(kv) = js.get_key_value(config.bucket.as_str()).await {
        return Ok(kv);
    }
    let name = config.bucket.clone();
    js.create_key_value(async_nats::jetstream::kv::Config {
        storage: stream::StorageType::File,
        num_replicas: bus.config().replicas.count(),
        ..config
    })
    .await
    .map_err(|e| BusError::js(format!("create bucket {name}"), e))
}

/// How long a node's start keeps asking a cluster that cannot answer yet (a server restarting,
/// a meta leader being elected) before it gives up.
pub(crate) const PROVISION_RETRY_FOR: Duration = Duration::from_secs(60);

/// Whether a stream request failed for a reason that passes (no answer, no leader, no quorum
/// yet) rather than for its content.
fn transient(e: &CreateStreamError) -> bool {
    match e.kind() {
        CreateStreamErrorKind::TimedOut
        | CreateStreamErrorKind::JetStreamUnavailable
        | CreateStreamErrorKind::Response => true,
        // 10005 no suitable peers, 10006 cluster not active, 10008 temporarily unavailable,
        // 10023 insufficient resources (a peer not back yet).
        CreateStreamErrorKind::JetStream(j) => {
            j.code() == 503 || [10005, 10006, 10008, 10023].contains(&j.error_code().0)
        }
        _ => false,
    }
}

/// Run `op` until it succeeds, fails for good, or `deadline` passes, with a doubling pause.
async fn retrying<T, F, Fut>(
    what: &str,
    deadline: tokio::time::Instant,
    mut op: F,
) -> Result<T, BusError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CreateStreamError>>,
{
    let mut pause = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) && tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %e, ?pause, "{what}: the cluster cannot answer yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(BusError::js(what.to_owned(), e)),
        }
    }
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
