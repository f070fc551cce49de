//! A restate-server child process on loopback ports with a temporary base directory, and the
//! admin calls the benchmark needs (health, version, deployment registration).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::process::{Child, Command};

/// HTTP/1.1 client used for the admin API and the ingress.
pub type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A new HTTP client with a connection pool sized for `conns` concurrent requests.
pub fn http_client(conns: usize) -> Http {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(conns)
        .build_http()
}

/// Send a request; returns (status, body).
pub async fn request(
    http: &Http,
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Vec<u8>), String> {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let resp = http.request(req).await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body.to_vec()))
}

/// Locate the binary: `$CHOREO_RESTATE_SERVER`, `.tools/bin/restate-server` above the current
/// directory or this crate, then `PATH`.
pub fn locate(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("CHOREO_RESTATE_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    roots.extend(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(Path::to_path_buf),
    );
    for r in roots {
        let p = r.join(".tools/bin/restate-server");
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("restate-server");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err("restate-server not found: run benches/scripts/install-restate".into())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// A running restate-server.
pub struct RestateServer {
    child: Child,
    /// Ingress base URL.
    pub ingress: String,
    /// Admin base URL.
    pub admin: String,
    /// Version reported by the admin API.
    pub version: String,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl RestateServer {
    /// Start the server and wait until the admin API answers.
    pub async fn start(bin: &Path, partitions: Option<u16>, http: &Http) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("choreo-restate-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let (ingress, admin, fabric) = (free_port()?, free_port()?, free_port()?);
        let conf = dir.path().join("restate.toml");
        let mut text = String::from("disable-telemetry = true\n");
        if let Some(p) = partitions {
            text.push_str(&format!("default-num-partitions = {p}\n"));
        }
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        let log = dir.path().join("restate.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .arg("--base-dir")
            .arg(dir.path().join("data"))
            .arg("--node-name")
            .arg("bench")
            .arg("--no-logo")
            .env("DO_NOT_TRACK", "1")
            .env("RESTATE_LISTEN_MODE", "tcp")
            .env("RESTATE_LOG_DISABLE_ANSI_CODES", "true")
            .env(
                "RESTATE_INGRESS__BIND_ADDRESS",
                format!("127.0.0.1:{ingress}"),
            )
            .env("RESTATE_ADMIN__BIND_ADDRESS", format!("127.0.0.1:{admin}"))
            .env("RESTATE_BIND_ADDRESS", format!("127.0.0.1:{fabric}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let mut server = Self {
            child,
            ingress: format!("http://127.0.0.1:{ingress}"),
            admin: format!("http://127.0.0.1:{admin}"),
            version: String::new(),
            _dir: dir,
            log,
        };
        // Readiness of an external process: poll its health endpoint, bounded.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) =
                request(http, "GET", &format!("{}/health", server.admin), None).await
            {
                if let Ok((200, _)) = request(
                    http,
                    "GET",
                    &format!("{}/restate/health", server.ingress),
                    None,
                )
                .await
                {
                    break;
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "restate-server exited with {status}: {}",
                    server.log_tail()
                ));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "restate-server not ready after 60 s: {}",
                    server.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, body) = request(http, "GET", &format!("{}/version", server.admin), None).await?;
        server.version = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("version").and_then(|x| x.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        Ok(server)
    }

    /// Register the SDK endpoint as a deployment.
    pub async fn register(&self, http: &Http, endpoint: &str) -> Result<(), String> {
        let body = serde_json::json!({ "uri": endpoint, "force": true }).to_string();
        let (status, resp) = request(
            http,
            "POST",
            &format!("{}/deployments", self.admin),
            Some(body.into_bytes()),
        )
        .await?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "registering {endpoint}: HTTP {status}: {}",
                String::from_utf8_lossy(&resp)
            ));
        }
        Ok(())
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stop with SIGKILL (the data directory is temporary).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
