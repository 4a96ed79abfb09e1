//! The write probe behind the figures in docs/performance.md.
//!
//! ```sh
//! cargo run --release -p varvedb --example write_probe -- writers [threads]       # 6,400 single appends
//! cargo run --release -p varvedb --example write_probe -- batches [streams]       # append_multi of 1,000
//! cargo run --release -p varvedb --example write_probe -- hot                     # append_batch of 1,000, 4 streams
//! cargo run --release -p varvedb --example write_probe -- large [KiB]             # append_batch of 100 such events, 4 streams
//! ```
//! Add `--nosync` to take flushes out and see the CPU cost alone, `--inline` to keep large
//! events out of the blob store. Prints events/s and, from
//! `Stats`, the commits and flushes the store made.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use varvedb::{Append, Durability, ExpectedVersion, Storage, StorageConfig, Writer};

/// The probe's event: a string.
#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event, Clone)]
struct Note(String);

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map_or("writers", String::as_str).to_string();
    let number: Option<u64> = args.get(1).and_then(|s| s.parse().ok());
    let nosync = args.iter().any(|a| a == "--nosync");
    let inline = args.iter().any(|a| a == "--inline");
    let dir = std::path::Path::new("target/write-probe").join(&mode);
    let _ = std::fs::remove_dir_all(&dir);
    let storage = Storage::open(StorageConfig {
        path: dir.clone(),
        durability: if nosync {
            Durability::NoSync
        } else {
            Durability::Sync
        },
        blob_threshold_bytes: if inline { usize::MAX } else { 1024 },
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Note>::new(storage.clone());
    let event = Note("x".repeat(120));
    let (events, seconds) = match mode.as_str() {
        "writers" => {
            let threads = number.unwrap_or(64) as usize;
            let per = 6_400 / threads as u32;
            let barrier = Arc::new(Barrier::new(threads));
            let start = Instant::now();
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (writer, barrier, event) = (writer.clone(), barrier.clone(), event.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        for n in 0..per {
                            writer
                                .append(t as u128, ExpectedVersion::Exact(n), &event)
                                .unwrap();
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            (
                u64::from(per) * threads as u64,
                start.elapsed().as_secs_f64(),
            )
        }
        "batches" | "hot" => {
            let pool = number.unwrap_or(10_000);
            let mut versions: HashMap<u128, u32> = HashMap::new();
            let mut rng = 1u64;
            let batches = 60;
            let mut start = Instant::now();
            for b in 0..batches * 2 {
                // The first half fills the store; the second half is timed.
                if b == batches {
                    start = Instant::now();
                }
                if mode == "hot" {
                    let stream = (b % 4) as u128 + 1;
                    let v = versions.entry(stream).or_insert(0);
                    let current = *v;
                    *v += 1_000;
                    let events = vec![event.clone(); 1_000];
                    writer
                        .append_batch(stream, ExpectedVersion::Exact(current), &events)
                        .unwrap();
                    continue;
                }
                let one = [event.clone()];
                let items: Vec<(u128, u32)> = (0..1_000)
                    .map(|_| {
                        let stream = u128::from(xorshift(&mut rng) % pool) + 1;
                        let v = versions.entry(stream).or_insert(0);
                        *v += 1;
                        (stream, *v - 1)
                    })
                    .collect();
                let append = items.iter().fold(Append::new(), |a, (s, v)| {
                    a.and(*s, ExpectedVersion::Exact(*v), &one[..])
                });
                writer.commit(append).unwrap();
            }
            (batches as u64 * 1_000, start.elapsed().as_secs_f64())
        }
        "large" => {
            let kib = number.unwrap_or(10) as usize;
            let mut rng = 7u64;
            // Distinct payloads: each event its own bytes, as in the harness's (h) rows.
            let batches: Vec<Vec<Note>> = (0..120)
                .map(|_| {
                    (0..100)
                        .map(|_| {
                            let seed = xorshift(&mut rng);
                            Note(format!("{seed:016x}").repeat(kib * 64))
                        })
                        .collect()
                })
                .collect();
            let mut start = Instant::now();
            for (b, events) in batches.iter().enumerate() {
                // The first 20 batches warm the store up; the rest are timed.
                if b == 20 {
                    start = Instant::now();
                }
                let stream = (b % 4) as u128 + 1;
                let version = (b / 4 * 100) as u32;
                writer
                    .append_batch(stream, ExpectedVersion::Exact(version), events)
                    .unwrap();
            }
            (100 * 100, start.elapsed().as_secs_f64())
        }
        other => panic!("unknown mode {other}: writers, batches, hot or large"),
    };
    let stats = storage.stats().unwrap();
    println!(
        "{mode} {} nosync={nosync} inline={inline}: {:.0} ev/s; {} commits, {} flushes, {:.1} events per commit",
        number.map_or(String::new(), |n| n.to_string()),
        events as f64 / seconds,
        stats.commits,
        stats.flushes,
        stats.events as f64 / stats.commits.max(1) as f64
    );
    drop(writer);
    drop(storage);
    let _ = std::fs::remove_dir_all(&dir);
}
