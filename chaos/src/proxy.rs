//! A loopback TCP proxy placed between a node and a nats-server, so the chaos suite can inject
//! faults (latency, jitter, a cut, a slow link) on exactly one link.
//!
//! Every accepted connection dials the upstream; two pumps forward bytes, one per direction.
//! Each pump is a reader that stamps every chunk with a release time and a writer that waits for
//! it, so delays never reorder bytes within a direction and latency does not cap throughput.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::rng::Rng;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep_until, Instant};

/// Size of the read buffer of each pump.
const CHUNK: usize = 16 * 1024;
/// Chunks a pump may hold between reading and writing them.
const IN_FLIGHT: usize = 32;

/// The faults currently applied to a link (both directions).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkFaults {
    /// Added one-way delay per chunk, in each direction.
    pub latency: Duration,
    /// Uniform extra delay in `[0, jitter]` per chunk, drawn from the proxy's seeded RNG.
    pub jitter: Duration,
    /// When true, open connections are closed at once and new ones are accepted then closed.
    pub cut: bool,
    /// Bytes per second per direction (a slow link); `None` is unlimited, `Some(0)` is 1 B/s.
    pub bandwidth: Option<u64>,
}

/// Errors starting a [`Proxy`].
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Binding the listener on 127.0.0.1 failed.
    #[error("binding the proxy listener on 127.0.0.1")]
    Bind(#[source] io::Error),
    /// Reading the listener's local address failed.
    #[error("reading the proxy listener's address")]
    LocalAddr(#[source] io::Error),
}

/// Counters shared by the accept loop and every connection.
#[derive(Debug, Default)]
struct Stats {
    connections: AtomicUsize,
    bytes: AtomicU64,
}

/// Counts one open proxied connection for as long as it lives (also when its task is aborted).
struct ConnGuard(Arc<Stats>);

impl ConnGuard {
    fn new(stats: &Arc<Stats>) -> Self {
        stats.connections.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(stats))
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A uniform duration in `[0, max]` (nanosecond resolution).
fn jitter_of(rng: &mut Rng, max: Duration) -> Duration {
    let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.range(0, max))
}

/// A TCP proxy on 127.0.0.1 forwarding to one upstream, with faults set at run time.
///
/// Dropping it stops the accept loop and closes every proxied connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    faults: watch::Sender<LinkFaults>,
    stats: Arc<Stats>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Binds 127.0.0.1:0 and starts forwarding every accepted connection to `upstream`.
    /// `seed` seeds the jitter of every connection (each gets its own derived stream).
    pub async fn start(upstream: SocketAddr, seed: u64) -> Result<Proxy, ProxyError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(ProxyError::Bind)?;
        let addr = listener.local_addr().map_err(ProxyError::LocalAddr)?;
        let (faults, rx) = watch::channel(LinkFaults::default());
        let stats = Arc::new(Stats::default());
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            rx,
            Arc::clone(&stats),
            seed,
        ));
        Ok(Proxy {
            addr,
            faults,
            stats,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The NATS URL of this proxy, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.addr.port())
    }

    /// Replaces the faults of the link; live connections see the change too.
    pub fn set(&self, faults: LinkFaults) {
        self.faults.send_replace(faults);
    }

    /// Removes every fault (`set(LinkFaults::default())`).
    pub fn heal(&self) {
        self.set(LinkFaults::default());
    }

    /// The faults currently applied.
    pub fn faults(&self) -> LinkFaults {
        self.faults.borrow().clone()
    }

    /// The number of proxied connections currently open.
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    /// Bytes forwarded so far, both directions together.
    pub fn bytes(&self) -> u64 {
        self.stats.bytes.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connections: aborting it aborts them all.
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<LinkFaults>,
    stats: Arc<Stats>,
    seed: u64,
) {
    let mut conns = JoinSet::new();
    let mut index: u64 = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    index = index.wrapping_add(1);
                    let conn_seed = Rng::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64();
                    conns.spawn(serve(client, upstream, faults.clone(), Arc::clone(&stats), conn_seed));
                }
                Err(error) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "chaos proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Proxies one client connection until either side closes, an error, or a cut.
