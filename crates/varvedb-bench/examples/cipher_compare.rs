//! AES-256-GCM opens per second, RustCrypto's `aes-gcm` (what VarveDB seals with) against
//! `ring`, on the message sizes of the harness (issue 32; figures in docs/performance.md).
//!
//! ```sh
//! cargo run --release -p varvedb-bench --example cipher_compare
//! ```
//! Each size: one message sealed by both (the same key, nonce and 96 bytes of associated data,
//! about what VarveDB's binding takes), checked equal, then opened again and again by each, a
//! copy per open as a read makes, three rounds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use aes_gcm::aead::{AeadInPlace, KeyInit};

fn main() {
    let key = [7u8; 32];
    let aad = [3u8; 96];
    let nonce = [1u8; 12];
    let rust_crypto = aes_gcm::Aes256Gcm::new((&key).into());
    let ring_key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key).unwrap(),
    );
    let ring_nonce = || ring::aead::Nonce::assume_unique_for_key(nonce);
    for size in [136usize, 1024, 10 * 1024] {
        let n = (20_000_000 / size).max(2000);
        let mut sealed = vec![5u8; size];
        let tag = rust_crypto
            .encrypt_in_place_detached((&nonce).into(), &aad, &mut sealed)
            .unwrap();
        let mut by_ring = vec![5u8; size];
        let ring_tag = ring_key
            .seal_in_place_separate_tag(ring_nonce(), ring::aead::Aad::from(&aad), &mut by_ring)
            .unwrap();
        assert_eq!(sealed, by_ring, "the two sealed differently");
        assert_eq!(tag.as_slice(), ring_tag.as_ref());
        for round in 0..3 {
            let t = Instant::now();
            for _ in 0..n {
                let mut buf = sealed.clone();
                rust_crypto
                    .decrypt_in_place_detached((&nonce).into(), &aad, &mut buf, &tag)
                    .unwrap();
                std::hint::black_box(&buf);
            }
            let a = n as f64 / t.elapsed().as_secs_f64();
            let t = Instant::now();
            for _ in 0..n {
                let mut buf = sealed.clone();
                buf.extend_from_slice(ring_tag.as_ref());
                let opened = ring_key
                    .open_in_place(ring_nonce(), ring::aead::Aad::from(&aad), &mut buf)
                    .unwrap();
                std::hint::black_box(&opened);
            }
            let b = n as f64 / t.elapsed().as_secs_f64();
            println!(
                "{size} B, round {round}: aes-gcm {a:.0} opens/s ({:.0} MB/s), ring {b:.0} opens/s ({:.0} MB/s): ring {:.2}x",
                a * size as f64 / 1e6,
                b * size as f64 / 1e6,
                b / a
            );
        }
    }
}
