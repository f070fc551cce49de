//! Shared by the multi-process tests: `choreo node --example …` as a child process.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use choreo::{BusConfig, Replicas};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// The bound of every wait.
pub const WAIT: Duration = Duration::from_secs(90);
/// Partitions of the log the tests create.
pub const PARTITIONS: u16 = 8;

pub fn config(url: &str, replicas: Replicas) -> Result<BusConfig> {
    Ok(BusConfig::builder()
        .url(url)
        .partitions(PARTITIONS)
        .replicas(replicas)
        .request_timeout(Duration::from_secs(5))
        .build()?)
}

/// One `choreo node` child process.
pub struct NodeProc {
    pub id: String,
    child: Child,
    stderr: tokio::task::JoinHandle<String>,
}

impl NodeProc {
    pub async fn start(url: &str, dir: &Path, id: &str, ttl_ms: u64, replicas: u8) -> Result<Self> {
        Self::start_with(url, dir, id, ttl_ms, replicas, &[]).await
    }

    /// [`NodeProc::start`] with more `choreo node` arguments.
    pub async fn start_with(
        url: &str,
        dir: &Path,
        id: &str,
        ttl_ms: u64,
        replicas: u8,
        extra: &[&str],
    ) -> Result<Self> {
        Self::start_example("travel", url, dir, id, ttl_ms, replicas, extra).await
    }

    /// `choreo node --example EXAMPLE` with more arguments.
    pub async fn start_example(
        example: &str,
        url: &str,
        dir: &Path,
        id: &str,
        ttl_ms: u64,
        replicas: u8,
        extra: &[&str],
    ) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_choreo"))
            .args(["node", "--example", example, "--nats", url, "--node-id", id])
            .arg("--data-dir")
            .arg(dir.join(id))
            .args(["--lease-ttl-ms", &ttl_ms.to_string()])
            .args(["--partitions", &PARTITIONS.to_string()])
            .args(["--replicas", &replicas.to_string()])
            .args(["--step-timeout-ms", "4000"])
            .args(extra)
            .env_remove("CHOREO_NATS_URL")
            .env("CHOREO_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut stderr = child.stderr.take().context("stderr")?;
        let stderr = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            s
        });
        let mut lines = BufReader::new(stdout).lines();
        tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("choreo node ready") {
                    return Ok(());
                }
            }
            bail!("node {id} exited before it was ready")
        })
        .await
        .context("node start timed out")??;
        Ok(Self {
            id: id.to_owned(),
            child,
            stderr,
        })
    }

    pub fn pid(&self) -> Result<String> {
        Ok(self.child.id().context("running")?.to_string())
    }

    pub async fn signal(&self, sig: &str) -> Result<()> {
        let ok = Command::new("kill")
            .args([sig, &self.pid()?])
            .status()
            .await?
            .success();
        if !ok {
            bail!("kill {sig} {} failed", self.id);
        }
        Ok(())
    }

    /// SIGTERM and wait for a clean exit; returns what it logged.
    pub async fn stop(mut self) -> Result<String> {
        self.signal("-TERM").await?;
        let status = tokio::time::timeout(WAIT, self.child.wait()).await??;
        let log = self.stderr.await?;
        if !status.success() {
            bail!("node {} exited with {status}: {log}", self.id);
        }
        Ok(log)
    }

    /// SIGKILL; returns what it logged.
    pub async fn kill(mut self) -> Result<String> {
        self.child.kill().await?;
        Ok(self.stderr.await?)
    }
}
