//! Crypto-shredding and key rotation where they meet another handle: a shred or a rotation made
//! by another process, appends racing a rotation, and a handle without the master key on an
//! encrypted store. Each test here failed before the keystore generation (issue 26).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Deposited, deposit};
use varvedb::{Durability, Error, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

const KEY: [u8; 32] = [7u8; 32];

fn encrypted(dir: &Path, key: [u8; 32]) -> StorageConfig {
    StorageConfig {
        path: dir.into(),
        encryption_enabled: true,
        master_key: Some(key),
        durability: Durability::NoSync,
        ..Default::default()
    }
}

fn child(test: &str, env: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "--ignored",
        test,
        "--test-threads=1",
        "--nocapture",
    ])
    .env(env, dir);
    cmd
}

const SHRED_ENV: &str = "VARVEDB_SHRED_CHILD_DIR";

/// The child: shreds stream 7 of the store in `SHRED_ENV`, without the master key (a shred
/// needs none). Does nothing in a normal run.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_shredder() {
    let Ok(dir) = std::env::var(SHRED_ENV) else {
        return;
    };
    let storage = Storage::open(StorageConfig {
        path: dir.into(),
        ..Default::default()
    })
    .unwrap();
    let report = storage.shred_stream(7).unwrap();
    assert!(!report.already);
    assert_eq!(report.events, 3);
}

#[test]
fn a_shred_by_another_process_is_enforced_at_the_next_snapshot_and_append() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(encrypted(dir.path(), KEY)).unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    let reader = Reader::<Deposited>::new(storage.clone());
    for stream in [7u128, 8] {
        for v in 0..3 {
            writer
                .append(stream, ExpectedVersion::Exact(v), &deposit(v.into()))
                .unwrap();
        }
    }
    // The key is warm in this process: in the reader's cache and in the committer's.
    {
        let txn = storage.read_txn().unwrap();
        assert_eq!(reader.read_stream(&txn, 7, 1).count(), 3);
    }
    // A snapshot from before the shred keeps seeing what it saw (LMDB's isolation).
    let before = storage.read_txn().unwrap();

    let status = child("child_shredder", SHRED_ENV, dir.path())
        .status()
        .unwrap();
    assert!(status.success());

    // The next snapshot: the stream is shredded.
    let txn = storage.read_txn().unwrap();
    let err = reader.get_by_version(&txn, 7, 1).unwrap_err();
    assert!(matches!(err, Error::Shredded { stream_id: 7, .. }), "{err}");
    for e in reader.read_stream(&txn, 7, 1) {
        assert!(matches!(e, Err(Error::Shredded { stream_id: 7, .. })));
    }
    assert!(storage.is_shredded(&txn, 7).unwrap());
    let raw = storage.raw_reader();
    assert!(raw.get(&txn, 1).unwrap().unwrap().is_shredded());
    // The other stream is untouched.
    assert_eq!(
        reader
            .read_stream(&txn, 8, 1)
            .map(|e| e.unwrap().amount.to_native())
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    drop(txn);
    // The older snapshot still reads its own state, and puts no key back into the cache.
    assert_eq!(
        reader
            .get_by_version(&before, 7, 2)
            .unwrap()
            .unwrap()
            .amount,
        1
    );
    drop(before);
    let txn = storage.read_txn().unwrap();
    assert!(matches!(
        reader.get_by_version(&txn, 7, 2),
        Err(Error::Shredded { .. })
    ));
    drop(txn);

    // The next append: refused, and nothing written.
    let err = writer
        .append(7, ExpectedVersion::Auto, &deposit(99))
        .unwrap_err();
    assert!(
        matches!(err, Error::StreamShredded { stream_id: 7 }),
        "{err}"
    );
    let err = writer
        .append(7, ExpectedVersion::Exact(3), &deposit(99))
        .unwrap_err();
    assert!(
        matches!(err, Error::StreamShredded { stream_id: 7 }),
        "{err}"
    );
    writer
        .append(8, ExpectedVersion::Exact(3), &deposit(3))
        .unwrap();
    let txn = storage.read_txn().unwrap();
    assert_eq!(storage.last_seq(&txn).unwrap(), 7);
    assert_eq!(storage.stream_version(&txn, 7).unwrap(), 3);
    drop(txn);
    // Nothing left to release: a second shred is "already", with nothing behind it.
    assert!(storage.shred_stream(7).unwrap().already);
    assert!(storage.verify().unwrap().is_clean());
}

