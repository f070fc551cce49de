//! Tests of the deadlock detector (`find_deadlocks`, `Cycle::victim`): examples, then
//! properties over random topologies.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::cluster::NodeId;
use crate::coordination::{ActorDecl, ActorKind, NodeTopology};

type Types = BTreeSet<String>;

fn strs<S: AsRef<str>>(ts: &[S]) -> Types {
    ts.iter().map(|s| s.as_ref().to_owned()).collect()
}

fn none() -> Types {
    BTreeSet::new()
}

/// The types `{prefix}{b}` for the bits `b < 6` of `mask`.
fn bits(mask: u8, prefix: &str) -> Types {
    let mask = mask & 63;
    (0..6)
        .filter(|&b| mask & (1 << b) != 0)
        .map(|b| format!("{prefix}{b}"))
        .collect()
}

/// The bits of `mask` above `rank`.
fn above(mask: u8, rank: usize) -> u8 {
    mask & (u8::MAX << (rank + 1))
}

/// The member sagas of each deadlock found.
fn found(views: &[InstanceView], t: &Topology, in_flight: &[&str]) -> Vec<Vec<String>> {
    let cycles = find_deadlocks(views, t, &strs(in_flight));
    cycles
        .iter()
        .map(|c| c.members.iter().map(|m| m.saga.clone()).collect())
        .collect()
}

fn decl(name: &str, kind: ActorKind, consumes: Types, emits: Types) -> ActorDecl {
    ActorDecl {
        name: name.to_owned(),
        kind,
        consumes,
        starts: BTreeSet::new(),
        emits,
    }
}

fn saga<S: AsRef<str>>(name: &str, consumes: &[S], emits: &[S]) -> ActorDecl {
    decl(name, ActorKind::Saga, strs(consumes), strs(emits))
}

fn reactor<S: AsRef<str>>(name: &str, consumes: &[S], emits: &[S]) -> ActorDecl {
    decl(name, ActorKind::Reactor, strs(consumes), strs(emits))
}

fn topo(actors: Vec<ActorDecl>, external: Types) -> Topology {
    let node = NodeTopology::new(NodeId::new("n1").expect("node id"), actors, external);
    Topology::from_nodes([&node])
}

fn wait<S: AsRef<str>>(types: &[S], since_seq: u64) -> Wait {
    let types = types.iter().map(|t| t.as_ref().to_owned()).collect();
    Wait {
        types,
        since_seq,
        since_ms: 0,
        deadline_ms: None,
        stalled: None,
    }
}

/// A running instance `{saga}-1` with no timer.
fn view(saga: &str, waits: Vec<Wait>) -> InstanceView {
    let watermark = 100 + waits.iter().map(|w| w.since_seq).max().unwrap_or(0);
    let (saga, instance) = (saga.to_owned(), format!("{saga}-1"));
    InstanceView {
        saga,
        instance,
        status: SagaStatus::Running,
        waits,
        timers: false,
        watermark,
    }
}

/// The seed-002 swarm: the planner waits for code; coder, tester and docs wait for each other.
fn swarm(planner_awaits: &str) -> (Vec<InstanceView>, Vec<ActorDecl>) {
    let actors = vec![
        saga("planner", &[planner_awaits], &["plan"]),
        saga("coder", &["tests"], &["code"]),
        saga("tester", &["docs"], &["tests"]),
        saga("docs", &["code"], &["docs"]),
    ];
    let views = vec![
        view("planner", vec![wait(&[planner_awaits], 9)]),
        view("coder", vec![wait(&["tests"], 3)]),
        view("tester", vec![wait(&["docs"], 7)]),
        view("docs", vec![wait(&["code"], 5)]),
    ];
    (views, actors)
}

const SWARM: [&str; 3] = ["coder", "docs", "tester"];

