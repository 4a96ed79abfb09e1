//! Arbitrary bytes as one record: header, checksum, envelope section, payload validation. An
//! error or a value, never a panic.
#![no_main]

mod event;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    varvedb::__fuzz::read_record::<event::Fz>(data);
});
