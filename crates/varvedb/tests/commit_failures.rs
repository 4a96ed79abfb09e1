//! Failures inside the commit fail what they belong to, and never hang anyone: a damaged end
//! of the log fails every append at once (no overflow, no dead committer), and a damaged stream
//! fails only the appends to that stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use varvedb::{Append, Error, ErrorKind, ExpectedVersion, Writer, Written};

/// A store of one event whose log's last key is `u64::MAX` (a damaged end: nothing can follow).
fn log_ending_at_u64_max() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    {
        let writer = Writer::<Deposited>::new(open(&dir));
        writer
            .append(1, ExpectedVersion::NoStream, &deposit(1))
            .unwrap();
    }
    raw_put(&dir, "events", &u64::MAX.to_be_bytes(), &[0u8; 64]);
    dir
}

#[test]
fn a_log_ending_at_u64_max_fails_every_append_at_once() {
    let dir = log_ending_at_u64_max();

    let writer = Writer::<Deposited>::new(open(&dir));
    for round in 0..2 {
        let started = Instant::now();
        let e = writer
            .append(2, ExpectedVersion::Auto, &deposit(2))
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "append {round} took {:?}",
            started.elapsed()
        );
        assert!(
            matches!(e, Error::Corrupt { seq: u64::MAX, .. }),
            "append {round}: {e:?}"
        );
        assert_eq!(e.written(), Written::No);
    }
    // Nothing was written, and reads still work.
    let storage = writer.storage();
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.stream_version(&txn, 2).unwrap(), 0);
}

#[test]
fn a_damaged_stream_fails_only_its_own_appends() {
    let dir = tempfile::tempdir().unwrap();
    const DAMAGED: u128 = 1000;
    {
        let writer = Writer::<Deposited>::new(open(&dir));
        for v in 0..3 {
            writer
                .append(DAMAGED, ExpectedVersion::Exact(v), &deposit(v.into()))
                .unwrap();
        }
        for s in 0..32u128 {
            writer
                .append(s, ExpectedVersion::NoStream, &deposit(0))
                .unwrap();
        }
    }
    // The head of the damaged stream now claims version 5 at a sequence that does not exist.
    let mut head = [0u8; 16];
    head[..4].copy_from_slice(&5u32.to_le_bytes());
    head[8..].copy_from_slice(&999u64.to_le_bytes());
    raw_put(&dir, "stream_heads", &DAMAGED.to_be_bytes(), &head);

    let writer = Writer::<Deposited>::new(open(&dir));
    let rounds = 10;
    for round in 0..rounds {
        let barrier = Arc::new(Barrier::new(33));
        let healthy: Vec<_> = (0..32u128)
            .map(|s| {
                let writer = writer.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    writer.append(s, ExpectedVersion::Exact(round + 1), &deposit(1))
                })
            })
            .collect();
        let damaged = {
            let writer = writer.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                writer.append(DAMAGED, ExpectedVersion::Auto, &deposit(1))
            })
        };
        for (s, h) in healthy.into_iter().enumerate() {
            let a = h.join().unwrap();
            assert!(a.is_ok(), "round {round}, healthy stream {s}: {a:?}");
        }
        let e = damaged.join().unwrap().unwrap_err();
        assert!(
            matches!(
                e,
                Error::CorruptIndex {
                    stream_id: DAMAGED,
                    ..
                }
            ),
            "round {round}: {e:?}"
        );
    }
    let storage = writer.storage();
    assert!(!storage.is_poisoned());
    let txn = storage.read_txn().unwrap();
    for s in 0..32u128 {
        assert_eq!(storage.stream_version(&txn, s).unwrap(), rounds + 1);
    }
}

/// Whether `e`, or an error in its source chain, is the damaged log end.
fn caused_by_the_log_end(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut at = Some(e);
    while let Some(e) = at {
        if matches!(
            e.downcast_ref::<Error>(),
            Some(Error::Corrupt { seq: u64::MAX, .. })
        ) {
            return true;
        }
        at = e.source();
    }
    false
}

#[test]
fn a_group_failure_keeps_its_cause_in_every_appends_source_chain() {
    let dir = log_ending_at_u64_max();
    let writer = Arc::new(Writer::<Deposited>::new(open(&dir)));
    // Rounds of eight appenders released at once, until the committer has taken several of
    // them into one group (its failure is then the group's, not any one append's).
    let mut shared = 0;
    for _ in 0..200 {
        let barrier = Arc::new(Barrier::new(8));
        let errors: Vec<Error> = (0..8u128)
            .map(|i| {
                let (writer, barrier) = (Arc::clone(&writer), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    writer
                        .append(10 + i, ExpectedVersion::Auto, &deposit(1))
                        .unwrap_err()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        for e in &errors {
            // Whatever the grouping, the cause is there to find, and nothing was written.
            assert!(caused_by_the_log_end(e), "{e:?}");
            assert_eq!(e.written(), Written::No);
            match e {
                Error::CommitFailed { .. } => {
                    assert_eq!(e.kind(), ErrorKind::Unavailable);
                    shared += 1;
                }
                _ => assert_eq!(e.kind(), ErrorKind::Corruption),
            }
        }
        if shared > 0 {
            break;
        }
    }
    assert!(shared > 0, "no two appends ever shared a commit");
}

#[test]
fn every_error_says_what_kind_of_failure_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Writer::<Deposited>::new(open(&dir));
    writer
        .append(1, ExpectedVersion::NoStream, &deposit(1))
        .unwrap();
    let conflict = writer
        .append(1, ExpectedVersion::NoStream, &deposit(2))
        .unwrap_err();
    assert_eq!(conflict.kind(), ErrorKind::Conflict);
    let empty = writer.commit(Append::new()).unwrap_err();
    assert!(matches!(empty, Error::EmptyBatch));
    assert_eq!(empty.kind(), ErrorKind::InvalidInput);
    let storage = writer.storage().clone();
    drop(writer);
    drop(storage);
    raw_put(&dir, "events", &u64::MAX.to_be_bytes(), &[0u8; 64]);
    let writer = Writer::<Deposited>::new(open(&dir));
    let corrupt = writer
        .append(2, ExpectedVersion::Auto, &deposit(3))
        .unwrap_err();
    assert_eq!(corrupt.kind(), ErrorKind::Corruption);
}
