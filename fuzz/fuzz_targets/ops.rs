//! A bounded sequence of operations (appends with every expectation, batches, multi-stream
//! appends, ids from a small pool, shreds, reopens, reads) on a fresh encrypted store, checked
//! against an in-memory model after every read and at the end, with `verify`.
#![no_main]

mod ops_model;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // In memory where there is a tmpfs: a fresh store per input is most of the cost.
    let base = match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => shm.to_path_buf(),
        _ => std::env::temp_dir(),
    };
    let dir = base.join(format!("varvedb-fuzz-ops-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ops_model::run(&dir, data);
    let _ = std::fs::remove_dir_all(&dir);
});