#[test]
fn the_swarm_deadlocks_without_the_planner() {
    let (views, actors) = swarm("code");
    let t = topo(actors, none());
    let cycles = find_deadlocks(&views, &t, &none());
    assert_eq!(found(&views, &t, &[]), [SWARM]);
    let coder = &cycles[0].members[0];
    assert_eq!(
        (coder.instance.as_str(), coder.since_seq, coder.watermark),
        ("coder-1", 3, 103)
    );
    assert_eq!(
        (&coder.awaits, &coder.producers),
        (&vec!["tests".into()], &vec!["tester".into()])
    );
    // The youngest wait among the members: the planner's (9) is younger but it is no member.
    let victim = cycles[0].victim().expect("a victim");
    assert_eq!((victim.saga.as_str(), victim.since_seq), ("tester", 7));
    assert_eq!(find_deadlocks(&views, &t, &none()), cycles);
}

#[test]
fn the_swarm_deadlocks_with_an_external_planner_until_tests_are_in_flight() {
    let (views, actors) = swarm("ticket");
    let t = topo(actors, strs(&["ticket"]));
    assert_eq!(found(&views, &t, &[]), [SWARM]);
    assert_eq!(found(&views, &t, &["ticket"]), [SWARM]);
    assert!(found(&views, &t, &["tests"]).is_empty());
}

#[test]
fn a_cycle_through_a_reactor_is_found_and_broken_by_its_input_in_flight() {
    let actors = vec![
        saga("a", &["t1"], &["t2"]),
        reactor("r", &["t3"], &["t1"]),
        saga("b", &["t2"], &["t3"]),
    ];
    let t = topo(actors, none());
    let views = vec![
        view("a", vec![wait(&["t1"], 1)]),
        view("b", vec![wait(&["t2"], 2)]),
    ];
    assert_eq!(found(&views, &t, &[]), [["a", "b"]]);
    let cycles = find_deadlocks(&views, &t, &none());
    assert_eq!(cycles[0].members[0].producers, ["r"]);
    assert_eq!(cycles[0].victim().map(|m| m.saga.as_str()), Some("b"));
    for ty in ["t1", "t2", "t3"] {
        assert!(found(&views, &t, &[ty]).is_empty(), "{ty} in flight");
    }
}

/// A member with a pending timer or compensating is active (it wakes the others); one that
/// ended produces nothing, so the others are stalled, not deadlocked.
#[test]
fn a_member_active_or_ended_means_no_deadlock() {
    let (views, actors) = swarm("code");
    let t = topo(actors, none());
    let changes: [fn(&mut InstanceView); 3] = [
        |v| v.timers = true,
        |v| v.status = SagaStatus::Compensating,
        |v| v.status = SagaStatus::Completed,
    ];
    for (c, change) in changes.iter().enumerate() {
        for member in 1..views.len() {
            let mut changed = views.clone();
            change(&mut changed[member]);
            assert!(
                found(&changed, &t, &[]).is_empty(),
                "change {c} of {member}"
            );
        }
    }
}

#[test]
fn a_dormant_saga_that_emits_an_awaited_type_prevents_the_deadlock() {
    let (mut views, mut actors) = swarm("code");
    actors.push(saga("helper", &["never"], &["docs"]));
    let t = topo(actors, none());
    assert!(found(&views, &t, &[]).is_empty());
    // Once the helper has an instance here and it ended, it produces nothing any more.
    let mut helper = view("helper", vec![]);
    helper.status = SagaStatus::Completed;
    views.push(helper);
    assert_eq!(found(&views, &t, &[]), [SWARM]);
}

#[test]
fn an_awaited_type_with_no_producer_is_a_stall_not_a_deadlock() {
    let (mut views, actors) = swarm("code");
    views[2].waits.push(wait(&["review"], 8));
    assert!(found(&views, &topo(actors, none()), &[]).is_empty());
}

