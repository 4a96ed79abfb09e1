//! Which public types are `Send` and `Sync`.
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
