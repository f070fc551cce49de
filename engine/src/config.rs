//! Connection and log configuration, with validating builders.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use choreo_schemas::{DataFormat, EventType};

use crate::error::ConfigError;

/// Environment variable holding the NATS URL when none is configured.
pub const ENV_NATS_URL: &str = "CHOREO_NATS_URL";
/// Default NATS URL.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Smallest accepted JetStream duplicate window: output ids are deduplicated within it.
pub const MIN_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Default maximum age of the events stream: 30 days (history, replay and audit reach that far
/// back; set [`BusConfigBuilder::max_age`] to keep more, zero for unlimited).
pub const DEFAULT_EVENTS_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How to authenticate to NATS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// User and password.
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// A token.
    Token(String),
    /// An nkey seed.
    NKey(String),
    /// A `.creds` file (JWT + nkey seed).
    CredsFile(PathBuf),
}

/// TLS settings passed through to async-nats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// Require TLS.
    pub required: bool,
    /// Extra root certificates (PEM file).
    pub root_certificates: Option<PathBuf>,
    /// Client certificate and key (PEM files) for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Replicas of the choreo streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replicas {
    /// One copy (single server).
    One,
    /// Three copies (a cluster of at least 3).
    Three,
}

impl Replicas {
    pub(crate) fn count(self) -> usize {
        match self {
            Self::One => 1,
            Self::Three => 3,
        }
    }
}

/// Everything the bus needs: where NATS is, and the shape of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusConfig {
    pub(crate) url: String,
    pub(crate) auth: Auth,
    pub(crate) tls: Tls,
    pub(crate) client_name: String,
    pub(crate) namespace: String,
    pub(crate) partitions: u16,
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_bytes: Option<i64>,
    pub(crate) replicas: Replicas,
    pub(crate) duplicate_window: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) data_format: DataFormat,
    pub(crate) json_types: BTreeSet<EventType>,
}

impl BusConfig {
    /// The format this bus writes the data of events of type `ty` in.
    pub fn data_format_of(&self, ty: &EventType) -> DataFormat {
        if self.json_types.contains(ty) {
            DataFormat::Json
        } else {
            self.data_format
        }
    }

    /// Start a builder with defaults (URL from `CHOREO_NATS_URL` or `nats://127.0.0.1:4222`,
    /// namespace `choreo`, 16 partitions, one replica, 2 min duplicate window).
    pub fn builder() -> BusConfigBuilder {
        BusConfigBuilder::default()
    }

    /// The NATS URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The namespace: subject root and (upper-cased) stream name prefix.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The partition count of the log.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// Replicas of every stream and bucket choreo creates (services' buckets should match).
    pub fn replica_count(&self) -> usize {
        self.replicas.count()
    }

    /// Name of the events stream, e.g. `CHOREO_EVENTS`.
    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.namespace.to_ascii_uppercase())
    }

    /// Name of the saga state changelog stream, e.g. `CHOREO_STATE`.
    pub fn state_stream(&self) -> String {
        format!("{}_STATE", self.namespace.to_ascii_uppercase())
    }

    /// Name of a KV bucket of the namespace, e.g. `CHOREO_MEMBERS`.
    pub fn bucket(&self, what: &str) -> String {
        format!("{}_{what}", self.namespace.to_ascii_uppercase())
    }

    /// Name of the dead-letter stream, e.g. `CHOREO_DLQ`.
    pub fn dlq_stream(&self) -> String {
        format!("{}_DLQ", self.namespace.to_ascii_uppercase())
    }
}

/// Builder for [`BusConfig`].
#[derive(Clone, Debug)]
pub struct BusConfigBuilder {
    url: Option<String>,
    auth: Auth,
    tls: Tls,
    client_name: String,
    namespace: String,
    partitions: u16,
    max_age: Option<Duration>,
    max_bytes: Option<i64>,
    replicas: Replicas,
    duplicate_window: Duration,
    request_timeout: Duration,
    data_format: DataFormat,
    json_types: BTreeSet<EventType>,
}

impl Default for BusConfigBuilder {
    fn default() -> Self {
        Self {
            url: None,
            auth: Auth::None,
            tls: Tls::default(),
            client_name: "choreo".to_owned(),
            namespace: choreo_schemas::DEFAULT_ROOT.to_owned(),
            partitions: 16,
            max_age: Some(DEFAULT_EVENTS_MAX_AGE),
            max_bytes: None,
            replicas: Replicas::One,
            duplicate_window: MIN_DUPLICATE_WINDOW,
            request_timeout: Duration::from_secs(10),
            data_format: DataFormat::Msgpack,
            json_types: BTreeSet::new(),
        }
    }
}