async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    mut faults: watch::Receiver<LinkFaults>,
    stats: Arc<Stats>,
    seed: u64,
) {
    if faults.borrow().cut {
        return; // A cut link: accepted, then closed at once.
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // Upstream down: close the client too.
    };
    if faults.borrow().cut {
        return;
    }
    let _guard = ConnGuard::new(&stats);
    // Nagle would add its own latency on top of the injected one.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut rng = Rng::new(seed);
    let up = pump(
        client_read,
        server_write,
        faults.clone(),
        Arc::clone(&stats),
        Rng::new(rng.next_u64()),
    );
    let down = pump(
        server_read,
        client_write,
        faults.clone(),
        Arc::clone(&stats),
        Rng::new(rng.next_u64()),
    );
    tokio::select! {
        // Also returns if the Proxy is gone, which closes the connection as well.
        _ = faults.wait_for(|f| f.cut) => {}
        _ = futures::future::try_join(up, down) => {}
    }
    // Both halves of both sockets are dropped here: the client sees EOF or a reset.
}

/// Forwards one direction: a reader stamps chunks with release times, a writer honours them.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    faults: watch::Receiver<LinkFaults>,
    stats: Arc<Stats>,
    mut rng: Rng,
) -> io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let reader_faults = faults.clone();
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        let mut prev_release = Instant::now();
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), io::Error>(()); // EOF: dropping `tx` lets the writer drain and finish.
            }
            let (latency, jitter) = {
                let f = reader_faults.borrow();
                (f.latency, f.jitter)
            };
            let release = prev_release.max(Instant::now() + latency + jitter_of(&mut rng, jitter));
            prev_release = release;
            if tx.send((release, buf[..n].to_vec())).await.is_err() {
                return Ok(());
            }
        }
    };
    let writer = async move {
        let mut next_free = Instant::now();
        while let Some((release, chunk)) = rx.recv().await {
            sleep_until(release).await;
            let mut rest = chunk.as_slice();
            while !rest.is_empty() {
                let bandwidth = faults.borrow().bandwidth;
                let piece = match bandwidth {
                    None => rest.len(),
                    Some(bps) => {
                        let bps = bps.max(1);
                        // Pace in pieces of about 1/20 s so a slow link is smooth, not bursty.
                        let max = usize::try_from(bps / 20).unwrap_or(usize::MAX).max(1);
                        let piece = rest.len().min(max);
                        let cost = Duration::from_secs_f64(piece as f64 / bps as f64);
                        next_free = next_free.max(Instant::now()) + cost;
                        sleep_until(next_free).await;
                        piece
                    }
                };
                // Counted before the write so a reader that got the bytes also sees the count.
                stats.bytes.fetch_add(piece as u64, Ordering::SeqCst);
                to.write_all(&rest[..piece]).await?;
                rest = &rest[piece..];
            }
        }
        // The source closed its side: pass the half-close on.
        to.shutdown().await
    };
    futures::future::try_join(reader, writer).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::timeout;

    const WAIT: Duration = Duration::from_secs(10);

    /// A plain echo server on 127.0.0.1:0.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a test listener");
        let addr = listener.local_addr().expect("listener address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Sends `payload` and reads the same number of bytes back, concurrently.
    async fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
        let (mut r, mut w) = stream.split();
        let mut back = vec![0u8; payload.len()];
        let (wrote, read) = timeout(WAIT, async {
            tokio::join!(w.write_all(payload), r.read_exact(&mut back))
        })
        .await
        .expect("round trip timed out");
        wrote.expect("write through the proxy");
        read.expect("read through the proxy");
        back
    }

    /// Asserts the peer closes `stream` (EOF or an error) within the timeout.
    async fn assert_closed(stream: &mut TcpStream) {
        let mut buf = [0u8; 64];
        match timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("expected a closed connection, read {n} bytes"),
            Err(_) => panic!("connection still open after {WAIT:?}"),
        }
    }

    #[tokio::test]
    async fn bytes_round_trip_unchanged() {
        let proxy = Proxy::start(echo_server().await, 1)
            .await
            .expect("start the proxy");
        assert!(proxy.url().starts_with("nats://127.0.0.1:"));
        assert_eq!(
            proxy.url(),
            format!("nats://127.0.0.1:{}", proxy.addr().port())
        );
        let mut client = TcpStream::connect(proxy.addr())
            .await
            .expect("connect to the proxy");
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
        assert_eq!(round_trip(&mut client, &payload).await, payload);
        assert_eq!(round_trip(&mut client, b"hello").await, b"hello");
        assert_eq!(proxy.connections(), 1);
        assert_eq!(proxy.bytes(), 2 * (payload.len() as u64 + 5));
    }

    #[tokio::test]
    async fn latency_applies_to_live_connections_both_ways() {
        let proxy = Proxy::start(echo_server().await, 2)
            .await
            .expect("start the proxy");
        let mut client = TcpStream::connect(proxy.addr())
            .await
            .expect("connect to the proxy");
        assert_eq!(round_trip(&mut client, b"warm").await, b"warm");
        let faults = LinkFaults {
            latency: Duration::from_millis(100),
            ..LinkFaults::default()
        };
        proxy.set(faults.clone());
        assert_eq!(proxy.faults(), faults);
        let started = Instant::now();
        assert_eq!(round_trip(&mut client, b"ping").await, b"ping");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(200),
            "round trip took {elapsed:?}"
        );
    }

    #[tokio::test]
    async fn jitter_never_reorders_bytes() {
        let proxy = Proxy::start(echo_server().await, 3)
            .await
            .expect("start the proxy");
        proxy.set(LinkFaults {
            jitter: Duration::from_millis(20),
            ..LinkFaults::default()
        });
        let mut client = TcpStream::connect(proxy.addr())
            .await
            .expect("connect to the proxy");
        let (mut r, mut w) = client.split();
        let expected: Vec<u8> = (0..100u8).collect();
        let mut back = vec![0u8; expected.len()];
        let (wrote, read) = timeout(WAIT, async {
            let write = async {
                for byte in &expected {
                    w.write_all(&[*byte]).await?;
                    tokio::task::yield_now().await;
                }
                Ok::<(), io::Error>(())
            };
            tokio::join!(write, r.read_exact(&mut back))
        })
        .await
        .expect("timed out");
        wrote.expect("write through the proxy");
        read.expect("read through the proxy");
        assert_eq!(back, expected);
    }

    #[tokio::test]
    async fn cut_closes_open_and_new_connections_until_healed() {
        let proxy = Proxy::start(echo_server().await, 4)
            .await
            .expect("start the proxy");
        let mut open = TcpStream::connect(proxy.addr())
            .await
            .expect("connect to the proxy");
        assert_eq!(round_trip(&mut open, b"before").await, b"before");

        proxy.set(LinkFaults {
            cut: true,
            ..LinkFaults::default()
        });
        assert_closed(&mut open).await;
        let mut fresh = TcpStream::connect(proxy.addr())
            .await
            .expect("connect to the proxy");
        assert_closed(&mut fresh).await;

        proxy.heal();
        assert_eq!(proxy.faults(), LinkFaults::default());
        let mut healed = TcpStream::connect(proxy.addr())
            .await
            .expect("connect to the proxy");
        assert_eq!(round_trip(&mut healed, b"after").await, b"after");
    }

    #[tokio::test]
    async fn bandwidth_limits_throughput() {
        let proxy = Proxy::start(echo_server().await, 5)
            .await
            .expect("start the proxy");
        proxy.set(LinkFaults {
            bandwidth: Some(20_000),
            ..LinkFaults::default()
        });
        let mut client = TcpStream::connect(proxy.addr())
            .await
            .expect("connect to the proxy");
        let payload = vec![7u8; 10_000];
        let started = Instant::now();
        assert_eq!(round_trip(&mut client, &payload).await, payload);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(400),
            "10 kB took {elapsed:?}"
        );
    }

    #[tokio::test]
    async fn upstream_down_closes_the_client() {
        let gone = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a test listener");
        let upstream = gone.local_addr().expect("listener address");
        drop(gone);
        let proxy = Proxy::start(upstream, 6).await.expect("start the proxy");
        let mut client = TcpStream::connect(proxy.addr())
            .await
            .expect("connect to the proxy");
        assert_closed(&mut client).await;
        assert_eq!(proxy.connections(), 0);
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_connections() {
        let proxy = Proxy::start(echo_server().await, 7)
            .await
            .expect("start the proxy");
        let mut client = TcpStream::connect(proxy.addr())
            .await
            .expect("connect to the proxy");
        assert_eq!(round_trip(&mut client, b"x").await, b"x");
        drop(proxy);
        assert_closed(&mut client).await;
    }

    #[test]
    fn jitter_is_bounded_and_seeded() {
        let max = Duration::from_millis(5);
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..1000 {
            let j = jitter_of(&mut a, max);
            assert!(j <= max);
            assert_eq!(j, jitter_of(&mut b, max));
        }
        assert_eq!(jitter_of(&mut a, Duration::ZERO), Duration::ZERO);
        assert!((0..100).any(|_| jitter_of(&mut a, max) > Duration::ZERO));
    }
}
