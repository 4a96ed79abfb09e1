//! `get`, `get_by_version`, `read_stream` both ways, `read_all`, `stream_version`, `last_seq`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use varvedb::{Error, ExpectedVersion, Reader, Writer};

fn fill() -> (tempfile::TempDir, varvedb::Storage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    // Streams 1 and 2 interleaved: seq 1..=10, stream 1 holds odd amounts.
    for i in 1..=10u64 {
        writer
            .append(
                if i % 2 == 1 { 1 } else { 2 },
                ExpectedVersion::Auto,
                &deposit(i),
            )
            .unwrap();
    }
    (dir, storage)
}

#[test]
fn empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert!(reader.get(&txn, 1).unwrap().is_none());
    assert!(reader.get(&txn, 0).unwrap().is_none());
    assert!(reader.get_by_version(&txn, 1, 1).unwrap().is_none());
    assert_eq!(reader.read_all(&txn, 1).count(), 0);
    assert_eq!(reader.read_stream(&txn, 1, 1).count(), 0);
    assert_eq!(reader.read_stream_backwards(&txn, 1, u32::MAX).count(), 0);
    assert_eq!(reader.stream_version(&txn, 1).unwrap(), 0);
    assert_eq!(reader.last_seq(&txn).unwrap(), 0);
}

#[test]
fn point_reads() {
    let (_dir, storage) = fill();
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let e = reader.get(&txn, 4).unwrap().unwrap();
    assert_eq!(
        (e.seq(), e.stream_id(), e.version(), e.amount.to_native()),
        (4, 2, 2, 4)
    );
    assert!(e.timestamp_ns() > 1_600_000_000_000_000_000);
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(e.timestamp_ns());
    assert!(at <= std::time::SystemTime::now());
    assert_eq!(e.note, "deposit 4");
    assert!(reader.get(&txn, 11).unwrap().is_none());
    let e = reader.get_by_version(&txn, 1, 3).unwrap().unwrap();
    assert_eq!((e.seq(), e.amount.to_native()), (5, 5));
    assert!(reader.get_by_version(&txn, 1, 6).unwrap().is_none());
    assert!(reader.get_by_version(&txn, 1, 0).unwrap().is_none());
    assert_eq!(reader.stream_version(&txn, 1).unwrap(), 5);
    assert_eq!(reader.stream_version(&txn, 3).unwrap(), 0);
    assert_eq!(reader.last_seq(&txn).unwrap(), 10);
}

#[test]
fn stream_reads_in_both_directions() {
    let (_dir, storage) = fill();
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let forward: Vec<(u32, u64)> = reader
        .read_stream(&txn, 2, 1)
        .map(|e| e.unwrap())
        .map(|e| (e.version(), e.seq()))
        .collect();
    assert_eq!(forward, [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10)]);
    let from3: Vec<u32> = reader
        .read_stream(&txn, 2, 3)
        .map(|e| e.unwrap().version())
        .collect();
    assert_eq!(from3, [3, 4, 5]);
    assert_eq!(reader.read_stream(&txn, 2, 6).count(), 0);
    let back: Vec<u32> = reader
        .read_stream_backwards(&txn, 1, u32::MAX)
        .map(|e| e.unwrap().version())
        .collect();
    assert_eq!(back, [5, 4, 3, 2, 1]);
    let back3: Vec<u64> = reader
        .read_stream_backwards(&txn, 1, 3)
        .map(|e| e.unwrap().seq())
        .collect();
    assert_eq!(back3, [5, 3, 1]);
    // Streams next to each other in key order do not bleed into each other.
    assert_eq!(reader.read_stream(&txn, 0, 0).count(), 0);
    assert_eq!(reader.read_stream(&txn, 3, 0).count(), 0);
}