impl BusConfigBuilder {
    /// The NATS URL (overrides `CHOREO_NATS_URL`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }
    /// Credentials.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
    /// TLS settings.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }
    /// The connection name shown by the server.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }
    /// Subject root and stream-name prefix (default `choreo`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }
    /// Partition count; fixed when the log is created.
    pub fn partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions;
        self
    }
    /// Maximum age of events in the log (default [`DEFAULT_EVENTS_MAX_AGE`], 30 days; zero:
    /// unlimited, and a node warns at start). Applies when the stream is created.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = (!max_age.is_zero()).then_some(max_age);
        self
    }
    /// Maximum size of the log in bytes (default: unlimited; the age limit applies).
    pub fn max_bytes(mut self, max_bytes: i64) -> Self {
        self.max_bytes = Some(max_bytes);
        self
    }
    /// Stream replicas.
    pub fn replicas(mut self, replicas: Replicas) -> Self {
        self.replicas = replicas;
        self
    }
    /// JetStream duplicate window (>= 2 min).
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }
    /// Timeout of JetStream API requests and publish acks.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The format of the data of every event this bus publishes (default msgpack). With
    /// [`DataFormat::Json`], consumers in other languages read `ce-datacontenttype:
    /// application/json` and need no msgpack; choreo reads both, so nodes may differ. Data
    /// JSON cannot express (binary, non-string keys) stays msgpack, event by event.
    pub fn data_format(mut self, format: DataFormat) -> Self {
        self.data_format = format;
        self
    }
    /// Publish the data of events of type `ty` as JSON whatever [`Self::data_format`] says:
    /// for the types a consumer in another language reads.
    pub fn json_data_for(mut self, ty: EventType) -> Self {
        self.json_types.insert(ty);
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<BusConfig, ConfigError> {
        let url = match self.url {
            Some(url) => url,
            None => std::env::var(ENV_NATS_URL).unwrap_or_else(|_| DEFAULT_NATS_URL.to_owned()),
        };
        if url.trim().is_empty() {
            return Err(ConfigError::new("the NATS URL is empty"));
        }
        choreo_schemas::ActorName::new(self.namespace.as_str())
            .map_err(|e| ConfigError::new(format!("namespace: {e}")))?;
        if self.partitions == 0 {
            return Err(ConfigError::new("partitions must be at least 1"));
        }
        if self.duplicate_window < MIN_DUPLICATE_WINDOW {
            return Err(ConfigError::new(format!(
                "duplicate window {:?} is shorter than the minimum {:?}: re-emitted outputs would not be deduplicated",
                self.duplicate_window, MIN_DUPLICATE_WINDOW
            )));
        }
        if let Some(b) = self.max_bytes {
            if b <= 0 {
                return Err(ConfigError::new("max_bytes must be positive"));
            }
        }
        if let Some(age) = self.max_age {
            if age < self.duplicate_window.max(Duration::from_secs(1)) {
                return Err(ConfigError::new(
                    "max_age must be at least the duplicate window",
                ));
            }
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::new("request timeout must be positive"));
        }
        Ok(BusConfig {
            url,
            auth: self.auth,
            tls: self.tls,
            client_name: self.client_name,
            namespace: self.namespace,
            partitions: self.partitions,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            request_timeout: self.request_timeout,
            data_format: self.data_format,
            json_types: self.json_types,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_msgpack_unless_json_is_asked_for_all_or_for_a_type() {
        let t = |s: &str| EventType::new(s).expect("valid");
        let b = || BusConfig::builder().url("nats://x:1");
        let plain = b().build().expect("valid");
        assert_eq!(plain.data_format_of(&t("a.v1")), DataFormat::Msgpack);
        let one = b().json_data_for(t("a.v1")).build().expect("valid");
        assert_eq!(one.data_format_of(&t("a.v1")), DataFormat::Json);
        assert_eq!(one.data_format_of(&t("b.v1")), DataFormat::Msgpack);
        let all = b().data_format(DataFormat::Json).build().expect("valid");
        assert_eq!(all.data_format_of(&t("b.v1")), DataFormat::Json);
    }

    #[test]
    fn rejects_what_cannot_work() {
        let b = || BusConfig::builder().url("nats://x:1");
        assert!(b().build().is_ok());
        assert!(b().partitions(0).build().is_err());
        assert!(b().namespace("a.b").build().is_err());
        assert!(b()
            .duplicate_window(Duration::from_secs(5))
            .build()
            .is_err());
        assert!(b().max_bytes(0).build().is_err());
        let c = b().namespace("shop").build().expect("valid");
        assert_eq!(
            (c.events_stream(), c.dlq_stream()),
            ("SHOP_EVENTS".into(), "SHOP_DLQ".into())
        );
    }
}
