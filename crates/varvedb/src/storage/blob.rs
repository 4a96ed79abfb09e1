//! The blob store: payloads longer than `StorageConfig::blob_threshold_bytes`, stored once per
//! distinct content and addressed by their BLAKE3 hash.
//!
//! ```text
//! blobs      BLAKE3(payload) [‖ 8 zero bytes]  →  payload, zero-padded to a multiple of 16
//! blob_refs  BLAKE3(payload)                   →  [u64 references][u64 payload length]  (LE)
//! events     a record with the BLOB flag, whose 48-byte body is the reference:
//!            [32 BLAKE3(payload)][u64 payload length][u64 xxh3-64(payload)]  (LE)
//! ```
//!
//! The blob's key is 40 bytes (the hash and eight zero bytes) when LMDB keeps the value in its
//! leaf page, and 32 bytes when the value goes to overflow pages. Both choices make every node of
//! the `blobs` database a multiple of 16 bytes long with its value 16 bytes in, so every blob
//! starts 16-byte aligned in the map and is read zero-copy (the same reasoning as the events
//! log's two key lengths: `docs/design.md`, "Alignment"). The key length follows from the
//! payload length, which the reference carries, so a read is one exact lookup.
//!
//! A read checks the blob against the 64-bit xxh3 digest of its reference (as an inline
//! payload is checked against its record checksum); `Storage::verify` checks the BLAKE3 hash.
//! `docs/design.md` ("The blob store") gives the measured cost of each.

use heed::RoTxn;
use heed::RwTxn;

use super::Dbs;
use super::record::REF_LEN;
use crate::error::{Error, Result};
use crate::storage::lmdb::LmdbResultExt;
use crate::storage::record::RECORD_ALIGN;

/// Length of a BLAKE3 hash, the blob's address.
pub(crate) const HASH_LEN: usize = 32;
/// Length of a `blob_refs` value.
pub(crate) const REFS_VALUE_LEN: usize = 16;
/// Length of the key of a blob kept in its leaf page.
const LEAF_KEY_LEN: usize = HASH_LEN + 8;

/// What a blob record stores in place of its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobRef {
    pub(crate) hash: [u8; HASH_LEN],
    pub(crate) len: u64,
    /// xxh3-64 of the payload, checked on every read.
    pub(crate) digest: u64,
}

impl BlobRef {
    /// The reference of `payload`: its BLAKE3 hash, length and xxh3 digest.
    pub(crate) fn of(payload: &[u8]) -> BlobRef {
        BlobRef {
            hash: *blake3::hash(payload).as_bytes(),
            len: payload.len() as u64,
            digest: super::record::payload_digest(payload),
        }
    }

    pub(crate) fn encode(&self) -> [u8; REF_LEN] {
        let mut body = [0u8; REF_LEN];
        body[..HASH_LEN].copy_from_slice(&self.hash);
        body[32..40].copy_from_slice(&self.len.to_le_bytes());
        body[40..48].copy_from_slice(&self.digest.to_le_bytes());
        body
    }

    /// Decodes a record body; `None` unless it is exactly a reference.
    pub(crate) fn decode(body: &[u8]) -> Option<BlobRef> {
        if body.len() != REF_LEN {
            return None;
        }
        Some(BlobRef {
            hash: body[..HASH_LEN].try_into().ok()?,
            len: u64::from_le_bytes(body[32..40].try_into().ok()?),
            digest: u64::from_le_bytes(body[40..48].try_into().ok()?),
        })
    }

    /// The hash in lowercase hex, as errors and reports name it.
    pub(crate) fn hex(&self) -> String {
        hex(&self.hash)
    }
}

/// `hash` in lowercase hex.
pub(crate) fn hex(hash: &[u8; HASH_LEN]) -> String {
    blake3::Hash::from_bytes(*hash).to_hex().to_string()
}

/// The stored length of a blob of `len` bytes.
pub(crate) fn padded_len(len: u64) -> Option<usize> {
    usize::try_from(len)
        .ok()?
        .checked_next_multiple_of(RECORD_ALIGN)
}

/// The key length a blob of `padded` stored bytes must have: 40 if LMDB keeps it in the leaf page
/// (node header 8 + key 40: the value starts 48 bytes in, the node is 48 + padded long), 32 if it
/// goes to overflow pages (the leaf node is 8 + 32 + 8 page-number bytes = 48, the value starts a
/// page header, 16 bytes, into its first page).
pub(crate) fn key_len(padded: usize, page_size: usize) -> usize {
    if 8 + LEAF_KEY_LEN + padded <= super::node_max(page_size) {
        LEAF_KEY_LEN
    } else {
        HASH_LEN
    }
}

/// The key of the blob with `hash`, `padded` bytes long once stored.
pub(crate) fn key(hash: &[u8; HASH_LEN], padded: usize, page_size: usize) -> ([u8; 40], usize) {
    let mut key = [0u8; LEAF_KEY_LEN];
    key[..HASH_LEN].copy_from_slice(hash);
    (key, key_len(padded, page_size))
}

