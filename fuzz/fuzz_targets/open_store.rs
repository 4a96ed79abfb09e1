//! Arbitrary bytes as a store's data file (`data.mdb`): opened, scanned raw and typed, and
//! verified. What LMDB accepts must give typed errors, never a crash. LMDB trusts its own pages
//! (`docs/design.md`, "What is checked, and what is trusted"), so what this target finds in
//! LMDB itself is reported in `docs/reliability.md`.
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
