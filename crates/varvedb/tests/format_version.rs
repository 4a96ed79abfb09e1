//! A store written in an unknown format, or not a store at all, is refused and left untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]
mod common;

use common::*;
use heed::types::{Bytes, Str};
use varvedb::{Error, ExpectedVersion, FORMAT_VERSION, META_FORMAT_KEY, Storage, Writer};

/// Rewrites the format record with raw heed, as a future VarveDB would.
fn set_format(dir: &tempfile::TempDir, version: u32) {
    let mut options = heed::EnvOpenOptions::new();
    options.max_dbs(16);
    // SAFETY: the test opens this path nowhere else while the env is open.
    let env = unsafe { options.open(dir.path()) }.unwrap();
    let wtxn = env.write_txn().unwrap();
    let meta = env
        .create_databases_and_commit(wtxn, |opener, wtxn| {
            opener
                .create_database::<Str, Bytes>(wtxn, Some("meta"))
                .map(heed::CommitOrAbort::<_, ()>::Commit)
        })
        .unwrap()
        .unwrap_commit();
    let mut wtxn = env.write_txn().unwrap();
    meta.put(&mut wtxn, META_FORMAT_KEY, &version.to_le_bytes())
        .unwrap();
    wtxn.commit().unwrap();
}

#[test]
fn a_new_store_records_the_current_format() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let mut options = heed::EnvOpenOptions::new();
    options.max_dbs(16);
    // SAFETY: the store above is closed; nothing else opens this path.
    let env = unsafe { options.open(dir.path()) }.unwrap();
    let meta = env
        .open_databases_and_commit(env.read_txn().unwrap(), |opener, rtxn| {
            opener
                .open_database::<Str, Bytes>(rtxn, Some("meta"))
                .map(heed::CommitOrAbort::<_, ()>::Commit)
        })
        .unwrap()
        .unwrap_commit()
        .unwrap();
    let rtxn = env.read_txn().unwrap();
    assert_eq!(
        meta.get(&rtxn, META_FORMAT_KEY).unwrap(),
        Some(&FORMAT_VERSION.to_le_bytes()[..])
    );
}

#[test]
fn an_unknown_format_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(&dir);
        Writer::<Deposited>::new(storage)
            .append(1, ExpectedVersion::Auto, &deposit(1))
            .unwrap();
    }
    set_format(&dir, FORMAT_VERSION + 1);
    let before = std::fs::read(dir.path().join("data.mdb")).unwrap();
    let err = Storage::open(config(&dir)).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedFormat { found, supported, .. } if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("reads format version {FORMAT_VERSION}")),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("data.mdb")).unwrap(),
        before,
        "the refused store was modified"
    );
    // Back to the known format: the store opens and its event is intact.
    set_format(&dir, FORMAT_VERSION);
    let storage = Storage::open(config(&dir)).unwrap();
    assert_eq!(storage.stats().unwrap().events, 1);
}

#[test]
fn an_older_format_is_refused_too() {
    // Format 2 (before the event envelope) and format 3 (one record per log entry, before
    // packs) were never released: refused, not migrated (an export moves their events).
    for old in [2, 3] {
        let dir = tempfile::tempdir().unwrap();
        drop(open(&dir));
        set_format(&dir, old);
        let err = Storage::open(config(&dir)).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedFormat { found, .. } if found == old),
            "{err}"
        );
    }
}

#[test]
fn a_file_that_is_not_lmdb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.mdb"), vec![0x5a; 64 * 1024]).unwrap();
    let err = Storage::open(config(&dir)).unwrap_err();
    assert!(matches!(err, Error::InvalidStore { .. }), "{err}");
}

/// A power cut while a store's first pages were written can leave one meta page and a page of
/// zeros: the open says so, and that nothing committed is in it, instead of a bare "not LMDB".
#[test]
fn a_store_whose_creation_was_cut_short_is_named_as_such() {
    let whole = tempfile::tempdir().unwrap();
    drop(open(&whole));
    let data = std::fs::read(whole.path().join("data.mdb")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut torn = data[..4096].to_vec();
    torn.extend_from_slice(&[0u8; 4096]);
    std::fs::write(dir.path().join("data.mdb"), &torn).unwrap();
    let err = Storage::open(config(&dir)).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidStore { reason, .. } if reason.contains("creation was cut short")),
        "{err}"
    );
    // The file is left as it was.
    assert_eq!(std::fs::read(dir.path().join("data.mdb")).unwrap(), torn);
}

/// A meta page with a page size of 0 made LMDB divide by zero inside its open (SIGFPE: the
/// process died). It is refused before LMDB reads it.
#[test]
fn a_meta_page_with_a_broken_page_size_is_refused_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let path = dir.path().join("data.mdb");
    let mut data = std::fs::read(&path).unwrap();
    for psize in [0u32, 3, 1 << 20] {
        data[40..44].copy_from_slice(&psize.to_le_bytes());
        std::fs::write(&path, &data).unwrap();
        let err = Storage::open(config(&dir)).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidStore { reason, .. } if reason.contains("meta page 0 is damaged")),
            "{err}"
        );
    }
}

