//! The record format of the events log. `docs/design.md` draws it byte by byte.
//!
//! ```text
//! 0   u8    record format (3)
//! 1   u8    flags: 0x01 BLOB (the payload is a 48-byte blob reference), 0x02 ENCRYPTED (the
//!           payload is sealed, see `crypto`), 0x04 ENVELOPE (the body starts with an envelope
//!           section, see `envelope`), 0x08 BOUND (with ENCRYPTED: the seal binds the store
//!           id, the type and the envelope); other bits are refused
//! 2   u16   header length (64)
//! 4   u32   payload length
//! 8   u128  stream id
//! 24  u32   version
//! 28  u32   event type id (the `types` table; 1 and up)
//! 32  u64   timestamp, unix nanoseconds
//! 40  u64   prev: sequence of the stream's previous version (0 for version 1)
//! 48  u64   jump: sequence of version `chain::jump_version(version)` (0 for version 1)
//! 56  u64   checksum: xxh3-64 of bytes 0..56 followed by xxh3-64(payload) as 8 bytes
//! 64  ..    payload (an rkyv archive), then zero padding to a multiple of 16 bytes
//! ```
//! Header integers are little-endian.

/// XXH3-64 (the `twox-hash` crate, which picks SSE2 or AVX2 at run time).
fn xxh3_64(bytes: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(bytes)
}

use super::envelope::{self, Section};
use crate::error::{Error, Result};

/// Record flag: the body ends with a [`REF_LEN`]-byte reference into the blob store (see
/// [`blob`](super::blob)) instead of the payload.
pub(crate) const FLAG_BLOB: u8 = 0x01;
/// Record flag: the body's payload part is sealed (see [`crypto`](super::crypto)).
pub(crate) const FLAG_ENCRYPTED: u8 = 0x02;
/// Record flag: the body starts with an envelope section (see [`envelope`]).
pub(crate) const FLAG_ENVELOPE: u8 = 0x04;
/// Record flag, with [`FLAG_ENCRYPTED`]: the seal binds the store id, the timestamp, the
/// type's name and version and the clear envelope section (see `crypto::Binding`), not only
/// the stream, version, sequence and type id.
pub(crate) const FLAG_BOUND: u8 = 0x08;
/// Every flag bit a record may carry.
const FLAGS_KNOWN: u8 = FLAG_BLOB | FLAG_ENCRYPTED | FLAG_ENVELOPE | FLAG_BOUND;
/// The length of a blob reference, the end of a blob record's body.
pub(crate) const REF_LEN: usize = 48;

pub(crate) const RECORD_FORMAT: u8 = 3;
pub(crate) const HEADER_LEN: usize = 64;
/// Records are padded to this multiple, and payloads start at this alignment in the map.
pub(crate) const RECORD_ALIGN: usize = 16;
const CHECKSUM_AT: usize = 56;

/// The decoded, verified header of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub(crate) flags: u8,
    pub(crate) stream_id: u128,
    pub(crate) version: u32,
    /// The event's type, interned in the `types` table (see [`types`](super::types)).
    pub(crate) type_id: u32,
    pub(crate) timestamp_ns: u64,
    /// The stream chain: see [`chain`](super::chain).
    pub(crate) links: Links,
}

/// A record's pointers to earlier records of its stream (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Links {
    /// The sequence of the previous version.
    pub(crate) prev: u64,
    /// The sequence of version `chain::jump_version(version)`.
    pub(crate) jump: u64,
}

/// What a chain walk needs of a record, read without verifying its checksum: the record is
/// verified in full when it is handed out, and a damaged link shows as a stream or version
/// mismatch at the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peek {
    pub(crate) stream_id: u128,
    pub(crate) version: u32,
    pub(crate) links: Links,
}

/// Reads a record's stream, version and links; `None` if it is too short or of another format.
pub(crate) fn peek(record: &[u8]) -> Option<Peek> {
    if record.len() < HEADER_LEN || record[0] != RECORD_FORMAT {
        return None;
    }
    Some(Peek {
        stream_id: u128::from_le_bytes(record[8..24].try_into().ok()?),
        version: le_u32(record, 24),
        links: Links {
            prev: le_u64(record, 40),
            jump: le_u64(record, 48),
        },
    })
}