#[test]
fn a_saga_awaiting_only_what_it_emits_is_a_cycle_of_one() {
    let views = vec![view("a", vec![wait(&["t1"], 4)])];
    let t = topo(vec![saga("a", &["t1"], &["t1"])], none());
    assert_eq!(found(&views, &t, &[]), [["a"]]);
    let cycles = find_deadlocks(&views, &t, &none());
    assert_eq!(cycles[0].victim().map(|m| m.since_seq), Some(4));
    // Awaiting what nobody emits is no cycle at all.
    let t = topo(vec![saga("a", &["t1"], &["t2"])], none());
    assert!(found(&views, &t, &[]).is_empty());
}

#[test]
fn the_victim_is_the_youngest_wait_then_the_greatest_saga_and_instance() {
    let member = |saga: &str, instance: &str, since_seq: u64| CycleMember {
        saga: saga.into(),
        instance: instance.into(),
        awaits: vec![],
        producers: vec![],
        since_seq,
        watermark: 0,
    };
    let members = vec![
        member("a", "9", 3),
        member("b", "1", 5),
        member("a", "2", 5),
    ];
    let c = Cycle { members };
    assert_eq!(c.victim(), Some(&c.members[1]));
    let members = vec![member("b", "1", 5), member("b", "2", 5)];
    let c = Cycle { members };
    assert_eq!(c.victim(), Some(&c.members[1]));
    assert_eq!(Cycle { members: vec![] }.victim(), None);
}

/// An external type nobody awaits directly, that a reactor turns into an awaited type, can still
/// break the cycle: no deadlock (a bug the property tests found: only awaited external types
/// were seeded as live).
#[test]
fn an_external_type_feeding_a_reactor_keeps_the_cycle_live() {
    let (coder, tester) = (
        saga("coder", &["tests"], &["code"]),
        saga("tester", &["code"], &["tests"]),
    );
    let t = topo(
        vec![coder, tester, reactor("gate", &["approved"], &["tests"])],
        strs(&["approved"]),
    );
    let views = vec![
        view("coder", vec![wait(&["tests"], 1)]),
        view("tester", vec![wait(&["code"], 2)]),
    ];
    // In flight, the same type is handled: nothing is stuck.
    assert!(found(&views, &t, &["approved"]).is_empty());
    // External, it may arrive any time: "approved" is live, so "tests" is, so is "code".
    assert_eq!(found(&views, &t, &[]), Vec::<Vec<String>>::new());
}

/// A ring of `k` sagas, with whether each emits through a reactor and each one's wait sequence.
type Ring = (Vec<InstanceView>, Topology, Vec<bool>, Vec<u64>);

/// A ring of 1 to 5 sagas (`ring{i}` awaits `t{i+1 mod k}` and emits `t{i}`, or `u{i}` that
/// reactor `via{i}` turns into `t{i}`), plus unrelated ranked actors on the types `x*` (each
/// emits only types of a higher rank than what it consumes or awaits: they form no cycle).
fn ring() -> impl Strategy<Value = Ring> {
    let extras = prop::collection::vec((0usize..6, any::<u8>(), any::<bool>()), 0..=3);
    let extra_reactors = prop::collection::vec((0usize..6, any::<u8>()), 0..=2);
    let seqs = Just((1..=5u64).collect::<Vec<_>>()).prop_shuffle();
    let via = prop::collection::vec(any::<bool>(), 5);
    (1usize..=5, via, seqs, extras, extra_reactors, any::<u8>()).prop_map(
        |(k, mut via, mut seqs, extras, extra_reactors, external)| {
            via.truncate(k);
            seqs.truncate(k);
            let (mut actors, mut views) = (Vec::new(), Vec::new());
            for i in 0..k {
                let (name, awaits) = (format!("ring{i}"), format!("t{}", (i + 1) % k));
                let (t, u) = (format!("t{i}"), format!("u{i}"));
                if via[i] {
                    actors.push(reactor(&format!("via{i}"), &[&u], &[&t]));
                }
                actors.push(saga(&name, &[&awaits], &[if via[i] { &u } else { &t }]));
                views.push(view(&name, vec![wait(&[awaits], seqs[i])]));
            }
            for (i, &(w, emits, active)) in extras.iter().enumerate() {
                let name = format!("extra{i}");
                let (awaits, emits) = (bits(1 << w, "x"), bits(above(emits, w), "x"));
                actors.push(decl(&name, ActorKind::Saga, awaits, emits));
                let waits = [wait(&[format!("x{w}")], 10 + i as u64)];
                views.push(view(&name, if active { vec![] } else { waits.to_vec() }));
            }
            for (i, &(c, emits)) in extra_reactors.iter().enumerate() {
                let (consumes, emits) = (bits(1 << c, "x"), bits(above(emits, c), "x"));
                actors.push(decl(&format!("xr{i}"), ActorKind::Reactor, consumes, emits));
            }
            (views, topo(actors, bits(external, "x")), via, seqs)
        },
    )
}

