//! Several processes on one store: each sees the other's appends (LMDB allows several processes
//! per environment; the committer's cache of stream heads must notice), a killed reader's slot
//! does not pin pages forever, and another process's map growth blocks no read silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;
use varvedb::{Durability, Error, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

const ENV_VAR: &str = "VARVEDB_MULTI_PROCESS_DIR";

/// The child: appends two events to stream 1, whatever its version. Does nothing in a normal run.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
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
        .args(["--exact", "--ignored", "child_appender", "--test-threads=1"])
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

const STALE_ENV: &str = "VARVEDB_STALE_READER_DIR";
const GROW_ENV: &str = "VARVEDB_GROWING_CHILD_DIR";

fn small_map(dir: &std::path::Path) -> StorageConfig {
    StorageConfig {
        path: dir.into(),
        durability: Durability::NoSync,
        map_bytes_initial: 1 << 20,
        map_bytes_max: 1 << 30,
        resize_wait_ms_max: 60_000,
        ..Default::default()
    }
}

/// The child: takes a snapshot, says so, and waits to be killed with it open.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_holds_a_snapshot_until_killed() {
    let Ok(dir) = std::env::var(STALE_ENV) else {
        return;
    };
    let storage = Storage::open(small_map(dir.as_ref())).unwrap();
    let txn = storage.read_txn().unwrap();
    println!("\nready");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(120));
    drop(txn);
}

/// The child: appends about 4 MB, growing the map past the parent's.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_grows_the_store() {
    let Ok(dir) = std::env::var(GROW_ENV) else {
        return;
    };
    let writer = Writer::<Deposited>::new(Storage::open(small_map(dir.as_ref())).unwrap());
    let note = "g".repeat(900);
    for b in 0..20u128 {
        let batch: Vec<Deposited> = (0..200)
            .map(|i| Deposited {
                account: i,
                amount: i,
                note: note.clone(),
            })
            .collect();
        writer
            .append_batch(100 + b, ExpectedVersion::NoStream, &batch)
            .unwrap();
    }
}

#[test]
fn a_killed_readers_slot_is_cleared_and_pins_no_pages() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(small_map(dir.path())).unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    writer
        .append(1, ExpectedVersion::NoStream, &deposit(0))
        .unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "--ignored",
            "child_holds_a_snapshot_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(STALE_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap() == "ready"),
        "the child never took its snapshot"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // This process kept the store open, so LMDB does not reset its reader table: the dead
    // child's slot stays, pinning every page freed after its snapshot, unless it is cleared.
    // Each of these commits frees a few pages; pinned, they would need about 50 MB.
    for v in 1..=3000u32 {
        writer
            .append(1, ExpectedVersion::Exact(v), &deposit(v.into()))
            .unwrap();
    }
    let stats = storage.stats().unwrap();
    assert!(
        stats.map_bytes <= 8 << 20,
        "the map grew to {} bytes: freed pages were not reused",
        stats.map_bytes
    );
}

#[test]
fn a_read_blocked_by_another_processs_growth_says_so_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(small_map(dir.path())).unwrap();
    Writer::<Deposited>::new(storage.clone())
        .append(1, ExpectedVersion::NoStream, &deposit(0))
        .unwrap();
    let held = storage.read_txn().unwrap();

    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "--ignored",
            "child_grows_the_store",
            "--test-threads=1",
        ])
        .env(GROW_ENV, dir.path())
        .status()
        .unwrap();
    assert!(status.success());

    // A new snapshot must adopt the child's larger map, which needs `held` gone: this thread
    // would wait for itself. It gets an error about reads at once instead.
    let started = std::time::Instant::now();
    let err = storage.read_txn().unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "waited {:?}",
        started.elapsed()
    );
    assert!(matches!(err, Error::ReadBlocked { .. }), "{err:?}");
    assert!(err.to_string().contains("read"), "{err}");
    drop(held);

    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.last_seq(&txn).unwrap(), 1 + 20 * 200);
}

#[test]
fn the_bus_notices_appends_of_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    Writer::<Deposited>::new(storage.clone())
        .append(1, ExpectedVersion::NoStream, &deposit(0))
        .unwrap();
    let mut rx = storage.subscribe();
    assert_eq!(*rx.borrow_and_update(), 1, "the bus starts at the head");
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "--ignored", "child_appender", "--test-threads=1"])
        .env(ENV_VAR, dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    // The child appended two events; the poller publishes them within its interval.
    let started = std::time::Instant::now();
    loop {
        if *rx.borrow() == 3 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the bus never saw the other process's appends"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
