//! Removing events: truncation, soft deletes and tombstones. What is removed is gone from
//! every read path, the stream's version goes on, the space is reused, and `verify` is clean.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Deposited, deposit, open, pattern};
use varvedb::{
    Append, AppendOptions, Error, EventId, ExpectedVersion, Query, Reader, Storage, Writer,
};

#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
struct Reading {
    bytes: Vec<u8>,
}

/// Streams 1 and 2, interleaved (so that they share packs), `n` events each; the last event
/// of each pair is a batch of two, so packs hold several records.
fn interleaved(storage: &Storage, n: u64) {
    let writer = Writer::<Deposited>::new(storage.clone());
    for i in 1..=n {
        let a = deposit(i);
        let b = deposit(1000 + i);
        writer
            .commit(
                Append::event(1, ExpectedVersion::Auto, &a)
                    .options(AppendOptions::new().tag(format!("n:{i}")))
                    .and(2, ExpectedVersion::Auto, std::slice::from_ref(&b)),
            )
            .unwrap();
    }
}

fn amounts(storage: &Storage, stream: u128, from: u32) -> Vec<u64> {
    let txn = storage.read_txn().unwrap();
    Reader::<Deposited>::new(storage.clone())
        .read_stream(&txn, stream, from)
        .map(|e| e.unwrap().amount.to_native())
        .collect()
}

fn assert_clean(storage: &Storage) {
    let report = storage.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[test]
fn a_truncated_stream_is_gone_from_every_read_path_and_keeps_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    interleaved(&storage, 10);
    // Stream 1 is at the odd sequences 1, 3, .., 19.
    let report = storage.truncate_stream(1, 6).unwrap();
    assert_eq!(report.events_removed, 5);
    assert_eq!(report.first_kept, 6);
    assert!(report.bytes_reclaimed > 0);

    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for seq in [1, 3, 5, 7, 9] {
        assert!(reader.get(&txn, seq).unwrap().is_none(), "seq {seq}");
    }
    assert_eq!(reader.get(&txn, 11).unwrap().unwrap().amount, 6);
    assert!(reader.get_by_version(&txn, 1, 5).unwrap().is_none());
    assert_eq!(
        reader.get_by_version(&txn, 1, 6).unwrap().unwrap().amount,
        6
    );
    assert_eq!(reader.stream_version(&txn, 1).unwrap(), 10);
    let backwards: Vec<u64> = reader
        .read_stream_backwards(&txn, 1, 10)
        .map(|e| e.unwrap().amount.to_native())
        .collect();
    assert_eq!(backwards, [10, 9, 8, 7, 6]);
    // The log, a query by tag, and the raw view skip them.
    let all: Vec<u64> = reader.read_all(&txn, 1).map(|e| e.unwrap().seq()).collect();
    assert_eq!(all.len(), 15);
    assert!(!all.contains(&1) && all.contains(&2));
    let tagged = reader
        .read_query(&txn, &Query::new().tags(["n:3"]), 0)
        .count();
    assert_eq!(tagged, 0);
    assert_eq!(
        storage.raw_reader().read_stream(&txn, 1, 1).count(),
        5,
        "the raw view starts at the first kept version"
    );
    drop(txn);
    assert_eq!(amounts(&storage, 1, 1), [6, 7, 8, 9, 10]);
    assert_eq!(
        amounts(&storage, 2, 1).len(),
        10,
        "the other stream is intact"
    );
    let stats = storage.stats().unwrap();
    assert_eq!((stats.events, stats.deleted_events), (15, 5));
    assert_eq!(stats.last_seq, 20);
    assert_clean(&storage);

    // The stream goes on after its last version.
    let writer = Writer::<Deposited>::new(storage.clone());
    let next = writer
        .append(1, ExpectedVersion::Exact(10), &deposit(11))
        .unwrap();
    assert_eq!((next.version, next.seq), (11, 21));
    assert_eq!(amounts(&storage, 1, 1), [6, 7, 8, 9, 10, 11]);
    // Truncating again, and before a version already removed, removes only what is left.
    assert_eq!(storage.truncate_stream(1, 3).unwrap().events_removed, 0);
    assert_eq!(storage.truncate_stream(1, 8).unwrap().events_removed, 2);
    assert_eq!(amounts(&storage, 1, 1), [8, 9, 10, 11]);
    assert_clean(&storage);
}

