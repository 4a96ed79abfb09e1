//! Failures inside the commit fail what they belong to, and never hang anyone: a damaged end
//! of the log fails every append at once (no overflow, no dead committer), and a damaged stream
//! fails only the appends to that stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use varvedb::{Error, ExpectedVersion, Writer, Written};

#[test]
fn a_log_ending_at_u64_max_fails_every_append_at_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let writer = Writer::<Deposited>::new(open(&dir));
        writer
            .append(1, ExpectedVersion::NoStream, &deposit(1))
            .unwrap();
    }
    raw_put(&dir, "events", &u64::MAX.to_be_bytes(), &[0u8; 64]);

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
