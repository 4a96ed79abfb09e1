//! Where an encrypted read's time goes (issue 32), for a profiler.
//!
//! ```sh
//! cargo run --release -p varvedb --example crypto_probe -- [events] [plain|encrypted] [scan|stream|point]
//! valgrind --tool=callgrind target/release/examples/crypto_probe 20000 encrypted
//! ```
//! Fills a store with `events` events of about 136 bytes over 64 streams (`NoSync`, batches
//! of 1,000), then reads them twice with a typed reader and prints the rate: a scan of the
//! log (`scan`, the default), every stream by version (`stream`), or every event by its
//! sequence in a scattered order (`point`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use varvedb::{Durability, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
struct Reading {
    sensor: u64,
    value: u64,
    note: String,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let encrypted = args.next().as_deref() == Some("encrypted");
    let mode = args.next().unwrap_or_else(|| "scan".into());
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        durability: Durability::NoSync,
        encryption_enabled: encrypted,
        master_key: encrypted.then_some([9; 32]),
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Reading>::new(storage.clone());
    for b in 0..n / 1000 {
        let batch: Vec<Reading> = (0..1000)
            .map(|i| Reading {
                sensor: b * 1000 + i,
                value: i,
                note: "x".repeat(96),
            })
            .collect();
        writer
            .append_batch(u128::from(b % 64) + 1, ExpectedVersion::Auto, &batch)
            .unwrap();
    }
    let reader = Reader::<Reading>::new(storage.clone());
    for round in 0..2 {
        let started = Instant::now();
        let txn = storage.read_txn().unwrap();
        let mut sum = 0u64;
        if mode == "point" {
            // Every sequence once, in a scattered order (a stride prime to `n`).
            for i in 0..n {
                let seq = (i * 7_919) % n + 1;
                sum = sum.wrapping_add(reader.get(&txn, seq).unwrap().unwrap().value.to_native());
            }
        } else if mode == "stream" {
            for stream in 1..=64u128 {
                for e in reader.read_stream(&txn, stream, 1) {
                    sum = sum.wrapping_add(e.unwrap().value.to_native());
                }
            }
        } else {
            for e in reader.read_all(&txn, 1) {
                sum = sum.wrapping_add(e.unwrap().value.to_native());
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{} {round} ({}): {n} events in {secs:.3} s: {:.0} events/s (sum {sum})",
            mode,
            if encrypted { "encrypted" } else { "plain" },
            n as f64 / secs
        );
    }
}