#[test]
fn open_existing_creates_nothing_where_there_is_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let config = |path: &std::path::Path| varvedb::StorageConfig {
        path: path.into(),
        ..Default::default()
    };
    let err = Storage::open_existing(config(&missing)).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(!missing.exists());

    // A directory that holds something else.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"hello").unwrap();
    let err = Storage::open_existing(config(&other)).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let names: Vec<_> = std::fs::read_dir(&other)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);

    // An LMDB environment of another program: refused, and none of our databases created.
    let foreign = tempfile::tempdir().unwrap();
    raw_put(&foreign, "theirs", b"k", b"v");
    let err = Storage::open_existing(config(foreign.path())).unwrap_err();
    assert!(matches!(err, Error::InvalidStore { .. }), "{err:?}");
    let mut options = heed::EnvOpenOptions::new();
    options.max_dbs(16);
    // SAFETY: the store above was refused and closed; nothing else opens this path.
    let env = unsafe { options.open(foreign.path()) }.unwrap();
    let events = env
        .open_databases_and_commit(env.read_txn().unwrap(), |opener, rtxn| {
            opener
                .open_database::<Bytes, Bytes>(rtxn, Some("events"))
                .map(|db| heed::CommitOrAbort::<_, ()>::Commit(db.map(|_| ())))
        })
        .unwrap()
        .unwrap_commit();
    assert!(events.is_none(), "open_existing created a database");
    drop(env);

    // And a real store opens.
    let store = tempfile::tempdir().unwrap();
    drop(open(&store));
    Storage::open_existing(config(store.path())).unwrap();
}

#[test]
fn a_truncated_data_file_is_refused_at_open_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    {
        let writer = Writer::<Deposited>::new(open(&dir));
        for i in 0..2000u64 {
            writer
                .append(1, ExpectedVersion::Auto, &deposit(i))
                .unwrap();
        }
    }
    let data = dir.path().join("data.mdb");
    let len = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = Storage::open(config(&dir)).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidStore { reason, .. } if reason.contains("truncated")),
        "{err:?}"
    );
}

/// The format record of a closed store, read with raw heed.
fn format_on_disk(dir: &std::path::Path) -> u32 {
    let mut options = heed::EnvOpenOptions::new();
    options.max_dbs(32);
    // SAFETY: the store is closed; nothing else opens this path meanwhile.
    let env = unsafe { options.open(dir) }.unwrap();
    let meta = env
        .open_databases_and_commit(env.read_txn().unwrap(), |opener, rtxn| {
            opener
                .open_database::<Str, Bytes>(rtxn, Some("meta"))
                .map(heed::CommitOrAbort::<_, ()>::Commit)
        })
        .unwrap()
        .unwrap_commit()
        .unwrap();
    let rtxn = env.read_txn().unwrap();
    let v = meta.get(&rtxn, META_FORMAT_KEY).unwrap().unwrap();
    u32::from_le_bytes(v.try_into().unwrap())
}

/// A copy of the golden plaintext store of format 4, as 0.5.0 wrote it.
fn format4_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/format4/plaintext/data.mdb"),
        dir.path().join("data.mdb"),
    )
    .unwrap();
    dir
}

#[test]
fn a_store_of_format_4_is_upgraded_in_place_as_it_opens() {
    let dir = format4_store();
    assert_eq!(format_on_disk(dir.path()), 4);
    let storage = Storage::open(config(&dir)).unwrap();
    assert_eq!(storage.stats().unwrap().format, FORMAT_VERSION);
    assert_eq!(storage.stats().unwrap().events, 55);
    // Its new databases work: a removal and a group's cursor.
    storage.truncate_stream(4, 3).unwrap();
    assert!(storage.verify().unwrap().is_clean());
    drop(storage);
    assert_eq!(format_on_disk(dir.path()), FORMAT_VERSION);
}

#[test]
fn an_upgrade_that_is_not_allowed_names_the_command_and_touches_nothing() {
    let dir = format4_store();
    let before = std::fs::read(dir.path().join("data.mdb")).unwrap();
    let err = Storage::open(varvedb::StorageConfig {
        allow_upgrade: false,
        ..config(&dir)
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::UpgradeRequired { found: 4, current, .. } if *current == FORMAT_VERSION),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("varvedb upgrade --path"), "{text}");
    assert!(text.contains("in one transaction"), "{text}");
    assert_eq!(std::fs::read(dir.path().join("data.mdb")).unwrap(), before);
    assert!(
        !dir.path().join("lock.mdb").exists() || format_on_disk(dir.path()) == 4,
        "the refused store was upgraded"
    );
}

const UPGRADE_CHILD: &str = "VARVEDB_UPGRADE_CHILD_DIR";

/// In a child: opens (and so upgrades) the store, says so, and waits to be killed.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn upgrade_child() {
    let Ok(dir) = std::env::var(UPGRADE_CHILD) else {
        return;
    };
    let storage = Storage::open(varvedb::StorageConfig {
        path: dir.into(),
        ..Default::default()
    })
    .unwrap();
    println!("opened {}", storage.stats().unwrap().format);
    std::thread::sleep(std::time::Duration::from_secs(60));
}

#[test]
fn a_sigkill_during_an_upgrade_leaves_the_old_store_or_the_new_one() {
    let (mut old, mut new) = (0, 0);
    for round in 0..12u64 {
        let dir = format4_store();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "--ignored",
                "upgrade_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(UPGRADE_CHILD, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill points spread over the child's start and its open.
        std::thread::sleep(std::time::Duration::from_millis(round));
        child.kill().unwrap();
        child.wait().unwrap();
        match format_on_disk(dir.path()) {
            4 => old += 1,
            f if f == FORMAT_VERSION => new += 1,
            f => panic!("a mix: format {f}"),
        }
        // Either way the store opens (upgraded now if it was not) and is whole.
        let storage = Storage::open(config(&dir)).unwrap();
        assert_eq!(storage.stats().unwrap().events, 55);
        assert!(storage.verify().unwrap().is_clean());
    }
    eprintln!("killed before the upgrade committed: {old}; after: {new}");
    assert_eq!(old + new, 12);
}
