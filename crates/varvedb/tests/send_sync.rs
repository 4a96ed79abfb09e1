//! Which public types are `Send` and `Sync`, and that every public handle is `Debug`.
mod common;

use common::Deposited;
use varvedb::{Error, Reader, Storage, Writer};

fn is_send<T: Send>() {}
fn is_sync<T: Sync>() {}
fn is_static<T: 'static>() {}

#[test]
fn handles_are_send_and_sync() {
    is_send::<Storage>();
    is_sync::<Storage>();
    is_send::<Writer<Deposited>>();
    is_sync::<Writer<Deposited>>();
    is_send::<Reader<Deposited>>();
    is_sync::<Reader<Deposited>>();
    is_send::<varvedb::ReadTxn>();
}

#[test]
fn error_is_send_sync_static() {
    is_send::<Error>();
    is_sync::<Error>();
    is_static::<Error>();
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Error::EmptyBatch);
    assert!(boxed.to_string().contains("empty batch"));
}

/// An event whose archived form is not `Debug`: handles over it must be `Debug` all the same.
#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
struct Opaque {
    n: u64,
}

fn is_debug<T: std::fmt::Debug>() {}

#[test]
fn every_public_handle_and_iterator_is_debug() {
    is_debug::<Storage>();
    is_debug::<varvedb::ReadTxn>();
    is_debug::<Writer<Opaque>>();
    is_debug::<Reader<Opaque>>();
    is_debug::<varvedb::EventRef<'static, Opaque>>();
    is_debug::<varvedb::StreamIter<'static, Opaque>>();
    is_debug::<varvedb::AllIter<'static, Opaque>>();
    is_debug::<varvedb::StorageConfig>();
    is_debug::<varvedb::Stats>();
    is_debug::<varvedb::VerifyReport>();
    is_debug::<Error>();

    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(&dir);
    Writer::<Opaque>::new(storage.clone())
        .append(1, varvedb::ExpectedVersion::NoStream, &Opaque { n: 1 })
        .unwrap();
    let reader = Reader::<Opaque>::new(storage.clone());
    let txn = storage.read_txn().unwrap();
    let e = reader.get(&txn, 1).unwrap().unwrap();
    assert_eq!(e.n, 1);
    let shown = format!(
        "{e:?} {:?} {:?}",
        reader.read_stream(&txn, 1, 1),
        reader.read_all(&txn, 1)
    );
    assert!(
        shown.contains("seq: 1") && shown.contains("StreamIter") && shown.contains("AllIter"),
        "{shown}"
    );
}
