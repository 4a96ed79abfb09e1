//! The migration rate from varvedb 0.4.2, figures in docs/performance.md.
//!
//! ```sh
//! cargo run --release -p varvedb-migrate --example migrate_probe -- [events] [encrypted]
//! ```
//! (1,000,000 events by default; `encrypted` migrates into an encrypted store, sealing each
//! event under its stream's key.)
//! Writes the events with the real 0.4.2 crate (batches of 1,000 to one of 100 ids of one
//! stream name, about 60-byte payloads, one in a thousand of 10 KiB), then migrates them into
//! a new store and prints the rate.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use varvedb::{Storage, StorageConfig};
use varvedb_migrate::{EventType, MigrateOptions, migrate_from_v04};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Order {
    id: u64,
    note: String,
    body: Vec<u8>,
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    let started = std::time::Instant::now();
    {
        let mut varve = varvedb04::Varve::with_config(
            &old,
            varvedb04::VarveConfig {
                map_size: 16 << 30,
                ..Default::default()
            },
        )
        .unwrap();
        let mut orders = varve.stream::<Order, { 16 << 10 }>("orders").unwrap();
        let mut i = 0u64;
        while i < n {
            let batch: Vec<Order> = (i..(i + 1000).min(n))
                .map(|k| Order {
                    id: k,
                    note: format!("order {k}"),
                    body: vec![7; if k.is_multiple_of(1000) { 10 << 10 } else { 32 }],
                })
                .collect();
            orders
                .append_batch_alloc(varvedb04::StreamId(i / 1000 % 100), &batch)
                .unwrap();
            i += batch.len() as u64;
        }
    }
    println!(
        "wrote {n} events with varvedb 0.4.2 in {:.1?}",
        started.elapsed()
    );
    let encrypted = std::env::args().nth(2).as_deref() == Some("encrypted");
    let target = Storage::open(StorageConfig {
        path: dir.path().join("new"),
        encryption_enabled: encrypted,
        master_key: encrypted.then_some([7; 32]),
        ..Default::default()
    })
    .unwrap();
    let report = migrate_from_v04(
        &old,
        &target,
        MigrateOptions::one_type(EventType::named("Order")),
    )
    .unwrap();
    println!(
        "migrated {} events{} ({} to the blob store) in {:.2?}: {:.0} events/s",
        report.events,
        if encrypted { ", sealed," } else { "" },
        report.blobs,
        report.elapsed,
        report.events as f64 / report.elapsed.as_secs_f64()
    );
}
