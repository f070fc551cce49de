//! The run's environment: the nats-server (started by the harness, or given by URL), its
//! version and durability mode, and the machine.

use choreo::{NatsServer, ServerOptions};

use crate::error::BenchError;
use crate::options::{BenchOptions, Durability};
use crate::report::Environment;

/// The server every workload of a run uses.
pub(crate) struct BenchServer {
    server: Option<NatsServer>,
    pub(crate) url: String,
    pub(crate) version: String,
    pub(crate) durability: Durability,
}

impl BenchServer {
    /// Start a server (unless a URL is given) and learn its version.
    pub(crate) async fn start(opts: &BenchOptions) -> Result<Self, BenchError> {
        if let Some(url) = &opts.nats_url {
            let client = async_nats::connect(url.as_str())
                .await
                .map_err(|e| BenchError::nats(format!("connect {url}"), e))?;
            let version = client.server_info().version;
            return Ok(Self {
                server: None,
                url: url.clone(),
                version,
                durability: Durability::External,
            });
        }
        let server = NatsServer::start(ServerOptions {
            sync_always: opts.sync_always,
            ..Default::default()
        })
        .await?;
        Ok(Self {
            url: server.url(),
            version: server.binary().version.clone(),
            durability: if opts.sync_always {
                Durability::SyncAlways
            } else {
                Durability::Default
            },
            server: Some(server),
        })
    }

    /// Process id of a server the harness started.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(NatsServer::pid)
    }

    /// Stop a server the harness started.
    pub(crate) async fn stop(mut self) {
        if let Some(s) = self.server.as_mut() {
            let _ = s.stop().await;
        }
    }

    /// The report's environment block.
    pub(crate) fn environment(&self, opts: &BenchOptions) -> Environment {
        Environment {
            date: now_rfc3339(),
            command: opts.command.clone(),
            server_version: self.version.clone(),
            durability: self.durability.to_string(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: cpu_model(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
            server: if self.server.is_some() {
                "started by the harness (loopback, temporary store)".to_owned()
            } else {
                self.url.clone()
            },
            mode: opts.mode.to_string(),
            quick: opts.quick,
            engine_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

/// A namespace no earlier run used (a subject token; streams are `<NS>_EVENTS`).
pub(crate) fn fresh_namespace(workload: &str) -> String {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    format!("b{workload}{:x}", (nanos as u64) & 0xff_ffff_ffff)
}
