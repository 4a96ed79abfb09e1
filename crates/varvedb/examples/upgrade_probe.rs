//! What upgrading a store from format 4 costs, figures in docs/performance.md.
//!
//! ```sh
//! cargo run --release -p varvedb --example upgrade_probe -- [events]   # default 1,000,000
//! ```
//! Fills a store (`NoSync`, batches of 1,000), marks it format 4 (what 0.5.0 wrote: the
//! format-5 databases are empty until a removal or a group), and times its open, which
//! upgrades it, against the open of the same store once current.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, unsafe_code)]

use std::time::Instant;

use heed::types::{Bytes, Str};
use varvedb::{Durability, ExpectedVersion, Storage, StorageConfig, Writer};

#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
struct Tick {
    n: u64,
    note: String,
}

fn config(dir: &std::path::Path) -> StorageConfig {
    StorageConfig {
        path: dir.into(),
        durability: Durability::NoSync,
        ..Default::default()
    }
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(config(dir.path())).unwrap();
        let writer = Writer::<Tick>::new(storage.clone());
        for b in 0..n / 1000 {
            let batch: Vec<Tick> = (0..1000)
                .map(|i| Tick {
                    n: b * 1000 + i,
                    note: "x".repeat(100),
                })
                .collect();
            writer
                .append_batch(u128::from(b % 64) + 1, ExpectedVersion::Auto, &batch)
                .unwrap();
        }
        storage.flush().unwrap();
    }
    // Format 4, as 0.5.0 wrote it.
    {
        let mut options = heed::EnvOpenOptions::new();
        options.max_dbs(32).map_size(64 << 30);
        // SAFETY: the store above is closed; nothing else opens this path meanwhile.
        let env = unsafe { options.open(dir.path()) }.unwrap();
        let meta = env
            .open_databases_and_commit(env.read_txn().unwrap(), |opener, rtxn| {
                opener
                    .open_database::<Str, Bytes>(rtxn, Some("meta"))
                    .map(heed::CommitOrAbort::<_, ()>::Commit)
            })
            .unwrap()
            .unwrap_commit()
            .unwrap();
        let mut wtxn = env.write_txn().unwrap();
        meta.put(&mut wtxn, "format_version", &4u32.to_le_bytes())
            .unwrap();
        wtxn.commit().unwrap();
    }
    let started = Instant::now();
    let storage = Storage::open(config(dir.path())).unwrap();
    let upgraded = started.elapsed();
    assert_eq!(storage.stats().unwrap().format, Storage::FORMAT_VERSION);
    drop(storage);
    let started = Instant::now();
    let storage = Storage::open(config(dir.path())).unwrap();
    let plain = started.elapsed();
    assert_eq!(storage.stats().unwrap().events, n / 1000 * 1000);
    println!(
        "a store of {n} events: the open that upgraded it from format 4 took {upgraded:.2?}; an open of it once current {plain:.2?}"
    );
}
