//! What to run and how: [`Workload`], [`LoadMode`], [`Durability`], [`Peer`], [`Coordination`]
//! and the [`BenchOptions`] builder. Clap-free, so `choreo bench` maps its flags onto it in a few lines.

use std::fmt;
use std::time::Duration;

use crate::error::BenchError;

/// One benchmark workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// JetStream publish (pipelined, `Nats-Msg-Id`) and pull consume + ack: no engine.
    Raw,
    /// A chain of k reactors.
    Hop,
    /// A 3-step saga with its three services and a failure fraction.
    Saga,
    /// M durable saga timers due over a window.
    Timers,
    /// A wait-for cycle (two sagas and a reactor) on N correlations: deadlock detection
    /// latency, commit that closes the cycle → `choreo.deadlock.detected` stored.
    Deadlock,
    /// Takeover time after a node crash, and the rate a node restores the changelog at.
    Failover,
}

impl Workload {
    /// Every workload, in the order `all` runs them.
    pub const ALL: [Workload; 6] = [
        Self::Raw,
        Self::Hop,
        Self::Saga,
        Self::Timers,
        Self::Deadlock,
        Self::Failover,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Hop => "hop",
            Self::Saga => "saga",
            Self::Timers => "timers",
            Self::Deadlock => "deadlock",
            Self::Failover => "failover",
        }
    }

    /// Parse `raw`, `hop`, `saga`, `timers`, `deadlock`, `failover` or `all`.
    pub fn parse(name: &str) -> Result<Vec<Workload>, BenchError> {
        match name {
            "all" => Ok(Self::ALL.to_vec()),
            "raw" => Ok(vec![Self::Raw]),
            "hop" => Ok(vec![Self::Hop]),
            "saga" => Ok(vec![Self::Saga]),
            "timers" => Ok(vec![Self::Timers]),
            "deadlock" => Ok(vec![Self::Deadlock]),
            "failover" => Ok(vec![Self::Failover]),
            other => Err(BenchError::Options(format!(
                "unknown workload {other:?}: expected raw, hop, saga, timers, deadlock, failover \
                 or all"
            ))),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How load is offered.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum LoadMode {
    /// Max throughput: at most `in_flight` items sent and not yet completed; a completion lets
    /// the next one go. Latency is measured from the actual send.
    Closed {
        /// Items in flight.
        in_flight: usize,
    },
    /// Fixed arrival rate: item `i` is due at `start + i / rate`; latency is measured from that
    /// intended time, so queueing in the sender is not hidden (coordinated-omission correction).
    Open {
        /// Items per second.
        rate_per_s: f64,
    },
}

impl fmt::Display for LoadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed { in_flight } => write!(f, "closed-loop ({in_flight} in flight)"),
            Self::Open { rate_per_s } => write!(f, "open-loop ({rate_per_s:.0}/s)"),
        }
    }
}

/// JetStream durability of the server the harness starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// NATS default: writes reach the page cache, fsync every 2 min (survives a process kill).
    Default,
    /// `sync_interval: always`: fsync every write (survives power loss).
    SyncAlways,
    /// A server the harness did not start (`--nats URL`): not known.
    External,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "default (page cache, fsync every 2 min)",
            Self::SyncAlways => "sync_interval: always (fsync every write)",
            Self::External => "external server (not known)",
        })
    }
}

/// A competing engine to run the saga workload against, in the same invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    /// Restate (benches/restate-peer, restate-server from npm).
    Restate,
}

impl Peer {
    /// Parse `restate`.
    pub fn parse(name: &str) -> Result<Self, BenchError> {
        match name {
            "restate" => Ok(Self::Restate),
            other => Err(BenchError::Options(format!(
                "unknown peer {other:?}: expected restate"
            ))),
        }
    }
}

/// Deadlock detection and the stall watchdog of the nodes under test
/// (`NodeBuilder::coordination`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Coordination {
    /// On (the engine's default) for every workload.
    #[default]
    On,
    /// Off for every workload but `deadlock` (which measures it).
    Off,
    /// `saga` runs twice in the same invocation, with it on (row `saga`) and off (row
    /// `saga-nocoord`), so both get their ratio to the same `raw`; on for the others.
    Both,
}

impl Coordination {
    /// Parse `on`, `off` or `both`.
    pub fn parse(name: &str) -> Result<Self, BenchError> {
        match name {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            "both" => Ok(Self::Both),
            other => Err(BenchError::Options(format!(
                "unknown coordination {other:?}: expected on, off or both"
            ))),
        }
    }
}