/// Decodes a `blobs` key into its hash; `None` if it is malformed.
pub(crate) fn decode_key(key: &[u8]) -> Option<[u8; HASH_LEN]> {
    match key.len() {
        HASH_LEN => key.try_into().ok(),
        LEAF_KEY_LEN if key[HASH_LEN..] == [0u8; 8] => key[..HASH_LEN].try_into().ok(),
        _ => None,
    }
}

pub(crate) fn refs_value(references: u64, len: u64) -> [u8; REFS_VALUE_LEN] {
    let mut value = [0u8; REFS_VALUE_LEN];
    value[..8].copy_from_slice(&references.to_le_bytes());
    value[8..].copy_from_slice(&len.to_le_bytes());
    value
}

/// Decodes a `blob_refs` value into `(references, len)`.
pub(crate) fn decode_refs(value: &[u8]) -> Option<(u64, u64)> {
    if value.len() != REFS_VALUE_LEN {
        return None;
    }
    Some((
        u64::from_le_bytes(value[..8].try_into().ok()?),
        u64::from_le_bytes(value[8..].try_into().ok()?),
    ))
}

fn corrupt_blob(r: &BlobRef, reason: impl Into<String>) -> Error {
    Error::CorruptBlob {
        hash: r.hex(),
        reason: reason.into(),
    }
}

/// The reference count and length of the blob `r` names, read in the commit before anything of
/// its append is written: a damaged count fails that append alone, with [`Error::CorruptBlob`].
pub(crate) fn check_refs(dbs: &Dbs, txn: &RoTxn<'_>, r: &BlobRef) -> Result<Option<u64>> {
    let Some(value) = dbs.blob_refs.get(txn, &r.hash).lmdb()? else {
        return Ok(None);
    };
    match decode_refs(value) {
        Some((references, len)) if len == r.len && references > 0 => Ok(Some(references)),
        Some((references, len)) => Err(corrupt_blob(
            r,
            format!(
                "its reference count says {references} references of a {len}-byte payload, \
                 but the payload is {} bytes",
                r.len
            ),
        )),
        None => Err(corrupt_blob(
            r,
            format!(
                "its reference count is {} bytes, expected {REFS_VALUE_LEN}",
                value.len()
            ),
        )),
    }
}

/// Adds one reference to the blob `r`, storing `padded` (the payload and its zero padding) if the
/// store does not hold it yet. Identical payloads are stored once.
///
/// A stored blob whose bytes differ from `padded` (damaged on disk: the hash is the same, so
/// the content must be) is overwritten, so the new reference never points at damaged bytes.
/// Returns whether the blob was already referenced (a deduplicated payload).
pub(crate) fn put(dbs: &Dbs, wtxn: &mut RwTxn<'_>, r: &BlobRef, padded: &[u8]) -> Result<bool> {
    let references = check_refs(dbs, wtxn, r)?.unwrap_or(0);
    let (key, key_len) = key(&r.hash, padded.len(), dbs.page_size);
    let key = &key[..key_len];
    let stored_intact = references > 0 && dbs.blobs.get(wtxn, key).lmdb()? == Some(padded);
    if !stored_intact {
        dbs.blobs.put(wtxn, key, padded).lmdb()?;
    }
    let references = references
        .checked_add(1)
        .ok_or_else(|| corrupt_blob(r, "its reference count would overflow"))?;
    dbs.blob_refs
        .put(wtxn, &r.hash, &refs_value(references, r.len))
        .lmdb()?;
    Ok(references > 1)
}

/// Drops one reference to the blob `hash`; the last one deletes the blob. Returns the references
/// left. This is how shredding and retention release payloads without touching other events
/// that share them.
pub(crate) fn release(dbs: &Dbs, wtxn: &mut RwTxn<'_>, hash: &[u8; HASH_LEN]) -> Result<u64> {
    let unknown = || Error::CorruptBlob {
        hash: hex(hash),
        reason: "released, but it has no reference count".into(),
    };
    let (references, len) = dbs
        .blob_refs
        .get(wtxn, hash)
        .lmdb()?
        .and_then(decode_refs)
        .ok_or_else(unknown)?;
    let left = references.saturating_sub(1);
    if left > 0 {
        dbs.blob_refs
            .put(wtxn, hash, &refs_value(left, len))
            .lmdb()?;
        return Ok(left);
    }
    let padded = padded_len(len).ok_or_else(unknown)?;
    let (key, key_len) = key(hash, padded, dbs.page_size);
    dbs.blobs.delete(wtxn, &key[..key_len]).lmdb()?;
    dbs.blob_refs.delete(wtxn, hash).lmdb()?;
    Ok(0)
}

