//! A bounded sequence of operations (appends with every expectation, batches, multi-stream
//! appends, ids from a small pool, shreds, reopens, reads) on an encrypted store, checked
//! against an in-memory model after every read and at the end.
//!
//! One store hosts `INPUTS_PER_STORE` inputs, each in a namespace of its own (see
//! `ops_model::Session`); then `verify` checks the whole store and a fresh one starts. A crash
//! found here reproduces on a fresh store (`cargo fuzz run ops <input>` runs it first), unless it
//! needs the store's earlier contents, which the `verify` at the rotation then reports.
#![no_main]

mod ops_model;

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;

/// Inputs per store before a `verify` and a fresh store.
const INPUTS_PER_STORE: u64 = 2_000;

static SESSION: Mutex<Option<(std::path::PathBuf, ops_model::Session)>> = Mutex::new(None);

fn fresh() -> (std::path::PathBuf, ops_model::Session) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // In memory where there is a tmpfs.
    let base = match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => shm.to_path_buf(),
        _ => std::env::temp_dir(),
    };
    let dir = base.join(format!("varvedb-fuzz-ops-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let session = ops_model::Session::open(&dir);
    (dir, session)
}

fuzz_target!(|data: &[u8]| {
    let mut guard = SESSION.lock().unwrap_or_else(|p| p.into_inner());
    let (_, session) = guard.get_or_insert_with(fresh);
    session.run(data);
    if session.inputs() >= INPUTS_PER_STORE {
        if let Some((dir, session)) = guard.take() {
            session.verify();
            drop(session);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
});
