//! Arbitrary bytes as a value of the events log: parsed as a pack, every record decoded as a
//! scan and as a point read does, every payload validated. An error or a value, never a panic.
#![no_main]

mod event;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes are the key the pack is stored under; the rest is the value.
    if let Some((key, value)) = data.split_first_chunk::<8>() {
        varvedb::__fuzz::read_pack::<event::Fz>(u64::from_le_bytes(*key) % 4096, value);
    }
});
