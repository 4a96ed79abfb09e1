//! Events survive closing and reopening the store; one path is one environment per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use varvedb::{Error, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

#[test]
fn events_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(&dir);
        let writer = Writer::<Deposited>::new(storage.clone());
        writer
            .append(1, ExpectedVersion::NoStream, &deposit(10))
            .unwrap();
        writer
            .append_batch(2, ExpectedVersion::NoStream, &[deposit(20), deposit(21)])
            .unwrap();
    }
    let storage = open(&dir);
    let reader = Reader::<Deposited>::new(storage.clone());
    let writer = Writer::<Deposited>::new(storage.clone());
    {
        let txn = storage.read_txn().unwrap();
        assert_eq!(reader.last_seq(&txn).unwrap(), 3);
        assert_eq!(reader.stream_version(&txn, 2).unwrap(), 2);
        let amounts: Vec<u64> = reader
            .read_all(&txn, 1)
            .map(|e| e.unwrap().amount.to_native())
            .collect();
        assert_eq!(amounts, [10, 20, 21]);
    }
    // Versions and sequences continue where they stopped.
    assert!(matches!(
        writer.append(2, ExpectedVersion::Exact(1), &deposit(0)),
        Err(Error::ConcurrencyConflict { actual: 2, .. })
    ));
    let a = writer
        .append(2, ExpectedVersion::Exact(2), &deposit(22))
        .unwrap();
    assert_eq!((a.seq, a.version), (4, 3));
}

#[test]
fn opening_one_path_twice_shares_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(&dir);
    let second = open(&dir);
    Writer::<Deposited>::new(first.clone())
        .append(1, ExpectedVersion::Auto, &deposit(1))
        .unwrap();
    let txn = second.read_txn().unwrap();
    // The transaction of one handle works with a reader of the other: one environment.
    let reader = Reader::<Deposited>::new(first.clone());
    assert_eq!(reader.get(&txn, 1).unwrap().unwrap().amount, 1);
    drop(txn);
    // A different spelling of the same path is the same store.
    let dotted = Storage::open(StorageConfig {
        path: dir.path().join("."),
        ..Default::default()
    });
    // It sees what the other handle appended: one environment.
    let dotted = dotted.unwrap();
    let txn = dotted.read_txn().unwrap();
    assert_eq!(
        Reader::<Deposited>::new(dotted.clone())
            .get(&txn, 1)
            .unwrap()
            .unwrap()
            .amount,
        1
    );
    drop(txn);
    // So is a relative spelling.
    let cwd = std::env::current_dir().unwrap();
    let relative = pathdiff(dir.path(), &cwd);
    let relative = Storage::open(StorageConfig {
        path: relative,
        ..Default::default()
    });
    let relative = relative.unwrap();
    assert_eq!(relative.last_seq(&relative.read_txn().unwrap()).unwrap(), 1);
    drop(relative);
    // A different configuration is refused instead of silently ignored.
    let other = Storage::open(StorageConfig {
        path: dir.path().into(),
        event_bytes_max: 1000,
        ..Default::default()
    });
    assert!(matches!(other, Err(Error::ConfigMismatch { .. })));
    // Once every handle is gone, the path can be opened with another configuration.
    drop((first, second, dotted, reader));
    let reopened = Storage::open(StorageConfig {
        path: dir.path().into(),
        event_bytes_max: 1000,
        ..Default::default()
    });
    // The new configuration holds, and the store is the same.
    let reopened = reopened.unwrap();
    assert_eq!(reopened.config().event_bytes_max, 1000);
    assert_eq!(reopened.last_seq(&reopened.read_txn().unwrap()).unwrap(), 1);
}

#[test]
fn many_threads_opening_and_closing_one_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                for i in 0..20u64 {
                    let storage = Storage::open(StorageConfig {
                        path: path.clone(),
                        ..Default::default()
                    })
                    .unwrap();
                    Writer::<Deposited>::new(storage)
                        .append(t, ExpectedVersion::Auto, &deposit(i))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let storage = Storage::open(StorageConfig {
        path,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(storage.stats().unwrap().events, 160);
    assert_eq!(storage.stats().unwrap().streams, 8);
}

/// `path` relative to `base` (both absolute), with `..` steps.
fn pathdiff(path: &std::path::Path, base: &std::path::Path) -> std::path::PathBuf {
    let path: Vec<_> = path.components().collect();
    let base: Vec<_> = base.components().collect();
    let common = path.iter().zip(&base).take_while(|(a, b)| a == b).count();
    let mut out = std::path::PathBuf::new();
    for _ in common..base.len() {
        out.push("..");
    }
    for c in &path[common..] {
        out.push(c);
    }
    out
}

/// The store closes when the caller drops its last handle, even right after an append: the
/// committer lets go of the store before it answers. Reopening at once with another
/// configuration must not meet the old environment (`ConfigMismatch`).
#[test]
fn the_last_handle_closes_the_store_as_an_append_returns() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..200u64 {
        let storage = Storage::open(StorageConfig {
            path: dir.path().into(),
            event_bytes_max: 1000 + (round % 2) as usize,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
        Writer::<Deposited>::new(storage)
            .append(1, ExpectedVersion::Auto, &deposit(round))
            .unwrap();
    }
    assert_eq!(open(&dir).stats().unwrap().events, 200);
}
