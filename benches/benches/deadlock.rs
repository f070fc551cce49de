//! Micro benches of the deadlock detector's pure check, `choreo::find_deadlocks(views, topo,
//! in_flight)`, which a partition owner runs after each commit for every correlation the commit
//! touched that has a waiting instance (the "no instance waits" fast path is a map lookup in
//! the processor and not part of it):
//!
//! - `acyclic_chain`: 4 saga instances in a chain (instance i awaits the reply of reactor i to
//!   the command instance i-1 sent), no deadlock: with the first command in flight, with its
//!   sender active, and with nothing live (every instance stuck, the wait-for graph built and
//!   found acyclic: what the owner's first call, with nothing in flight, does);
//! - `cycle4`: 4 instances in a ring through reactors, nothing in flight: the deadlock found;
//! - `partition`: N waiting instances over N correlations indexed like the processor does
//!   (instance → view, correlation → instances); one check = the views of one correlation
//!   cloned out of the index, then the check with nothing in flight and, since a saga awaiting
//!   its own command's reply is a cycle until the command is seen in flight, the check again
//!   with it in flight (the owner's NATS scan in between is not measured). N = 1, 1000, 10 000:
//!   the cost does not depend on the other correlations.
//!
//! `cargo bench -p choreo-benches --bench deadlock`.

use std::collections::{BTreeSet, HashMap};

use choreo::{
    find_deadlocks, ActorDecl, ActorKind, InstanceView, NodeId, NodeTopology, SagaStatus, Topology,
    Wait, LIFECYCLE_TYPES,
};
use divan::{black_box, Bencher};

fn main() {
    divan::main();
}

type Types = BTreeSet<String>;

fn set<S: AsRef<str>>(ts: &[S]) -> Types {
    ts.iter().map(|s| s.as_ref().to_owned()).collect()
}

/// A saga as a node declares it: its emits plus the lifecycle events.
fn saga(name: &str, starts: &[&str], consumes: &[String], emits: &[String]) -> ActorDecl {
    let mut emits = set(emits);
    emits.extend(LIFECYCLE_TYPES.iter().map(|t| (*t).to_owned()));
    let mut consumes = set(consumes);
    consumes.extend(starts.iter().map(|s| (*s).to_owned()));
    ActorDecl {
        name: name.to_owned(),
        kind: ActorKind::Saga,
        consumes,
        starts: set(starts),
        emits,
    }
}

fn reactor(name: &str, consumes: &str, emits: &[&str]) -> ActorDecl {
    ActorDecl {
        name: name.to_owned(),
        kind: ActorKind::Reactor,
        consumes: set(&[consumes]),
        starts: BTreeSet::new(),
        emits: set(emits),
    }
}

fn topology(actors: Vec<ActorDecl>) -> Topology {
    let node = NodeTopology::new(
        NodeId::new("bench-node").unwrap_or_else(|e| unreachable!("node id: {e}")),
        actors,
        BTreeSet::new(),
    );
    Topology::from_nodes([&node])
}

fn wait(ty: &str, since_seq: u64) -> Wait {
    Wait {
        types: vec![ty.to_owned()],
        since_seq,
        since_ms: 1_700_000_000_000,
        deadline_ms: None,
        stalled: None,
    }
}

fn view(saga: &str, instance: &str, waits: Vec<Wait>) -> InstanceView {
    InstanceView {
        saga: saga.to_owned(),
        instance: instance.to_owned(),
        status: SagaStatus::Running,
        waits,
        timers: false,
        watermark: 100,
    }
}

/// Saga `s<i>` awaits `c<i>.reply` (from reactor `r<i>`, which answers `c<i>.cmd`) and sends
/// `c<i+1>.cmd`; `s0`'s command comes from saga `p`.
fn chain() -> (Topology, Vec<InstanceView>) {
    let cmd = |i: usize| format!("bench.chain.c{i}.cmd.v1");
    let reply = |i: usize| format!("bench.chain.c{i}.reply.v1");
    let mut actors = vec![saga("p", &["bench.chain.start.v1"], &[], &[cmd(0)])];
    let mut views = Vec::new();
    for i in 0..4 {
        actors.push(saga(
            &format!("s{i}"),
            &["bench.chain.start.v1"],
            &[reply(i)],
            &[cmd(i + 1)],
        ));
        actors.push(reactor(&format!("r{i}"), &cmd(i), &[&reply(i)]));
        views.push(view(
            &format!("s{i}"),
            "corr-1",
            vec![wait(&reply(i), 10 + i as u64)],
        ));
    }
    (topology(actors), views)
}

mod acyclic_chain {
    use super::*;

    /// `s0`'s command is in flight: everything is live, nothing is stuck.
    #[divan::bench]
    fn command_in_flight(b: Bencher<'_, '_>) {
        let (topo, views) = chain();
        let in_flight = set(&["bench.chain.c0.cmd.v1"]);
        assert!(find_deadlocks(&views, &topo, &in_flight).is_empty());
        b.bench(|| find_deadlocks(black_box(&views), &topo, black_box(&in_flight)));
    }

    /// The sender of `s0`'s command (`p`) is active (running, no wait).
    #[divan::bench]
    fn producer_active(b: Bencher<'_, '_>) {
        let (topo, mut views) = chain();
        views.push(view("p", "corr-1", Vec::new()));
        let none = BTreeSet::new();
        assert!(find_deadlocks(&views, &topo, &none).is_empty());
        b.bench(|| find_deadlocks(black_box(&views), &topo, black_box(&none)));
    }