/// A set of the types `t0`..`t3`, often of one only: small enough for cycles to appear.
fn sparse() -> impl Strategy<Value = u8> {
    prop_oneof![2 => (0..4).prop_map(|b| 1u8 << b), 1 => any::<u8>().prop_map(|m| m & 15)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn ranked_topologies_never_deadlock(
        sagas in prop::collection::vec((0usize..6, any::<u8>()), 1..=6),
        reactors in prop::collection::vec((1u8..64, any::<u8>()), 0..=4),
        external in prop_oneof![Just(0u8), any::<u8>()],
    ) {
        let (mut actors, mut views) = (Vec::new(), Vec::new());
        for (i, &(w, emits)) in sagas.iter().enumerate() {
            let name = format!("s{i}");
            actors.push(decl(&name, ActorKind::Saga, bits(1 << w, "t"), bits(above(emits, w), "t")));
            views.push(view(&name, vec![wait(&[format!("t{w}")], 1 + i as u64)]));
        }
        for (i, &(consumes, emits)) in reactors.iter().enumerate() {
            let top = (0..6).filter(|b| consumes & (1 << b) != 0).max().unwrap_or(0);
            let (consumes, emits) = (bits(consumes, "t"), bits(above(emits, top), "t"));
            actors.push(decl(&format!("r{i}"), ActorKind::Reactor, consumes, emits));
        }
        let t = topo(actors, bits(external, "t"));
        for in_flight in 0..64u8 {
            let found = find_deadlocks(&views, &t, &bits(in_flight, "t"));
            prop_assert!(found.is_empty(), "in flight {:?}: {:?}", bits(in_flight, "t"), found);
        }
    }

    #[test]
    fn a_ring_with_nothing_in_flight_deadlocks_once(
        (views, t, _, seqs) in ring(),
        unrelated in any::<u8>(),
    ) {
        let k = seqs.len();
        let found = find_deadlocks(&views, &t, &none());
        prop_assert_eq!(found.len(), 1, "{:?}", found);
        let members: Vec<(String, String)> =
            found[0].members.iter().map(|m| (m.saga.clone(), m.instance.clone())).collect();
        let ring: Vec<(String, String)> = (0..k).map(|i| (format!("ring{i}"), format!("ring{i}-1"))).collect();
        prop_assert_eq!(members, ring);
        prop_assert_eq!(&find_deadlocks(&views, &t, &none()), &found);
        let youngest = (0..k).max_by_key(|&i| seqs[i]).expect("k >= 1");
        let victim = found[0].victim().map(|m| m.saga.clone());
        prop_assert_eq!(victim.clone(), Some(format!("ring{youngest}")));
        prop_assert_eq!(find_deadlocks(&views, &t, &none())[0].victim().map(|m| m.saga.clone()), victim);
        // Unrelated inputs in flight change nothing.
        prop_assert_eq!(find_deadlocks(&views, &t, &bits(unrelated, "x")), found);
    }

    #[test]
    fn an_input_of_the_ring_in_flight_breaks_it_until_consumed(
        (views, t, via, _) in ring(),
        at in 0usize..5,
        reactor_input in any::<bool>(),
    ) {
        let (k, j) = (via.len(), at % via.len());
        let ty = if via[j] && reactor_input { format!("u{j}") } else { format!("t{j}") };
        let found = find_deadlocks(&views, &t, &strs(&[&ty]));
        prop_assert!(found.is_empty(), "{} in flight: {:?}", ty, found);
        // Consumed without moving any instance (no new wait): the ring holds again.
        let again = find_deadlocks(&views, &t, &none());
        prop_assert_eq!(again.len(), 1, "{:?}", again);
        prop_assert_eq!(again[0].members.len(), k);
    }

    #[test]
    fn every_reported_cycle_is_sound(
        // Per saga: emits, starts, status, waits, timers, whether it has an instance here.
        sagas in prop::collection::vec((
            sparse(), prop_oneof![Just(0u8), sparse()], 0usize..7,
            prop::collection::vec(sparse().prop_filter("a wait awaits something", |w| *w != 0), 0..=3),
            prop::bool::weighted(0.05), prop::bool::weighted(0.9),
        ), 1..=6),
        reactors in prop::collection::vec((sparse(), sparse()), 0..=4),
        external in prop_oneof![3 => Just(0u8), 1 => sparse()],
        in_flight in prop_oneof![3 => Just(0u8), 1 => sparse()],
    ) {
        use SagaStatus::{Compensating, Completed, Faulted, Running};
        let statuses = [Running, Running, Running, Running, Compensating, Completed, Faulted];
        let (mut actors, mut views) = (Vec::new(), Vec::new());
        for (i, (emits, starts, status, waits, timers, present)) in sagas.iter().enumerate() {
            let name = format!("s{i}");
            let mut a = decl(&name, ActorKind::Saga, bits(*starts, "t"), bits(*emits, "t"));
            a.starts = a.consumes.clone();
            actors.push(a);
            if *present {
                let waits = waits.iter().map(|w| wait(&Vec::from_iter(bits(*w, "t")), i as u64)).collect();
                let mut v = view(&name, waits);
                (v.status, v.timers) = (statuses[*status], *timers);
                views.push(v);
            }
        }
        for (i, &(consumes, emits)) in reactors.iter().enumerate() {
            let (consumes, emits) = (bits(consumes, "t"), bits(emits, "t"));
            actors.push(decl(&format!("r{i}"), ActorKind::Reactor, consumes, emits));
        }
        let t = topo(actors, bits(external, "t"));
        let in_flight = bits(in_flight, "t");
        let found = find_deadlocks(&views, &t, &in_flight);
        prop_assert_eq!(&find_deadlocks(&views, &t, &in_flight), &found);
        for c in &found {
            let sagas: BTreeSet<&str> = c.members.iter().map(|m| m.saga.as_str()).collect();
            let mut sorted = c.members.clone();
            sorted.sort_by(|a, b| (&a.saga, &a.instance).cmp(&(&b.saga, &b.instance)));
            prop_assert_eq!(&sorted, &c.members);
            prop_assert!(c.victim().is_some_and(|v| c.members.contains(v)));
            for m in &c.members {
                let v = views.iter().find(|v| v.saga == m.saga && v.instance == m.instance);
                let v = v.expect("a member is an instance of the views");
                prop_assert!(v.status == Running && !v.timers && !v.waits.is_empty(), "{:?}", v);
                for ty in v.waits.iter().flat_map(|w| &w.types) {
                    prop_assert!(m.awaits.contains(ty));
                    prop_assert!(!t.is_external(ty) && !in_flight.contains(ty), "{} in {:?}", ty, c);
                    for p in t.producers(ty) {
                        // A saga that is no member has an instance here, and it ended.
                        let name = p.decl.name.as_str();
                        let mut instances = views.iter().filter(|o| o.saga == name).peekable();
                        let ended = instances.peek().is_some() && instances.all(|o| o.status.is_terminal());
                        prop_assert!(
                            p.decl.kind == ActorKind::Reactor || sagas.contains(name) || ended,
                            "{} emits {} and is no member of {:?}", name, ty, c
                        );
                    }
                }
            }
        }
    }
}
