//! A JetStream cluster of N local nats-servers on loopback: the harness for replicated
//! streams, failover and partitions.
//!
//! Every member has its own client port, route port and temporary store; the routes form a
//! full mesh. [`NatsCluster::start`] returns once JetStream is usable cluster-wide, not merely
//! once each process accepts connections.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::ConnectOptions;
use tokio::time::Instant;

use super::{NatsServer, ServerOptions, READY_TIMEOUT};
use crate::error::ServerError;

/// Cluster name [`NatsCluster::start`] gives its members.
const CLUSTER_NAME: &str = "choreo";
/// Pause between two readiness probes.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Timeout of one probe's connect and each of its JetStream requests.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// JetStream's maximum stream replica count.
const MAX_REPLICAS: usize = 5;
/// Log lines of each server quoted in a readiness error.
const LOG_LINES_QUOTED: usize = 12;

/// The cluster section of one member's configuration: where it listens for routes, and the
/// peers it dials (all on `127.0.0.1`).
///
/// Written as `cluster { name, listen: 127.0.0.1:<route_port>, routes: [nats-route://...] }`;
/// the server's `server_name` (`choreo-<client port>`) is unique per member and stays the
/// same across restarts, so a restarted member rejoins as itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Cluster name, the same on every member.
    pub name: String,
    /// Port this member listens on for routes from its peers.
    pub route_port: u16,
    /// Route ports of the other members.
    pub peer_route_ports: Vec<u16>,
    /// Do not advertise members' client URLs to clients (`no_advertise`): a client that
    /// reaches the cluster through a proxy stays behind the proxy when it reconnects.
    pub no_advertise: bool,
}

impl ClusterOptions {
    /// The `cluster { ... }` block of the server configuration.
    pub(super) fn config_section(&self) -> String {
        let routes: String = self
            .peer_route_ports
            .iter()
            .map(|p| format!("    \"nats-route://127.0.0.1:{p}\"\n"))
            .collect();
        let advertise = if self.no_advertise {
            "  no_advertise: true\n"
        } else {
            ""
        };
        format!(
            "cluster {{\n  name: {:?}\n  listen: \"127.0.0.1:{}\"\n{advertise}  routes: [\n{routes}  ]\n}}\n",
            self.name, self.route_port,
        )
    }
}

/// N nats-servers forming one JetStream cluster on loopback, each with a temporary store.
/// Every server is killed when the cluster is dropped.
///
/// Servers are addressed by index, `0..len()`. Index-taking methods that return a `Result`
/// fail with [`ServerError::NoSuchServer`] for an index out of range; [`server`](Self::server)
/// and [`server_mut`](Self::server_mut) panic instead, like slice indexing.
///
/// async-nats does not accept a comma-separated URL list as one string (it parses the whole
/// string as one URL), so [`urls`](Self::urls) is a `Vec<String>`, which
/// `async_nats::ConnectOptions::connect` accepts as is. A client connected to one member via
/// [`url`](Self::url) also learns the others from the server and fails over to them.
#[derive(Debug)]
pub struct NatsCluster {
    servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Start `n` servers on free client and route ports, each with its own temporary store,
    /// and wait (up to 30 s) until JetStream is usable cluster-wide; see
    /// [`wait_ready`](Self::wait_ready).
    pub async fn start(n: usize) -> Result<Self, ServerError> {
        Self::launch(n, false).await
    }

    /// [`start`](Self::start) with members that do not advertise their client URLs
    /// ([`ClusterOptions::no_advertise`]): for clients that connect through proxies (the chaos
    /// suite's network faults), which must not learn a way around them.
    pub async fn start_unadvertised(n: usize) -> Result<Self, ServerError> {
        Self::launch(n, true).await
    }

