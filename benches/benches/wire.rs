//! Micro benches of the wire contract: payload encode/decode (msgpack, 256 B), the envelope's
//! header mapping (`choreo::schemas::headers`, `choreo::wire`), derived ids, partitioning and
//! subjects. `cargo bench -p choreo-benches --bench wire`.

use choreo::schemas::{decode_data, encode_data, headers, partition_of};
use choreo::{ActorName, CorrelationId, Event, EventId, Payload, Subjects};
use choreo_benches::workloads::BenchData;
use divan::{black_box, Bencher};

fn main() {
    divan::main();
}

fn event() -> Event {
    let corr = CorrelationId::new("order-123456").unwrap_or_else(|_| unreachable!());
    Event::root("/bench/harness", corr, &BenchData::new(42, 0, 0))
        .unwrap_or_else(|_| unreachable!("a valid payload"))
}

#[divan::bench]
fn payload_encode(b: Bencher<'_, '_>) {
    let d = BenchData::new(42, 0, 0);
    b.bench(|| encode_data(black_box(&d)));
}

#[divan::bench]
fn payload_decode(b: Bencher<'_, '_>) {
    let bytes = BenchData::new(42, 0, 0).encode().unwrap_or_default();
    let ty = BenchData::event_type();
    b.bench(|| decode_data::<BenchData>(black_box(&ty), black_box(&bytes)));
}

#[divan::bench]
fn envelope_root(b: Bencher<'_, '_>) {
    let corr = CorrelationId::new("order-123456").unwrap_or_else(|_| unreachable!());
    let d = BenchData::new(42, 0, 0);
    b.bench(|| Event::root("/bench/harness", black_box(corr.clone()), black_box(&d)));
}

#[divan::bench]
fn headers_to_pairs(b: Bencher<'_, '_>) {
    let e = event();
    b.bench(|| headers::to_headers(black_box(&e)));
}

#[divan::bench]
fn headers_from_pairs(b: Bencher<'_, '_>) {
    let e = event();
    let pairs = headers::to_headers(&e);
    b.bench(|| {
        headers::from_headers(
            black_box(&pairs).iter().map(|(k, v)| (*k, v.as_str())),
            black_box(&e.data),
        )
    });
}

#[divan::bench]
fn nats_header_map_encode(b: Bencher<'_, '_>) {
    let e = event();
    b.bench(|| choreo::wire::event_headers(black_box(&e)));
}

#[divan::bench]
fn nats_header_map_decode(b: Bencher<'_, '_>) {
    let e = event();
    let map = choreo::wire::event_headers(&e);
    b.bench(|| choreo::wire::decode_event(Some(black_box(&map)), black_box(&e.data)));
}

#[divan::bench]
fn derived_output_id(b: Bencher<'_, '_>) {
    let actor = ActorName::new("billing").unwrap_or_else(|_| unreachable!());
    let input = EventId::new_root();
    b.bench(|| EventId::derived(black_box(&actor), black_box(&input), black_box(3)));
}

#[divan::bench]
fn subject_of_event(b: Bencher<'_, '_>) {
    let e = event();
    let s = Subjects::default();
    b.bench(|| {
        s.event(
            partition_of(black_box(&e.correlation), 16),
            &e.correlation,
            &e.ty,
        )
    });
}

#[divan::bench]
fn subject_parse(b: Bencher<'_, '_>) {
    let s = Subjects::default();
    let subject = "choreo.evt.7.order-123456.bench.data.v1";
    b.bench(|| s.parse_event(black_box(subject)).map(|(p, _, _)| p));
}