    /// Nothing live: the four are stuck, their wait-for graph is a path, no cycle.
    #[divan::bench]
    fn all_stuck_no_cycle(b: Bencher<'_, '_>) {
        let (topo, mut views) = chain();
        let mut p = view("p", "corr-1", Vec::new());
        p.status = SagaStatus::Completed;
        views.push(p);
        let none = BTreeSet::new();
        assert!(find_deadlocks(&views, &topo, &none).is_empty());
        b.bench(|| find_deadlocks(black_box(&views), &topo, black_box(&none)));
    }
}

/// Saga `s<i>` awaits `x<i>`, which reactor `r<i>` makes of `c<i>`, which `s<i+1 mod 4>` sends:
/// a ring of four, nothing in flight.
#[divan::bench]
fn cycle4(b: Bencher<'_, '_>) {
    let c = |i: usize| format!("bench.ring.c{i}.v1");
    let x = |i: usize| format!("bench.ring.x{i}.v1");
    let mut actors = Vec::new();
    let mut views = Vec::new();
    for i in 0..4 {
        actors.push(saga(
            &format!("s{i}"),
            &["bench.ring.start.v1"],
            &[x(i)],
            &[c((i + 3) % 4)],
        ));
        actors.push(reactor(&format!("r{i}"), &c(i), &[&x(i)]));
        views.push(view(
            &format!("s{i}"),
            "corr-1",
            vec![wait(&x(i), 10 + i as u64)],
        ));
    }
    let topo = topology(actors);
    let none = BTreeSet::new();
    let found = find_deadlocks(&views, &topo, &none);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].members.len(), 4, "{found:?}");
    b.bench(|| find_deadlocks(black_box(&views), &topo, black_box(&none)));
}

type Key = (String, String);

/// The processor's index of its unended instances.
struct Index {
    views: HashMap<Key, (String, InstanceView)>,
    by_corr: HashMap<String, BTreeSet<Key>>,
}

impl Index {
    fn views_of(&self, corr: &str) -> Vec<InstanceView> {
        self.by_corr
            .get(corr)
            .into_iter()
            .flatten()
            .filter_map(|k| self.views.get(k).map(|(_, v)| v.clone()))
            .collect()
    }
}

/// A partition of `n` correlations, each with one `job` instance awaiting `work.done` or
/// `work.failed`, the answers of reactor `worker` to the `work` it sent; a few more actors in
/// the topology.
fn partition(n: usize) -> (Topology, Index) {
    let mut actors = vec![
        saga(
            "job",
            &["bench.job.start.v1"],
            &["bench.work.done.v1".into(), "bench.work.failed.v1".into()],
            &["bench.work.v1".into(), "bench.work.undo.v1".into()],
        ),
        reactor(
            "worker",
            "bench.work.v1",
            &["bench.work.done.v1", "bench.work.failed.v1"],
        ),
        reactor("undoer", "bench.work.undo.v1", &["bench.work.undone.v1"]),
    ];
    for i in 0..4 {
        actors.push(saga(
            &format!("other{i}"),
            &["bench.other.start.v1"],
            &[format!("bench.other{i}.reply.v1")],
            &[format!("bench.other{i}.cmd.v1")],
        ));
    }
    let topo = topology(actors);
    let mut index = Index {
        views: HashMap::with_capacity(n),
        by_corr: HashMap::with_capacity(n),
    };
    for k in 0..n {
        let corr = format!("order-{k:06}");
        let key = ("job".to_owned(), corr.clone());
        let mut v = view("job", &corr, Vec::new());
        v.waits = vec![Wait {
            types: vec!["bench.work.done.v1".into(), "bench.work.failed.v1".into()],
            ..wait("", 1_000 + k as u64)
        }];
        index
            .by_corr
            .entry(corr.clone())
            .or_default()
            .insert(key.clone());
        index.views.insert(key, (corr, v));
    }
    (topo, index)
}

/// One check of one correlation's views, among `n` waiting correlations of the partition.
#[divan::bench(args = [1, 1_000, 10_000])]
fn partition_check(b: Bencher<'_, '_>, n: usize) {
    let (topo, index) = partition(n);
    let corr = format!("order-{:06}", n / 2);
    let none = BTreeSet::new();
    let in_flight = set(&["bench.work.v1"]);
    // With nothing in flight a saga awaiting its own command's answer reads as a cycle (the
    // owner then scans NATS for what is in flight); with the command in flight it is none.
    assert_eq!(
        find_deadlocks(&index.views_of(&corr), &topo, &none).len(),
        1
    );
    assert!(find_deadlocks(&index.views_of(&corr), &topo, &in_flight).is_empty());
    b.bench(|| {
        let views = index.views_of(black_box(&corr));
        let first = find_deadlocks(&views, &topo, &none);
        if first.is_empty() {
            first
        } else {
            find_deadlocks(&views, &topo, black_box(&in_flight))
        }
    });
}

/// The same correlation's views, only the first check (nothing in flight).
#[divan::bench(args = [1, 1_000, 10_000])]
fn partition_first_check(b: Bencher<'_, '_>, n: usize) {
    let (topo, index) = partition(n);
    let corr = format!("order-{:06}", n / 2);
    let none = BTreeSet::new();
    b.bench(|| find_deadlocks(&index.views_of(black_box(&corr)), &topo, &none));
}
