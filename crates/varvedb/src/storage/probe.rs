//! Probes of the formats for the criterion benchmarks, the fuzz targets and the tests that
//! forge or inspect records (the crate's `__internals` feature exposes them). Not an API: they
//! may change in any release. Storage knows no typed events, so a probe that validates a
//! payload takes the validation as a function.

use super::lmdb::LmdbResultExt;
use super::pack::{self, LogIter, Pack};
use super::{Storage, crypto, envelope, record};
use crate::error::Result;

/// Verifies a record (lengths, format, checksum) as every read does; returns its body.
pub(crate) fn verify_record(record: &[u8]) -> Result<&[u8]> {
    record::decode(1, record).map(|(_, payload)| payload)
}

/// The checksum a record's header must carry.
pub(crate) fn record_checksum(record: &[u8]) -> u64 {
    record::checksum_of(record)
}

/// Every record of the log, as stored, with its sequence.
pub(crate) fn records(storage: &Storage) -> Result<Vec<(u64, Vec<u8>)>> {
    let txn = storage.read_txn()?;
    LogIter::open(Ok(()), storage.dbs(), txn.raw(), 1, false)
        .map(|e| e.map(|e| (e.seq, e.record.to_vec())))
        .collect()
}

/// The byte ranges of the records in the pack stored under the key `last`.
pub(crate) fn pack_records(last: u64, pack: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    pack::record_ranges(last, pack)
}

/// Rewrites the checksum of the pack stored under the key `last` to match its bytes.
pub(crate) fn reseal_pack(last: u64, bytes: &mut [u8]) {
    pack::reseal(last, bytes);
}

/// A stream's raw keystore entry.
/// Whether a map growth waits for this process's snapshots to end.
pub(crate) fn resize_waiting(storage: &Storage) -> bool {
    storage.inner.gate.resize_waiting()
}

pub(crate) fn keystore_entry(storage: &Storage, stream_id: u128) -> Option<Vec<u8>> {
    let txn = storage.read_txn().ok()?;
    storage
        .dbs()
        .keystore
        .get(txn.raw(), &stream_id.to_be_bytes())
        .lmdb()
        .ok()
        .flatten()
        .map(<[u8]>::to_vec)
}

/// Everything a read does with a value of the events log: parses it as the pack stored under
/// `last`, checks its checksum, takes every record through the offset table, and decodes each
/// as a scan does (trusting a matching pack checksum) and as a point read does (checking the
/// record's own), then splits its envelope and validates a plaintext inline payload with
/// `validates`. Returns how many records passed; never panics.
pub(crate) fn read_pack(last: u64, bytes: &[u8], validates: impl Fn(&[u8]) -> bool) -> usize {
    let Ok(pack) = Pack::parse(last, bytes) else {
        return 0;
    };
    let trusted = pack.check_checksum().is_ok();
    let mut passed = 0;
    for seq in pack.first()..=pack.last() {
        let Ok(r) = pack.record(seq) else { continue };
        let scan = record::open_with(seq, r, trusted);
        let point = record::open(seq, r);
        if let (Ok((_, _, scan_body)), Ok((_, _, point_body))) = (&scan, &point) {
            assert_eq!(scan_body, point_body, "a scan and a point read disagree");
        }
        if let Ok((header, _, body)) = point
            && header.flags & (record::FLAG_ENCRYPTED | record::FLAG_BLOB) == 0
            && validates(body)
        {
            passed += 1;
        }
    }
    passed
}

/// Decodes `bytes` as one record (as a point read does), then its envelope section, and
/// validates a plaintext payload with `validates`. Never panics.
pub(crate) fn read_record(bytes: &[u8], validates: impl Fn(&[u8]) -> bool) -> bool {
    match record::open(1, bytes) {
        Ok((header, _, body)) => header.flags & record::FLAG_ENCRYPTED != 0 || validates(body),
        Err(_) => false,
    }
}

/// Seals `plain` under a fixed key as the AES-GCM plaintext of an encrypted event, opens it as
/// a reader does, and validates the payload with `validates`. Also opens `plain` as a forged
/// sealed event, which must not authenticate. Never panics.
pub(crate) fn open_sealed(plain: &[u8], validates: impl Fn(&[u8]) -> bool) -> bool {
    let Ok(key) = crypto::cipher(&[0x42; 32]) else {
        return false;
    };
    let aad = crypto::event_aad(7, 1, 1, 1);
    let forged = crypto::open_event(&key, &aad, plain, 1, Default::default());
    assert!(forged.is_err(), "forged bytes authenticated");
    let sealed = crypto::seal_raw(&key, &aad, plain);
    match crypto::open_event(&key, &aad, &sealed, 1, Default::default()) {
        Ok(opened) => {
            let pairs = &opened.buffer[opened.pairs.clone()];
            let _ = envelope::check_pairs(1, pairs, opened.pair_count);
            validates(&opened.buffer[opened.payload.clone()])
        }
        Err(_) => false,
    }
}
