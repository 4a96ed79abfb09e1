//! The `import_lines` fuzz target's corpus, run as a plain test on stable (`scripts/fuzz.sh`
//! runs the target itself where a nightly toolchain is installed): the committed seeds and
//! every crash found and fixed stay covered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../fuzz/fuzz_targets/import_lines_model.rs"]
mod import_lines_model;

#[test]
fn every_committed_import_lines_input_parses_or_is_refused_without_a_panic() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/import_lines");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        import_lines_model::run(&data);
        inputs += 1;
    }
    assert!(inputs >= 2, "the corpus is missing: {}", dir.display());
}
