//! `deadlock`: the wait-for cycle of `engine/tests/deadlock.rs` on N correlations, and how long
//! the partition owner takes to see it. Saga `dl-a` starts on `bench.deadlock.start.v1` and
//! awaits `t1`, which only reactor `dl-r` emits (from `t3`); saga `dl-b` starts on the same
//! event and awaits `t2`, which only `dl-a` emits once it has `t1`; `t3` only `dl-b` emits once
//! it has `t2`. Nothing is in flight once both have started: a deadlock, which the owner of the
//! correlation's partition reports (`choreo.deadlock.detected`) and breaks by failing the
//! youngest wait (`dl-b`, compensated with nothing to undo).
//!
//! N root events on distinct correlations are started open loop at a steady rate. Latency per
//! correlation: the JetStream time of its last `choreo.saga.started` (the commit that closes
//! the cycle: the check runs after that commit's events are on the log) → the JetStream time of
//! its `choreo.deadlock.detected`; both timestamps come from the server's clock. Every
//! correlation must get exactly one detection and its victim must be compensated, or the run
//! is an error.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use choreo::{
    Bus, Event, EventType, Node, ReactContext, ReactError, Reactor, Saga, SagaContext, SagaError,
    DEADLOCK_DETECTED, SAGA_COMPENSATED, SAGA_STARTED,
};

use super::{fill_from, send_root, ty, wait_complete, BenchData, Ctx, Measure};
use crate::driver::offer;
use crate::env::fresh_namespace;
use crate::error::BenchError;
use crate::latency::LatencyHistogram;
use crate::observer::{observe_timed, seq_of};
use crate::options::LoadMode;
use crate::progress::Progress;
use crate::report::WorkloadResult;
use crate::tracker::Tracker;

/// The root type both sagas start on.
pub const START: &str = "bench.deadlock.start.v1";
/// Awaited by `dl-a`, emitted by `dl-r`.
pub const T1: &str = "bench.deadlock.t1.v1";
/// Awaited by `dl-b`, emitted by `dl-a`.
pub const T2: &str = "bench.deadlock.t2.v1";
/// Consumed by `dl-r`, emitted by `dl-b`.
pub const T3: &str = "bench.deadlock.t3.v1";
/// The issue's target for the detection latency p99.
pub const TARGET_P99_MS: f64 = 100.0;

/// Starts on [`START`], awaits `awaits`, and on it emits `emits` and completes.
#[derive(Debug)]
pub struct Waiter {
    name: &'static str,
    start: EventType,
    awaits: EventType,
    emits: EventType,
}

impl Waiter {
    /// Saga `name` awaiting `awaits` and then emitting `emits`.
    pub fn new(name: &'static str, awaits: &str, emits: &str) -> Result<Self, BenchError> {
        Ok(Self {
            name,
            start: ty(START)?,
            awaits: ty(awaits)?,
            emits: ty(emits)?,
        })
    }
}

impl Saga for Waiter {
    type State = ();
    fn name(&self) -> &str {
        self.name
    }
    fn starts_on(&self) -> Vec<EventType> {
        vec![self.start.clone()]
    }
    fn continues_on(&self) -> Vec<EventType> {
        vec![self.awaits.clone()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![self.emits.clone()]
    }
    fn handle(&self, _: &mut (), e: &Event, ctx: &mut SagaContext) -> Result<(), SagaError> {
        if e.ty == self.start {
            ctx.awaits(self.awaits.clone());
        } else {
            ctx.emit_raw(self.emits.clone(), Vec::new())?;
            ctx.complete();
        }
        Ok(())
    }
    fn on_timeout(&self, _: &mut (), _: &str, _: &mut SagaContext) -> Result<(), SagaError> {
        Ok(())
    }
}

/// Turns `from` into `to`.
#[derive(Debug)]
pub struct Relay {
    name: &'static str,
    from: EventType,
    to: EventType,
}

impl Relay {
    /// Reactor `name` answering `from` with `to`.
    pub fn new(name: &'static str, from: &str, to: &str) -> Result<Self, BenchError> {
        Ok(Self {
            name,
            from: ty(from)?,
            to: ty(to)?,
        })
    }
}

impl Reactor for Relay {
    fn name(&self) -> &str {
        self.name
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![self.from.clone()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![self.to.clone()]
    }
    async fn react(&self, _: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        ctx.emit_raw(self.to.clone(), Vec::new())?;
        Ok(())
    }
}

/// Log times per correlation of the measured run.
#[derive(Debug)]
struct Times {
    /// Latest stored time (Unix ns) of a `choreo.saga.started`, 0 before any.
    started_ns: Vec<i128>,
    /// `choreo.saga.started` events seen.
    started: Vec<u8>,
    /// Stored time of the (first) detection, 0 before it.
    detected_ns: Vec<i128>,
    /// Last started → detection stored.
    detect: LatencyHistogram,
    /// Detection stored → the victim's `choreo.saga.compensated` stored.
    break_: LatencyHistogram,
    /// Detections stored before both instances had started (must be 0).
    early: u64,
}

impl Times {
    fn new(n: u64) -> Self {
        let n = usize::try_from(n).unwrap_or(0);
        Self {
            started_ns: vec![0; n],
            started: vec![0; n],
            detected_ns: vec![0; n],
            detect: LatencyHistogram::new(),
            break_: LatencyHistogram::new(),
            early: 0,
        }
    }

