//! The idempotent ledger: an effect recorded under an idempotency key in a JetStream KV bucket.
//! The first `apply` of a key records it; every later one (a redelivered command, a re-run
//! after a crash) finds it and does nothing: "already applied".

use async_nats::jetstream::kv;
use choreo::{Bus, Event, EventType, ReactContext, ReactError};
use serde::{Deserialize, Serialize};

use crate::error::ServiceError;

/// What the ledger keeps per key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The idempotency key.
    pub key: String,
    /// What was done, in words.
    pub effect: String,
    /// The effect's data (msgpack).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// The outcome of [`Ledger::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Recorded now: perform the effect's consequences.
    Applied,
    /// Recorded before: this is a duplicate; the original entry.
    AlreadyApplied(LedgerEntry),
}

/// A ledger over one KV bucket.
#[derive(Clone, Debug)]
pub struct Ledger {
    kv: kv::Store,
    js: async_nats::jetstream::Context,
    bucket: String,
}

/// KV keys allow `[-/_=.a-zA-Z0-9]`; anything else becomes `_`.
fn kv_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-/_=.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Ledger {
    /// Open the bucket, creating it (file storage, one revision per key) if missing.
    pub async fn open(bus: &Bus, bucket: &str) -> Result<Self, ServiceError> {
        let js = bus.jetstream();
        let err = |reason: String| ServiceError::Kv {
            bucket: bucket.to_owned(),
            reason,
        };
        let kv = match js.get_key_value(bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    description: "choreo idempotent ledger".to_owned(),
                    history: 1,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    // As replicated as the log: a ledger on one server stops every service
                    // when that server does.
                    num_replicas: bus.config().replica_count(),
                    ..Default::default()
                })
                .await
                .map_err(|e| err(e.to_string()))?,
        };
        Ok(Self {
            kv,
            js: js.clone(),
            bucket: bucket.to_owned(),
        })
    }

    /// Record `effect` under `key` unless it is recorded already. Atomic: of two concurrent
    /// applies of one key, exactly one gets [`Applied::Applied`].
    pub async fn apply(
        &self,
        key: &str,
        effect: &str,
        data: &[u8],
    ) -> Result<Applied, ServiceError> {
        let entry = LedgerEntry {
            key: key.to_owned(),
            effect: effect.to_owned(),
            data: data.to_vec(),
        };
        let bytes =
            rmp_serde::to_vec_named(&entry).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        match self.kv.create(kv_key(key), bytes.into()).await {
            Ok(_) => Ok(Applied::Applied),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match self.get(key).await? {
                    Some(existing) => Ok(Applied::AlreadyApplied(existing)),
                    None => Err(ServiceError::Invalid(format!(
                        "ledger key {key} exists but cannot be read"
                    ))),
                }
            }
            Err(e) => Err(ServiceError::Kv {
                bucket: self.bucket.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// The entry under `key`.
    pub async fn get(&self, key: &str) -> Result<Option<LedgerEntry>, ServiceError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let err = |e: String| ServiceError::Kv {
            bucket: self.bucket.clone(),
            reason: e,
        };
        // From the bucket stream's leader: a KV get is a direct get, which a replica that lags
        // may answer, and a cancellation told "no booking" leaves the booking in place.
        let stream = self
            .js
            .get_stream_no_info(format!("KV_{}", self.bucket))
            .await
            .map_err(|e| err(e.to_string()))?;
        let subject = format!("$KV.{}.{}", self.bucket, kv_key(key));
        let msg = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => m,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(err(e.to_string())),
        };
        let deleted = msg
            .headers
            .get("KV-Operation")
            .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
        if deleted {
            return Ok(None);
        }
        rmp_serde::from_slice(&msg.payload)
            .map(Some)
            .map_err(|e| ServiceError::Invalid(e.to_string()))
    }

    /// How many effects are recorded (read fresh from the bucket's stream: the KV handle's
    /// own status is cached at open).
    pub async fn len(&self) -> Result<u64, ServiceError> {
        let err = |e: String| ServiceError::Kv {
            bucket: self.bucket.clone(),
            reason: e,
        };
        let mut stream = self
            .js
            .get_stream(format!("KV_{}", self.bucket))
            .await
            .map_err(|e| err(e.to_string()))?;
        let info = stream.info().await.map_err(|e| err(e.to_string()))?;
        Ok(info.state.messages)
    }

    /// Every recorded effect (for checkers: reads the whole bucket).
    pub async fn entries(&self) -> Result<Vec<LedgerEntry>, ServiceError> {
        use futures::StreamExt;
        let err = |e: String| ServiceError::Kv {
            bucket: self.bucket.clone(),
            reason: e,
        };
        let mut keys = self.kv.keys().await.map_err(|e| err(e.to_string()))?;
        let mut names: Vec<String> = Vec::new();
        while let Some(k) = keys.next().await {
            names.push(k.map_err(|e| err(e.to_string()))?);
        }
        let mut out = Vec::with_capacity(names.len());
        for k in names {
            if let Some(e) = self.get(&k).await? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Whether nothing is recorded.
    pub async fn is_empty(&self) -> Result<bool, ServiceError> {
        Ok(self.len().await? == 0)
    }
}

/// `<type>.dry_run`: what a service in dry-run mode emits instead of performing an effect.
pub fn dry_run_type(ty: &EventType) -> Result<EventType, choreo::schemas::IdError> {
    EventType::new(format!("{ty}.dry_run"))
}

/// The data of a `<type>.dry_run` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRun {
    /// The service.
    pub service: String,
    /// What it would have done.
    pub would: String,
    /// The input's data.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Emit `<input type>.dry_run` saying what the service would have done.
pub fn emit_dry_run(ctx: &mut ReactContext, input: &Event, would: &str) -> Result<(), ReactError> {
    let ty = dry_run_type(&input.ty).map_err(ReactError::permanent)?;
    let d = DryRun {
        service: ctx.actor().to_string(),
        would: would.to_owned(),
        data: input.data.clone(),
    };
    let data = rmp_serde::to_vec_named(&d).map_err(ReactError::permanent)?;
    ctx.emit_raw(ty, data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::kv_key;

    #[test]
    fn keys_are_made_kv_safe() {
        assert_eq!(kv_key("flights:0190-ab"), "flights_0190-ab");
        assert_eq!(kv_key("a b*c>"), "a_b_c_");
    }
}