/// The total stored length of a record with `payload_len` bytes of payload.
pub(crate) fn record_len(payload_len: usize) -> usize {
    (HEADER_LEN + payload_len).next_multiple_of(RECORD_ALIGN)
}

/// The payload digest that the checksum folds in. It is computed before the write lock is taken.
pub(crate) fn payload_digest(payload: &[u8]) -> u64 {
    xxh3_64(payload)
}

/// A record being drafted: the header placeholder, then the body.
pub(crate) trait Draft {
    fn bytes(&self) -> &[u8];
    /// Zero-pads the draft to `len` bytes.
    fn pad_to(&mut self, len: usize);
}

impl Draft for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn pad_to(&mut self, len: usize) {
        self.resize(len, 0);
    }
}

impl Draft for rkyv::util::AlignedVec<RECORD_ALIGN> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn pad_to(&mut self, len: usize) {
        self.resize(len, 0);
    }
}

/// Ends a draft whose body is complete: pads it to its stored length, and returns the body's
/// length (as the header announces it) and the digest the checksum folds in, for [`seal`].
/// Every record is drafted here: by the writer, by the sealing of an encrypted event, and by
/// the importer.
pub(crate) fn end_draft(draft: &mut impl Draft) -> Result<(u32, u64)> {
    let body = draft.bytes().get(HEADER_LEN..).unwrap_or(&[]);
    let body_len = body.len();
    let announced = u32::try_from(body_len).map_err(|_| Error::EventTooLarge {
        size: body_len,
        max: u32::MAX as usize,
    })?;
    let digest = payload_digest(body);
    draft.pad_to(record_len(body_len));
    Ok((announced, digest))
}

/// Fills the header of `record` (whose payload is already in place) and its checksum.
pub(crate) fn seal(record: &mut [u8], payload_len: u32, digest: u64, header: &RecordHeader) {
    debug_assert_eq!(record.len(), record_len(payload_len as usize));
    let h = &mut record[..HEADER_LEN];
    h[0] = RECORD_FORMAT;
    h[1] = header.flags;
    h[2..4].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    h[4..8].copy_from_slice(&payload_len.to_le_bytes());
    h[8..24].copy_from_slice(&header.stream_id.to_le_bytes());
    h[24..28].copy_from_slice(&header.version.to_le_bytes());
    h[28..32].copy_from_slice(&header.type_id.to_le_bytes());
    h[32..40].copy_from_slice(&header.timestamp_ns.to_le_bytes());
    h[40..48].copy_from_slice(&header.links.prev.to_le_bytes());
    h[48..56].copy_from_slice(&header.links.jump.to_le_bytes());
    let checksum = header_checksum(&h[..CHECKSUM_AT], digest);
    h[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&checksum.to_le_bytes());
}

