//! The race test: eight threads append `Exact(n)` to one stream; exactly one wins each version.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use common::*;
use varvedb::{Error, ExpectedVersion, Reader, Writer};

const THREADS: usize = 8;
const VERSIONS: u32 = 40;

#[test]
fn exactly_one_winner_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let writer = writer.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut wins = Vec::new();
                let mut conflicts = 0;
                for n in 0..VERSIONS {
                    // Everyone waits, then everyone claims version n + 1.
                    barrier.wait();
                    match writer.append(42, ExpectedVersion::Exact(n), &deposit(t as u64)) {
                        Ok(a) => {
                            assert_eq!(a.version, n + 1);
                            wins.push(a.version);
                        }
                        Err(Error::ConcurrencyConflict {
                            expected, actual, ..
                        }) => {
                            assert_eq!(expected, ExpectedVersion::Exact(n));
                            assert_eq!(actual, n + 1, "a loser sees the winner's version");
                            conflicts += 1;
                        }
                        Err(other) => panic!("unexpected error {other}"),
                    }
                }
                (wins, conflicts)
            })
        })
        .collect();
    let mut winners: BTreeMap<u32, usize> = BTreeMap::new();
    let mut conflicts = 0;
    for h in handles {
        let (wins, c) = h.join().unwrap();
        conflicts += c;
        for v in wins {
            *winners.entry(v).or_default() += 1;
        }
    }
    assert_eq!(winners.len(), VERSIONS as usize);
    assert!(winners.values().all(|&n| n == 1), "{winners:?}");
    assert_eq!(conflicts, (THREADS - 1) * VERSIONS as usize);
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let versions: Vec<u32> = reader
        .read_stream(&txn, 42, 1)
        .map(|e| e.unwrap().version())
        .collect();
    assert_eq!(versions, (1..=VERSIONS).collect::<Vec<_>>());
}

#[test]
fn auto_appenders_never_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let per_thread = 50;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let writer = writer.clone();
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|i| {
                        writer
                            .append(5, ExpectedVersion::Auto, &deposit((t * 1000 + i) as u64))
                            .unwrap()
                            .version
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut versions: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=(THREADS * per_thread) as u32).collect::<Vec<_>>()
    );
    let txn = storage.read_txn().unwrap();
    assert_eq!(
        storage.stream_version(&txn, 5).unwrap(),
        (THREADS * per_thread) as u32
    );
}
