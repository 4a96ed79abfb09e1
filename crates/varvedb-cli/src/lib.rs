//! The parts of the `varvedb` tool that other crates use: the export's line format (the fuzz
//! target of the import parser drives it) and the textual form of stream ids.

pub mod lines;
pub mod stream_id;
