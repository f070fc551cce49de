//! `hop`: a chain of k reactors (default 3). Reactor `i` consumes `bench.hop<i-1>.v1` and emits
//! `bench.hop<i>.v1` with the same data; the harness publishes the roots (`bench.hop0.v1`, one
//! correlation per chain) and watches the log for the last type. Throughput is counted in
//! reactor hops per second (each hop is one consume + one publish + one ack, the unit of
//! `raw`), and chains per second; latency is root publish → last event stored.

use std::sync::Arc;

use choreo::{Bus, Event, EventType, Node, ReactContext, ReactError, Reactor};

use super::{fill_from, send_root, ty, wait_complete, BenchData, Ctx, Measure};
use crate::driver::offer;
use crate::env::fresh_namespace;
use crate::error::BenchError;
use crate::observer::{observe, seq_of};
use crate::options::LoadMode;
use crate::progress::Progress;
use crate::report::WorkloadResult;
use crate::tracker::Tracker;

/// One link of the chain: re-emits its input's data as the next type.
#[derive(Debug)]
pub struct HopReactor {
    name: String,
    consumes: EventType,
    emits: EventType,
}

impl HopReactor {
    /// Link `i` (1-based) of a chain.
    pub fn link(i: usize) -> Result<Self, BenchError> {
        Ok(Self {
            name: format!("hop{i}"),
            consumes: hop_type(i - 1)?,
            emits: hop_type(i)?,
        })
    }
}

/// `bench.hop<i>.v1`
pub fn hop_type(i: usize) -> Result<EventType, BenchError> {
    ty(&format!("bench.hop{i}.v1"))
}

impl Reactor for HopReactor {
    fn name(&self) -> &str {
        &self.name
    }
    fn consumes(&self) -> Vec<EventType> {
        vec![self.consumes.clone()]
    }
    fn emits(&self) -> Vec<EventType> {
        vec![self.emits.clone()]
    }
    async fn react(&self, event: &Event, ctx: &mut ReactContext) -> Result<(), ReactError> {
        ctx.emit_raw(self.emits.clone(), event.data.clone())?;
        Ok(())
    }
}

/// Run `hop`.
pub(crate) async fn run(cx: &Ctx<'_>) -> Result<WorkloadResult, BenchError> {
    let opts = cx.opts;
    let k = opts.sizes.hop_length;
    let ns = fresh_namespace("hop");
    let config = cx.bus_config(&ns)?;
    let mut builder = Node::builder().bus(config.clone());
    for i in 1..=k {
        builder = builder.reactor(HopReactor::link(i)?);
    }
    let node = cx.tune(builder).build()?.start().await?;
    let bus = Bus::connect(config.clone()).await?;

    let epoch = std::time::Instant::now();
    let warm = Tracker::new(epoch, opts.sizes.warmup.max(1), Some(1024));
    let window = match opts.mode {
        LoadMode::Closed { in_flight } => Some(in_flight),
        LoadMode::Open { .. } => None,
    };
    let main = Tracker::new(epoch, opts.sizes.hop_chains, window);
    let last = hop_type(k)?;
    let observer = {
        let (warm, main) = (Arc::clone(&warm), Arc::clone(&main));
        let subjects = bus.subjects().clone();
        observe(
            bus.jetstream(),
            &config.events_stream(),
            vec![bus.subjects().type_filter(&last)],
            move |subject| match subjects.parse_event(subject) {
                Some((_, c, _)) => match (seq_of(c, 'h'), seq_of(c, 'w')) {
                    (Some(s), _) => {
                        main.complete(s);
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

    let root = hop_type(0)?;
    let data = BenchData::new(0, 0, 0).encode()?;
    let send = |prefix: char| {
        let (bus, root, data) = (bus.clone(), root.clone(), data.clone());
        move |seq: u64| {
            let (bus, root, data) = (bus.clone(), root.clone(), data.clone());
            async move { send_root(&bus, &format!("{prefix}{seq}"), &root, data).await }
        }
    };
    offer(&warm, LoadMode::Closed { in_flight: 1024 }, send('w')).await?;
    wait_complete("hop", "warm-up chains", &warm, cx.timeout()).await?;

    let measure = Measure::start(cx.server);
    let progress = {
        let t = Arc::clone(&main);
        Progress::start(
            opts.progress,
            format!("hop (k={k})"),
            "chains",
            main.len(),
            Arc::new(move || t.completed()),
        )
    };
    offer(&main, opts.mode, send('h')).await?;
    wait_complete("hop", "chains", &main, cx.timeout()).await?;
    progress.finish();

    let mut r = WorkloadResult::new("hop", "choreo", "chains");
    measure.finish(&mut r);
    fill_from(&mut r, &main);
    let hops = r.throughput_per_s * k as f64;
    r.events_per_s = Some(hops);
    r.latency_of = format!("root publish → hop{k} event stored (k = {k} reactors)");
    r.set("reactors", k);
    r.set("reactor_hops_per_s", hops.round());
    // The last hop's output is on the log before its reactor acks and counts the input: read
    // the counters after the graceful stop, which waits for every lane to finish.
    let metrics = node.metrics().clone();
    drop(observer);
    node.shutdown().await?;
    let m = metrics.all();
    let handled: u64 = m.values().map(|a| a.handled).sum();
    r.set("reactor_inputs_handled", handled);
    if let Some(a) = m.get("hop1") {
        if let Some(p50) = a.latency_quantile_us(0.5) {
            r.set("hop1_handler_p50_us_bucket", p50);
        }
    }
    r.notes.push(format!(
        "vs raw compares reactor hops/s ({k} per chain) to raw msgs/s: each is one consume + one publish + one ack"
    ));
    Ok(r)
}