#[test]
fn a_soft_deleted_stream_continues_at_its_next_version_and_a_reopen_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(&dir);
        interleaved(&storage, 4);
        let report = storage.delete_stream(2).unwrap();
        assert_eq!(report.events_removed, 4);
        assert_eq!(report.first_kept, 5);
        assert!(amounts(&storage, 2, 1).is_empty());
        let txn = storage.read_txn().unwrap();
        assert_eq!(storage.stream_version(&txn, 2).unwrap(), 4);
        drop(txn);
        assert_clean(&storage);
        // A deleted stream is not new: NoStream conflicts with its version.
        let writer = Writer::<Deposited>::new(storage.clone());
        let err = writer
            .append(2, ExpectedVersion::NoStream, &deposit(5))
            .unwrap_err();
        assert!(
            matches!(err, Error::ConcurrencyConflict { actual: 4, .. }),
            "{err}"
        );
    }
    let storage = open(&dir);
    assert!(amounts(&storage, 2, 1).is_empty());
    let writer = Writer::<Deposited>::new(storage.clone());
    let a = writer
        .append(2, ExpectedVersion::Exact(4), &deposit(5))
        .unwrap();
    assert_eq!(a.version, 5);
    let b = writer
        .append(2, ExpectedVersion::Auto, &deposit(6))
        .unwrap();
    assert_eq!(b.version, 6);
    assert_eq!(amounts(&storage, 2, 1), [5, 6]);
    assert_eq!(amounts(&storage, 1, 1).len(), 4);
    assert_clean(&storage);
}

#[test]
fn a_tombstoned_stream_takes_no_appends_ever_even_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(&dir);
        interleaved(&storage, 3);
        storage.tombstone_stream(1).unwrap();
        // Never created, and never to be.
        storage.tombstone_stream(9).unwrap();
        let writer = Writer::<Deposited>::new(storage.clone());
        for (stream, expected) in [
            (1, ExpectedVersion::Exact(3)),
            (1, ExpectedVersion::Auto),
            (9, ExpectedVersion::NoStream),
        ] {
            let err = writer.append(stream, expected, &deposit(1)).unwrap_err();
            assert!(
                matches!(err, Error::StreamDeleted { stream_id } if stream_id == stream),
                "{err}"
            );
        }
        assert_clean(&storage);
    }
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let err = writer
        .append(1, ExpectedVersion::Auto, &deposit(1))
        .unwrap_err();
    assert!(matches!(err, Error::StreamDeleted { .. }), "{err}");
    // Nothing of a failed append to it was written, nor of its atomic partners.
    let err = writer
        .commit(Append::event(2, ExpectedVersion::Auto, &deposit(7)).and(
            1,
            ExpectedVersion::Auto,
            &[deposit(8)],
        ))
        .unwrap_err();
    assert!(matches!(err, Error::StreamDeleted { .. }), "{err}");
    assert_eq!(amounts(&storage, 2, 1).len(), 3);
    assert!(amounts(&storage, 1, 1).is_empty());
    assert_clean(&storage);
}

#[test]
fn removing_the_logs_last_events_never_gives_their_sequences_again() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    writer
        .append(1, ExpectedVersion::Auto, &deposit(1))
        .unwrap();
    writer
        .append_batch(2, ExpectedVersion::Auto, &[deposit(2), deposit(3)])
        .unwrap();
    storage.delete_stream(2).unwrap();
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.last_seq(&txn).unwrap(), 3);
    drop(txn);
    assert_clean(&storage);
    drop(writer);
    drop(storage);
    let storage = open(&dir);
    let a = Writer::<Deposited>::new(storage.clone())
        .append(3, ExpectedVersion::Auto, &deposit(4))
        .unwrap();
    assert_eq!(a.seq, 4, "sequence 2 and 3 are never given again");
    assert_clean(&storage);
}

