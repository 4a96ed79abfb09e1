//! The import's reading side: arbitrary bytes as an export file (JSON lines), parsed and, when
//! the header parses, imported into a fresh store (see `import_lines_model.rs`).
#![no_main]

mod import_lines_model;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| import_lines_model::run(data));