impl fmt::Display for Coordination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Both => "both",
        })
    }
}

/// Sizes of the workloads.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Sizes {
    /// Messages of `raw`.
    pub raw_messages: u64,
    /// Root events (chains) of `hop`.
    pub hop_chains: u64,
    /// Reactors in the `hop` chain.
    pub hop_length: usize,
    /// Sagas of `saga`.
    pub sagas: u64,
    /// Fraction of sagas whose step 2 or 3 fails (compensation path).
    pub fail_fraction: f64,
    /// Timers of `timers`.
    pub timers: u64,
    /// Window over which the timers are due.
    pub timer_window: Duration,
    /// Correlations of `deadlock` (one wait-for cycle each).
    pub deadlocks: u64,
    /// Rate at which `deadlock` starts its correlations (open loop, unless `--rate` gives
    /// another).
    pub deadlock_rate: f64,
    /// Warm-up items run before each measured workload (not counted).
    pub warmup: u64,
    /// `failover`: crashes (node aborts) measured, alternating victims.
    pub failover_rounds: u32,
    /// `failover`: partitions of its namespaces (`EngineTuning::partitions` does not apply).
    pub failover_partitions: u16,
    /// `failover`: lease TTL of the crash nodes (a dead node's leases expire this long after
    /// its last renewal, which bounds the takeover from below).
    pub failover_lease_ttl: Duration,
    /// `failover`: live instances written to the changelog before the crash nodes start, so
    /// each takeover restores real state.
    pub failover_instances: u64,
    /// `failover`: live instances written to the changelog for each restore measurement.
    pub restore_instances: Vec<u64>,
}

impl Sizes {
    /// Full-size runs.
    pub fn full() -> Self {
        Self {
            raw_messages: 500_000,
            hop_chains: 50_000,
            hop_length: 3,
            sagas: 20_000,
            fail_fraction: 0.1,
            timers: 100_000,
            timer_window: Duration::from_secs(60),
            deadlocks: 2_000,
            deadlock_rate: 200.0,
            warmup: 500,
            failover_rounds: 10,
            failover_partitions: 8,
            failover_lease_ttl: Duration::from_secs(2),
            failover_instances: 1_000,
            restore_instances: vec![10_000, 100_000],
        }
    }

    /// `--quick`: a few seconds per workload, still a real measurement.
    pub fn quick() -> Self {
        Self {
            raw_messages: 150_000,
            hop_chains: 10_000,
            hop_length: 3,
            sagas: 3_000,
            fail_fraction: 0.1,
            timers: 10_000,
            timer_window: Duration::from_secs(5),
            deadlocks: 200,
            deadlock_rate: 100.0,
            warmup: 200,
            failover_rounds: 3,
            failover_partitions: 8,
            failover_lease_ttl: Duration::from_secs(2),
            failover_instances: 1_000,
            restore_instances: vec![10_000],
        }
    }
}

/// Knobs of the engine under test (`None`: the engine's default).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct EngineTuning {
    /// `NodeBuilder::concurrency` (keyed lanes per reactor).
    pub lanes: Option<usize>,
    /// `NodeBuilder::fetch_batch`.
    pub fetch_batch: Option<usize>,
    /// `NodeBuilder::saga_batch` (largest group-commit batch).
    pub saga_batch: Option<usize>,
    /// Partitions of the log (default 16).
    pub partitions: Option<u16>,
}

/// Everything a run needs. Build with [`BenchOptions::builder`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BenchOptions {
    /// Workload sizes.
    pub sizes: Sizes,
    /// `--quick` was asked (recorded in the report).
    pub quick: bool,
    /// How load is offered.
    pub mode: LoadMode,
    /// Use this server instead of starting one.
    pub nats_url: Option<String>,
    /// Start the server with `sync_interval: always`.
    pub sync_always: bool,
    /// Also run the saga workload against this peer.
    pub peer: Option<Peer>,
    /// Run `raw` even when not asked, so engine workloads get a ratio (default true).
    pub baseline: bool,
    /// Engine knobs.
    pub tuning: EngineTuning,
    /// Deadlock detection and the stall watchdog on, off, or `saga` both ways.
    pub coordination: Coordination,
    /// The bench saga declares its waits (`SagaContext::awaits_any` on the step's `done` and
    /// `failed` after each `do`), as a saga written for the deadlock detector does: every
    /// commit then has a waiting instance to check. Off by default (the saga of earlier runs).
    pub saga_waits: bool,
    /// `raw` publishes the engine's full CloudEvents headers (`ce-*`, `traceparent`) instead of
    /// only `Nats-Msg-Id`: separates the cost of the envelope from the cost of the engine.
    pub raw_envelope: bool,
    /// Progress lines on stderr.
    pub progress: bool,
    /// The command line, recorded in the report.
    pub command: String,
    /// Give up on a workload that has not completed after this long.
    pub timeout: Duration,
}