#[test]
fn blobs_event_ids_and_tags_leave_with_their_events_and_a_shared_blob_stays() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Reading>::new(storage.clone());
    let shared = pattern(8_000, 1);
    let own = pattern(8_000, 2);
    // Stream 1: the shared payload and its own; stream 2: the shared payload.
    for (stream, bytes, id) in [(1u128, &shared, 1u128), (1, &own, 2), (2, &shared, 3)] {
        writer
            .commit(
                Append::event(
                    stream,
                    ExpectedVersion::Auto,
                    &Reading {
                        bytes: bytes.clone(),
                    },
                )
                .options(
                    AppendOptions::new()
                        .event_id(EventId::from_u128(id))
                        .tag("sensor:7"),
                ),
            )
            .unwrap();
    }
    assert_eq!(storage.stats().unwrap().blobs, 2);
    storage.delete_stream(1).unwrap();
    let stats = storage.stats().unwrap();
    assert_eq!((stats.blobs, stats.blob_references), (1, 1));
    let txn = storage.read_txn().unwrap();
    assert_eq!(
        storage.seq_of_event_id(EventId::from_u128(1)).unwrap(),
        None
    );
    assert_eq!(
        storage.seq_of_event_id(EventId::from_u128(3)).unwrap(),
        Some(3)
    );
    let reader = Reader::<Reading>::new(storage.clone());
    let tagged: Vec<u64> = reader
        .read_query(&txn, &Query::new().tags(["sensor:7"]), 0)
        .map(|e| e.unwrap().seq())
        .collect();
    assert_eq!(tagged, [3]);
    assert_eq!(reader.get(&txn, 3).unwrap().unwrap().bytes.len(), 8_000);
    drop(txn);
    assert_clean(&storage);
}

#[test]
fn a_long_stream_is_truncated_in_bounded_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let events: Vec<Deposited> = (1..=5_000).map(deposit).collect();
    for chunk in events.chunks(1_000) {
        writer
            .append_batch(1, ExpectedVersion::Auto, chunk)
            .unwrap();
    }
    let report = storage.truncate_stream(1, 4_901).unwrap();
    assert_eq!(report.events_removed, 4_900);
    assert_eq!(amounts(&storage, 1, 1), (4_901..=5_000).collect::<Vec<_>>());
    let stats = storage.stats().unwrap();
    assert_eq!((stats.events, stats.deleted_events), (100, 4_900));
    assert_clean(&storage);
}

#[test]
fn space_freed_by_a_deletion_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Reading>::new(storage.clone());
    let write = |round: u64| {
        for batch in 0..100u64 {
            let events: Vec<Reading> = (0..100)
                .map(|i| Reading {
                    bytes: pattern(4096, round * 1_000_000 + batch * 100 + i),
                })
                .collect();
            writer
                .append_batch(u128::from(round), ExpectedVersion::Auto, &events)
                .unwrap();
        }
    };
    write(1);
    let file = || {
        std::fs::metadata(dir.path().join("data.mdb"))
            .unwrap()
            .len()
    };
    let before = file();
    storage.delete_stream(1).unwrap();
    write(2);
    let after = file();
    assert!(
        after <= before + before / 3,
        "10,000 events of 4 KiB deleted and written again grew data.mdb from {before} to {after}"
    );
    assert_clean(&storage);
}

#[test]
fn a_subscriber_whose_position_falls_in_a_removed_range_continues_at_the_next_kept_event() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    interleaved(&storage, 5);
    storage.reset_consumer("billing", 3).unwrap();
    storage.truncate_stream(1, 5).unwrap();
    storage.truncate_stream(2, 3).unwrap();
    // The consumer handled up to 3; the log after it starts at the next kept event.
    let txn = storage.read_txn().unwrap();
    let next: Vec<u64> = Reader::<Deposited>::new(storage.clone())
        .read_all(&txn, 4)
        .map(|e| e.unwrap().seq())
        .collect();
    assert_eq!(next, [6, 8, 9, 10]);
    drop(txn);
    // Its lag counts only the kept events after it.
    let billing = storage
        .consumers()
        .unwrap()
        .into_iter()
        .find(|c| c.name == "billing")
        .unwrap();
    assert_eq!(
        (billing.position, billing.head, billing.lag_events),
        (3, 10, 4)
    );
    // The oldest event it has not handled waited since it was appended, in this test.
    assert!(
        billing.lag_seconds > 0.0 && billing.lag_seconds < 60.0,
        "{}",
        billing.lag_seconds
    );
}