/// The checksum a sealed record carries in its header (0 for a record too short to have one).
pub(crate) fn stored_checksum(record: &[u8]) -> u64 {
    record
        .get(CHECKSUM_AT..HEADER_LEN)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

#[cfg(any(test, feature = "__internals"))]
/// The checksum of a whole record (header bytes and body), as `seal` writes it.
pub(crate) fn checksum_of(record: &[u8]) -> u64 {
    let body_len = le_u32(record, 4) as usize;
    let body = record.get(HEADER_LEN..HEADER_LEN + body_len).unwrap_or(&[]);
    header_checksum(&record[..CHECKSUM_AT], payload_digest(body))
}

fn header_checksum(header: &[u8], digest: u64) -> u64 {
    let mut buf = [0u8; CHECKSUM_AT + 8];
    buf[..CHECKSUM_AT].copy_from_slice(header);
    buf[CHECKSUM_AT..].copy_from_slice(&digest.to_le_bytes());
    xxh3_64(&buf)
}

#[inline]
fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

#[inline]
fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Verifies a stored record and splits it into header and payload. Every failure is
/// [`Error::Corrupt`] naming `seq`.
#[cfg(any(test, feature = "__internals"))]
pub(crate) fn decode(seq: u64, record: &[u8]) -> Result<(RecordHeader, &[u8])> {
    decode_with(seq, record, false)
}

/// Decodes a record; with `checked`, the record's own checksum is not computed, because a pack
/// checksum that covers its bytes has matched (see [`pack`](super::pack)). Every other check
/// still runs.
#[inline]
pub(crate) fn decode_with(seq: u64, record: &[u8], checked: bool) -> Result<(RecordHeader, &[u8])> {
    if record.len() < HEADER_LEN {
        return Err(Error::corrupt(
            seq,
            format!(
                "record of {} bytes is shorter than its header",
                record.len()
            ),
        ));
    }
    if record[0] != RECORD_FORMAT {
        return Err(Error::corrupt(
            seq,
            format!("unknown record format {}", record[0]),
        ));
    }
    let header_len = u16::from_le_bytes([record[2], record[3]]) as usize;
    if header_len != HEADER_LEN {
        return Err(Error::corrupt(
            seq,
            format!("header length {header_len}, expected {HEADER_LEN}"),
        ));
    }
    let payload_len = le_u32(record, 4) as usize;
    if record.len() != record_len(payload_len) {
        return Err(Error::corrupt(
            seq,
            format!(
                "record is {} bytes, but its header announces a {payload_len}-byte payload",
                record.len()
            ),
        ));
    }
    let payload = &record[HEADER_LEN..HEADER_LEN + payload_len];
    if !checked {
        let stored = le_u64(record, CHECKSUM_AT);
        let computed = header_checksum(&record[..CHECKSUM_AT], payload_digest(payload));
        if stored != computed {
            return Err(Error::corrupt(
                seq,
                format!("checksum mismatch (stored {stored:#018x}, computed {computed:#018x})"),
            ));
        }
    }
    let flags = record[1];
    if flags & !FLAGS_KNOWN != 0 || flags & (FLAG_BOUND | FLAG_ENCRYPTED) == FLAG_BOUND {
        return Err(Error::corrupt(seq, format!("unknown flags {flags:#04x}")));
    }
    if flags & FLAG_BLOB != 0 && flags & FLAG_ENVELOPE == 0 && payload_len != REF_LEN {
        return Err(Error::corrupt(
            seq,
            format!("a blob reference of {payload_len} bytes, expected {REF_LEN}"),
        ));
    }
    let header = RecordHeader {
        flags,
        stream_id: u128::from_le_bytes(
            record[8..24]
                .try_into()
                .map_err(|_| Error::corrupt(seq, "stream id"))?,
        ),
        version: le_u32(record, 24),
        type_id: le_u32(record, 28),
        timestamp_ns: le_u64(record, 32),
        links: Links {
            prev: le_u64(record, 40),
            jump: le_u64(record, 48),
        },
    };
    Ok((header, payload))
}

/// [`decode`], then the body split into its envelope section and the payload (or, for a blob
/// record, the blob reference, checked for length).
#[inline]
pub(crate) fn open(seq: u64, record: &[u8]) -> Result<(RecordHeader, Section<'_>, &[u8])> {
    open_with(seq, record, false)
}

/// [`open`], trusting the record's checksum to a matched pack checksum when `checked` (see
/// [`decode_with`]).
#[inline]
pub(crate) fn open_with(
    seq: u64,
    record: &[u8],
    checked: bool,
) -> Result<(RecordHeader, Section<'_>, &[u8])> {
    let (header, body) = decode_with(seq, record, checked)?;
    let (section, rest) = envelope::split(seq, header.flags & FLAG_ENVELOPE != 0, body)?;
    if header.flags & FLAG_BLOB != 0 && rest.len() != REF_LEN {
        return Err(Error::corrupt(
            seq,
            format!(
                "a blob reference of {} bytes, expected {REF_LEN}",
                rest.len()
            ),
        ));
    }
    Ok((header, section, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record format's checksums are XXH3-64 with seed 0, whatever crate computes them:
    /// known answers (from the `xxhash-rust` crate, which format 3 was first written with) on
    /// every size class of the algorithm.
    #[test]
    fn the_checksum_is_xxh3_64_on_every_size_class() {
        let data: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for (n, expected) in [
            (0usize, 0x2d06_8005_38d3_94c2u64),
            (1, 0xc44b_dff4_074e_ecdb),
            (3, 0xe140_90f5_54a5_ea90),
            (4, 0x2e8d_078a_566e_9749),
            (8, 0xcd1c_7f88_482f_caef),
            (9, 0xbfe4_3def_699f_a9e3),
            (16, 0x81e9_eb86_3446_0bb9),
            (17, 0x9998_430f_d0a6_55be),
            (128, 0x75ec_a5c5_d559_4884),
            (129, 0xa05d_a42e_7a4e_4667),
            (240, 0x5eb2_467c_8c9e_3969),
            (241, 0x2d43_1e98_4c44_1f15),
            (1024, 0xe99d_ef11_45f1_2936),
            (10_240, 0xd8b1_2968_4809_ba75),
            (20_000, 0x5f90_704b_1052_2b5f),
        ] {
            assert_eq!(payload_digest(&data[..n]), expected, "{n} bytes");
        }
    }

    fn sample(payload: &[u8]) -> Vec<u8> {
        let mut rec = vec![0u8; record_len(payload.len())];
        rec[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
        let header = RecordHeader {
            flags: 0,
            stream_id: 7 << 100,
            version: 3,
            type_id: 42,
            timestamp_ns: 99,
            links: Links { prev: 11, jump: 5 },
        };
        seal(
            &mut rec,
            payload.len() as u32,
            payload_digest(payload),
            &header,
        );
        rec
    }

    #[test]
    fn seal_then_decode() {
        let rec = sample(b"hello world");
        assert_eq!(rec.len() % RECORD_ALIGN, 0);
        let (h, p) = decode(1, &rec).unwrap();
        assert_eq!((h.stream_id, h.version, h.timestamp_ns), (7 << 100, 3, 99));
        assert_eq!(h.links, Links { prev: 11, jump: 5 });
        let peeked = peek(&rec).unwrap();
        assert_eq!(
            (peeked.stream_id, peeked.version, peeked.links),
            (h.stream_id, 3, h.links)
        );
        assert_eq!(p, b"hello world");
    }

    #[test]
    fn empty_payload() {
        let rec = sample(b"");
        assert_eq!(rec.len(), HEADER_LEN);
        assert_eq!(decode(1, &rec).unwrap().1, b"");
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let rec = sample(b"some payload bytes");
        // Every bit of header and payload; padding is not covered but its length is checked.
        for byte in 0..HEADER_LEN + 18 {
            for bit in 0..8 {
                let mut bad = rec.clone();
                bad[byte] ^= 1 << bit;
                let err = decode(9, &bad).unwrap_err();
                assert!(
                    matches!(err, Error::Corrupt { seq: 9, .. }),
                    "byte {byte} bit {bit}: {err}"
                );
            }
        }
    }

    #[test]
    fn truncated_and_extended_records_are_corrupt() {
        let rec = sample(b"abc");
        for len in 0..rec.len() {
            assert!(matches!(
                decode(5, &rec[..len]),
                Err(Error::Corrupt { seq: 5, .. })
            ));
        }
        let mut longer = rec.clone();
        longer.extend_from_slice(&[0; 16]);
        assert!(matches!(
            decode(5, &longer),
            Err(Error::Corrupt { seq: 5, .. })
        ));
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the decoder: they decode or are `Corrupt` naming the seq.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), seq in 0u64..u64::MAX) {
            match decode(seq, &bytes) {
                Ok((_, payload)) => proptest::prop_assert!(payload.len() + HEADER_LEN <= bytes.len()),
                Err(e) => {
                    let names_seq = matches!(e, Error::Corrupt { seq: s, .. } if s == seq);
                    proptest::prop_assert!(names_seq);
                }
            }
        }

        /// A valid record with any one byte replaced is refused, unless the byte is padding or
        /// the replacement equals the original.
        #[test]
        fn any_replaced_byte_is_caught(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..100), at in 0usize..164, with in proptest::num::u8::ANY) {
            let rec = sample(&payload);
            let at = at % rec.len();
            let mut bad = rec.clone();
            bad[at] = with;
            let in_padding = at >= HEADER_LEN + payload.len();
            if bad != rec && !in_padding {
                let refused = matches!(decode(3, &bad), Err(Error::Corrupt { seq: 3, .. }));
                proptest::prop_assert!(refused);
            }
        }
    }
}
