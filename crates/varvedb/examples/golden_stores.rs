//! Writes the golden stores of `tests/golden.rs` into `tests/fixtures/format<N>/`, N being the
//! format this build writes (each a compacted copy: only the pages in use). Their content is
//! defined in `tests/fixtures/golden.rs`.
//!
//! ```sh
//! cargo run -p varvedb --example golden_stores            # every store that is missing
//! cargo run -p varvedb --example golden_stores -- NAME    # that one, written again
//! ```
//! The stores are committed: they are what this release writes, and every later release must
//! open them (`tests/golden.rs`). Write a store again only when adding it; a format change must
//! keep the committed ones readable, through an upgrade.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/fixtures/golden.rs"]
mod golden;

fn main() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("format{}", varvedb::Storage::FORMAT_VERSION));
    let only: Vec<String> = std::env::args().skip(1).collect();
    for name in golden::STORES {
        let dest = fixtures.join(name);
        if only.is_empty() && dest.exists() {
            println!("{name}: kept");
            continue;
        }
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let scratch = tempfile::tempdir().unwrap();
        golden::write(name, &scratch.path().join("store"));
        let key = (name == "encrypted").then_some(golden::KEY);
        let storage = varvedb::Storage::open(varvedb::StorageConfig {
            path: scratch.path().join("store"),
            encryption_enabled: key.is_some(),
            master_key: key,
            ..Default::default()
        })
        .unwrap();
        if dest.exists() {
            std::fs::remove_dir_all(&dest).unwrap();
        }
        storage.compact_to(&dest).unwrap();
        let bytes = std::fs::metadata(dest.join("data.mdb")).unwrap().len();
        println!("{name}: written, {bytes} bytes");
    }
}
