//! `timers`: M durable saga timers (default 100 k; 1 M with `timers_1m`) due over a window.
//!
//! Each timer is one instance of the `btimer` saga: its start event carries the due time, the
//! saga schedules timer `t` for it, and `on_timeout` completes the instance. The run:
//! 1. warm-up: W timers due at once, which also measures how fast timers are scheduled;
//! 2. the M start events are published with due times spread evenly over the window, starting
//!    after a lead long enough (from the warm-up rate, with margin) for all M to be pending
//!    before the first is due; the harness awaits M `choreo.saga.started` events on the log
//!    and reads the store's pending-timer count and this process's RSS: memory per pending
//!    timer = RSS growth / M (the instance records and sled's cache included);
//! 3. firing lateness = when `on_timeout` ran − the due time (what the timer loop achieves),
//!    and visible lateness = when `choreo.saga.completed` was stored − the due time.

use std::sync::Arc;
use std::time::Duration;

use choreo::{
    Bus, Event, EventType, Node, Saga, SagaContext, SagaError, SAGA_COMPLETED, SAGA_STARTED,
};
use serde::{Deserialize, Serialize};

use super::{ty, wait_complete, BenchData, Ctx, Measure};
use crate::driver::offer;
use crate::env::fresh_namespace;
use crate::error::BenchError;
use crate::latency::human_us;
use crate::observer::{observe, seq_of};
use crate::options::LoadMode;
use crate::procstat;
use crate::progress::Progress;
use crate::report::WorkloadResult;
use crate::tracker::Tracker;

/// Name of the timer saga.
pub const SAGA_NAME: &str = "btimer";
/// Its start type.
pub const START: &str = "bench.timer.start.v1";
/// Warm-up timers carry sequence numbers from here.
const WARM_BASE: u64 = 1 << 40;

/// Where `on_timeout` reports firings: the warm-up and the measured trackers.
#[derive(Debug)]
pub struct FireProbe {
    warm: Arc<Tracker>,
    main: Arc<Tracker>,
}

impl FireProbe {
    fn fired(&self, seq: u64) {
        if seq >= WARM_BASE {
            self.warm.complete(seq - WARM_BASE);
        } else {
            self.main.complete(seq);
        }
    }
}

/// State of a timer instance.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TimerState {
    /// Item sequence number.
    pub seq: u64,
}

/// The timer saga: schedules one timer at the due time its start event carries.
#[derive(Debug)]
pub struct TimerSaga {
    start: EventType,
    probe: Arc<FireProbe>,
}

impl Saga for TimerSaga {
    type State = TimerState;
    fn name(&self) -> &str {
        SAGA_NAME
    }
    fn starts_on(&self) -> Vec<EventType> {
        vec![self.start.clone()]
    }
    fn continues_on(&self) -> Vec<EventType> {
        Vec::new()
    }
    fn emits(&self) -> Vec<EventType> {
        Vec::new()
    }
    fn handle(
        &self,
        s: &mut TimerState,
        e: &Event,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        let d: BenchData = e.decode_as()?;
        s.seq = d.seq;
        let now_ns = ctx.now().unix_timestamp_nanos();
        let due_ns = i128::from(d.due_ms) * 1_000_000;
        let after = u64::try_from((due_ns - now_ns).max(0)).unwrap_or(0);
        ctx.schedule("t", Duration::from_nanos(after));
        Ok(())
    }
    fn on_timeout(
        &self,
        s: &mut TimerState,
        _timer: &str,
        ctx: &mut SagaContext,
    ) -> Result<(), SagaError> {
        // Measurement only (a side channel, not a decision): when the timer loop fired it.
        self.probe.fired(s.seq);
        ctx.complete();
        Ok(())
    }
}