#[test]
fn retention_policies_are_kept_in_the_store_and_enforced() {
    use std::time::Duration;
    use varvedb::RetentionPolicy;
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(&dir);
        interleaved(&storage, 20);
        storage
            .set_stream_retention(
                1,
                RetentionPolicy {
                    max_count: Some(5),
                    ..Default::default()
                },
            )
            .unwrap();
    }
    // Kept across a reopen; enforced on demand.
    let storage = open(&dir);
    assert_eq!(
        storage.stream_retention(1).unwrap(),
        Some(RetentionPolicy {
            max_count: Some(5),
            max_age: None
        })
    );
    let report = storage.enforce_retention().unwrap();
    assert_eq!((report.streams, report.events_removed), (1, 15));
    assert_eq!(amounts(&storage, 1, 1), [16, 17, 18, 19, 20]);
    assert_eq!(amounts(&storage, 2, 1).len(), 20, "stream 2 has no policy");
    // Enforcing again removes nothing more.
    assert_eq!(storage.enforce_retention().unwrap().events_removed, 0);
    // A store-wide default by age: every event older than the cutoff goes, in every stream
    // without a policy of its own.
    std::thread::sleep(Duration::from_millis(50));
    let writer = Writer::<Deposited>::new(storage.clone());
    writer
        .append(2, ExpectedVersion::Auto, &deposit(99))
        .unwrap();
    writer
        .append(3, ExpectedVersion::Auto, &deposit(98))
        .unwrap();
    storage
        .set_default_retention(RetentionPolicy {
            max_age: Some(Duration::from_millis(40)),
            ..Default::default()
        })
        .unwrap();
    let report = storage.enforce_retention().unwrap();
    assert_eq!(report.events_removed, 20);
    assert_eq!(amounts(&storage, 2, 1), [99]);
    assert_eq!(amounts(&storage, 3, 1), [98]);
    assert_eq!(
        amounts(&storage, 1, 1).len(),
        5,
        "its own policy wins over the default"
    );
    let policies = storage.retention_policies().unwrap();
    assert_eq!(policies.len(), 2);
    assert_eq!(policies[0].0, None);
    // A policy that keeps everything clears the stream's own.
    storage
        .set_stream_retention(1, RetentionPolicy::default())
        .unwrap();
    assert_eq!(storage.stream_retention(1).unwrap(), None);
    assert_clean(&storage);
}

#[test]
fn seq_at_time_finds_the_first_event_at_or_after_a_time() {
    use std::time::{Duration, SystemTime};
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let start = SystemTime::now() - Duration::from_secs(1);
    let mut marks = Vec::new();
    for i in 1..=6 {
        marks.push(SystemTime::now());
        writer
            .append(1, ExpectedVersion::Auto, &deposit(i))
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.seq_at_time(&txn, start).unwrap(), Some(1));
    for (i, mark) in marks.iter().enumerate() {
        assert_eq!(
            storage.seq_at_time(&txn, *mark).unwrap(),
            Some(i as u64 + 1)
        );
    }
    assert_eq!(storage.seq_at_time(&txn, SystemTime::now()).unwrap(), None);
    drop(txn);
    // Removed events are not found: the first kept one is.
    storage.truncate_stream(1, 4).unwrap();
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.seq_at_time(&txn, start).unwrap(), Some(4));
    assert_eq!(storage.seq_at_time(&txn, marks[4]).unwrap(), Some(5));
}

