//! Growing the memory map: a failed resize refuses everything (LMDB's map is gone), and the
//! resize gate never makes a thread that holds a snapshot wait for itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use varvedb::{Error, ExpectedVersion, Storage, StorageConfig, Writer};

const CHILD_ENV: &str = "VARVEDB_RESIZE_FAILURE_CHILD_DIR";

fn kib(i: u64) -> Deposited {
    Deposited {
        account: i,
        amount: i,
        note: "r".repeat(900),
    }
}

/// This process's address space in bytes (`VmSize`).
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// In the child: limits its own address space (`ulimit -v`, through `prlimit` on itself) to a
/// little more than it uses, then appends until the map cannot grow.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_grows_under_an_address_space_limit() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let storage = Storage::open(StorageConfig {
        path: dir.into(),
        map_bytes_initial: 1 << 20,
        map_bytes_max: 64 << 30,
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    writer.append(0, ExpectedVersion::Auto, &kib(0)).unwrap();
    let limit = vm_size() + (24 << 20);
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--as={limit}:{limit}"))
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success());

    let mut out = std::io::stdout().lock();
    let mut acked = 0u64;
    let batch: Vec<Deposited> = (0..200).map(kib).collect();
    let err = loop {
        match writer.append_batch(1, ExpectedVersion::Auto, &batch) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 10_000, "the address-space limit never hit");
    };
    writeln!(out, "\nfailed-after {acked}").unwrap();
    writeln!(out, "append-error {err}").unwrap();
    writeln!(
        out,
        "append-refused {}",
        matches!(err, Error::Poisoned { .. })
    )
    .unwrap();
    writeln!(out, "is-poisoned {}", storage.is_poisoned()).unwrap();
    let read = storage.read_txn();
    writeln!(
        out,
        "read-refused {}",
        matches!(read, Err(Error::Poisoned { .. }))
    )
    .unwrap();
    let stats = storage.stats();
    writeln!(
        out,
        "stats-refused {}",
        matches!(stats, Err(Error::Poisoned { .. }))
    )
    .unwrap();
    let verify = storage.verify();
    writeln!(
        out,
        "verify-refused {}",
        matches!(verify, Err(Error::Poisoned { .. }))
    )
    .unwrap();
    let again = writer.append(1, ExpectedVersion::Auto, &kib(1));
    writeln!(
        out,
        "again-refused {}",
        matches!(again, Err(Error::Poisoned { .. }))
    )
    .unwrap();
    writeln!(out, "done").unwrap();
}

#[test]
fn a_failed_map_resize_refuses_reads_and_appends_instead_of_crashing() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "--ignored",
            "child_grows_under_an_address_space_limit",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the child died ({:?}):\n{stdout}\n{stderr}",
        output.status
    );
    for field in [
        "append-refused",
        "is-poisoned",
        "read-refused",
        "stats-refused",
        "verify-refused",
        "again-refused",
    ] {
        assert!(
            stdout.contains(&format!("{field} true")),
            "{field}:\n{stdout}\n{stderr}"
        );
    }
    // Without the limit, the store opens with what was acknowledged.
    let storage = open(&dir);
    assert!(storage.verify().unwrap().is_clean());
}

/// Waits until a map growth waits for this process's snapshots (the state the test is about).
fn wait_until_growth_waits(storage: &Storage) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !varvedb::__bench::resize_waiting(storage) {
        assert!(Instant::now() < deadline, "no growth started waiting");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_thread_holding_a_snapshot_opens_more_while_growth_waits() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        map_bytes_initial: 1 << 20,
        map_bytes_max: 1 << 30,
        // Long enough that waiting for it would fail the test.
        resize_wait_ms_max: 60_000,
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    writer
        .append(1, ExpectedVersion::NoStream, &kib(0))
        .unwrap();

    let held = storage.read_txn().unwrap();
    // About 2 MB: more than the 1 MiB map holds, so the committer must grow it, and waits for
    // `held` (early growth never runs while a snapshot is open).
    let appender = {
        let writer = writer.clone();
        std::thread::spawn(move || {
            let batch: Vec<Deposited> = (0..2000).map(kib).collect();
            writer.append_batch(2, ExpectedVersion::NoStream, &batch)
        })
    };
    wait_until_growth_waits(&storage);

    let started = Instant::now();
    let second = storage.read_txn().unwrap();
    let stats = storage.stats().unwrap();
    let report = storage.verify().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a reader already inside waited {:?} for the growth it blocks",
        started.elapsed()
    );
    assert_eq!(stats.events, 1);
    assert!(report.is_clean());
    assert_eq!(storage.open_read_txns(), 2);
    drop((held, second));

    // With every snapshot gone, the growth goes ahead and the append lands.
    let appended = appender.join().unwrap().unwrap();
    assert_eq!(appended.len(), 2000);
    assert!(storage.stats().unwrap().map_bytes > 1 << 20);
}

#[test]
fn an_appender_holding_a_snapshot_is_told_at_once_and_others_wait_for_the_growth() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        map_bytes_initial: 1 << 20,
        map_bytes_max: 1 << 30,
        resize_wait_ms_max: 60_000,
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    writer
        .append(1, ExpectedVersion::NoStream, &kib(0))
        .unwrap();
    let batch: Vec<Deposited> = (0..2000).map(kib).collect();

    // The optimistic pattern: read the version, append while the snapshot is still open. The
    // append needs the map to grow, which waits for that very snapshot.
    let txn = storage.read_txn().unwrap();
    let version = storage.stream_version(&txn, 2).unwrap();
    let started = Instant::now();
    let err = writer
        .append_batch(2, ExpectedVersion::Exact(version), &batch)
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the appender waited {:?} for its own snapshot",
        started.elapsed()
    );
    assert!(matches!(err, Error::ResizeBlocked { .. }), "{err:?}");
    assert_eq!(err.written(), varvedb::Written::No);

    // Another thread's append in the same situation waits for the growth instead of failing,
    // and lands once the snapshot is gone.
    let other = {
        let writer = writer.clone();
        let batch = batch.clone();
        std::thread::spawn(move || writer.append_batch(3, ExpectedVersion::NoStream, &batch))
    };
    wait_until_growth_waits(&storage);
    drop(txn);
    assert_eq!(other.join().unwrap().unwrap().len(), 2000);
    // Without the snapshot, the first append goes through.
    writer
        .append_batch(2, ExpectedVersion::Exact(version), &batch)
        .unwrap();
}
