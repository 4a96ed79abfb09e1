//! Arbitrary bytes as the decrypted plaintext of an encrypted event (sealed under a fixed key,
//! then opened as a reader opens it), and as forged sealed bytes. Never a panic; a forgery
//! never authenticates.
#![no_main]

mod event;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    varvedb::__fuzz::open_sealed::<event::Fz>(data);
});
