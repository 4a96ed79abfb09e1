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