fn unix_ns() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Run `timers`.
pub(crate) async fn run(cx: &Ctx<'_>) -> Result<WorkloadResult, BenchError> {
    let opts = cx.opts;
    let m = opts.sizes.timers;
    let warm_n = opts.sizes.warmup.max((m / 10).min(2_000)).max(1);
    let window = opts.sizes.timer_window;
    let ns = fresh_namespace("timers");
    let config = cx.bus_config(&ns)?;
    let dir = tempfile::Builder::new()
        .prefix("choreo-bench-timers-")
        .tempdir()
        .map_err(|e| BenchError::io("temp dir", e))?;

    let epoch = std::time::Instant::now();
    let epoch_unix_ns = unix_ns();
    let to_epoch_ns =
        |unix_ms: i64| u64::try_from(i128::from(unix_ms) * 1_000_000 - epoch_unix_ns).unwrap_or(0);
    let win = Some(1024);
    let warm_sched = Tracker::new(epoch, warm_n, win);
    let warm_fire = Tracker::new(epoch, warm_n, None);
    let sched = Tracker::new(epoch, m, win);
    let fire = Tracker::new(epoch, m, None);
    let visible = Tracker::new(epoch, m, None);
    let probe = Arc::new(FireProbe {
        warm: Arc::clone(&warm_fire),
        main: Arc::clone(&fire),
    });
    let node = cx
        .tune(Node::builder().bus(config.clone()).data_dir(dir.path()))
        .saga(TimerSaga {
            start: ty(START)?,
            probe,
        })
        .build()?
        .start()
        .await?;
    let store = node
        .store()
        .cloned()
        .ok_or_else(|| BenchError::Options("a saga node has a store".into()))?;
    let bus = Bus::connect(config.clone()).await?;
    let observer = {
        let (ws, s, v) = (
            Arc::clone(&warm_sched),
            Arc::clone(&sched),
            Arc::clone(&visible),
        );
        let subjects = bus.subjects().clone();
        observe(
            bus.jetstream(),
            &config.events_stream(),
            vec![
                bus.subjects().type_filter(&ty(SAGA_STARTED)?),
                bus.subjects().type_filter(&ty(SAGA_COMPLETED)?),
            ],
            move |subject| {
                let Some((_, c, t)) = subjects.parse_event(subject) else {
                    return s.unknown();
                };
                match (seq_of(c, 't'), seq_of(c, 'w'), t == SAGA_STARTED) {
                    (Some(q), _, true) => {
                        s.complete(q);
                    }
                    (Some(q), _, false) => {
                        v.complete(q);
                    }
                    (None, Some(q), true) => {
                        ws.complete(q);
                    }
                    (None, Some(_), false) => {}
                    _ => s.unknown(),
                }
            },
        )
        .await?
    };
    let start_ty = ty(START)?;
    let send = |prefix: char,
                base: u64,
                due: Arc<dyn Fn(u64) -> i64 + Send + Sync>,
                fire: Arc<Tracker>| {
        let (bus, start_ty) = (bus.clone(), start_ty.clone());
        move |seq: u64| {
            let (bus, start_ty) = (bus.clone(), start_ty.clone());
            let due_ms = due(seq);
            fire.sent(seq, to_epoch_ns(due_ms));
            let data = BenchData::new(base + seq, 0, due_ms).encode();
            async move { super::send_root(&bus, &format!("{prefix}{seq}"), &start_ty, data?).await }
        }
    };

    // 1. Warm-up: timers due at once; measures the scheduling rate.
    let now_ms = || i64::try_from(unix_ns() / 1_000_000).unwrap_or(0);
    let warm_due: Arc<dyn Fn(u64) -> i64 + Send + Sync> = Arc::new(move |_| now_ms());
    offer(
        &warm_sched,
        LoadMode::Closed { in_flight: 1024 },
        send('w', WARM_BASE, warm_due, Arc::clone(&warm_fire)),
    )
    .await?;
    wait_complete(
        "timers",
        "warm-up timers scheduled",
        &warm_sched,
        cx.timeout(),
    )
    .await?;
    let warm_rate = warm_n as f64 / warm_sched.span().as_secs_f64().max(1e-3);
    wait_complete("timers", "warm-up timers fired", &warm_fire, cx.timeout()).await?;

    // 2. Schedule M timers due over the window, after a lead.
    let lead = Duration::from_secs_f64((m as f64 / warm_rate) * 1.5 + 1.0);
    let base_ms = now_ms() + i64::try_from(lead.as_millis()).unwrap_or(0);
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(0).max(1);
    let due: Arc<dyn Fn(u64) -> i64 + Send + Sync> = Arc::new(move |seq| {
        base_ms + (i128::from(window_ms) * i128::from(seq) / i128::from(m.max(1))) as i64
    });
    if opts.progress {
        eprintln!(
            "  timers: scheduling {m} timers ({:.0}/s in warm-up), first due in {:.1} s, window {:.1} s",
            warm_rate,
            lead.as_secs_f64(),
            window.as_secs_f64()
        );
    }
    let rss_before = procstat::sample("self").map(|s| s.rss_kib);
    let measure = Measure::start(cx.server);
    let progress = {
        let (s, f) = (Arc::clone(&sched), Arc::clone(&fire));
        Progress::start(
            opts.progress,
            "timers (scheduled+fired)".into(),
            "of 2×M",
            2 * m,
            Arc::new(move || s.completed() + f.completed()),
        )
    };
    offer(
        &sched,
        LoadMode::Closed { in_flight: 1024 },
        send('t', 0, due, Arc::clone(&fire)),
    )
    .await?;
    wait_complete("timers", "timers scheduled", &sched, cx.timeout()).await?;
    let all_scheduled_ms = now_ms();
    let pending = store.timers_len() as u64;
    let rss_pending = procstat::sample("self").map(|s| s.rss_kib);
    let disk = dir_bytes(dir.path());

    // 3. Await every firing, then every completion on the log.
    wait_complete(
        "timers",
        "timers fired",
        &fire,
        cx.timeout() + lead + window,
    )
    .await?;
    wait_complete("timers", "timer sagas completed", &visible, cx.timeout()).await?;
    progress.finish();

    let mut r = WorkloadResult::new("timers", "choreo", "timers");
    measure.finish(&mut r);
    r.items = fire.counts().completed;
    r.duplicates = fire.counts().duplicates + sched.counts().duplicates;
    r.elapsed_s = sched.span().as_secs_f64();
    r.throughput_per_s = m as f64 / r.elapsed_s.max(1e-9);
    r.latency = fire.histogram().percentiles();
    r.latency_of =
        "firing lateness: on_timeout ran − due time (throughput = timers scheduled/s)".into();
    if let Some(p) = visible.histogram().percentiles() {
        r.set("visible_lateness_p50", human_us(p.p50_us));
        r.set("visible_lateness_p99", human_us(p.p99_us));
        r.set("visible_lateness_p999", human_us(p.p999_us));
    }
    r.set("pending_after_scheduling", pending);
    if let (Some(a), Some(b)) = (rss_before, rss_pending) {
        let per = (b.saturating_sub(a) * 1024) as f64 / m as f64;
        r.set("rss_growth_kib", b.saturating_sub(a));
        r.set("memory_per_pending_timer_bytes", per.round());
    }
    r.set(
        "store_on_disk_per_timer_bytes",
        (disk as f64 / (m + warm_n) as f64).round(),
    );
    r.set("window_s", window.as_secs_f64());
    r.set("lead_s", (lead.as_secs_f64() * 10.0).round() / 10.0);
    if all_scheduled_ms > base_ms {
        r.notes.push(format!(
            "scheduling overran the lead by {} ms: the first timers were due before all were pending, and their lateness includes that",
            all_scheduled_ms - base_ms
        ));
    }
    if pending < m {
        r.notes
            .push(format!("only {pending} of {m} timers were pending at once"));
    }
    drop(observer);
    node.shutdown().await?;
    drop(dir);
    Ok(r)
}
