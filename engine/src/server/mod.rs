//! Locating and running a local nats-server: `choreo dev`, `choreo demo` and the test harness.
//!
//! Lookup order: `CHOREO_NATS_SERVER`, the project-local `.tools/bin/nats-server` (searched
//! upwards from the current directory, then from this workspace), then `PATH`. A binary older
//! than 2.12 is refused with a clear error.
//!
//! [`NatsCluster`] runs N such servers as one JetStream cluster (routes on loopback), for
//! tests of replicated streams, failover and partitions.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::error::ServerError;

mod cluster;

pub use self::cluster::{ClusterOptions, NatsCluster};

/// Environment variable naming the nats-server binary to use.
pub const ENV_NATS_SERVER: &str = "CHOREO_NATS_SERVER";
/// Project-local location of the provisioned binary, relative to the workspace root.
pub const PROJECT_LOCAL_SERVER: &str = ".tools/bin/nats-server";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_LINES_KEPT: usize = 60;

/// A nats-server binary and the version it reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerBinary {
    /// Path of the executable.
    pub path: PathBuf,
    /// Version it reports, e.g. `2.15.1`.
    pub version: String,
}

impl ServerBinary {
    /// Ask a binary for its version; `None` when it does not run or answer like nats-server.
    pub fn probe(path: &Path) -> Option<Self> {
        let out = std::process::Command::new(path)
            .arg("--version")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let version = text.split_whitespace().find_map(|w| {
            let w = w.trim_start_matches('v');
            crate::bus::version_parse(w).map(|_| w.to_owned())
        })?;
        Some(Self {
            path: path.to_owned(),
            version,
        })
    }

    fn supported(&self) -> bool {
        crate::bus::version_supported(&self.version)
    }

