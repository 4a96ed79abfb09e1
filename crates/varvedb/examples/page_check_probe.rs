//! What the page check costs (issue 33): fills a store with `events` events (batches of 1,000
//! over 10K streams, `NoSync`) unless it exists, then times `check_pages` and an open with and
//! without `check_pages_on_open`, three times each.
//!
//! ```sh
//! cargo run --release -p varvedb --example page_check_probe -- /tmp/pc10m 10000000
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use varvedb::{Durability, ExpectedVersion, Storage, StorageConfig, Writer};

#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
struct Reading {
    sensor: u64,
    value: u64,
    note: String,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(args.next().expect("a store path"));
    let events: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    if !path.join("data.mdb").exists() {
        let storage = Storage::open(StorageConfig {
            path: path.clone(),
            durability: Durability::NoSync,
            ..Default::default()
        })
        .unwrap();
        let writer = Writer::<Reading>::new(storage.clone());
        let started = Instant::now();
        for b in 0..events / 1000 {
            let batch: Vec<Reading> = (0..1000)
                .map(|i| Reading {
                    sensor: b * 1000 + i,
                    value: i,
                    note: "x".repeat(96),
                })
                .collect();
            writer
                .append_batch(u128::from(b % 10_000) + 1, ExpectedVersion::Auto, &batch)
                .unwrap();
        }
        storage.flush().unwrap();
        println!(
            "filled {events} events in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let bytes = std::fs::metadata(path.join("data.mdb")).unwrap().len();
    for round in 0..3 {
        let started = Instant::now();
        let check = varvedb::check_pages(&path).unwrap();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "check {round}: {:.3} s for {} MiB ({} of {} pages read, {:.0} MiB/s)",
            secs,
            bytes >> 20,
            check.pages_read,
            check.file_pages,
            (check.pages_read as f64 * check.page_size as f64) / secs / 1048576.0
        );
        for checked in [false, true] {
            let started = Instant::now();
            let storage = Storage::open_existing(StorageConfig {
                path: path.clone(),
                check_pages_on_open: checked,
                ..Default::default()
            })
            .unwrap();
            let secs = started.elapsed().as_secs_f64();
            drop(storage);
            println!("open {round} (check_pages_on_open: {checked}): {secs:.3} s");
        }
    }
}
