//! Arbitrary bytes as a store's data file (`data.mdb`): opened with the page check
//! (`StorageConfig::check_pages_on_open`), scanned raw and typed, and verified. Whatever the
//! bytes, the outcome is a typed error or a store, never a crash: the check refuses every page
//! LMDB would follow out of bounds before LMDB maps the file.
#![no_main]

mod event;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => shm.to_path_buf(),
        _ => std::env::temp_dir(),
    };
    let dir = base.join(format!("varvedb-fuzz-open-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    std::fs::write(dir.join("data.mdb"), data).expect("the data file");
    if let Ok(storage) = varvedb::Storage::open_existing(varvedb::StorageConfig {
        path: dir.clone(),
        check_pages_on_open: true,
        ..Default::default()
    }) {
        if let Ok(txn) = storage.read_txn() {
            for e in storage.raw_reader().read_all(&txn, 1).take(10_000) {
                let _ = e.map(|e| e.seq());
            }
            let reader = varvedb::Reader::<event::Fz>::new(storage.clone());
            for e in reader.read_all(&txn, 1).take(10_000) {
                let _ = e.map(|e| e.seq());
            }
        }
        let _ = storage.verify();
    }
    let _ = std::fs::remove_dir_all(&dir);
});
