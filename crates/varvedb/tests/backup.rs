//! An online backup (`Storage::compact_to`) taken while 4 threads append: the copy verifies
//! clean and holds a consistent prefix of the log, byte for byte; and a backup never writes
//! through a planted link or into a directory it did not make private.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use varvedb::{Error, ExpectedVersion, Storage, StorageConfig, Writer};

#[test]
fn a_backup_taken_while_four_threads_append_is_a_clean_consistent_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4u128)
        .map(|t| {
            let (writer, stop, appended) = (
                Writer::<Deposited>::new(storage.clone()),
                Arc::clone(&stop),
                Arc::clone(&appended),
            );
            std::thread::spawn(move || {
                let mut version = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    writer
                        .append(
                            100 + t,
                            ExpectedVersion::Exact(version),
                            &deposit(u64::from(version)),
                        )
                        .unwrap();
                    version += 1;
                    appended.fetch_add(1, Ordering::Relaxed);
                }
                version
            })
        })
        .collect();
    while appended.load(Ordering::Relaxed) < 200 {
        std::thread::yield_now();
    }
    let dest = dir.path().join("backup");
    storage.compact_to(&dest).unwrap();
    let during = appended.load(Ordering::Relaxed);
    // The appends go on after the copy.
    while appended.load(Ordering::Relaxed) < during + 100 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let versions: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let total: u64 = versions.iter().map(|&v| u64::from(v)).sum();
    assert!(total > during, "the appends went on after the backup");

    let copy = Storage::open_existing(StorageConfig {
        path: dest.clone(),
        ..Default::default()
    })
    .unwrap();
    assert!(copy.verify().unwrap().is_clean());
    let (raw, copy_raw) = (storage.raw_reader(), copy.raw_reader());
    let (txn, copy_txn) = (storage.read_txn().unwrap(), copy.read_txn().unwrap());
    let head = copy.last_seq(&copy_txn).unwrap();
    assert!(head >= 200 && head < total, "backup head {head} of {total}");
    // A prefix: seqs 1..=head, each the original's event byte for byte, and every stream's
    // versions contiguous from 1.
    let mut next_version = std::collections::HashMap::new();
    let mut seq = 0;
    for event in copy_raw.read_all(&copy_txn, 1) {
        let event = event.unwrap();
        seq += 1;
        assert_eq!(event.seq(), seq);
        let original = raw.get(&txn, seq).unwrap().unwrap();
        assert_eq!(event.payload_bytes(), original.payload_bytes());
        assert_eq!(event.stream_id(), original.stream_id());
        let expected = next_version.entry(event.stream_id()).or_insert(1u32);
        assert_eq!(event.version(), *expected);
        *expected += 1;
    }
    assert_eq!(seq, head);
    for stream in copy_raw.streams(&copy_txn) {
        let stream = stream.unwrap();
        assert_eq!(next_version[&stream.stream_id] - 1, stream.version);
    }
}

/// A backup never writes through a planted link, into a directory prepared by someone else, or
/// over anything: the destination must be new, or an empty private directory of the store's
/// owner, and the data file is created exclusively with mode 0600.
#[test]
fn a_backup_refuses_planted_links_and_prepared_directories() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    Writer::<Deposited>::new(storage.clone())
        .append(1, ExpectedVersion::NoStream, &deposit(1))
        .unwrap();
    let place = tempfile::tempdir().unwrap();

    // A dangling link where the data file will go: the copy would land in the attacker's file.
    let planted = place.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o700)).unwrap();
    let target = place.path().join("attacker-owned.mdb");
    std::os::unix::fs::symlink(&target, planted.join("data.mdb")).unwrap();
    let err = storage.compact_to(&planted).unwrap_err();
    assert!(matches!(err, Error::InvalidDestination { .. }), "{err}");
    assert!(!target.exists(), "the copy followed the planted link");

    // A link as the destination directory itself.
    let elsewhere = place.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = place.path().join("link");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let err = storage.compact_to(&link).unwrap_err();
    assert!(matches!(err, Error::InvalidDestination { .. }), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    // A directory others may enter, or one that holds anything.
    let open_dir = place.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = storage.compact_to(&open_dir).unwrap_err();
    assert!(err.to_string().contains("mode 755"), "{err}");
    let busy = place.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::set_permissions(&busy, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(busy.join("notes.txt"), b"x").unwrap();
    let err = storage.compact_to(&busy).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    // A plain file.
    let file = place.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(storage.compact_to(&file).is_err());

    // An empty private directory, and a new one: both take the copy, 0600 and 0700.
    let empty = place.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o700)).unwrap();
    storage.compact_to(&empty).unwrap();
    let fresh = place.path().join("a/b/fresh");
    storage.compact_to(&fresh).unwrap();
    for d in [&empty, &fresh] {
        let mode = std::fs::metadata(d.join("data.mdb"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", d.display());
        let mode = std::fs::metadata(d).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", d.display());
    }
    // Twice into the same directory: refused, the first copy intact.
    assert!(storage.compact_to(&fresh).is_err());
    drop(storage);
    let copy = Storage::open(StorageConfig {
        path: fresh,
        ..Default::default()
    })
    .unwrap();
    assert!(copy.verify().unwrap().is_clean());
}
