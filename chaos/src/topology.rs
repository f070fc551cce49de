//! What a run starts and owns: 1 or 3 nats-servers, one proxy per (node, server) link, and N
//! node processes that reach the servers only through their proxies.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use choreo::{NatsCluster, NatsServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::error::ChaosError;
use crate::proxy::{LinkFaults, Proxy};

/// How long a node may take to say it is ready.
const NODE_READY: Duration = Duration::from_secs(60);
/// How long a node may take to leave after SIGTERM.
const NODE_STOP: Duration = Duration::from_secs(30);
/// The line a node prints on stdout once it serves.
const READY_LINE: &str = "choreo node ready";

/// The command that starts one node. In `program` and `args`, `{nats}` becomes the node's
/// server URLs (its proxies, comma-separated), `{id}` its id and `{data_dir}` its directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCommand {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments, with placeholders.
    pub args: Vec<String>,
}

impl NodeCommand {
    fn expand(&self, nats: &str, id: &str, dir: &Path) -> Vec<String> {
        let dir = dir.display().to_string();
        self.args
            .iter()
            .map(|a| {
                a.replace("{nats}", nats)
                    .replace("{id}", id)
                    .replace("{data_dir}", &dir)
            })
            .collect()
    }
}

enum Servers {
    One(Box<NatsServer>),
    Cluster(NatsCluster),
}

struct NodeSlot {
    id: String,
    child: Option<Child>,
    paused: bool,
    /// Exits the suite did not cause (a crash), with their status.
    crashes: Vec<String>,
}

/// Servers, proxies and nodes of one run; everything is killed when it is dropped.
pub struct Topology {
    servers: Servers,
    /// `proxies[node][server]`.
    proxies: Vec<Vec<Proxy>>,
    nodes: Vec<NodeSlot>,
    dir: PathBuf,
    command: NodeCommand,
}

impl Topology {
    /// Start `servers` servers (1, or a cluster), a proxy per link and `nodes` nodes, each
    /// with its data under `dir`. Returns once every node printed that it is ready.
    pub async fn start(
        servers: usize,
        nodes: usize,
        dir: &Path,
        command: NodeCommand,
        seed: u64,
    ) -> Result<Self, ChaosError> {
        let servers = if servers <= 1 {
            Servers::One(Box::new(
                NatsServer::start(choreo::ServerOptions {
                    store_dir: Some(dir.join("server-0")),
                    ..Default::default()
                })
                .await?,
            ))
        } else {
            Servers::Cluster(NatsCluster::start_unadvertised(servers).await?)
        };
        let addrs = server_addrs(&servers)?;
        let mut proxies = Vec::new();
        for n in 0..nodes {
            let mut row = Vec::new();
            for (s, a) in addrs.iter().enumerate() {
                let salt = u64::try_from(n * 31 + s).unwrap_or(0);
                row.push(Proxy::start(*a, seed ^ salt).await?);
            }
            proxies.push(row);
        }
        let mut t = Self {
            servers,
            proxies,
            nodes: (0..nodes)
                .map(|i| NodeSlot {
                    id: format!("n{i}"),
                    child: None,
                    paused: false,
                    crashes: Vec::new(),
                })
                .collect(),
            dir: dir.to_path_buf(),
            command,
        };
        let starts: Vec<_> = (0..nodes).collect();
        for i in starts {
            t.start_node(i).await?;
        }
        Ok(t)
    }

    /// The servers' URLs, direct (for the workload and the checker, not behind proxies).
    pub fn client_urls(&self) -> Vec<String> {
        match &self.servers {
            Servers::One(s) => vec![s.url()],
            Servers::Cluster(c) => c.urls(),
        }
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of servers.
    pub fn server_count(&self) -> usize {
        match &self.servers {
            Servers::One(_) => 1,
            Servers::Cluster(c) => c.len(),
        }
    }

    /// Node `i`'s id.
    pub fn node_id(&self, i: usize) -> String {
        self.nodes.get(i).map(|n| n.id.clone()).unwrap_or_default()
    }

    fn slot(&mut self, i: usize) -> Result<&mut NodeSlot, ChaosError> {
        self.nodes
            .get_mut(i)
            .ok_or_else(|| ChaosError::Topology(format!("no node {i}")))
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// Start node `i` (again, on the same data dir) and wait until it is ready.
    pub async fn start_node(&mut self, i: usize) -> Result<(), ChaosError> {
        let nats = self
            .proxies
            .get(i)
            .map(|row| row.iter().map(Proxy::url).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        let id = self.node_id(i);
        let data = self.dir.join(&id);
        let args = self.command.expand(&nats, &id, &data);
        let log_path = self.log_path(&id);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| ChaosError::io(format!("open {}", log_path.display()), e))?;
        let err_log = log
            .try_clone()
            .map_err(|e| ChaosError::io(format!("open {}", log_path.display()), e))?;
        let mut child = Command::new(&self.command.program)
            .args(&args)
            .env(
                "CHOREO_LOG",
                std::env::var("CHOREO_CHAOS_NODE_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ChaosError::io(format!("start {}", self.command.program.display()), e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| ChaosError::Topology("node stdout".into()))?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut out = tokio::fs::File::from_std(log);
            let mut lines = BufReader::new(stdout).lines();
            let mut ready = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with(READY_LINE) {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                let _ = out.write_all(format!("{line}\n").as_bytes()).await;
            }
        });
        match tokio::time::timeout(NODE_READY, ready_rx).await {
            Ok(Ok(())) => {}
            _ => {
                let _ = child.kill().await;
                return Err(ChaosError::Topology(format!(
                    "node {id} did not get ready within {NODE_READY:?}: {}",
                    tail(&log_path, 15)
                )));
            }
        }
        let slot = self.slot(i)?;
        slot.child = Some(child);
        slot.paused = false;
        Ok(())
    }

    /// Record an exit of node `i` the suite did not cause.
    fn reap(&mut self, i: usize) {
        let Some(slot) = self.nodes.get_mut(i) else {
            return;
        };
        if let Some(child) = slot.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                slot.crashes
                    .push(format!("{} exited by itself: {status}", slot.id));
                slot.child = None;
            }
        }
    }