    fn started(&mut self, i: usize, at: i128) {
        if let (Some(t), Some(c)) = (self.started_ns.get_mut(i), self.started.get_mut(i)) {
            *t = (*t).max(at);
            *c = c.saturating_add(1);
        }
    }

    fn detected(&mut self, i: usize, at: i128) {
        let (Some(&since), Some(&count)) = (self.started_ns.get(i), self.started.get(i)) else {
            return;
        };
        if let Some(d) = self.detected_ns.get_mut(i) {
            *d = at;
        }
        if count < 2 || since == 0 {
            self.early += 1;
            return;
        }
        self.detect
            .record_ns(u64::try_from(at - since).unwrap_or(0));
    }

    fn broken(&mut self, i: usize, at: i128) {
        if let Some(&d) = self.detected_ns.get(i).filter(|d| **d > 0) {
            self.break_.record_ns(u64::try_from(at - d).unwrap_or(0));
        }
    }
}

fn index(seq: u64) -> usize {
    usize::try_from(seq).unwrap_or(usize::MAX)
}

/// Run `deadlock`.
pub(crate) async fn run(cx: &Ctx<'_>) -> Result<WorkloadResult, BenchError> {
    let opts = cx.opts;
    let n = opts.sizes.deadlocks;
    let warm_n = opts.sizes.warmup.clamp(1, 100);
    let rate = match opts.mode {
        LoadMode::Open { rate_per_s } => rate_per_s,
        LoadMode::Closed { .. } => opts.sizes.deadlock_rate,
    };
    // Detections come within milliseconds of the last start: past this, one is missing.
    let patience = cx.timeout().min(Duration::from_secs(60));
    let ns = fresh_namespace("deadlock");
    let config = cx.bus_config(&ns)?;
    let dir = tempfile::Builder::new()
        .prefix("choreo-bench-deadlock-")
        .tempdir()
        .map_err(|e| BenchError::io("temp dir", e))?;
    let builder = Node::builder()
        .bus(config.clone())
        .data_dir(dir.path())
        .saga(Waiter::new("dl-a", T1, T2)?)
        .saga(Waiter::new("dl-b", T2, T3)?)
        .reactor(Relay::new("dl-r", T3, T1)?);
    // Always on: detection is what this workload measures.
    let node = cx.tune_with(builder, true).build()?.start().await?;
    let bus = Bus::connect(config.clone()).await?;

    let epoch = Instant::now();
    let warm = Tracker::new(epoch, warm_n, Some(1024));
    let warm_victims = Tracker::new(epoch, warm_n, None);
    let main = Tracker::new(epoch, n, None);
    let victims = Tracker::new(epoch, n, None);
    let times = Arc::new(Mutex::new(Times::new(n)));
    let observer = {
        let (warm, warm_victims, main, victims, times) = (
            Arc::clone(&warm),
            Arc::clone(&warm_victims),
            Arc::clone(&main),
            Arc::clone(&victims),
            Arc::clone(&times),
        );
        let subjects = bus.subjects().clone();
        observe_timed(
            bus.jetstream(),
            &config.events_stream(),
            vec![
                bus.subjects().type_filter(&ty(SAGA_STARTED)?),
                bus.subjects().type_filter(&ty(DEADLOCK_DETECTED)?),
                bus.subjects().type_filter(&ty(SAGA_COMPENSATED)?),
            ],
            move |subject, stored_ns| {
                let Some((_, c, t)) = subjects.parse_event(subject) else {
                    main.unknown();
                    return;
                };
                if let Some(s) = seq_of(c, 'w') {
                    match t {
                        DEADLOCK_DETECTED => {
                            warm.complete(s);
                        }
                        SAGA_COMPENSATED => {
                            warm_victims.complete(s);
                        }
                        _ => {}
                    }
                    return;
                }
                let Some(s) = seq_of(c, 'd') else {
                    main.unknown();
                    return;
                };
                let mut times = times.lock().unwrap_or_else(|p| p.into_inner());
                match t {
                    SAGA_STARTED => times.started(index(s), stored_ns),
                    // The first one of each correlation (a second counts as a duplicate).
                    DEADLOCK_DETECTED if main.complete(s) => {
                        times.detected(index(s), stored_ns);
                    }
                    SAGA_COMPENSATED if victims.complete(s) => {
                        times.broken(index(s), stored_ns);
                    }
                    _ => {}
                }
            },
        )
        .await?
    };

    let start = ty(START)?;
    let send = |prefix: char| {
        let (bus, start) = (bus.clone(), start.clone());
        move |seq: u64| {
            let (bus, start) = (bus.clone(), start.clone());
            let data = BenchData::new(seq, 0, 0).encode();
            async move { send_root(&bus, &format!("{prefix}{seq}"), &start, data?).await }
        }
    };
    offer(&warm, LoadMode::Closed { in_flight: 1024 }, send('w')).await?;
    wait_complete("deadlock", "warm-up detections", &warm, patience).await?;
    wait_complete(
        "deadlock",
        "warm-up victims failed",
        &warm_victims,
        patience,
    )
    .await?;

    let before = node.metrics().coordination();
    let measure = Measure::start(cx.server);
    let progress = {
        let t = Arc::clone(&main);
        Progress::start(
            opts.progress,
            "deadlock".into(),
            "detections",
            main.len(),
            Arc::new(move || t.completed()),
        )
    };
    offer(&main, LoadMode::Open { rate_per_s: rate }, send('d')).await?;
    wait_complete("deadlock", "correlations with a detection", &main, patience).await?;
    progress.finish();
    wait_complete(
        "deadlock",
        "victims compensated (the cycle broken)",
        &victims,
        patience,
    )
    .await?;
    let after = node.metrics().coordination();

    let mut r = WorkloadResult::new("deadlock", "choreo", "deadlocks");
    measure.finish(&mut r);
    fill_from(&mut r, &main);
    let observed = main.histogram().percentiles();
    let (detect, broke, early) = {
        let t = times.lock().unwrap_or_else(|p| p.into_inner());
        (t.detect.percentiles(), t.break_.percentiles(), t.early)
    };
    r.latency = detect.clone();
    r.latency_of = "commit closing the cycle (last choreo.saga.started stored) → \
                    choreo.deadlock.detected stored (JetStream timestamps)"
        .into();
    r.duplicates = main.counts().duplicates + victims.counts().duplicates;
    let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
    if let Some(p) = &detect {
        r.set("p50_ms", ms(p.p50_us));
        r.set("p99_ms", ms(p.p99_us));
        r.set("max_ms", ms(p.max_us));
        r.set("target_p99_ms", TARGET_P99_MS);
        r.set("target_met", ms(p.p99_us) <= TARGET_P99_MS);
    }
    if let Some(p) = &observed {
        r.set("start_publish_to_detection_seen_p50_ms", ms(p.p50_us));
        r.set("start_publish_to_detection_seen_p99_ms", ms(p.p99_us));
    }
    if let Some(p) = &broke {
        r.set("detection_to_victim_compensated_p50_ms", ms(p.p50_us));
        r.set("detection_to_victim_compensated_p99_ms", ms(p.p99_us));
    }
    r.set("start_rate_per_s", rate);
    r.set("correlations", n);
    r.set("deadlocks_reported", after.deadlocks - before.deadlocks);
    r.set("deadlock_checks", after.checks - before.checks);
    r.set(
        "checks_per_correlation",
        ((after.checks - before.checks) as f64 / n as f64 * 100.0).round() / 100.0,
    );
    r.set("stalls_reported", after.stalls - before.stalls);
    r.notes.push(format!(
        "open loop at {rate:.0} starts/s whatever the run's load mode; throughput = \
         detections/s over the run (it says the detector kept up, not its capacity)"
    ));
    let dup = main.counts().duplicates;
    drop(observer);
    node.shutdown().await?;
    drop(dir);
    if dup > 0 || early > 0 {
        return Err(BenchError::Incomplete {
            workload: "deadlock".into(),
            what: format!(
                "correlations with exactly one detection after both starts ({dup} duplicate \
                 detections on the log, {early} before both instances started)"
            ),
            got: n.saturating_sub(dup + early),
            expected: n,
            secs: 0,
        });
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_runs_from_the_last_start() {
        let mut t = Times::new(2);
        t.started(0, 1_000_000);
        t.started(0, 3_000_000);
        t.detected(0, 5_000_000);
        t.broken(0, 9_000_000);
        t.started(1, 1_000_000);
        t.detected(1, 2_000_000);
        let p = t.detect.percentiles().expect("one latency");
        assert_eq!((p.count, p.max_us / 100), (1, 20), "{p:?}");
        assert_eq!(t.early, 1, "detected with one instance started");
        assert_eq!(t.break_.percentiles().map(|p| p.max_us / 100), Some(40));
    }
}
