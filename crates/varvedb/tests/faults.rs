//! Faults at the edges of the environment: running out of LMDB's reader slots, and a store on
//! a read-only filesystem. Each is a clear, typed error at once, never a hang or a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use varvedb::{Error, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

#[test]
fn running_out_of_reader_slots_is_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        readers_max: 4,
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    writer
        .append(1, ExpectedVersion::NoStream, &deposit(1))
        .unwrap();
    let mut held = Vec::new();
    let started = Instant::now();
    let err = loop {
        match storage.read_txn() {
            Ok(txn) => held.push(txn),
            Err(e) => break e,
        }
        assert!(
            held.len() <= 64,
            "readers_max 4, and {} snapshots open",
            held.len()
        );
    };
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited {:?}",
        started.elapsed()
    );
    assert!(!held.is_empty());
    let text = err.to_string();
    assert!(
        matches!(&err, Error::Lmdb(_)) && text.contains("readers"),
        "{err:?}: {text}"
    );
    // Writes take no reader slot: appends go on, and a slot freed is usable again.
    writer
        .append(1, ExpectedVersion::Exact(1), &deposit(2))
        .unwrap();
    held.pop();
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    assert_eq!(reader.last_seq(&txn).unwrap(), 2);
}

const CREATE_ENV: &str = "VARVEDB_RO_CREATE_DIR";
const OPEN_ENV: &str = "VARVEDB_RO_OPEN_DIR";

#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_creates_a_store() {
    let Some(dir) = std::env::var_os(CREATE_ENV) else {
        return;
    };
    let storage = Storage::open(StorageConfig {
        path: dir.into(),
        ..Default::default()
    })
    .unwrap();
    Writer::<Deposited>::new(storage)
        .append(1, ExpectedVersion::NoStream, &deposit(7))
        .unwrap();
}

#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_opens_on_a_read_only_filesystem() {
    let Some(dir) = std::env::var_os(OPEN_ENV) else {
        return;
    };
    let mut out = std::io::stdout().lock();
    let dir = std::path::PathBuf::from(dir);
    for (what, path) in [("existing", dir.join("store")), ("new", dir.join("fresh"))] {
        match Storage::open(StorageConfig {
            path,
            ..Default::default()
        }) {
            Ok(_) => writeln!(out, "\n{what} opened").unwrap(),
            Err(e) => writeln!(out, "\n{what} error {e:?} | {e}").unwrap(),
        }
    }
}

/// A read-only filesystem: a tmpfs remounted read-only in a mount namespace of its own (`unshare
/// -m`, where the sandbox allows it; as root, file modes alone do not stop writes).
#[test]
fn a_read_only_filesystem_is_a_clear_error_at_open() {
    let probe = Command::new("unshare")
        .args(["-m", "true"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        // Under CI a missing prerequisite fails the test: a skip there would pass as proof.
        assert!(
            std::env::var_os("CI").is_none(),
            "no mount namespaces under CI (`unshare -m` failed): this test cannot run"
        );
        eprintln!("skipped: no mount namespaces here (`unshare -m` failed)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "set -e; mount -t tmpfs -o size=8m tmpfs '{dir}'; \
         {CREATE_ENV}='{dir}/store' '{exe}' --exact --ignored child_creates_a_store --test-threads=1 >/dev/null; \
         mount -o remount,ro '{dir}'; \
         {OPEN_ENV}='{dir}' '{exe}' --exact --ignored child_opens_on_a_read_only_filesystem --nocapture --test-threads=1",
        dir = dir.path().display(),
        exe = exe.display()
    );
    let output = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = |what: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{what} ")).map(str::to_owned))
            .unwrap_or_else(|| {
                panic!(
                    "child printed nothing for {what}: {stdout}\n{}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })
    };
    // Both are `Error::Io` naming the store's path and the OS error.
    for (what, path) in [("existing", "store"), ("new", "fresh")] {
        let got = line(what);
        assert!(got.starts_with("error Io {"), "{what}: {got}");
        assert!(got.contains("Read-only file system"), "{what}: {got}");
        assert!(
            got.contains(&format!("I/O error on {}/{path}", dir.path().display())),
            "{what}: {got}"
        );
    }
}
