//! The removal probe behind the deletion figures in docs/performance.md.
//!
//! ```sh
//! cargo run --release -p varvedb --example removal_probe            # 200,000 events
//! cargo run --release -p varvedb --example removal_probe -- 1000000
//! ```
//! Fills a store (`NoSync`, batches of 1,000) twice over: once with one stream of contiguous
//! events, deleted whole (packs go whole); once with 1,000 streams appended to in turn, each
//! truncated to its newest half by a retention policy (every pack loses records and is
//! rewritten). Prints the events removed per second for each, and the store's size before and
//! after writing as many events again.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use varvedb::{
    Append, Durability, ExpectedVersion, RetentionPolicy, Storage, StorageConfig, Writer,
};

#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event, Clone)]
struct Reading {
    sensor: u64,
    celsius: f64,
    note: String,
}

fn reading(i: u64) -> Reading {
    Reading {
        sensor: i % 1000,
        celsius: 20.0 + (i % 100) as f64 / 10.0,
        note: format!("reading {i} of the probe, about a hundred bytes like a real one"),
    }
}

fn open(name: &str) -> Storage {
    let dir = std::path::Path::new("target/removal-probe").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    Storage::open(StorageConfig {
        path: dir,
        durability: Durability::NoSync,
        retention_interval_ms: 0,
        ..Default::default()
    })
    .unwrap()
}

fn file_bytes(storage: &Storage) -> u64 {
    storage.stats().unwrap().file_bytes
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);

    // One stream, deleted whole.
    let storage = open("one-stream");
    let writer = Writer::<Reading>::new(storage.clone());
    let events: Vec<Reading> = (0..n).map(reading).collect();
    for chunk in events.chunks(1000) {
        writer
            .append_batch(1, ExpectedVersion::Auto, chunk)
            .unwrap();
    }
    let started = Instant::now();
    let report = storage.delete_stream(1).unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "delete_stream of one stream of {n}: {} events in {secs:.3} s: {:.0} events/s, {} bytes given back",
        report.events_removed,
        report.events_removed as f64 / secs,
        report.bytes_reclaimed
    );
    let before = file_bytes(&storage);
    for chunk in events.chunks(1000) {
        writer
            .append_batch(2, ExpectedVersion::Auto, chunk)
            .unwrap();
    }
    println!(
        "  file {before} bytes after the delete, {} after writing {n} again",
        file_bytes(&storage)
    );
    drop(writer);
    drop(storage);

    // 1,000 streams, interleaved in every pack, each halved by a policy.
    let storage = open("interleaved");
    let writer = Writer::<Reading>::new(storage.clone());
    for start in (0..n).step_by(1000) {
        let parts: Vec<(u128, Reading)> = (start..(start + 1000).min(n))
            .map(|i| (u128::from(i % 1000 + 1), reading(i)))
            .collect();
        let mut append = Append::event(parts[0].0, ExpectedVersion::Auto, &parts[0].1);
        for (stream, event) in &parts[1..] {
            append = append.and(*stream, ExpectedVersion::Auto, std::slice::from_ref(event));
        }
        writer.commit(append).unwrap();
    }
    storage
        .set_default_retention(RetentionPolicy {
            max_count: Some(n / 1000 / 2),
            ..Default::default()
        })
        .unwrap();
    let started = Instant::now();
    let report = storage.enforce_retention().unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "enforce_retention over 1,000 interleaved streams: {} events from {} streams in {secs:.3} s: {:.0} events/s",
        report.events_removed,
        report.streams,
        report.events_removed as f64 / secs
    );
    assert!(storage.verify().unwrap().is_clean());
}
