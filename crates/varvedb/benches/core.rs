//! Criterion benchmarks of the core: durable append, `get`, a full `read_all` scan, stream
//! reads, and the same reads over a log of single appends (packs of one record).
//!
//! Run with `cargo bench -p varvedb --bench core`. The store lives under `target/` (a real disk,
//! never tmpfs) so that durable appends pay a real flush. Set `VARVEDB_BENCH_EVENTS` to change
//! the size of the read store (default 1,000,000).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use varvedb::{Durability, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

mod common;

use common::{Deposited, event};

fn bench_dir(name: &str) -> tempfile::TempDir {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-stores");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .unwrap()
}

fn events_total() -> u64 {
    std::env::var("VARVEDB_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn append(c: &mut Criterion) {
    let dir = bench_dir("append");
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Deposited>::new(storage);
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function("durable_single", |b| {
        b.iter(|| {
            i += 1;
            writer
                .append(
                    (i % 1000) as u128,
                    ExpectedVersion::Auto,
                    black_box(&event(i)),
                )
                .unwrap()
        })
    });
    let batch: Vec<_> = (0..1000).map(event).collect();
    group.throughput(Throughput::Elements(1000));
    group.bench_function("durable_batch_1000", |b| {
        b.iter(|| {
            i += 1;
            writer
                .append_batch((i % 1000) as u128, ExpectedVersion::Auto, black_box(&batch))
                .unwrap()
        })
    });
    group.finish();
}

fn filled_store(total: u64) -> (tempfile::TempDir, Storage) {
    let dir = bench_dir("read");
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    let mut i = 0;
    while i < total {
        let n = 1000.min(total - i);
        let batch: Vec<_> = (i..i + n).map(event).collect();
        writer
            .append_batch((i / 1000 % 1000) as u128, ExpectedVersion::Auto, &batch)
            .unwrap();
        i += n;
    }
    (dir, storage)
}

fn reads(c: &mut Criterion) {
    let total = events_total();
    let (_dir, storage) = filled_store(total);
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();

    let mut group = c.benchmark_group("get");
    group.throughput(Throughput::Elements(1));
    let mut seq = 0u64;
    group.bench_function("in_order", |b| {
        b.iter(|| {
            seq = seq % total + 1;
            black_box(reader.get(&txn, seq).unwrap().unwrap().amount)
        })
    });
    // A multiplicative walk over every sequence: random order, no RNG cost in the loop.
    let mut x = 1u64;
    group.bench_function("random", |b| {
        b.iter_batched(
            || {
                x = (x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407))
                    >> 1;
                x % total + 1
            },
            |seq| black_box(reader.get(&txn, seq).unwrap().unwrap().amount),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("scan");
    group.sample_size(10);
    group.throughput(Throughput::Elements(total));
    group.bench_function("read_all_validated_one_field", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for e in reader.read_all(&txn, 1) {
                sum = sum.wrapping_add(e.unwrap().amount.to_native());
            }
            black_box(sum)
        })
    });
    group.finish();

    // A stream of the filled store: its events are runs of 1,000 neighbours in the log (one
    // batch each), so the walk over `prev` links steps a cursor (`chain::BackWalk`).
    let stream_events = reader.read_stream(&txn, 1, 1).count() as u64;
    let mut group = c.benchmark_group("stream");
    group.sample_size(20);
    group.throughput(Throughput::Elements(stream_events.max(1)));
    group.bench_function("read_stream_forward", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for e in reader.read_stream(&txn, 1, 1) {
                sum = sum.wrapping_add(e.unwrap().amount.to_native());
            }
            black_box(sum)
        })
    });
    group.bench_function("read_stream_backwards", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for e in reader.read_stream_backwards(&txn, 1, u32::MAX) {
                sum = sum.wrapping_add(e.unwrap().amount.to_native());
            }
            black_box(sum)
        })
    });
    group.finish();
}

/// Reads over a log written by single appends: every pack holds one record, so a scan steps
/// the cursor per event and a stream read's `prev` links cross packs (format 4's worst case).
fn reads_packs_of_one(c: &mut Criterion) {
    let total = (events_total() / 10).max(1000);
    let dir = bench_dir("packs-of-one");
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        durability: Durability::NoSync,
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    for i in 0..total {
        // Four streams, interleaved one event at a time.
        writer
            .append(i as u128 % 4 + 1, ExpectedVersion::Auto, &event(i))
            .unwrap();
    }
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let mut group = c.benchmark_group("packs_of_one");
    group.throughput(Throughput::Elements(1));
    let mut x = 1u64;
    group.bench_function("get_random", |b| {
        b.iter_batched(
            || {
                x = (x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407))
                    >> 1;
                x % total + 1
            },
            |seq| black_box(reader.get(&txn, seq).unwrap().unwrap().amount),
            BatchSize::SmallInput,
        )
    });
    group.sample_size(10);
    group.throughput(Throughput::Elements(total));
    group.bench_function("read_all_validated_one_field", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for e in reader.read_all(&txn, 1) {
                sum = sum.wrapping_add(e.unwrap().amount.to_native());
            }
            black_box(sum)
        })
    });
    group.throughput(Throughput::Elements(total / 4));
    group.bench_function("read_stream_forward_scattered", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for e in reader.read_stream(&txn, 1, 1) {
                sum = sum.wrapping_add(e.unwrap().amount.to_native());
            }
            black_box(sum)
        })
    });
    group.finish();
}

criterion_group!(benches, append, reads, reads_packs_of_one);
criterion_main!(benches);
