//! What the blob store costs a read: the digest check each read pays (xxh3-64) against the hash
//! `verify` and the writer compute (BLAKE3), and `get` of a 10 KiB / 1 MiB event served from
//! the blob store against the same event stored inline.
//!
//! Run with `cargo bench -p varvedb --bench blob`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rkyv::{Archive, Serialize};
use varvedb::{ExpectedVersion, Reader, Storage, StorageConfig, Writer};

#[derive(Archive, Serialize, varvedb::Event)]
struct Doc {
    body: Vec<u8>,
}

const SIZES: [(&str, usize, u64); 2] = [("10KiB", 10 << 10, 2000), ("1MiB", 1 << 20, 48)];

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn checks(c: &mut Criterion) {
    for (name, len, _) in SIZES {
        let data = bytes(len, 1);
        let mut group = c.benchmark_group(format!("blob_check/{name}"));
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function("xxh3_read_check", |b| {
            b.iter(|| black_box(twox_hash::XxHash3_64::oneshot(black_box(&data))))
        });
        group.bench_function("blake3_hash", |b| {
            b.iter(|| black_box(blake3::hash(black_box(&data))))
        });
        group.finish();
    }
}

fn store(len: usize, events: u64, threshold: usize) -> (tempfile::TempDir, Storage) {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-stores");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("blob")
        .tempdir_in(base)
        .unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        blob_threshold_bytes: threshold,
        durability: varvedb::Durability::NoSync,
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Doc>::new(storage.clone());
    for i in 0..events {
        writer
            .append(
                u128::from(i % 8),
                ExpectedVersion::Auto,
                &Doc {
                    body: bytes(len - 8, i),
                },
            )
            .unwrap();
    }
    (dir, storage)
}

fn gets(c: &mut Criterion) {
    for (name, len, events) in SIZES {
        let mut group = c.benchmark_group(format!("blob_get/{name}"));
        group.throughput(Throughput::Elements(1));
        for (kind, threshold) in [("blob", 1024), ("inline", usize::MAX)] {
            let (_dir, storage) = store(len, events, threshold);
            let reader = Reader::<Doc>::new(storage.clone());
            let txn = storage.read_txn().unwrap();
            assert_eq!(
                reader.get(&txn, 1).unwrap().unwrap().is_blob(),
                kind == "blob"
            );
            let mut seq = 0;
            group.bench_function(kind, |b| {
                b.iter(|| {
                    seq = seq % events + 1;
                    black_box(reader.get(&txn, seq).unwrap().unwrap().body.len())
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = checks, gets
}
criterion_main!(benches);
