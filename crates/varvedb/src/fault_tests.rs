//! Failures that cannot be provoked from outside the crate (a committer panic, a failed
//! `fsync`), injected through the test-only hooks of `storage::Faults`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::{Error, ExpectedVersion, Storage, StorageConfig, Writer, Written};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, varvedb::Event)]
struct Ev {
    n: u64,
}

fn open(dir: &tempfile::TempDir) -> Storage {
    Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn a_committer_panic_poisons_the_store_and_no_append_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Ev>::new(storage.clone());
    writer
        .append(1, ExpectedVersion::NoStream, &Ev { n: 1 })
        .unwrap();

    storage
        .faults()
        .panic_next_commit
        .store(true, Ordering::Release);
    let started = Instant::now();
    let first = writer
        .append(1, ExpectedVersion::Exact(1), &Ev { n: 2 })
        .unwrap_err();
    assert!(
        matches!(first, Error::OutcomeUnknown { .. }),
        "the append in flight during the panic: {first:?}"
    );
    assert_eq!(first.written(), Written::Unknown);
    assert!(storage.is_poisoned());
    assert!(storage.poison_reason().unwrap().contains("panicked"));

    // Every later append, from any number of threads, is refused at once.
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let writer = writer.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                writer.append(10 + i as u128, ExpectedVersion::Auto, &Ev { n: 3 })
            })
        })
        .collect();
    for h in handles {
        let e = h.join().unwrap().unwrap_err();
        assert!(matches!(e, Error::Poisoned { .. }), "{e:?}");
        assert_eq!(e.written(), Written::No);
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    // Reads still work, and what was acknowledged is there.
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.stream_version(&txn, 1).unwrap(), 1);
    drop(txn);

    // Reopening after every handle is dropped gives a fresh store.
    drop((writer, storage));
    let storage = open(&dir);
    assert!(!storage.is_poisoned());
    let a = Writer::<Ev>::new(storage)
        .append(1, ExpectedVersion::Exact(1), &Ev { n: 2 })
        .unwrap();
    assert_eq!((a.seq, a.version), (2, 2));
}

#[test]
fn a_failed_flush_says_not_durable_and_refuses_a_plain_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Ev>::new(storage.clone());
    writer
        .append(1, ExpectedVersion::NoStream, &Ev { n: 1 })
        .unwrap();

    // The answer of the next append waits for a flush; make that flush fail.
    storage
        .faults()
        .fail_next_sync
        .store(true, Ordering::Release);
    let e = writer
        .append(1, ExpectedVersion::Exact(1), &Ev { n: 2 })
        .unwrap_err();
    match &e {
        Error::NotDurable { appended, .. } => {
            assert_eq!(appended.len(), 1);
            assert_eq!((appended[0].seq, appended[0].version), (2, 2));
        }
        other => panic!("expected NotDurable, got {other:?}"),
    }
    assert_eq!(e.written(), Written::NotDurable);
    assert!(storage.is_poisoned());
    // Committed: readers of this process see it.
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.stream_version(&txn, 1).unwrap(), 2);
    drop(txn);
    let refused = writer
        .append(1, ExpectedVersion::Exact(2), &Ev { n: 3 })
        .unwrap_err();
    assert!(matches!(refused, Error::Poisoned { .. }), "{refused:?}");

    // While a handle of the failed store lives, there is nothing fresh to open.
    let early = Storage::open_after_flush_failure(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(early, Error::Poisoned { .. }), "{early:?}");

    // The page cache may hold what the disk does not: a plain reopen is refused.
    drop((writer, storage));
    let again = Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(again, Error::Poisoned { .. }), "{again:?}");
    // The explicit way back verifies the store and hands it out.
    let storage = Storage::open_after_flush_failure(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })
    .unwrap();
    assert!(!storage.is_poisoned());
    Writer::<Ev>::new(storage)
        .append(1, ExpectedVersion::Exact(2), &Ev { n: 3 })
        .unwrap();
}

#[test]
fn flush_answers_held_appends_and_flushes_a_nosync_store() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        durability: crate::Durability::NoSync,
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Ev>::new(storage.clone());
    writer
        .append(1, ExpectedVersion::NoStream, &Ev { n: 1 })
        .unwrap();
    let before = storage.stats().unwrap().flushes;
    writer.flush().unwrap();
    assert_eq!(storage.stats().unwrap().flushes, before + 1);
    // Nothing committed since: nothing to flush.
    storage.flush().unwrap();
    assert_eq!(storage.stats().unwrap().flushes, before + 1);
    // A failed flush is reported by close.
    writer
        .append(1, ExpectedVersion::Exact(1), &Ev { n: 2 })
        .unwrap();
    storage
        .faults()
        .fail_next_sync
        .store(true, Ordering::Release);
    let e = writer.close().unwrap_err();
    assert!(matches!(e, Error::NotDurable { .. }), "{e:?}");
}

#[derive(rkyv::Archive, rkyv::Serialize, crate::Event)]
struct Bytes(Vec<u8>);

#[test]
fn async_appends_hash_large_payloads_off_the_runtime_thread() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Bytes>::new(storage.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let big = Bytes(vec![7u8; crate::ASYNC_HASH_OFFLOAD_BYTES * 2]);
    let small = Bytes(vec![7u8; 2048]);
    let runtime_thread = std::thread::current().id();
    runtime.block_on(async {
        crate::writer::HASHED_ON.with(|t| t.set(None));
        writer
            .append_async(1, ExpectedVersion::NoStream, &big)
            .await
            .unwrap();
        // The hash ran elsewhere: nothing was recorded on this thread.
        assert_eq!(crate::writer::HASHED_ON.with(|t| t.get()), None);
        writer
            .append_async(1, ExpectedVersion::Exact(1), &small)
            .await
            .unwrap();
        // A small blob is hashed in place: cheaper than a trip to the pool.
        assert_eq!(
            crate::writer::HASHED_ON.with(|t| t.get()),
            Some(runtime_thread)
        );
    });
    let txn = storage.read_txn().unwrap();
    let e = crate::Reader::<Bytes>::new(storage.clone())
        .get(&txn, 1)
        .unwrap()
        .unwrap();
    assert!(e.is_blob());
    assert_eq!(e.0.len(), big.0.len());
}