#[test]
fn global_reads_in_sequence_order() {
    let (_dir, storage) = fill();
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let all: Vec<u64> = reader.read_all(&txn, 1).map(|e| e.unwrap().seq()).collect();
    assert_eq!(all, (1..=10).collect::<Vec<_>>());
    let from0: Vec<u64> = reader.read_all(&txn, 0).map(|e| e.unwrap().seq()).collect();
    assert_eq!(from0, all);
    let tail: Vec<u64> = reader
        .read_all(&txn, 8)
        .map(|e| e.unwrap().amount.to_native())
        .collect();
    assert_eq!(tail, [8, 9, 10]);
    assert_eq!(reader.read_all(&txn, 11).count(), 0);
}

#[test]
fn a_snapshot_does_not_see_later_appends() {
    let (_dir, storage) = fill();
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    Writer::<Deposited>::new(storage.clone())
        .append(1, ExpectedVersion::Auto, &deposit(11))
        .unwrap();
    assert_eq!(reader.read_all(&txn, 1).count(), 10);
    assert_eq!(reader.stream_version(&txn, 1).unwrap(), 5);
    drop(txn);
    let txn = storage.read_txn().unwrap();
    assert_eq!(reader.read_all(&txn, 1).count(), 11);
}

#[test]
fn a_transaction_of_another_store_is_refused() {
    let (_dir, storage) = fill();
    let (_other_dir, other) = fill();
    let reader = Reader::<Deposited>::new(storage.clone());
    let foreign = other.read_txn().unwrap();
    assert!(matches!(
        reader.get(&foreign, 1),
        Err(Error::ForeignTransaction)
    ));
    assert!(matches!(
        reader.get_by_version(&foreign, 1, 1),
        Err(Error::ForeignTransaction)
    ));
    assert!(matches!(
        reader.stream_version(&foreign, 1),
        Err(Error::ForeignTransaction)
    ));
    let mut all = reader.read_all(&foreign, 1);
    assert!(matches!(all.next(), Some(Err(Error::ForeignTransaction))));
    assert!(all.next().is_none(), "the error is reported once");
    let mut stream = reader.read_stream(&foreign, 1, 1);
    assert!(matches!(
        stream.next(),
        Some(Err(Error::ForeignTransaction))
    ));
    assert!(stream.next().is_none());
}

#[test]
fn reading_with_the_wrong_type_is_a_type_mismatch_everywhere() {
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
    struct Big {
        a: u128,
    }
    let (_dir, storage) = fill();
    let reader = Reader::<Big>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let err = reader.get(&txn, 1).unwrap_err();
    assert!(
        matches!(&err, Error::TypeMismatch { seq: 1, expected, found }
            if expected == "Big v1" && found == "Deposited v1"),
        "{err:?}"
    );
    let all: Vec<_> = reader.read_all(&txn, 1).collect();
    assert_eq!(all.len(), 10, "each mismatch is reported once and skipped");
    assert!(
        all.iter()
            .all(|r| matches!(r, Err(Error::TypeMismatch { .. })))
    );
    let stream: Vec<_> = reader.read_stream(&txn, 1, 1).collect();
    assert!(!stream.is_empty());
    assert!(
        stream
            .iter()
            .all(|r| matches!(r, Err(Error::TypeMismatch { .. })))
    );
    let back: Vec<_> = reader.read_stream_backwards(&txn, 1, u32::MAX).collect();
    assert_eq!(back.len(), stream.len());
    assert!(
        back.iter()
            .all(|r| matches!(r, Err(Error::TypeMismatch { .. })))
    );
}

#[test]
fn a_type_that_claims_the_name_but_not_the_layout_is_an_invalid_event() {
    // Same name and version as `Deposited`, another layout: the type check passes, and rkyv's
    // validation still refuses the bytes.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
    #[event(name = "Deposited")]
    struct Impostor {
        a: u128,
        b: u128,
        c: u128,
        d: u128,
        e: u128,
    }
    let (_dir, storage) = fill();
    let reader = Reader::<Impostor>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert!(matches!(
        reader.get(&txn, 1),
        Err(Error::InvalidEvent { seq: 1, .. })
    ));
}