const ROTATE_ENV: &str = "VARVEDB_ROTATE_CHILD_DIR";

/// The child: with the first master key, creates new streams (ids from 1_000_000) until its
/// key is retired by the parent's rotation, printing each acknowledged stream; then shows
/// that the retired key creates nothing. Does nothing in a normal run.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_creates_streams_under_the_old_key() {
    let Ok(dir) = std::env::var(ROTATE_ENV) else {
        return;
    };
    let storage = Storage::open(encrypted(Path::new(&dir), KEY)).unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut stream = 1_000_000u128;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotation never reached this process"
        );
        match writer.append(stream, ExpectedVersion::NoStream, &deposit(1)) {
            Ok(_) => writeln!(out, "acked {stream}").unwrap(),
            Err(Error::MasterKeyRotated) => break,
            Err(e) => panic!("unexpected: {e}"),
        }
        out.flush().unwrap();
        stream += 1;
    }
    // Retired for good: no new stream, whatever its id.
    for s in stream..stream + 5 {
        assert!(matches!(
            writer.append(s, ExpectedVersion::NoStream, &deposit(1)),
            Err(Error::MasterKeyRotated)
        ));
    }
    writeln!(out, "retired").unwrap();
}

#[test]
fn another_process_never_wraps_a_new_key_under_a_retired_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let new_key = [9u8; 32];
    {
        let storage = Storage::open(encrypted(dir.path(), KEY)).unwrap();
        Writer::<Deposited>::new(storage)
            .append(1, ExpectedVersion::NoStream, &deposit(1))
            .unwrap();
    }
    let storage = Storage::open(encrypted(dir.path(), KEY)).unwrap();
    let mut kid = child(
        "child_creates_streams_under_the_old_key",
        ROTATE_ENV,
        dir.path(),
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(kid.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    // Let the child create some streams first, then rotate under its feet.
    loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(s) = line.strip_prefix("acked ") {
            acked.push(s.parse::<u128>().unwrap());
            if acked.len() == 20 {
                break;
            }
        }
    }
    // Stream 1, the acknowledged streams, and any the child created since.
    assert!(storage.rotate_master_key(new_key).unwrap() as usize > acked.len());
    let mut retired = false;
    for line in lines {
        let line = line.unwrap();
        if let Some(s) = line.strip_prefix("acked ") {
            acked.push(s.parse().unwrap());
        } else if line.contains("retired") {
            retired = true;
        }
    }
    assert!(kid.wait().unwrap().success());
    assert!(retired);
    drop(storage);
    // Every acknowledged stream opens under the new key alone.
    let storage = Storage::open(encrypted(dir.path(), new_key)).unwrap();
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for s in acked.iter().copied().chain([1]) {
        let e = reader.get_by_version(&txn, s, 1);
        assert!(
            matches!(&e, Ok(Some(e)) if e.amount == 1),
            "stream {s}: {:?}",
            e.map(|e| e.is_some())
        );
    }
    drop((txn, reader, storage));
    assert!(matches!(
        Storage::open(encrypted(dir.path(), KEY)),
        Err(Error::WrongMasterKey)
    ));
}

