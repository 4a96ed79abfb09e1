//! What the event envelope costs: appends and a full scan with no envelope, with metadata, and
//! with event ids (time-ordered v7-like and random v4-like), figures in docs/performance.md.
//!
//! ```sh
//! cargo run --release -p varvedb --example envelope_probe -- <mode> [events] [dir]
//! ```
//! `mode`: `plain`, `meta` (two metadata pairs), `v7` (time-ordered ids), `v4` (random ids),
//! `all` (v7 ids, a correlation id and two pairs), `encrypted` (plain events in an encrypting
//! store). Appends run in batches of 100 with
//! `Durability::NoSync`, so that the figure is the CPU and index cost, not the flush. Prints
//! one line: mode, append ev/s, scan ev/s, log bytes per event, id-index bytes per event.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use varvedb::{
    Append, AppendOptions, Durability, EventId, ExpectedVersion, Reader, Storage, StorageConfig,
    Writer,
};

#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event, Clone)]
struct Deposited {
    account: u64,
    amount: u64,
    note: String,
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map_or("plain", String::as_str).to_string();
    let events: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let dir = args.get(2).map_or_else(
        || std::env::temp_dir().join("varvedb-envelope-probe"),
        Into::into,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let encrypted = mode == "encrypted";
    let storage = Storage::open(StorageConfig {
        path: dir.clone(),
        durability: Durability::NoSync,
        encryption_enabled: encrypted,
        master_key: encrypted.then_some([1u8; 32]),
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let base_ms: u128 = 0x0190_f00d_0000;
    let mut next = 0u128;
    let mut id = |rng: &mut u64| -> EventId {
        next += 1;
        match mode.as_str() {
            "v4" => EventId::from_u128(
                (u128::from(xorshift(rng)) << 64 | u128::from(xorshift(rng))) & !(0xf << 76)
                    | (0x4 << 76),
            ),
            // 48 bits of milliseconds, version 7, then a counter: time-ordered.
            _ => EventId::from_u128((base_ms + next / 1000) << 80 | 0x7 << 76 | next),
        }
    };
    let event = Deposited {
        account: 1,
        amount: 100,
        note: "x".repeat(100),
    };
    let batch: Vec<Deposited> = (0..100).map(|_| event.clone()).collect();
    let start = Instant::now();
    for b in 0..events / 100 {
        let stream = u128::from(b % 64) + 1;
        let options: Vec<AppendOptions> = match mode.as_str() {
            "plain" | "encrypted" => Vec::new(),
            "meta" => (0..100)
                .map(|_| {
                    AppendOptions::new()
                        .metadata("tenant", "acme")
                        .metadata("user", "ada")
                })
                .collect(),
            "all" => (0..100)
                .map(|_| {
                    let i = id(&mut rng);
                    AppendOptions::new()
                        .event_id(i)
                        .correlation_id(i)
                        .metadata("tenant", "acme")
                        .metadata("user", "ada")
                })
                .collect(),
            _ => (0..100)
                .map(|_| AppendOptions::new().event_id(id(&mut rng)))
                .collect(),
        };
        writer
            .commit(Append::stream(stream, ExpectedVersion::Auto, &batch).options(&options))
            .unwrap();
    }
    let append = events as f64 / start.elapsed().as_secs_f64();

    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let start = Instant::now();
    let mut sum = 0u64;
    for e in reader.read_all(&txn, 1) {
        sum = sum.wrapping_add(e.unwrap().amount.to_native());
    }
    let scan = events as f64 / start.elapsed().as_secs_f64();
    assert_eq!(sum, events * 100);
    drop(txn);
    let stats = storage.stats().unwrap();
    let total = stats.file_bytes;
    println!(
        "{mode:6} append {:>9.0} ev/s  scan {:>10.0} ev/s  log {:>5.1} B/ev  file {:>5.1} B/ev",
        append,
        scan,
        stats.log_bytes as f64 / events as f64,
        total as f64 / events as f64
    );
    drop(storage);
    let _ = std::fs::remove_dir_all(&dir);
}
