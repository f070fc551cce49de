//! A run's phases: warm-up, faults, heal, quiescence, check.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use choreo::{Bus, BusConfig, ChangelogEntry, PartitionHead, Replicas};
use futures::StreamExt;

use crate::checker::{check, Expectations, Invariant, LogView};
use crate::error::ChaosError;
use crate::nemesis::Nemesis;
use crate::report::{outcomes, Applied, Injections, Report, Takeover};
use crate::schedule::{FaultKind, Plan, Schedule, Target};
use crate::svg::Phase;
use crate::topology::{NodeCommand, Topology};
use crate::workload::{follow_ends, Generator, Ops, Workload};

/// How long the log must stay still (and every consumer caught up) to count as quiescent.
const QUIET: Duration = Duration::from_secs(2);
/// How often quiescence is polled.
const POLL: Duration = Duration::from_millis(500);
/// How often quiescence reads the changelog (every instance) once the log is still.
const CHANGELOG_POLL: Duration = Duration::from_secs(5);
/// The longest takeover waited for.
const TAKEOVER_MAX: Duration = Duration::from_secs(60);

/// One chaos run: its topology, workload, faults and checks. Build it with
/// [`Scenario::builder`].
pub struct Scenario {
    pub(crate) seed: u64,
    pub(crate) servers: usize,
    pub(crate) nodes: usize,
    pub(crate) command: NodeCommand,
    pub(crate) workload: Arc<dyn Workload>,
    pub(crate) expectations: Expectations,
    pub(crate) extra: Vec<Box<dyn Invariant>>,
    pub(crate) rate: f64,
    pub(crate) warmup: Duration,
    pub(crate) faults_for: Duration,
    pub(crate) quiesce_max: Duration,
    pub(crate) kinds: Vec<FaultKind>,
    pub(crate) per_kind: usize,
    pub(crate) lease_ttl: Duration,
    pub(crate) partitions: u16,
    pub(crate) keep: Option<PathBuf>,
    pub(crate) progress: bool,
}

impl Scenario {
    /// A builder: the built-in travel scenario's defaults, nodes started by `command`.
    pub fn builder(command: NodeCommand) -> crate::ScenarioBuilder {
        crate::ScenarioBuilder::new(command)
    }

    /// The schedule this scenario runs (printed before the run; `--seed` reproduces it).
    pub fn schedule(&self) -> Schedule {
        Schedule::generate(&Plan {
            seed: self.seed,
            window: self.faults_for,
            nodes: self.nodes,
            servers: self.servers,
            kinds: self.kinds.clone(),
            per_kind: self.per_kind,
            lease_ttl: self.lease_ttl,
        })
    }

    fn say(&self, t0: Instant, what: &str) {
        if self.progress {
            eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
        }
    }
}