    /// Find the binary to use (see the module docs for the order).
    pub fn locate() -> Result<Self, ServerError> {
        if let Some(p) = std::env::var_os(ENV_NATS_SERVER) {
            let path = PathBuf::from(p);
            let bin = Self::probe(&path).ok_or_else(|| {
                ServerError::NotFound(format!("{ENV_NATS_SERVER}={} does not run", path.display()))
            })?;
            return if bin.supported() {
                Ok(bin)
            } else {
                Err(ServerError::TooOld {
                    path: bin.path.display().to_string(),
                    version: bin.version,
                })
            };
        }
        let mut too_old = None;
        for candidate in candidates() {
            if let Some(bin) = Self::probe(&candidate) {
                if bin.supported() {
                    return Ok(bin);
                }
                too_old.get_or_insert(bin);
            }
        }
        match too_old {
            Some(bin) => Err(ServerError::TooOld {
                path: bin.path.display().to_string(),
                version: bin.version,
            }),
            None => Err(ServerError::NotFound(format!(
                "looked at ${ENV_NATS_SERVER}, {PROJECT_LOCAL_SERVER} and PATH"
            ))),
        }
    }
}

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    // The workspace this crate was built in (tests, `cargo run`).
    roots.extend(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(Path::to_path_buf),
    );
    for root in roots {
        let p = root.join(PROJECT_LOCAL_SERVER);
        if p.is_file() && !out.contains(&p) {
            out.push(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("nats-server");
            if p.is_file() && !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// How to run a server.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Port (default: a free loopback port).
    pub port: Option<u16>,
    /// JetStream store directory (default: a temporary directory removed on drop).
    pub store_dir: Option<PathBuf>,
    /// `sync_interval: always`: fsync every write (survives power loss; much slower).
    pub sync_always: bool,
}

/// A nats-server child process with JetStream, on loopback. Killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    binary: ServerBinary,
    port: u16,
    store_dir: PathBuf,
    sync_always: bool,
    cluster: Option<ClusterOptions>,
    child: Option<Child>,
    paused: bool,
    log: Arc<Mutex<VecDeque<String>>>,
    _temp: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// Start a server on a free port with a temporary store: the test harness.
    pub async fn start_temp() -> Result<Self, ServerError> {
        Self::start(ServerOptions::default()).await
    }

    /// Start a server and wait until it is ready.
    pub async fn start(opts: ServerOptions) -> Result<Self, ServerError> {
        Self::launch(opts, None).await
    }

    /// Start a server that is a member of a JetStream cluster and wait until it is ready
    /// (accepts client connections; see [`NatsCluster`] for waiting until JetStream is usable
    /// cluster-wide).
    ///
    /// The cluster section is a separate argument rather than a field of [`ServerOptions`] so
    /// that code building `ServerOptions` with every field spelled out keeps compiling.
    pub async fn start_clustered(
        opts: ServerOptions,
        cluster: ClusterOptions,
    ) -> Result<Self, ServerError> {
        Self::launch(opts, Some(cluster)).await
    }

    async fn launch(
        opts: ServerOptions,
        cluster: Option<ClusterOptions>,
    ) -> Result<Self, ServerError> {
        let binary = ServerBinary::locate()?;
        let (store_dir, temp) = match opts.store_dir {
            Some(dir) => (dir, None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("choreo-nats-")
                    .tempdir()
                    .map_err(|source| ServerError::Io {
                        what: "create temp dir".into(),
                        source,
                    })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&store_dir).map_err(|source| ServerError::Io {
            what: format!("create store dir {}", store_dir.display()),
            source,
        })?;
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut server = Self {
            binary,
            port,
            store_dir,
            sync_always: opts.sync_always,
            cluster,
            child: None,
            paused: false,
            log: Arc::new(Mutex::new(VecDeque::new())),
            _temp: temp,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The binary in use.
    pub fn binary(&self) -> &ServerBinary {
        &self.binary
    }

    /// Process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// `choreo-<port>`: the `server_name` in the config, as JetStream reports it (e.g. as a
    /// stream's leader or replica).
    pub fn name(&self) -> String {
        format!("choreo-{}", self.port)
    }

    /// The cluster section, when this server is a cluster member.
    pub fn cluster(&self) -> Option<&ClusterOptions> {
        self.cluster.as_ref()
    }

    /// Freeze the server with SIGSTOP: the process stays alive but stops answering, like a
    /// hung or partitioned machine. Undo with [`resume`](Self::resume); [`kill`](Self::kill)
    /// and drop still work on a paused server.
    pub async fn pause(&mut self) -> Result<(), ServerError> {
        self.signal("-STOP").await?;
        self.paused = true;
        Ok(())
    }

    /// Let a server frozen by [`pause`](Self::pause) run again (SIGCONT).
    pub async fn resume(&mut self) -> Result<(), ServerError> {
        self.signal("-CONT").await?;
        self.paused = false;
        Ok(())
    }

    /// True while the server is frozen by [`pause`](Self::pause).
    pub fn is_paused(&self) -> bool {
        self.paused && self.child.is_some()
    }

    async fn signal(&self, signal: &str) -> Result<(), ServerError> {
        let pid = self
            .pid()
            .ok_or(ServerError::NotRunning { port: self.port })?;
        let what = format!("kill {signal} {pid}");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(|source| ServerError::Io {
                what: what.clone(),
                source,
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(ServerError::Io {
                what,
                source: std::io::Error::other(format!("exited with {status}")),
            })
        }
    }

    /// Kill the server with SIGKILL (a crash) and wait for it to exit.
    pub async fn kill(&mut self) -> Result<(), ServerError> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.map_err(|source| ServerError::Io {
                what: "kill".into(),
                source,
            })?;
        }
        Ok(())
    }

    /// Stop the server gracefully (SIGTERM), waiting up to 10 s before killing it. A paused
    /// server is resumed first so that it can handle the SIGTERM.
    pub async fn stop(&mut self) -> Result<(), ServerError> {
        if self.is_paused() {
            let _ = self.signal("-CONT").await;
        }
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            child.kill().await.map_err(|source| ServerError::Io {
                what: "kill".into(),
                source,
            })?;
        }
        Ok(())
    }

    /// Kill and start again on the same port and store (state on disk survives).
    pub async fn restart(&mut self) -> Result<(), ServerError> {
        self.kill().await?;
        self.spawn().await
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        self.log
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    async fn spawn(&mut self) -> Result<(), ServerError> {
        let conf = self.store_dir.join("choreo-nats.conf");
        let jetstream_dir = self.store_dir.join("jetstream");
        let sync = if self.sync_always {
            "\n  sync_interval: always"
        } else {
            ""
        };
        let mut text = format!(
            "listen: \"127.0.0.1:{}\"\nserver_name: {:?}\njetstream {{\n  store_dir: {:?}{sync}\n}}\n",
            self.port,
            self.name(),
            jetstream_dir.display().to_string(),
        );
        if let Some(cluster) = &self.cluster {
            text.push_str(&cluster.config_section());
        }
        std::fs::write(&conf, text).map_err(|source| ServerError::Io {
            what: format!("write {}", conf.display()),
            source,
        })?;
        let mut child = Command::new(&self.binary.path)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ServerError::Io {
                what: format!("start {}", self.binary.path.display()),
                source,
            })?;
        // Some(true): ready; Some(false): its output ended first (it exited).
        let (ready_tx, mut ready_rx) = watch::channel(None::<bool>);
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&self.log);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("Server is ready") {
                        let _ = ready_tx.send(Some(true));
                    }
                    if let Ok(mut l) = log.lock() {
                        if l.len() == LOG_LINES_KEPT {
                            l.pop_front();
                        }
                        l.push_back(line);
                    }
                }
                ready_tx.send_if_modified(|r| {
                    let ended = r.is_none();
                    if ended {
                        *r = Some(false);
                    }
                    ended
                });
            });
        }
        self.child = Some(child);
        self.paused = false;
        let ready = tokio::time::timeout(READY_TIMEOUT, ready_rx.wait_for(|r| r.is_some())).await;
        match ready {
            Ok(Ok(r)) if *r == Some(true) => Ok(()),
            Ok(Ok(_)) => {
                let _ = self.kill().await;
                Err(ServerError::Exited {
                    port: self.port,
                    cause: fatal_line(&self.log_tail()),
                })
            }
            _ => {
                let _ = self.kill().await;
                Err(ServerError::NotReady {
                    port: self.port,
                    secs: READY_TIMEOUT.as_secs(),
                    log: self.log_tail(),
                })
            }
        }
    }
}

