//! Every `ExpectedVersion`, conflicts that name both versions, and atomic batches.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use varvedb::{Append, Appended, Error, ExpectedVersion, Reader, Writer};

#[test]
fn versions_start_at_one_and_have_no_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let a = writer
        .append(7, ExpectedVersion::NoStream, &deposit(1))
        .unwrap();
    assert_eq!(a, Appended { seq: 1, version: 1 });
    let b = writer
        .append(9, ExpectedVersion::Auto, &deposit(2))
        .unwrap();
    assert_eq!(b, Appended { seq: 2, version: 1 });
    let c = writer
        .append(7, ExpectedVersion::Exact(1), &deposit(3))
        .unwrap();
    assert_eq!(c, Appended { seq: 3, version: 2 });
}

#[test]
fn exact_conflict_names_expected_and_actual_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    writer
        .append(7, ExpectedVersion::Exact(0), &deposit(1))
        .unwrap();
    writer
        .append(7, ExpectedVersion::Exact(1), &deposit(2))
        .unwrap();
    let err = writer
        .append(7, ExpectedVersion::Exact(1), &deposit(3))
        .unwrap_err();
    match err {
        Error::ConcurrencyConflict {
            stream_id,
            expected,
            actual,
        } => {
            assert_eq!(
                (stream_id, expected, actual),
                (7, ExpectedVersion::Exact(1), 2)
            );
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(err_text(7, ExpectedVersion::Exact(5), 2).contains("version 5"));
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.stream_version(&txn, 7).unwrap(), 2);
    assert_eq!(storage.last_seq(&txn).unwrap(), 2);
}

fn err_text(stream_id: u128, expected: ExpectedVersion, actual: u32) -> String {
    Error::ConcurrencyConflict {
        stream_id,
        expected,
        actual,
    }
    .to_string()
}

#[test]
fn no_stream_and_stream_exists() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Writer::<Deposited>::new(open(&dir));
    assert!(matches!(
        writer.append(1, ExpectedVersion::StreamExists, &deposit(1)),
        Err(Error::ConcurrencyConflict {
            actual: 0,
            expected: ExpectedVersion::StreamExists,
            ..
        })
    ));
    writer
        .append(1, ExpectedVersion::NoStream, &deposit(1))
        .unwrap();
    assert!(matches!(
        writer.append(1, ExpectedVersion::NoStream, &deposit(2)),
        Err(Error::ConcurrencyConflict {
            actual: 1,
            expected: ExpectedVersion::NoStream,
            ..
        })
    ));
    assert!(matches!(
        writer.append(1, ExpectedVersion::Exact(0), &deposit(2)),
        Err(Error::ConcurrencyConflict { actual: 1, .. })
    ));
    assert_eq!(
        writer
            .append(1, ExpectedVersion::StreamExists, &deposit(2))
            .unwrap()
            .version,
        2
    );
    assert_eq!(
        writer
            .append(1, ExpectedVersion::Auto, &deposit(3))
            .unwrap()
            .version,
        3
    );
}

#[test]
fn batch_is_atomic_and_consecutive() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    writer
        .append(3, ExpectedVersion::NoStream, &deposit(0))
        .unwrap();
    let events: Vec<_> = (1..=5).map(deposit).collect();
    let out = writer
        .append_batch(3, ExpectedVersion::Exact(1), &events)
        .unwrap();
    assert_eq!(
        out.iter().map(|a| a.version).collect::<Vec<_>>(),
        [2, 3, 4, 5, 6]
    );
    assert_eq!(
        out.iter().map(|a| a.seq).collect::<Vec<_>>(),
        [2, 3, 4, 5, 6]
    );
    // A conflicting batch writes none of its events.
    assert!(matches!(
        writer.append_batch(3, ExpectedVersion::Exact(1), &events),
        Err(Error::ConcurrencyConflict { .. })
    ));
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let amounts: Vec<u64> = reader
        .read_stream(&txn, 3, 1)
        .map(|e| e.unwrap().amount.to_native())
        .collect();
    assert_eq!(amounts, [0, 1, 2, 3, 4, 5]);
}

#[test]
fn multi_stream_append_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let one = [deposit(1)];
    let two = [deposit(2), deposit(3)];
    let out = writer
        .commit(Append::stream(10, ExpectedVersion::NoStream, &one[..]).and(
            20,
            ExpectedVersion::Auto,
            &two[..],
        ))
        .unwrap();
    assert_eq!(
        out,
        [
            Appended { seq: 1, version: 1 },
            Appended { seq: 2, version: 1 },
            Appended { seq: 3, version: 2 }
        ]
    );
    // The second expectation fails, so the first stream's events must not land either.
    let err = writer
        .commit(Append::stream(10, ExpectedVersion::Exact(1), &one[..]).and(
            20,
            ExpectedVersion::Exact(7),
            &two[..],
        ))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::ConcurrencyConflict {
            stream_id: 20,
            actual: 2,
            ..
        }
    ));
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.stream_version(&txn, 10).unwrap(), 1);
    assert_eq!(storage.last_seq(&txn).unwrap(), 3);
    drop(txn);
    // One stream twice: the second entry sees the first entry's events.
    let out = writer
        .commit(Append::stream(10, ExpectedVersion::Exact(1), &one[..]).and(
            10,
            ExpectedVersion::Exact(2),
            &one[..],
        ))
        .unwrap();
    assert_eq!(out.iter().map(|a| a.version).collect::<Vec<_>>(), [2, 3]);
    // Owned vectors pass as slices.
    let (a, b) = (vec![deposit(1), deposit(2)], vec![deposit(3)]);
    let out = writer
        .commit(
            Append::stream(30, ExpectedVersion::NoStream, a.as_slice()).and(
                31,
                ExpectedVersion::Auto,
                b.as_slice(),
            ),
        )
        .unwrap();
    assert_eq!(out.len(), 3);
}
