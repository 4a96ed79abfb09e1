// The `import_lines` target's body, shared with `crates/varvedb-cli/tests/import_lines_corpus.rs`:
// arbitrary bytes as an export file (JSON lines). The header line and every event line go
// through the parser `varvedb import` uses; when the header parses, the events that parse are
// imported into a fresh store. Every outcome must be a value or a typed error: no panic,
// whatever the file holds; and what an import accepts is a store that verifies.
use varvedb::{Storage, StorageConfig};
use varvedb_cli::lines::{parse_event, parse_header};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let Some(first) = lines.next() else { return };
    let header = parse_header(first);
    let events: Vec<_> = lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_event(i + 2, l))
        .collect();
    let Ok(header) = header else { return };
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => shm.to_path_buf(),
        _ => std::env::temp_dir(),
    };
    let dir = base.join(format!("varvedb-fuzz-import-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage = Storage::open(StorageConfig {
        path: dir.clone(),
        // The key of `varvedb demo`'s store, whose export is the seed.
        master_key: Some(*b"varvedb demo key, never use it!!"),
        map_bytes_initial: 1 << 20,
        ..Default::default()
    })
    .expect("a fresh store opens");
    let mut importer = storage.importer();
    let imported = importer.begin(&header).and_then(|()| {
        for event in events.into_iter().flatten() {
            importer.push(event)?;
        }
        importer.finish(&header).map(drop)
    });
    if imported.is_ok() {
        // What an import accepted is a store that verifies.
        let report = storage.verify().expect("verify");
        assert!(report.is_clean(), "{:?}", report.problems);
    }
    drop(storage);
    let _ = std::fs::remove_dir_all(&dir);
}