impl BenchOptions {
    /// Start from the full-size defaults: closed loop with 1024 in flight, own server with
    /// default durability, baseline on, progress on.
    pub fn builder() -> BenchOptionsBuilder {
        BenchOptionsBuilder {
            opts: BenchOptions {
                sizes: Sizes::full(),
                quick: false,
                mode: LoadMode::Closed { in_flight: 1024 },
                nats_url: None,
                sync_always: false,
                peer: None,
                baseline: true,
                tuning: EngineTuning::default(),
                coordination: Coordination::On,
                saga_waits: false,
                raw_envelope: false,
                progress: true,
                command: std::env::args().collect::<Vec<_>>().join(" "),
                timeout: Duration::from_secs(600),
            },
            one_million: false,
        }
    }
}

/// Builder of [`BenchOptions`]; `build()` validates.
#[derive(Clone, Debug)]
pub struct BenchOptionsBuilder {
    opts: BenchOptions,
    one_million: bool,
}

impl BenchOptionsBuilder {
    /// `--quick`: smoke-sized workloads (sizes set afterwards still win).
    pub fn quick(mut self, quick: bool) -> Self {
        self.opts.quick = quick;
        self.opts.sizes = if quick { Sizes::quick() } else { Sizes::full() };
        self
    }
    /// `--nats URL`: use this server instead of starting one.
    pub fn nats_url(mut self, url: Option<String>) -> Self {
        self.opts.nats_url = url;
        self
    }
    /// `--sync-always`: start the server with `sync_interval: always`.
    pub fn sync_always(mut self, on: bool) -> Self {
        self.opts.sync_always = on;
        self
    }
    /// `--peer restate`.
    pub fn peer(mut self, peer: Option<Peer>) -> Self {
        self.opts.peer = peer;
        self
    }
    /// Closed or open loop.
    pub fn mode(mut self, mode: LoadMode) -> Self {
        self.opts.mode = mode;
        self
    }
    /// Run `raw` too when only engine workloads are asked (default true).
    pub fn baseline(mut self, on: bool) -> Self {
        self.opts.baseline = on;
        self
    }
    /// Replace every size.
    pub fn sizes(mut self, sizes: Sizes) -> Self {
        self.opts.sizes = sizes;
        self
    }
    /// Messages of `raw`.
    pub fn raw_messages(mut self, n: u64) -> Self {
        self.opts.sizes.raw_messages = n;
        self
    }
    /// Chains of `hop`.
    pub fn hop_chains(mut self, n: u64) -> Self {
        self.opts.sizes.hop_chains = n;
        self
    }
    /// Reactors in the `hop` chain (default 3).
    pub fn hop_length(mut self, k: usize) -> Self {
        self.opts.sizes.hop_length = k;
        self
    }
    /// Sagas of `saga`.
    pub fn sagas(mut self, n: u64) -> Self {
        self.opts.sizes.sagas = n;
        self
    }
    /// Fraction of sagas that fail (0..=1).
    pub fn fail_fraction(mut self, f: f64) -> Self {
        self.opts.sizes.fail_fraction = f;
        self
    }
    /// Timers of `timers`.
    pub fn timers(mut self, n: u64) -> Self {
        self.opts.sizes.timers = n;
        self
    }
    /// The 1 M timers variant (`--timers-1m`).
    pub fn timers_1m(mut self, on: bool) -> Self {
        self.one_million = on;
        self
    }
    /// Window over which timers are due.
    pub fn timer_window(mut self, window: Duration) -> Self {
        self.opts.sizes.timer_window = window;
        self
    }
    /// Warm-up items per workload.
    pub fn warmup(mut self, n: u64) -> Self {
        self.opts.sizes.warmup = n;
        self
    }
    /// Crashes measured by `failover`.
    pub fn failover_rounds(mut self, n: u32) -> Self {
        self.opts.sizes.failover_rounds = n;
        self
    }
    /// Partitions of the `failover` namespaces.
    pub fn failover_partitions(mut self, p: u16) -> Self {
        self.opts.sizes.failover_partitions = p;
        self
    }
    /// Lease TTL of the `failover` crash nodes (at least 1 s).
    pub fn failover_lease_ttl(mut self, ttl: Duration) -> Self {
        self.opts.sizes.failover_lease_ttl = ttl;
        self
    }
    /// Live instances in the changelog while `failover` crashes nodes.
    pub fn failover_instances(mut self, n: u64) -> Self {
        self.opts.sizes.failover_instances = n;
        self
    }
    /// Changelog sizes (live instances) whose restore `failover` measures, one run each.
    pub fn restore_instances(mut self, sizes: Vec<u64>) -> Self {
        self.opts.sizes.restore_instances = sizes;
        self
    }
    /// Engine knobs.
    pub fn tuning(mut self, tuning: EngineTuning) -> Self {
        self.opts.tuning = tuning;
        self
    }
    /// Deadlock detection and the stall watchdog on (default), off, or `saga` both ways.
    pub fn coordination(mut self, c: Coordination) -> Self {
        self.opts.coordination = c;
        self
    }
    /// The bench saga declares its waits (default false).
    pub fn saga_waits(mut self, on: bool) -> Self {
        self.opts.saga_waits = on;
        self
    }
    /// Correlations of `deadlock`.
    pub fn deadlocks(mut self, n: u64) -> Self {
        self.opts.sizes.deadlocks = n;
        self
    }
    /// Start rate of `deadlock` (correlations/s).
    pub fn deadlock_rate(mut self, rate: f64) -> Self {
        self.opts.sizes.deadlock_rate = rate;
        self
    }
    /// `raw` with the engine's full CloudEvents headers (default: only `Nats-Msg-Id`).
    pub fn raw_envelope(mut self, on: bool) -> Self {
        self.opts.raw_envelope = on;
        self
    }
    /// Progress lines on stderr (default on).
    pub fn progress(mut self, on: bool) -> Self {
        self.opts.progress = on;
        self
    }
    /// The command line to record (default: this process's arguments).
    pub fn command(mut self, command: impl Into<String>) -> Self {
        self.opts.command = command.into();
        self
    }
    /// Per-workload timeout (default 10 min).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.opts.timeout = timeout;
        self
    }

    /// Validate and build.
    pub fn build(mut self) -> Result<BenchOptions, BenchError> {
        if self.one_million {
            self.opts.sizes.timers = 1_000_000;
            self.opts.sizes.timer_window =
                self.opts.sizes.timer_window.max(Duration::from_secs(600));
        }
        let o = &self.opts;
        let s = &o.sizes;
        let bad = |m: &str| Err(BenchError::Options(m.to_owned()));
        if s.raw_messages == 0
            || s.hop_chains == 0
            || s.sagas == 0
            || s.timers == 0
            || s.deadlocks == 0
        {
            return bad("workload sizes must be at least 1");
        }
        if s.hop_length == 0 || s.hop_length > 32 {
            return bad("the hop chain has 1 to 32 reactors");
        }
        if !(0.0..=1.0).contains(&s.fail_fraction) {
            return bad("the failure fraction is between 0 and 1");
        }
        if !(s.deadlock_rate > 0.0 && s.deadlock_rate.is_finite()) {
            return bad("the deadlock start rate must be positive");
        }
        if s.failover_rounds == 0 {
            return bad("failover measures at least one crash");
        }
        if s.failover_partitions < 2 {
            return bad("failover needs at least 2 partitions (two nodes share them)");
        }
        if s.failover_lease_ttl < Duration::from_secs(1) {
            return bad("the failover lease TTL is at least 1 s (the engine's minimum)");
        }
        if s.restore_instances.is_empty() || s.restore_instances.contains(&0) {
            return bad("failover restores at least one changelog of at least 1 instance");
        }
        match o.mode {
            LoadMode::Closed { in_flight: 0 } => return bad("in_flight must be at least 1"),
            LoadMode::Open { rate_per_s } if !(rate_per_s > 0.0 && rate_per_s.is_finite()) => {
                return bad("the open-loop rate must be positive")
            }
            _ => {}
        }
        if o.nats_url.is_some() && o.sync_always {
            return bad("--sync-always applies to a server the harness starts, not to --nats URL");
        }
        Ok(self.opts)
    }
}
