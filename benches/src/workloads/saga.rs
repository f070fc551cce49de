//! `saga`: a 3-step saga and the three services (reactors) it drives. The saga starts on
//! `bench.saga.start.v1`, sends `bench.step<n>.do.v1`, and on `bench.step<n>.done.v1` pushes
//! `bench.step<n>.undo.v1` as the step's compensation and moves on; the third `done` completes
//! it. A failing saga (a fraction of them, chosen by [`fail_step`]) gets `bench.step<n>.failed.v1`
//! at step 2 or 3 and fails: its compensations are emitted in reverse order and the services
//! handle them. Sagas/s and log events/s count from the first start to the last terminal
//! lifecycle event (`choreo.saga.completed` / `compensated`) stored on the log; latency is
//! start publish → terminal event stored. The same itinerary runs against Restate in
//! `benches/restate-peer`.
//!
//! With `--saga-waits` the saga declares what it awaits after each `do` (the step's `done` or
//! `failed`), so the deadlock detector has a waiting instance to check after each commit;
//! with `--coordination both` the workload runs twice, detection on (row `saga`) and off (row
//! [`NOCOORD_ROW`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use choreo::{
    Bus, Event, EventType, Node, ReactContext, ReactError, Reactor, Saga, SagaContext, SagaError,
    SAGA_COMPENSATED, SAGA_COMPLETED,
};
use serde::{Deserialize, Serialize};

use super::{fill_from, send_root, stream_messages, ty, wait_complete, BenchData, Ctx, Measure};
use crate::driver::offer;
use crate::env::fresh_namespace;
use crate::error::BenchError;
use crate::observer::{observe, seq_of};
use crate::options::{Coordination, LoadMode};
use crate::progress::Progress;
use crate::report::WorkloadResult;
use crate::tally::Tally;
use crate::tracker::Tracker;

/// Name of the benchmark saga.
pub const SAGA_NAME: &str = "bsaga";
/// Its start type.
pub const START: &str = "bench.saga.start.v1";
/// The row of the run with deadlock detection and the stall watchdog off, when the same
/// invocation also runs it with them on (`--coordination both`).
pub const NOCOORD_ROW: &str = "saga-nocoord";

/// Which step (2 or 3) fails for saga `seq`, or 0 when it succeeds: a deterministic
/// `fail_fraction` of the sagas, alternating between steps 2 and 3. The Restate peer uses the
/// same rule.
pub fn fail_step(seq: u64, fail_fraction: f64) -> u8 {
    let bucket = seq.wrapping_mul(2_654_435_761) % 10_000;
    if (bucket as f64) < fail_fraction * 10_000.0 {
        2 + (seq % 2) as u8
    } else {
        0
    }
}

/// `bench.step<n>.<kind>.v1`
fn step_type(n: u8, kind: &str) -> Result<EventType, BenchError> {
    ty(&format!("bench.step{n}.{kind}.v1"))
}

/// `(n, kind)` of a step type.
fn parse_step(t: &str) -> Option<(u8, &str)> {
    let rest = t.strip_prefix("bench.step")?.strip_suffix(".v1")?;
    let (n, kind) = rest.split_once('.')?;
    Some((n.parse().ok()?, kind))
}

/// The saga's state: nothing but its progress (the data travels on the events).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BenchSagaState {
    /// Steps done.
    pub done: u8,
}

/// The 3-step saga.
#[derive(Debug)]
pub struct BenchSaga {
    start: EventType,
    waits: bool,
}

impl BenchSaga {
    /// The saga (no declared waits).
    pub fn new() -> Result<Self, BenchError> {
        Self::with_waits(false)
    }

    /// The saga; with `waits`, it declares after each `do` that it awaits the step's `done`
    /// or `failed`.
    pub fn with_waits(waits: bool) -> Result<Self, BenchError> {
        Ok(Self {
            start: ty(START)?,
            waits,
        })
    }

    /// `do` of step `n`, and the wait for its answer when the saga declares its waits.
    fn send_do(&self, n: u8, data: &[u8], ctx: &mut SagaContext) -> Result<(), SagaError> {
        let err = |e: BenchError| SagaError::Permanent(e.to_string());
        ctx.emit_raw(step_type(n, "do").map_err(err)?, data.to_vec())?;
        if self.waits {
            ctx.awaits_any(
                [
                    step_type(n, "done").map_err(err)?,
                    step_type(n, "failed").map_err(err)?,
                ],
                None,
            );
        }
        Ok(())
    }
}