    async fn launch(n: usize, no_advertise: bool) -> Result<Self, ServerError> {
        if n == 0 {
            return Err(ServerError::ClusterNotReady {
                servers: 0,
                secs: 0,
                reason: "a cluster needs at least one server".into(),
                log: String::new(),
            });
        }
        let ports = free_ports(2 * n)?;
        let (client_ports, route_ports) = ports.split_at(n);
        let starts = client_ports
            .iter()
            .zip(route_ports)
            .map(|(&port, &route_port)| {
                let cluster = ClusterOptions {
                    name: CLUSTER_NAME.to_owned(),
                    route_port,
                    peer_route_ports: route_ports
                        .iter()
                        .copied()
                        .filter(|p| *p != route_port)
                        .collect(),
                    no_advertise,
                };
                let opts = ServerOptions {
                    port: Some(port),
                    ..Default::default()
                };
                NatsServer::start_clustered(opts, cluster)
            });
        // Started together: a member's routes are retried until its peers listen.
        let servers = futures::future::try_join_all(starts).await?;
        let cluster = Self { servers };
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Wait (up to 30 s) until JetStream is usable cluster-wide: a meta leader answers account
    /// info, and a probe stream replicated on every running, unpaused member (at most 5, the
    /// JetStream maximum) can be created and deleted, so each of them is an online JetStream
    /// peer. Probes are retried with a 100 ms pause, rotating over the members they connect
    /// to; the last failure is reported in [`ServerError::ClusterNotReady`].
    pub async fn wait_ready(&self) -> Result<(), ServerError> {
        let live: Vec<&NatsServer> = self.servers.iter().filter(|s| is_live(s)).collect();
        let replicas = live.len().clamp(1, MAX_REPLICAS);
        let urls: Vec<String> = live.iter().map(|s| s.url()).collect();
        self.retry_until_ready(&urls, Some(replicas)).await
    }

    /// The number of servers (running or not).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// True when the cluster has no server (never, for a started cluster).
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// `nats://127.0.0.1:<port>` of server 0.
    pub fn url(&self) -> String {
        self.servers
            .first()
            .map(NatsServer::url)
            .unwrap_or_default()
    }

    /// The client URLs of every server, in index order; pass them to
    /// `async_nats::ConnectOptions::connect` (a `Vec<String>` is a server list there).
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// Server `i`.
    ///
    /// # Panics
    ///
    /// When `i >= len()`.
    pub fn server(&self, i: usize) -> &NatsServer {
        &self.servers[i]
    }

    /// Server `i`, mutably.
    ///
    /// # Panics
    ///
    /// When `i >= len()`.
    pub fn server_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.servers[i]
    }

    /// All servers, in index order.
    pub fn servers(&self) -> &[NatsServer] {
        &self.servers
    }

