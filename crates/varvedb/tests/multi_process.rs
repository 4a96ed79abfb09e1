//! Two processes append to one store: each sees the other's events (LMDB allows several
//! processes per environment; the committer's cache of stream heads must notice).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::process::Command;

use common::*;
use varvedb::{Error, ExpectedVersion, Reader, Writer};

const ENV_VAR: &str = "VARVEDB_MULTI_PROCESS_DIR";

/// The child: appends two events to stream 1, whatever its version. Does nothing in a normal run.
#[test]
fn child_appender() {
    let Some(writer) = writer_for_child(ENV_VAR) else {
        return;
    };
    for i in 0..2 {
        writer
            .append(1, ExpectedVersion::Auto, &deposit(100 + i))
            .unwrap();
    }
}

#[test]
fn appends_of_another_process_are_seen_by_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    for v in 0..3 {
        writer
            .append(1, ExpectedVersion::Exact(v), &deposit(v.into()))
            .unwrap();
    }
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_appender", "--test-threads=1"])
        .env(ENV_VAR, dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    // This process last saw version 3; the child took the stream to 5.
    let err = writer
        .append(1, ExpectedVersion::Exact(3), &deposit(3))
        .unwrap_err();
    assert!(
        matches!(err, Error::ConcurrencyConflict { actual: 5, .. }),
        "{err}"
    );
    let a = writer
        .append(1, ExpectedVersion::Exact(5), &deposit(5))
        .unwrap();
    assert_eq!((a.seq, a.version), (6, 6));
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let amounts: Vec<u64> = reader
        .read_stream(&txn, 1, 1)
        .map(|e| e.unwrap().amount.to_native())
        .collect();
    assert_eq!(amounts, [0, 1, 2, 100, 101, 5]);
    for v in 1..=6 {
        assert_eq!(
            reader
                .get_by_version(&txn, 1, v)
                .unwrap()
                .unwrap()
                .version(),
            v
        );
    }
}