impl Saga for BenchSaga {
    type State = BenchSagaState;
    fn name(&self) -> &str {
        SAGA_NAME
    }
    fn starts_on(&self) -> Vec<EventType> {
        vec![self.start.clone()]
    }
    fn continues_on(&self) -> Vec<EventType> {
        (1..=3)
            .flat_map(|n| [step_type(n, "done"), step_type(n, "failed")])
            .filter_map(Result::ok)
            .collect()
    }
    fn emits(&self) -> Vec<EventType> {
        (1..=3)
            .flat_map(|n| [step_type(n, "do"), step_type(n, "undo")])
            .filter_map(Result::ok)
            .collect()
    }
    fn handle(
        &self,
        state: &mut BenchSagaState,
        event: &Event,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        let err = |e: BenchError| SagaError::Permanent(e.to_string());
        if event.ty == self.start {
            return self.send_do(1, &event.data, ctx);
        }
        match parse_step(event.ty.as_str()) {
            Some((n, "done")) => {
                state.done = n;
                ctx.push_compensation_raw(step_type(n, "undo").map_err(err)?, event.data.clone())?;
                if n < 3 {
                    self.send_do(n + 1, &event.data, ctx)?;
                } else {
                    ctx.complete();
                }
            }
            Some((n, "failed")) => ctx.fail(format!("step {n} failed")),
            _ => {}
        }
        Ok(())
    }
    fn on_timeout(
        &self,
        _state: &mut BenchSagaState,
        _timer: &str,
        _ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        Ok(())
    }
}

/// Service `n`: answers `do` with `done` (or `failed` when the data says this step fails) and
/// handles `undo`.
#[derive(Debug)]
pub struct StepService {
    n: u8,
    name: String,
    act: EventType,
    undo: EventType,
    done: EventType,
    failed: EventType,
    undos: Arc<Tally>,
    acts: Arc<AtomicU64>,
}

impl StepService {
    /// Service for step `n` (1..=3); counts handled compensations in `undos`.
    pub fn new(n: u8, undos: Arc<Tally>) -> Result<Self, BenchError> {
        Ok(Self {
            n,
            name: format!("step{n}"),
            act: step_type(n, "do")?,
            undo: step_type(n, "undo")?,
            done: step_type(n, "done")?,
            failed: step_type(n, "failed")?,
            undos,
            acts: Arc::new(AtomicU64::new(0)),
        })
    }
}