/// The line of a server's log that says why it stopped: its last fatal or error line, without
/// the pid and timestamp prefix (else its last line).
fn fatal_line(log: &str) -> String {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("[FTL]") || l.contains("[ERR]"))
        .or_else(|| log.lines().last())
        .unwrap_or("no output");
    match line
        .find("] ")
        .and_then(|i| line[i + 2..].find("] ").map(|j| i + 2 + j + 2))
    {
        Some(at) => line[at..].to_owned(),
        None => line.to_owned(),
    }
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> Result<u16, ServerError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| ServerError::Io {
        what: "find a free port".into(),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| ServerError::Io {
            what: "find a free port".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fatal_line_is_the_cause() {
        let log = "[1] 2026/12/01 22:00:41.6 [INF] Starting nats-server\n\
                   [1] 2026/12/01 22:00:41.7 [FTL] Error listening on port: 127.0.0.1:4222, \"bind: address already in use\"\n\
                   [1] 2026/12/01 22:00:41.8 [INF] Server Exiting..";
        assert_eq!(
            super::fatal_line(log),
            "Error listening on port: 127.0.0.1:4222, \"bind: address already in use\""
        );
        assert_eq!(super::fatal_line("just this"), "just this");
        assert_eq!(super::fatal_line(""), "no output");
    }
}