fn ms(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Partition owners as the heads say, followed live.
type Owners = tokio::sync::watch::Receiver<BTreeMap<u16, String>>;

/// Every head the follower saw, by stream sequence: the heads' history, which the changelog
/// itself does not keep (one value per subject). A re-opened follow (after a server fault)
/// starts at the current heads, so heads overwritten meanwhile are missing.
type HeadHistory = Arc<std::sync::Mutex<BTreeMap<u64, PartitionHead>>>;

async fn follow_owners(
    bus: &Bus,
) -> Result<(Owners, HeadHistory, tokio::task::JoinHandle<()>), ChaosError> {
    let history: HeadHistory = Arc::default();
    let seen = Arc::clone(&history);
    use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
    let (tx, rx) = tokio::sync::watch::channel(BTreeMap::new());
    let js = bus.jetstream().clone();
    let stream_name = bus.config().state_stream();
    let filter = format!("{}.state.*.head", bus.config().namespace());
    let task = tokio::spawn(async move {
        // Re-opened after a server fault; LastPerSubject gives the current heads again.
        loop {
            let opened = async {
                let stream = js
                    .get_stream(&stream_name)
                    .await
                    .map_err(|e| e.to_string())?;
                let c = stream
                    .create_consumer(OrderedConfig {
                        filter_subject: filter.clone(),
                        deliver_policy: DeliverPolicy::LastPerSubject,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                c.messages().await.map_err(|e| e.to_string())
            }
            .await;
            if let Ok(mut msgs) = opened {
                while let Some(Ok(m)) = msgs.next().await {
                    if let Ok(h) = rmp_serde::from_slice::<PartitionHead>(&m.payload) {
                        if let (Ok(info), Ok(mut seen)) = (m.info(), seen.lock()) {
                            seen.insert(info.stream_sequence, h.clone());
                        }
                        tx.send_modify(|o| {
                            o.insert(h.partition, h.owner);
                        });
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    Ok((rx, history, task))
}

/// Run `s`: start its topology, drive the workload through the schedule, heal, wait for
/// quiescence, check. The report says whether every invariant held.
pub async fn run(s: Scenario) -> Result<Report, ChaosError> {
    let t0 = Instant::now();
    let temp;
    let dir = match &s.keep {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| ChaosError::io(format!("create {}", d.display()), e))?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("choreo-chaos-")
                .tempdir()
                .map_err(|e| ChaosError::io("create a temp dir".into(), e))?;
            temp.path().to_path_buf()
        }
    };
    let schedule = s.schedule();
    if s.progress {
        eprint!("{schedule}");
    }
    let mut phases = Vec::new();
    let phase = |name: &str, phases: &mut Vec<Phase>| {
        let now = ms(t0);
        if let Some(p) = phases.last_mut() {
            let p: &mut Phase = p;
            p.to_ms = now;
        }
        phases.push(Phase {
            name: name.to_owned(),
            from_ms: now,
            to_ms: now,
        });
    };
    s.say(
        t0,
        &format!(
            "starting {} servers and {} nodes in {}",
            s.servers,
            s.nodes,
            dir.display()
        ),
    );
    let mut topo = Topology::start(s.servers, s.nodes, &dir, s.command.clone(), s.seed).await?;
    let replicas = if topo.server_count() >= 3 {
        Replicas::Three
    } else {
        Replicas::One
    };
    let cfg = BusConfig::builder()
        .url(topo.client_urls().join(","))
        .partitions(s.partitions)
        .replicas(replicas)
        .request_timeout(Duration::from_secs(5))
        .client_name("choreo-chaos")
        .build()
        .map_err(|e| ChaosError::Scenario(e.to_string()))?;
    let bus = Bus::connect(cfg).await?;
    let ops = Ops::default();
    let ends = follow_ends(bus.clone(), s.workload.saga().to_owned(), ops.clone(), t0).await?;
    let (owners, head_history, owners_task) = follow_owners(&bus).await?;
    let mut nemesis = Nemesis::new(bus.clone(), s.seed, s.workload.start_type());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run_id = format!(
        "{:x}",
        crate::rng::Rng::new(s.seed ^ u64::from(std::process::id())).next_u64() & 0xff_ffff
    );
    let generator = tokio::spawn(
        Generator {
            bus: bus.clone(),
            workload: Arc::clone(&s.workload),
            rate: s.rate,
            run: run_id,
            ops: ops.clone(),
            skew: nemesis.skew.clone(),
            t0,
        }
        .run(stop_rx),
    );

    phase("warm-up", &mut phases);
    s.say(t0, "warm-up");
    tokio::time::sleep(s.warmup).await;

    phase("faults", &mut phases);
    let faults_t0 = Instant::now();
    let mut steps: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, f) in schedule.faults.iter().enumerate() {
        steps.push((f.at, true, i));
        steps.push((f.at + f.duration, false, i));
    }
    steps.sort_by_key(|(at, apply, i)| (*at, *apply, *i));
    let mut applied: Vec<Applied> = Vec::new();
    let mut index_of: BTreeMap<usize, usize> = BTreeMap::new();
    let takeovers: Arc<Mutex<Vec<Takeover>>> = Arc::default();
    let mut waits = Vec::new();
    for (at, apply, i) in steps {
        tokio::time::sleep_until(tokio::time::Instant::from_std(faults_t0 + at)).await;
        let Some(f) = schedule.faults.get(i) else {
            continue;
        };
        if apply {
            let (p, a, e) = ops.counts();
            s.say(
                t0,
                &format!(
                    "#{} {} {}  (ops: {p} published, {a} acked, {e} ended)",
                    f.id, f.kind, f.target
                ),
            );
            if let (
                Target::Node(n),
                FaultKind::KillNode
                | FaultKind::PauseNode
                | FaultKind::Cut
                | FaultKind::RestartNode,
            ) = (f.target, f.kind)
            {
                let node = topo.node_id(n);
                let mut rx = owners.clone();
                let owned = rx.borrow().values().any(|o| *o == node);
                if owned {
                    let (kind, takeovers) = (f.kind, Arc::clone(&takeovers));
                    let from = Instant::now();
                    waits.push(tokio::spawn(async move {
                        let moved = tokio::time::timeout(
                            TAKEOVER_MAX,
                            rx.wait_for(|o| o.values().all(|x| *x != node)),
                        )
                        .await;
                        if matches!(moved, Ok(Ok(_))) {
                            if let Ok(mut t) = takeovers.lock() {
                                t.push(Takeover {
                                    kind,
                                    node,
                                    ms: u64::try_from(from.elapsed().as_millis())
                                        .unwrap_or(u64::MAX),
                                });
                            }
                        }
                    }));
                }
            }
            let from_ms = ms(t0);
            let error = nemesis
                .apply(&mut topo, f)
                .await
                .err()
                .map(|e| e.to_string());
            if let Some(e) = &error {
                s.say(t0, &format!("#{} could not be applied: {e}", f.id));
            }
            index_of.insert(i, applied.len());
            applied.push(Applied {
                id: f.id,
                kind: f.kind,
                target: f.target.to_string(),
                from_ms,
                to_ms: from_ms,
                error,
            });
        } else {
            let healed = nemesis.heal(&mut topo, f).await;
            if let Some(a) = index_of.get(&i).and_then(|j| applied.get_mut(*j)) {
                a.to_ms = ms(t0);
                if let Err(e) = healed {
                    s.say(t0, &format!("#{} could not be healed: {e}", f.id));
                    a.error.get_or_insert(format!("heal: {e}"));
                }
            }
        }
    }

    phase("heal", &mut phases);
    s.say(t0, "heal: every fault undone");
    topo.heal_links();
    for n in 0..topo.node_count() {
        if !topo.node_running(n) {
            topo.start_node(n).await?;
        }
        topo.resume_node(n).await?;
    }
    let _ = stop_tx.send(true);
    match generator.await {
        Ok(r) => r?,
        Err(e) => {
            return Err(ChaosError::Topology(format!(
                "the workload task failed: {e}"
            )))
        }
    }

    phase("quiescence", &mut phases);
    s.say(
        t0,
        "quiescence: waiting until every consumer caught up and the log is still",
    );
    let quiescent = quiesce(&bus, s.quiesce_max).await;
    for w in waits {
        w.abort();
    }

    phase("check", &mut phases);
    let (p, a, e) = ops.counts();
    s.say(
        t0,
        &format!("check (ops: {p} published, {a} acked, {e} ended)"),
    );
    ends.abort();
    owners_task.abort();
    let crashes_before = topo.crashes();
    let mut view = LogView::read(&bus, ops.snapshot(), nemesis.injected.clone()).await?;
    view.head_history = head_history
        .lock()
        .map(|h| {
            h.iter()
                .map(|(seq, head)| ChangelogEntry {
                    sequence: *seq,
                    value: head.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    topo.stop_all().await?;
    let mut crashes = crashes_before;
    for c in topo.crashes() {
        if !crashes.contains(&c) {
            crashes.push(c);
        }
    }
    let verdict = check(&view, &s.expectations, &s.extra, &crashes).await?;
    let status: BTreeMap<String, String> = view
        .records
        .iter()
        .filter(|r| r.saga == s.expectations.saga)
        .map(|r| (r.correlation.clone(), r.status.to_string()))
        .collect();
    if let Some(last) = phases.last_mut() {
        last.to_ms = ms(t0);
    }
    let takeovers = takeovers.lock().map(|t| t.clone()).unwrap_or_default();
    Ok(Report {
        seed: s.seed,
        topology: (topo.server_count(), topo.node_count()),
        schedule,
        applied,
        outcomes: outcomes(&view.ops, &status),
        takeovers,
        injected: Injections {
            poison: view.injected.poison.len(),
            duplicates: view.injected.duplicates.len(),
        },
        verdict,
        phases,
        quiescent,
        elapsed_ms: ms(t0),
        ops: view.ops,
    })
}

/// Wait until every durable consumer of the events stream has nothing pending or unacked, the
/// log's last sequence held still for [`QUIET`], and no instance of the changelog is still
/// running or compensating (a pending timer fires into a still log: stillness alone is not
/// the end), or `max` passed; true when quiescent. The changelog is read at most every
/// [`CHANGELOG_POLL`].
async fn quiesce(bus: &Bus, max: Duration) -> bool {
    let until = Instant::now() + max;
    let log = choreo::Changelog::new(bus);
    let mut still_since: Option<(u64, Instant)> = None;
    let mut last_read: Option<Instant> = None;
    while Instant::now() < until {
        if let Ok(st) = bus.stats().await {
            let idle = st
                .consumers
                .iter()
                .all(|c| c.pending == 0 && c.ack_pending == 0);
            let last = st.events.last_sequence;
            match still_since {
                Some((seq, since)) if seq == last && idle => {
                    let due = last_read.is_none_or(|t| t.elapsed() >= CHANGELOG_POLL);
                    if since.elapsed() >= QUIET && due {
                        last_read = Some(Instant::now());
                        let ended = log
                            .list(None, None)
                            .await
                            .is_ok_and(|rs| rs.iter().all(|r| r.status.is_terminal()));
                        if ended {
                            return true;
                        }
                    }
                }
                _ => still_since = Some((last, Instant::now())),
            }
            if !idle {
                still_since = None;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    false
}