    /// kill -9 node `i`.
    pub async fn kill_node(&mut self, i: usize) -> Result<(), ChaosError> {
        self.reap(i);
        let slot = self.slot(i)?;
        if let Some(mut c) = slot.child.take() {
            c.kill()
                .await
                .map_err(|e| ChaosError::io("kill a node".into(), e))?;
        }
        slot.paused = false;
        Ok(())
    }

    /// SIGTERM node `i` and wait for it to leave; a non-zero exit is recorded as a crash.
    pub async fn stop_node(&mut self, i: usize) -> Result<(), ChaosError> {
        self.reap(i);
        let slot = self.slot(i)?;
        let Some(mut c) = slot.child.take() else {
            return Ok(());
        };
        if slot.paused {
            signal(&c, "-CONT").await?;
            slot.paused = false;
        }
        signal(&c, "-TERM").await?;
        match tokio::time::timeout(NODE_STOP, c.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => slot
                .crashes
                .push(format!("{} left with {status} after SIGTERM", slot.id)),
            _ => {
                let _ = c.kill().await;
                slot.crashes
                    .push(format!("{} did not leave within {NODE_STOP:?}", slot.id));
            }
        }
        Ok(())
    }

    /// SIGSTOP node `i`.
    pub async fn pause_node(&mut self, i: usize) -> Result<(), ChaosError> {
        self.reap(i);
        let slot = self.slot(i)?;
        if let Some(c) = &slot.child {
            signal(c, "-STOP").await?;
            slot.paused = true;
        }
        Ok(())
    }

    /// SIGCONT node `i`.
    pub async fn resume_node(&mut self, i: usize) -> Result<(), ChaosError> {
        let slot = self.slot(i)?;
        if let Some(c) = &slot.child {
            if slot.paused {
                signal(c, "-CONT").await?;
            }
        }
        slot.paused = false;
        Ok(())
    }

    /// Is node `i` running (started, not killed)?
    pub fn node_running(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.child.is_some())
    }

    /// Apply `faults` to every link of node `i`.
    pub fn set_links(&self, i: usize, faults: &LinkFaults) {
        for p in self.proxies.get(i).into_iter().flatten() {
            p.set(faults.clone());
        }
    }

    /// Heal every link of every node.
    pub fn heal_links(&self) {
        for p in self.proxies.iter().flatten() {
            p.heal();
        }
    }

    /// kill -9 server `i`.
    pub async fn kill_server(&mut self, i: usize) -> Result<(), ChaosError> {
        match &mut self.servers {
            Servers::One(s) => s.kill().await?,
            Servers::Cluster(c) => c.kill(i).await?,
        }
        Ok(())
    }

    /// Start server `i` again on its store and wait until it serves (rejoined, in a cluster).
    pub async fn restart_server(&mut self, i: usize) -> Result<(), ChaosError> {
        match &mut self.servers {
            Servers::One(s) => s.restart().await?,
            Servers::Cluster(c) => c.restart(i).await?,
        }
        Ok(())
    }

    /// SIGSTOP server `i`.
    pub async fn pause_server(&mut self, i: usize) -> Result<(), ChaosError> {
        match &mut self.servers {
            Servers::One(s) => s.pause().await?,
            Servers::Cluster(c) => c.pause(i).await?,
        }
        Ok(())
    }

    /// SIGCONT server `i`.
    pub async fn resume_server(&mut self, i: usize) -> Result<(), ChaosError> {
        match &mut self.servers {
            Servers::One(s) => s.resume().await?,
            Servers::Cluster(c) => c.resume(i).await?,
        }
        Ok(())
    }

    /// Every node's exits the suite did not cause, so far.
    pub fn crashes(&mut self) -> Vec<String> {
        for i in 0..self.nodes.len() {
            self.reap(i);
        }
        self.nodes.iter().flat_map(|n| n.crashes.clone()).collect()
    }

    /// Stop every node gracefully (the end of a run).
    pub async fn stop_all(&mut self) -> Result<(), ChaosError> {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await?;
        }
        Ok(())
    }

    /// The last `n` lines node `i` logged.
    pub fn node_log_tail(&self, i: usize, n: usize) -> String {
        tail(&self.log_path(&self.node_id(i)), n)
    }
}

fn server_addrs(servers: &Servers) -> Result<Vec<SocketAddr>, ChaosError> {
    let ports: Vec<u16> = match servers {
        Servers::One(s) => vec![s.port()],
        Servers::Cluster(c) => c.servers().iter().map(NatsServer::port).collect(),
    };
    Ok(ports
        .into_iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect())
}

async fn signal(child: &Child, sig: &str) -> Result<(), ChaosError> {
    let pid = child
        .id()
        .ok_or_else(|| ChaosError::Topology("the process has exited".into()))?;
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .await
        .map_err(|e| ChaosError::io(format!("kill {sig}"), e))?
        .success();
    if ok {
        Ok(())
    } else {
        Err(ChaosError::Topology(format!("kill {sig} {pid} failed")))
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
