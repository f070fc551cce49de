//! Fixing where a saga starts: the first node that hosts a saga records its start in the KV
//! bucket `<NS>_SAGAS` (key: the saga's name); every later node, and every later run, reads it.
//! So "new events only" means new since the saga first ran anywhere, not since this node
//! started, and a node that joins later does not move it.

use async_nats::jetstream::kv;
use choreo_schemas::ActorName;

use crate::bus::Bus;
use crate::delivery::{SagaStart, StartPosition};
use crate::error::BusError;

/// The bucket's name suffix (`<NS>_SAGAS`).
pub(crate) const SAGAS_BUCKET: &str = "SAGAS";

/// The start of `saga`: the recorded one, or `position` recorded now.
pub(crate) async fn register(
    bus: &Bus,
    saga: &ActorName,
    position: StartPosition,
) -> Result<SagaStart, BusError> {
    let name = bus.config().bucket(SAGAS_BUCKET);
    let kv = crate::bus::kv_bucket(
        bus,
        kv::Config {
            bucket: name.clone(),
            description: "choreo: where each saga started (fixed when it first ran)".into(),
            history: 1,
            ..Default::default()
        },
    )
    .await?;
    let key = saga.as_str();
    if let Some(start) = read(&kv, key, &name).await? {
        return Ok(start);
    }
    // Only "new" depends on the log's position now.
    let new_after = match position {
        StartPosition::New => new_after(bus).await?,
        _ => 0,
    };
    let start = SagaStart::of(position, new_after);
    let body = serde_json::to_vec(&start).map_err(|e| BusError::js("encode a saga start", e))?;
    match kv.create(key, body.into()).await {
        Ok(_) => Ok(start),
        // Another node recorded it first: its record stands.
        Err(_) => read(&kv, key, &name)
            .await?
            .ok_or_else(|| BusError::js(format!("record the start of {key} in {name}"), "refused")),
    }
}

/// What "new" means now: on a log no partition has applied anything of yet, its last
/// sequence (history is history); once partitions have run (a deployment upgraded to a version
/// that records starts, or a saga added beside others), the lowest sequence a partition has
/// applied, so nothing a partition has not yet read is skipped (it would be lost).
async fn new_after(bus: &Bus) -> Result<u64, BusError> {
    let heads = crate::changelog::Changelog::new(bus)
        .heads()
        .await
        .map_err(|e| BusError::js("read the partition heads", e))?;
    if let Some(min) = heads.iter().map(|h| h.value.applied_seq).min() {
        return Ok(min);
    }
    let events = bus.config().events_stream();
    Ok(bus
        .jetstream()
        .get_stream(&events)
        .await
        .map_err(|e| BusError::js(format!("get stream {events}"), e))?
        .cached_info()
        .state
        .last_sequence)
}

async fn read(kv: &kv::Store, key: &str, bucket: &str) -> Result<Option<SagaStart>, BusError> {
    match kv.get(key).await {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| BusError::js(format!("read {bucket}/{key}"), e)),
        Ok(None) => Ok(None),
        Err(e) => Err(BusError::js(format!("read {bucket}/{key}"), e)),
    }
}