/// The payload of the event at `seq` whose record holds `r`, from the map. A missing blob, or
/// one whose length or digest does not match, is [`Error::Corrupt`] naming `seq` and the hash.
pub(crate) fn get<'t>(dbs: &Dbs, txn: &'t RoTxn<'_>, seq: u64, r: &BlobRef) -> Result<&'t [u8]> {
    let corrupt = |what: String| Error::corrupt(seq, format!("blob {}: {what}", r.hex()));
    let padded = padded_len(r.len)
        .ok_or_else(|| corrupt(format!("a length of {} bytes is not addressable", r.len)))?;
    let (key, key_len) = key(&r.hash, padded, dbs.page_size);
    let value = dbs
        .blobs
        .get(txn, &key[..key_len])
        .lmdb()?
        .ok_or_else(|| corrupt("missing from the blob store".into()))?;
    if value.len() != padded {
        return Err(corrupt(format!(
            "stored as {} bytes, expected {padded} for a {}-byte payload",
            value.len(),
            r.len
        )));
    }
    // `padded_len` succeeded, so the length fits a usize and is at most `padded`.
    let payload = &value[..value.len() - (padded - r.len as usize)];
    if super::record::payload_digest(payload) != r.digest {
        return Err(corrupt(
            "damaged: its bytes do not match the digest of the reference".into(),
        ));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip() {
        let r = BlobRef::of(&[7u8; 3000]);
        assert_eq!(BlobRef::decode(&r.encode()), Some(r));
        assert_eq!(BlobRef::decode(&r.encode()[..47]), None);
        assert_eq!(r.len, 3000);
        assert_eq!(r.hex().len(), 64);
        assert_eq!(decode_refs(&refs_value(3, 3000)), Some((3, 3000)));
        assert_eq!(decode_refs(&[0; 15]), None);
    }

    #[test]
    fn keys_decode_and_refuse_garbage() {
        let hash = [9u8; HASH_LEN];
        let (key, len) = key(&hash, 1040, 4096);
        assert_eq!(len, LEAF_KEY_LEN);
        assert_eq!(decode_key(&key[..len]), Some(hash));
        assert_eq!(decode_key(&key[..HASH_LEN]), Some(hash));
        let mut bad = key;
        bad[39] = 1;
        assert_eq!(decode_key(&bad), None);
        assert_eq!(decode_key(&hash[..31]), None);
    }

    /// Two references to one payload keep one blob; releasing both deletes it and its count,
    /// and a third release is an error, never an underflow.
    #[test]
    fn the_last_release_deletes_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::Storage::open(crate::StorageConfig {
            path: dir.path().into(),
            ..Default::default()
        })
        .unwrap();
        let payload = vec![5u8; 5000];
        let r = BlobRef::of(&payload);
        let mut padded = payload.clone();
        padded.resize(padded_len(r.len).unwrap(), 0);
        let count = |storage: &crate::Storage| {
            let txn = storage.read_txn().unwrap();
            let dbs = storage.dbs();
            let refs = dbs.blob_refs.get(txn.raw(), &r.hash).unwrap();
            let (k, n) = key(&r.hash, padded.len(), dbs.page_size);
            let stored = dbs.blobs.get(txn.raw(), &k[..n]).unwrap().is_some();
            (refs.and_then(decode_refs), stored)
        };
        storage
            .write(storage.resize_wait(), |wtxn, dbs| {
                put(dbs, wtxn, &r, &padded)?;
                put(dbs, wtxn, &r, &padded).map(|_| ((), true))
            })
            .unwrap();
        assert_eq!(count(&storage), (Some((2, 5000)), true));
        let left = storage.write(storage.resize_wait(), |wtxn, dbs| {
            release(dbs, wtxn, &r.hash).map(|n| (n, true))
        });
        assert_eq!(left.unwrap(), 1);
        assert_eq!(count(&storage), (Some((1, 5000)), true));
        let left = storage.write(storage.resize_wait(), |wtxn, dbs| {
            release(dbs, wtxn, &r.hash).map(|n| (n, true))
        });
        assert_eq!(left.unwrap(), 0);
        assert_eq!(count(&storage), (None, false));
        let again = storage.write(storage.resize_wait(), |wtxn, dbs| {
            release(dbs, wtxn, &r.hash).map(|n| (n, true))
        });
        assert!(matches!(again, Err(Error::CorruptBlob { .. })));
    }

    /// For every page size LMDB supports and every padded length, the node LMDB builds is a
    /// multiple of 16 bytes long and the value starts 16-aligned within it: in the leaf (8-byte
    /// node header + key, then the value) or on overflow pages (8 + key + 8-byte page number).
    #[test]
    fn every_blob_node_keeps_values_16_aligned() {
        for page_size in [4096usize, 8192, 16384, 32768, 65536] {
            let node_max = crate::storage::node_max(page_size);
            for padded in (1024..page_size * 2).step_by(RECORD_ALIGN) {
                let key_len = key_len(padded, page_size);
                let in_leaf = 8 + key_len + padded <= node_max;
                let node = if in_leaf {
                    8 + key_len + padded
                } else {
                    8 + key_len + 8
                };
                assert_eq!(node % 16, 0, "page {page_size}, value {padded}");
                if in_leaf {
                    assert_eq!((8 + key_len) % 16, 0, "page {page_size}, value {padded}");
                }
            }
        }
    }
}