#[test]
fn appends_racing_rotations_in_one_process_stay_readable_under_the_last_key() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(encrypted(dir.path(), [1u8; 32])).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut threads = Vec::new();
    for t in 0..4u128 {
        let writer = Writer::<Deposited>::new(storage.clone());
        let stop = Arc::clone(&stop);
        let appended = Arc::clone(&appended);
        threads.push(std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut n = 0u128;
            while !stop.load(Ordering::Relaxed) {
                // Every append creates a stream, so every commit group wraps new keys.
                let stream = (t << 64) | n;
                writer
                    .append(stream, ExpectedVersion::NoStream, &deposit(5))
                    .unwrap();
                acked.push(stream);
                appended.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            acked
        }));
    }
    // Rotations interleaved with the commit groups, until many groups have run between them.
    let mut key = 1u8;
    while key < 30 {
        key += 1;
        storage.rotate_master_key([key; 32]).unwrap();
        let seen = appended.load(Ordering::Relaxed);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while appended.load(Ordering::Relaxed) < seen + 20 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<u128> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(acked.len() >= 29 * 20, "{} appends", acked.len());
    drop(storage);
    let storage = Storage::open(encrypted(dir.path(), [key; 32])).unwrap();
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    for s in acked {
        assert_eq!(
            reader.get_by_version(&txn, s, 1).unwrap().unwrap().amount,
            5,
            "stream {s}"
        );
    }
}

#[test]
fn a_handle_without_the_key_creates_no_stream_in_an_encrypted_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(encrypted(dir.path(), KEY)).unwrap();
        Writer::<Deposited>::new(storage)
            .append(1, ExpectedVersion::NoStream, &deposit(1))
            .unwrap();
    }
    let keyless = Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })
    .unwrap();
    assert!(keyless.is_encrypted());
    let writer = Writer::<Deposited>::new(keyless.clone());
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Auto] {
        let err = writer.append(2, expected, &deposit(2)).unwrap_err();
        assert!(
            matches!(err, Error::MasterKeyRequired { stream_id: 2 }),
            "{err}"
        );
        assert_eq!(err.written(), varvedb::Written::No);
    }
    let err = writer
        .append(1, ExpectedVersion::Exact(1), &deposit(2))
        .unwrap_err();
    assert!(
        matches!(err, Error::MasterKeyRequired { stream_id: 1 }),
        "{err}"
    );
    // What is not secret stays readable without the key, and verify works.
    let txn = keyless.read_txn().unwrap();
    assert_eq!(keyless.last_seq(&txn).unwrap(), 1);
    assert_eq!(keyless.stream_version(&txn, 2).unwrap(), 0);
    assert!(keyless.raw_reader().get(&txn, 1).unwrap().is_some());
    drop(txn);
    assert!(keyless.verify().unwrap().is_clean());
    // And the shred works without the key.
    assert_eq!(keyless.shred_stream(1).unwrap().events, 1);
}

const ENCRYPT_ENV: &str = "VARVEDB_ENCRYPT_CHILD_DIR";

/// The child: opens the plaintext store in `ENCRYPT_ENV` with a master key, which makes it an
/// encrypted store. Does nothing in a normal run.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_encrypts_the_store() {
    let Ok(dir) = std::env::var(ENCRYPT_ENV) else {
        return;
    };
    let storage = Storage::open(encrypted(Path::new(&dir), KEY)).unwrap();
    Writer::<Deposited>::new(storage)
        .append(50, ExpectedVersion::NoStream, &deposit(50))
        .unwrap();
}

#[test]
fn a_keyless_handle_learns_that_another_process_made_the_store_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Deposited>::new(plain.clone());
    writer
        .append(1, ExpectedVersion::NoStream, &deposit(1))
        .unwrap();
    assert!(!plain.is_encrypted());
    let status = child("child_encrypts_the_store", ENCRYPT_ENV, dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(plain.is_encrypted());
    let err = writer
        .append(2, ExpectedVersion::NoStream, &deposit(2))
        .unwrap_err();
    assert!(
        matches!(err, Error::MasterKeyRequired { stream_id: 2 }),
        "{err}"
    );
    // A plaintext stream created before stays plaintext, and takes appends.
    writer
        .append(1, ExpectedVersion::Exact(1), &deposit(2))
        .unwrap();
}