impl Reactor for StepService {
    fn name(&self) -> &str {
        &self.name
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![self.act.clone(), self.undo.clone()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![self.done.clone(), self.failed.clone()]
    }
    async fn react(&self, event: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        if event.ty == self.undo {
            self.undos.hit();
            return Ok(());
        }
        self.acts.fetch_add(1, Ordering::Relaxed);
        let d: BenchData = event.decode_as()?;
        let reply = if d.fail_step == self.n {
            &self.failed
        } else {
            &self.done
        };
        ctx.emit_raw(reply.clone(), event.data.clone())?;
        Ok(())
    }
}

/// Run `saga`: once, or with `--coordination both` twice (detection on, then off).
pub(crate) async fn run(cx: &Ctx<'_>) -> Result<Vec<WorkloadResult>, BenchError> {
    Ok(match cx.opts.coordination {
        Coordination::On => vec![run_one(cx, true, "saga").await?],
        Coordination::Off => vec![run_one(cx, false, "saga").await?],
        Coordination::Both => {
            let on = run_one(cx, true, "saga").await?;
            if cx.opts.progress {
                eprintln!("{NOCOORD_ROW}: running (deadlock detection and stall watchdog off)");
            }
            vec![on, run_one(cx, false, NOCOORD_ROW).await?]
        }
    })
}

/// One run of the saga workload, reported as row `row`.
async fn run_one(
    cx: &Ctx<'_>,
    coordination: bool,
    row: &str,
) -> Result<WorkloadResult, BenchError> {
    let opts = cx.opts;
    let (n, f) = (opts.sizes.sagas, opts.sizes.fail_fraction);
    let warm_n = opts.sizes.warmup.max(1);
    let ns = fresh_namespace("saga");
    let config = cx.bus_config(&ns)?;
    let dir = tempfile::Builder::new()
        .prefix("choreo-bench-saga-")
        .tempdir()
        .map_err(|e| BenchError::io("temp dir", e))?;
    let undo_of = |count: u64| {
        (0..count)
            .map(|s| u64::from(fail_step(s, f).saturating_sub(1)))
            .sum::<u64>()
    };
    let undos = Tally::new(undo_of(warm_n) + undo_of(n));
    let mut builder = Node::builder()
        .bus(config.clone())
        .data_dir(dir.path())
        .saga(BenchSaga::with_waits(opts.saga_waits)?);
    for step in 1..=3 {
        builder = builder.reactor(StepService::new(step, Arc::clone(&undos))?);
    }
    let node = cx.tune_with(builder, coordination).build()?.start().await?;
    let bus = Bus::connect(config.clone()).await?;

    let epoch = std::time::Instant::now();
    let warm = Tracker::new(epoch, warm_n, Some(1024));
    let window = match opts.mode {
        LoadMode::Closed { in_flight } => Some(in_flight),
        LoadMode::Open { .. } => None,
    };
    let main = Tracker::new(epoch, n, window);
    let compensated = Arc::new(AtomicU64::new(0));
    let observer = {
        let (warm, main, comp) = (
            Arc::clone(&warm),
            Arc::clone(&main),
            Arc::clone(&compensated),
        );
        let subjects = bus.subjects().clone();
        observe(
            bus.jetstream(),
            &config.events_stream(),
            vec![
                bus.subjects().type_filter(&ty(SAGA_COMPLETED)?),
                bus.subjects().type_filter(&ty(SAGA_COMPENSATED)?),
            ],
            move |subject| match subjects.parse_event(subject) {
                Some((_, c, t)) => match (seq_of(c, 's'), seq_of(c, 'w')) {
                    (Some(s), _) => {
                        if main.complete(s) && t == SAGA_COMPENSATED {
                            comp.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    (None, Some(s)) => {
                        warm.complete(s);
                    }
                    _ => main.unknown(),
                },
                None => main.unknown(),
            },
        )
        .await?
    };

    let start = ty(START)?;
    let send = |prefix: char| {
        let (bus, start) = (bus.clone(), start.clone());
        move |seq: u64| {
            let (bus, start) = (bus.clone(), start.clone());
            let data = BenchData::new(seq, fail_step(seq, f), 0).encode();
            async move { send_root(&bus, &format!("{prefix}{seq}"), &start, data?).await }
        }
    };
    offer(&warm, LoadMode::Closed { in_flight: 1024 }, send('w')).await?;
    wait_complete("saga", "warm-up sagas", &warm, cx.timeout()).await?;

    let before = stream_messages(&bus, &config.events_stream()).await?;
    let metrics_before = node.metrics().snapshot(SAGA_NAME);
    let checks_before = node.metrics().coordination();
    let measure = Measure::start(cx.server);
    let progress = {
        let t = Arc::clone(&main);
        Progress::start(
            opts.progress,
            row.into(),
            "sagas",
            main.len(),
            Arc::new(move || t.completed()),
        )
    };
    offer(&main, opts.mode, send('s')).await?;
    wait_complete("saga", "sagas ended", &main, cx.timeout()).await?;
    progress.finish();
    let after = stream_messages(&bus, &config.events_stream()).await?;
    let mut r = WorkloadResult::new(row, "choreo", "sagas");
    measure.finish(&mut r);
    fill_from(&mut r, &main);
    let events = after.saturating_sub(before);
    r.events_per_s = Some(events as f64 / r.elapsed_s.max(1e-9));
    r.latency_of = "start publish → completed/compensated event stored".into();
    let failed_expected = (0..n).filter(|s| fail_step(*s, f) != 0).count() as u64;
    let comp = compensated.load(Ordering::Relaxed);
    r.set("compensated", comp);
    r.set("completed", r.items - comp);
    r.set("fail_fraction", f);
    r.set("log_events", events);
    r.set("coordination", if coordination { "on" } else { "off" });
    r.set("saga_waits", opts.saga_waits);
    if coordination {
        let c = node.metrics().coordination();
        r.set("deadlock_checks", c.checks - checks_before.checks);
        r.set("deadlock_log_reads", c.log_reads - checks_before.log_reads);
    }
    if comp != failed_expected {
        return Err(BenchError::Incomplete {
            workload: "saga".into(),
            what: "compensated sagas (expected exactly the failing ones)".into(),
            got: comp,
            expected: failed_expected,
            secs: 0,
        });
    }
    // Compensations are handled by the services after the saga ended: count them too.
    undos
        .wait(cx.timeout())
        .await
        .map_err(|got| BenchError::Incomplete {
            workload: "saga".into(),
            what: "compensations handled by the services".into(),
            got,
            expected: undos.target(),
            secs: cx.timeout().as_secs(),
        })?;
    r.set("compensations_handled", undos.count());
    let m = node.metrics().snapshot(SAGA_NAME);
    let batches = m.batches - metrics_before.batches;
    if batches > 0 {
        let inputs = m.batch_inputs - metrics_before.batch_inputs;
        r.set("saga_inputs", inputs);
        r.set("saga_batches", batches);
        r.set(
            "mean_group_commit_batch",
            (inputs as f64 / batches as f64 * 10.0).round() / 10.0,
        );
    }
    if let Some(p) = m.flush_quantile_us(0.5) {
        r.set("flush_p50_us_bucket", p);
    }
    if let Some(p) = m.flush_quantile_us(0.99) {
        r.set("flush_p99_us_bucket", p);
    }
    r.notes.push(
        "vs raw compares log events/s (every event the sagas and services stored) to raw msgs/s"
            .into(),
    );
    drop(observer);
    node.shutdown().await?;
    drop(dir);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_fraction_is_respected() {
        let n = 100_000u64;
        let failing = (0..n).filter(|s| fail_step(*s, 0.1) != 0).count() as f64;
        assert!((failing / n as f64 - 0.1).abs() < 0.01, "{failing}");
        assert!((0..1000).all(|s| fail_step(s, 0.0) == 0));
        assert!((0..1000).all(|s| matches!(fail_step(s, 1.0), 2 | 3)));
        assert_eq!(parse_step("bench.step2.done.v1"), Some((2, "done")));
    }
}