    /// Index of the server whose `server_name` is `name` (as JetStream reports a stream's
    /// leader or replicas), if any.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name() == name)
    }

    /// Kill server `i` with SIGKILL (a crash); its store stays for [`restart`](Self::restart).
    pub async fn kill(&mut self, i: usize) -> Result<(), ServerError> {
        self.get_mut(i)?.kill().await
    }

    /// Start server `i` again (killing it first if it runs) on the same ports and store, and
    /// wait (up to 30 s) until it has rejoined: a client connected to it gets account info
    /// from the cluster's meta leader, so its routes are up and it follows the leader.
    pub async fn restart(&mut self, i: usize) -> Result<(), ServerError> {
        let server = self.get_mut(i)?;
        server.restart().await?;
        let url = server.url();
        self.retry_until_ready(&[url], None).await
    }

    /// Freeze server `i` with SIGSTOP (it stays a member but stops answering, like a hung or
    /// partitioned machine); see [`NatsServer::pause`].
    pub async fn pause(&mut self, i: usize) -> Result<(), ServerError> {
        self.get_mut(i)?.pause().await
    }

    /// Let server `i` run again after [`pause`](Self::pause) (SIGCONT).
    pub async fn resume(&mut self, i: usize) -> Result<(), ServerError> {
        self.get_mut(i)?.resume().await
    }

    fn get_mut(&mut self, index: usize) -> Result<&mut NatsServer, ServerError> {
        let len = self.servers.len();
        self.servers
            .get_mut(index)
            .ok_or(ServerError::NoSuchServer { index, len })
    }

    /// Probe through `urls` in turn until one probe succeeds or `READY_TIMEOUT` passes.
    async fn retry_until_ready(
        &self,
        urls: &[String],
        replicas: Option<usize>,
    ) -> Result<(), ServerError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = "no running server to probe".to_owned();
        for url in urls.iter().cycle() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, probe(url, replicas)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(reason)) => last = reason,
                Err(_) => break,
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        Err(ServerError::ClusterNotReady {
            servers: self.servers.len(),
            secs: READY_TIMEOUT.as_secs(),
            reason: last,
            log: self.log_tails(),
        })
    }

    /// The last lines of every server's log, each headed by its name.
    fn log_tails(&self) -> String {
        self.servers
            .iter()
            .map(|s| {
                let tail = s.log_tail();
                let lines: Vec<&str> = tail.lines().collect();
                let from = lines.len().saturating_sub(LOG_LINES_QUOTED);
                format!("[{}]\n{}", s.name(), lines[from..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn is_live(server: &NatsServer) -> bool {
    server.pid().is_some() && !server.is_paused()
}

/// One readiness probe through the server at `url`: account info (answered by the meta
/// leader), then, with `replicas`, create and delete a memory stream with that many replicas.
async fn probe(url: &str, replicas: Option<usize>) -> Result<(), String> {
    let client = ConnectOptions::new()
        .connection_timeout(PROBE_TIMEOUT)
        .request_timeout(Some(PROBE_TIMEOUT))
        .connect(url)
        .await
        .map_err(|e| format!("connect to {url}: {e}"))?;
    let js = jetstream::ContextBuilder::new()
        .timeout(PROBE_TIMEOUT)
        .build(client);
    js.query_account()
        .await
        .map_err(|e| format!("JetStream account info via {url}: {e}"))?;
    let Some(replicas) = replicas else {
        return Ok(());
    };
    let name = format!("CHOREO_CLUSTER_PROBE_{}", uuid::Uuid::now_v7().simple());
    let created = js
        .create_stream(stream::Config {
            subjects: vec![format!("_choreo_probe.{name}")],
            name: name.clone(),
            storage: stream::StorageType::Memory,
            num_replicas: replicas,
            ..Default::default()
        })
        .await;
    // Deleted even when the create failed: it may have been applied after the timeout.
    let deleted = js.delete_stream(&name).await;
    created.map_err(|e| format!("create an R{replicas} probe stream via {url}: {e}"))?;
    deleted.map_err(|e| format!("delete the probe stream via {url}: {e}"))?;
    Ok(())
}

/// `n` distinct free loopback ports (all bound together, then released).
fn free_ports(n: usize) -> Result<Vec<u16>, ServerError> {
    let err = |source| ServerError::Io {
        what: "find a free port".into(),
        source,
    };
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").map_err(err))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(err))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_section_names_the_route_listener_and_every_peer() {
        let c = ClusterOptions {
            name: "choreo".into(),
            route_port: 6001,
            peer_route_ports: vec![6002, 6003],
            no_advertise: false,
        };
        assert_eq!(
            c.config_section(),
            "cluster {\n  name: \"choreo\"\n  listen: \"127.0.0.1:6001\"\n  routes: [\n    \"nats-route://127.0.0.1:6002\"\n    \"nats-route://127.0.0.1:6003\"\n  ]\n}\n"
        );
        let hidden = ClusterOptions {
            no_advertise: true,
            ..c
        };
        assert!(hidden
            .config_section()
            .contains("listen: \"127.0.0.1:6001\"\n  no_advertise: true\n  routes"));
    }

    #[test]
    fn free_ports_are_distinct() -> Result<(), ServerError> {
        let mut ports = free_ports(6)?;
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6);
        Ok(())
    }
}
