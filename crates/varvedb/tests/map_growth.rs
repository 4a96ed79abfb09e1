//! The map grows on demand up to `map_bytes_max`; past it the error is typed and nothing is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use varvedb::{Error, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

fn big(i: u64) -> Deposited {
    Deposited {
        account: i,
        amount: i,
        note: "n".repeat(4000),
    }
}

#[test]
fn a_small_map_grows_without_the_user_noticing() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        path: dir.path().into(),
        map_bytes_initial: 1 << 20,
        map_bytes_max: 256 << 20,
        ..Default::default()
    };
    let storage = Storage::open(config).unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    // About 40 MB in batches and single appends, from a 1 MiB map.
    for b in 0..100u64 {
        let batch: Vec<_> = (0..100).map(|i| big(b * 100 + i)).collect();
        writer
            .append_batch(b as u128, ExpectedVersion::NoStream, &batch)
            .unwrap();
        writer
            .append(b as u128, ExpectedVersion::Exact(100), &big(0))
            .unwrap();
    }
    let stats = storage.stats().unwrap();
    assert_eq!(stats.events, 10_100);
    assert!(
        stats.map_bytes > 40 << 20,
        "map is {} bytes",
        stats.map_bytes
    );
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert_eq!(
        reader
            .read_all(&txn, 1)
            .filter(|e| e.as_ref().unwrap().note.len() == 4000)
            .count(),
        10_100
    );
}

#[test]
fn past_the_maximum_the_error_is_typed_and_the_store_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        path: dir.path().into(),
        map_bytes_initial: 1 << 20,
        map_bytes_max: 4 << 20,
        ..Default::default()
    };
    let storage = Storage::open(config.clone()).unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    let mut committed = 0u64;
    let err = loop {
        match writer.append(1, ExpectedVersion::Auto, &big(committed)) {
            Ok(_) => committed += 1,
            Err(e) => break e,
        }
        assert!(committed < 10_000, "a 4 MiB store cannot hold 40 MB");
    };
    assert!(
        matches!(err, Error::StoreFull { map_bytes_max } if map_bytes_max == 4 << 20),
        "{err}"
    );
    assert!(committed > 100);
    let reader = Reader::<Deposited>::new(storage.clone());
    {
        let txn = storage.read_txn().unwrap();
        assert_eq!(reader.read_all(&txn, 1).count() as u64, committed);
        assert_eq!(reader.stream_version(&txn, 1).unwrap() as u64, committed);
    }
    drop((writer, reader, storage));
    // Reopened with a larger maximum, the store takes more.
    let storage = Storage::open(StorageConfig {
        map_bytes_max: 64 << 20,
        ..config
    })
    .unwrap();
    let a = Writer::<Deposited>::new(storage)
        .append(1, ExpectedVersion::Exact(committed as u32), &big(0))
        .unwrap();
    assert_eq!(a.seq, committed + 1);
}

#[test]
fn read_then_append_while_holding_the_snapshot_grows_fine() {
    // The common optimistic pattern keeps its snapshot open across the append. Growth must not
    // depend on that snapshot ending: the map grows early, whenever no reader is open.
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        path: dir.path().into(),
        map_bytes_initial: 1 << 20,
        map_bytes_max: 256 << 20,
        resize_wait_ms_max: 100,
        ..Default::default()
    };
    let storage = Storage::open(config).unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    let reader = Reader::<Deposited>::new(storage.clone());
    for i in 0..5000u64 {
        let txn = storage.read_txn().unwrap();
        let version = reader.stream_version(&txn, 9).unwrap();
        writer
            .append(9, ExpectedVersion::Exact(version), &big(i))
            .unwrap();
        drop(txn);
    }
    assert!(storage.stats().unwrap().map_bytes >= 20 << 20);
}

#[test]
fn growth_gives_up_on_a_reader_that_stays_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        path: dir.path().into(),
        map_bytes_initial: 1 << 20,
        map_bytes_max: 64 << 20,
        resize_wait_ms_max: 200,
        ..Default::default()
    };
    let storage = Storage::open(config).unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    // This thread holds a snapshot while it appends past the initial map.
    let txn = storage.read_txn().unwrap();
    let err = (0..1000u64)
        .find_map(|i| writer.append(1, ExpectedVersion::Auto, &big(i)).err())
        .unwrap();
    assert!(
        matches!(err, Error::ResizeBlocked { read_txns: 1, .. }),
        "{err}"
    );
    drop(txn);
    // Without the snapshot the same append succeeds.
    writer.append(1, ExpectedVersion::Auto, &big(0)).unwrap();
}

#[test]
fn growth_waits_for_a_reader_on_another_thread() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    // NoSync so that filling the first map takes milliseconds, far less than the reader's hold.
    let config = StorageConfig {
        path: dir.path().into(),
        durability: varvedb::Durability::NoSync,
        map_bytes_initial: 1 << 20,
        map_bytes_max: 64 << 20,
        resize_wait_ms_max: 10_000,
        ..Default::default()
    };
    let storage = Storage::open(config).unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    let released = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = {
        let storage = storage.clone();
        let released = Arc::clone(&released);
        std::thread::spawn(move || {
            let txn = storage.read_txn().unwrap();
            ready_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(500));
            released.store(true, Ordering::SeqCst);
            drop(txn);
        })
    };
    ready_rx.recv().unwrap();
    // The reader blocks early growth, so some append finds the map full and must wait for it.
    let mut waited = None;
    for i in 0..3000u64 {
        let started = Instant::now();
        writer.append(2, ExpectedVersion::Auto, &big(i)).unwrap();
        if started.elapsed() >= Duration::from_millis(200) && waited.is_none() {
            waited = Some((i, released.load(Ordering::SeqCst)));
        }
    }
    reader.join().unwrap();
    let (at, reader_gone) = waited.expect("no append waited for the reader");
    assert!(reader_gone, "append {at} returned before the reader let go");
    assert!(storage.stats().unwrap().map_bytes > 1 << 20);
}
