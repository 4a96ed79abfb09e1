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
    assert!(err.to_string().contains("format version 2"), "{err}");
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
fn a_file_that_is_not_lmdb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.mdb"), vec![0x5a; 64 * 1024]).unwrap();
    let err = Storage::open(config(&dir)).unwrap_err();
    assert!(matches!(err, Error::InvalidStore { .. }), "{err}");
}
