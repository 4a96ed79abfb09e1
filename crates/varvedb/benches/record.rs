//! Micro-benchmarks of the per-event work: encoding a record, its checksum, verifying it, and
//! validating the archive (the full scan is in `core.rs`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use varvedb::__bench;

mod common;

use common::{ArchivedDeposited, event};

fn record(c: &mut Criterion) {
    let e = event(42);
    let rec = __bench::encode(&e, 3).unwrap();
    // Copy into an aligned buffer, as the map would hold it.
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&rec);
    let payload = __bench::verify(&aligned).unwrap();
    let payload_len = payload.len();

    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode (serialize, digest, seal)", |b| {
        b.iter(|| __bench::encode(black_box(&e), 3).unwrap())
    });
    g.bench_function(format!("checksum ({payload_len}-byte payload)"), |b| {
        b.iter(|| __bench::payload_digest(black_box(payload)))
    });
    g.bench_function("verify (header and checksum)", |b| {
        b.iter(|| __bench::verify(black_box(&aligned)).unwrap().len())
    });
    g.bench_function("validate (rkyv bytecheck)", |b| {
        b.iter(|| {
            rkyv::access::<ArchivedDeposited, rkyv::rancor::Error>(black_box(payload))
                .unwrap()
                .amount
                .to_native()
        })
    });
    g.bench_function(
        "verify + validate + one field (a scan's per-event work)",
        |b| {
            b.iter(|| {
                let p = __bench::verify(black_box(&aligned)).unwrap();
                rkyv::access::<ArchivedDeposited, rkyv::rancor::Error>(p)
                    .unwrap()
                    .amount
                    .to_native()
            })
        },
    );
    g.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
