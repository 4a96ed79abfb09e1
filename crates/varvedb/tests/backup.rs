//! An online backup (`Storage::compact_to`) taken while 4 threads append: the copy verifies
//! clean and holds a consistent prefix of the log, byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use varvedb::{ExpectedVersion, Storage, StorageConfig, Writer};

#[test]
fn a_backup_taken_while_four_threads_append_is_a_clean_consistent_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4u128)
        .map(|t| {
            let (writer, stop, appended) = (
                Writer::<Deposited>::new(storage.clone()),
                Arc::clone(&stop),
                Arc::clone(&appended),
            );
            std::thread::spawn(move || {
                let mut version = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    writer
                        .append(
                            100 + t,
                            ExpectedVersion::Exact(version),
                            &deposit(u64::from(version)),
                        )
                        .unwrap();
                    version += 1;
                    appended.fetch_add(1, Ordering::Relaxed);
                }
                version
            })
        })
        .collect();
    while appended.load(Ordering::Relaxed) < 200 {
        std::thread::yield_now();
    }
    let dest = dir.path().join("backup");
    storage.compact_to(&dest).unwrap();
    let during = appended.load(Ordering::Relaxed);
    // The appends go on after the copy.
    while appended.load(Ordering::Relaxed) < during + 100 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let versions: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let total: u64 = versions.iter().map(|&v| u64::from(v)).sum();
    assert!(total > during, "the appends went on after the backup");

    let copy = Storage::open_existing(StorageConfig {
        path: dest.clone(),
        ..Default::default()
    })
    .unwrap();
    assert!(copy.verify().unwrap().is_clean());
    let (raw, copy_raw) = (storage.raw_reader(), copy.raw_reader());
    let (txn, copy_txn) = (storage.read_txn().unwrap(), copy.read_txn().unwrap());
    let head = copy.last_seq(&copy_txn).unwrap();
    assert!(head >= 200 && head < total, "backup head {head} of {total}");
    // A prefix: seqs 1..=head, each the original's event byte for byte, and every stream's
    // versions contiguous from 1.
    let mut next_version = std::collections::HashMap::new();
    let mut seq = 0;
    for event in copy_raw.read_all(&copy_txn, 1) {
        let event = event.unwrap();
        seq += 1;
        assert_eq!(event.seq(), seq);
        let original = raw.get(&txn, seq).unwrap().unwrap();
        assert_eq!(event.payload_bytes(), original.payload_bytes());
        assert_eq!(event.stream_id(), original.stream_id());
        let expected = next_version.entry(event.stream_id()).or_insert(1u32);
        assert_eq!(event.version(), *expected);
        *expected += 1;
    }
    assert_eq!(seq, head);
    for stream in copy_raw.streams(&copy_txn) {
        let stream = stream.unwrap();
        assert_eq!(next_version[&stream.stream_id] - 1, stream.version);
    }
}