#[test]
fn a_background_task_enforces_the_policies_on_its_interval() {
    use std::time::{Duration, Instant};
    use varvedb::{RetentionPolicy, StorageConfig};
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        retention_interval_ms: 50,
        ..Default::default()
    })
    .unwrap();
    interleaved(&storage, 6);
    storage
        .set_default_retention(RetentionPolicy {
            max_count: Some(2),
            ..Default::default()
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while storage.stats().unwrap().events > 4 {
        assert!(Instant::now() < deadline, "the background task did not run");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(amounts(&storage, 1, 1), [5, 6]);
    assert_eq!(amounts(&storage, 2, 1), [1005, 1006]);
    assert_clean(&storage);
}

/// Deletions race appends and readers: nothing errs, every read sees a consistent snapshot
/// (each stream's kept versions consecutive, ending at its head), and the store verifies clean.
#[test]
fn removals_race_appends_and_readers_without_an_error_or_an_inconsistent_read() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u128)
        .map(|w| {
            let storage = storage.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let writer = Writer::<Deposited>::new(storage);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let stream = 1 + w * 10 + u128::from(i % 5);
                    writer
                        .append_batch(stream, ExpectedVersion::Auto, &[deposit(i), deposit(i)])
                        .unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let storage = storage.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let reader = Reader::<Deposited>::new(storage.clone());
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let txn = storage.read_txn().unwrap();
                for stream in [1u128, 2, 3, 11, 12] {
                    let version = reader.stream_version(&txn, stream).unwrap();
                    let versions: Vec<u32> = reader
                        .read_stream(&txn, stream, 1)
                        .map(|e| e.unwrap().version())
                        .collect();
                    if let (Some(first), Some(last)) = (versions.first(), versions.last()) {
                        assert_eq!(*last, version);
                        assert_eq!(versions.len() as u32, last - first + 1);
                    }
                }
                let mut last = 0;
                for e in reader.read_all(&txn, 1) {
                    let seq = e.unwrap().seq();
                    assert!(seq > last);
                    last = seq;
                }
                reads += 1;
            }
            reads
        })
    };
    for round in 0..30u32 {
        for stream in [1u128, 2, 11, 12] {
            let txn = storage.read_txn().unwrap();
            let version = storage.stream_version(&txn, stream).unwrap();
            drop(txn);
            if version > 4 {
                storage.truncate_stream(stream, version - 3).unwrap();
            }
        }
        if round % 10 == 9 {
            storage.delete_stream(3).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(reader.join().unwrap() > 0);
    assert_clean(&storage);
    let stats = storage.stats().unwrap();
    assert!(stats.deleted_events > 0);
    assert_eq!(stats.events + stats.deleted_events, stats.last_seq);
}

/// The header and every event of a store, as an export sees them.
fn exported(storage: &Storage) -> (varvedb::ExportHeader, Vec<varvedb::StoredEvent>) {
    let txn = storage.read_txn().unwrap();
    let header = storage.export_header(&txn).unwrap();
    // Where commit groups end is the store's own (an import makes its own transactions).
    let events = storage
        .export_events(&txn, 1)
        .map(|e| varvedb::StoredEvent {
            ends_group: false,
            ..e.unwrap()
        })
        .collect();
    (header, events)
}

#[test]
fn an_export_carries_removals_and_tombstones_and_imports_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    interleaved(&storage, 12);
    let writer = Writer::<Deposited>::new(storage.clone());
    writer
        .append(3, ExpectedVersion::Auto, &deposit(30))
        .unwrap();
    storage.truncate_stream(1, 9).unwrap();
    storage.delete_stream(2).unwrap();
    writer
        .append(2, ExpectedVersion::Exact(12), &deposit(13))
        .unwrap();
    writer
        .append(2, ExpectedVersion::Auto, &deposit(14))
        .unwrap();
    storage.tombstone_stream(9).unwrap();
    writer
        .append(4, ExpectedVersion::Auto, &deposit(40))
        .unwrap();
    // The log's last event goes: its sequence stays given.
    storage.tombstone_stream(4).unwrap();
    let (header, events) = exported(&storage);
    assert!(header.removed_events > 0);
    assert_eq!(header.bounds.len(), 4);
    // Stream 2's first kept event and stream 1's carry links into removed versions.
    assert!(events.iter().any(|e| e.links.is_some()));

    let copy_dir = tempfile::tempdir().unwrap();
    let copy = open(&copy_dir);
    let mut importer = copy.importer();
    importer.begin(&header).unwrap();
    for e in &events {
        importer.push(e.clone()).unwrap();
    }
    let report = importer.finish(&header).unwrap();
    assert_eq!(report.imported, events.len() as u64);
    assert_clean(&copy);
    // The copy exports the same: every record byte for byte (checksums), bounds and heads.
    assert_eq!(exported(&copy), (header.clone(), events.clone()));
    let (a, b) = (storage.stats().unwrap(), copy.stats().unwrap());
    assert_eq!(
        (a.events, a.deleted_events, a.last_seq),
        (b.events, b.deleted_events, b.last_seq)
    );
    // It behaves as the source: streams go on, tombstones refuse, sequences are not reused.
    let copy_writer = Writer::<Deposited>::new(copy.clone());
    for stream in [4u128, 9] {
        let err = copy_writer
            .append(stream, ExpectedVersion::Auto, &deposit(1))
            .unwrap_err();
        assert!(matches!(err, Error::StreamDeleted { .. }), "{err}");
    }
    let next = copy_writer
        .append(1, ExpectedVersion::Exact(12), &deposit(100))
        .unwrap();
    let source_next = writer
        .append(1, ExpectedVersion::Exact(12), &deposit(100))
        .unwrap();
    assert_eq!(next, source_next);
    assert_eq!(amounts(&copy, 1, 1), amounts(&storage, 1, 1));
    assert_eq!(amounts(&copy, 2, 1), [13, 14]);
    assert_clean(&copy);
}

#[test]
fn removals_are_counted_in_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    interleaved(&storage, 4);
    storage.delete_stream(1).unwrap();
    let text = storage.metrics_text();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert_eq!(value("varvedb_deleted_events_total "), 4.0);
    assert!(value("varvedb_reclaimed_bytes_total ") > 0.0);
}
