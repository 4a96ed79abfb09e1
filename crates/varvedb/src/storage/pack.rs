//! Packs: the values of the events log (format 4). `docs/design.md` ("The pack") draws it.
//!
//! ```text
//! key   u64 BE: the sequence of the pack's LAST record
//!       (followed by 8 zero bytes when the pack lies on overflow pages)
//! 0    u64    checksum: xxh3-64 of bytes 8..L, seeded with the key's sequence
//! 8    u8     pack format (4)
//! 9    u8     flags: 0x01 CONTINUED (the next pack was written by the same transaction);
//!             others are refused as corrupt
//! 10   u16    records N, 1 to 256
//! 12   u32    pack length L, a multiple of 16 (the value's length)
//! 16   u32×N  offset of record i from the pack's start: a multiple of 16, increasing
//! ..          zero padding to a multiple of 16
//! ..          N records (see `record`) of sequences last − N + 1 ..= last, each with its own
//!             checksum, each a multiple of 16 bytes long
//! ```
//! Header integers are little-endian.
//!
//! One pack holds the events of one commit group (or of one import transaction), cut at
//! [`PACK_RECORDS_MAX`] records or [`PACK_BYTES_MAX`] bytes. A pack cut to make room for the
//! next record of the same transaction is marked CONTINUED, so a run of packs ending with an
//! unmarked one holds whole appends of one transaction: the replicator's commit group. A scan
//! checks the pack's checksum once and trusts the records' checksums to it; a point read
//! checks the one record it takes.

use heed::{PutFlags, RoTxn, RwTxn};

use super::lmdb::LmdbResultExt;
use super::{Dbs, keys, record};
use crate::error::{Error, Result};

pub(crate) const PACK_FORMAT: u8 = 4;
pub(crate) const PACK_HEADER_LEN: usize = 16;
/// The most records a pack holds.
pub(crate) const PACK_RECORDS_MAX: usize = 256;
/// A pack is cut before a record that would take it past this length (a lone record may be
/// longer: it gets a pack of its own).
pub(crate) const PACK_BYTES_MAX: usize = 1 << 20;
const FORMAT_AT: usize = 8;
/// The pack's flag: the next pack in the log was written by the same transaction, and the
/// records of both belong to one commit group.
pub(crate) const FLAG_CONTINUED: u8 = 0x01;
/// The longest pack: its length field is a `u32`.
const PACK_LEN_LIMIT: usize = u32::MAX as usize;

/// The offset table's end: the header, `n` offsets, and padding to the record alignment.
fn table_end(n: usize) -> usize {
    (PACK_HEADER_LEN + 4 * n).next_multiple_of(record::RECORD_ALIGN)
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The checksum a pack stores in its first 8 bytes: XXH3-64 of everything after them, seeded
/// with the pack's last sequence, so that a pack read under another key fails it.
fn checksum_of(last: u64, pack: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot_with_seed(last, pack.get(FORMAT_AT..).unwrap_or(&[]))
}

/// A pack read from the log, its header checked (not its checksum, not its offset table: a
/// point read checks the two offsets it uses, a scan each offset in turn).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pack<'t> {
    bytes: &'t [u8],
    last: u64,
    count: usize,
}

impl<'t> Pack<'t> {
    /// The pack stored under the key `last`. Every failure is [`Error::Corrupt`] naming `last`.
    pub(crate) fn parse(last: u64, bytes: &'t [u8]) -> Result<Pack<'t>> {
        let bad = |what: String| Error::corrupt(last, format!("the pack ending here: {what}"));
        if bytes.len() < PACK_HEADER_LEN {
            return Err(bad(format!(
                "{} bytes, shorter than a pack header",
                bytes.len()
            )));
        }
        if bytes[FORMAT_AT] != PACK_FORMAT {
            return Err(bad(format!("unknown pack format {}", bytes[FORMAT_AT])));
        }
        if bytes[FORMAT_AT + 1] & !FLAG_CONTINUED != 0 {
            return Err(bad(format!("unknown flags {:#04x}", bytes[FORMAT_AT + 1])));
        }
        let count = usize::from(u16::from_le_bytes([bytes[10], bytes[11]]));
        if count == 0 || count > PACK_RECORDS_MAX {
            return Err(bad(format!(
                "{count} records (1 to {PACK_RECORDS_MAX} allowed)"
            )));
        }
        let len = le_u32(bytes, 12).map_or(0, |l| l as usize);
        if len != bytes.len() {
            return Err(bad(format!(
                "its header announces {len} bytes, but it is {} bytes",
                bytes.len()
            )));
        }
        if last < count as u64 {
            return Err(bad(format!(
                "{count} records cannot end at sequence {last} (sequences start at 1)"
            )));
        }
        if len < table_end(count) {
            return Err(bad(format!(
                "{len} bytes cannot hold the offsets of {count} records"
            )));
        }
        Ok(Pack { bytes, last, count })
    }

    /// Whether the next pack continues this one's commit group (see [`FLAG_CONTINUED`]).
    pub(crate) fn continued(&self) -> bool {
        self.bytes[FORMAT_AT + 1] & FLAG_CONTINUED != 0
    }

    /// The sequence of its first record.
    pub(crate) fn first(&self) -> u64 {
        self.last - (self.count as u64 - 1)
    }

    /// The sequence of its last record (the key).
    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    pub(crate) fn contains(&self, seq: u64) -> bool {
        (self.first()..=self.last).contains(&seq)
    }

    /// Whether the stored checksum matches the bytes; `Err` names both values.
    pub(crate) fn check_checksum(&self) -> std::result::Result<(), String> {
        let stored = u64::from_le_bytes(self.bytes[..FORMAT_AT].try_into().unwrap_or_default());
        let computed = checksum_of(self.last, self.bytes);
        if stored == computed {
            Ok(())
        } else {
            Err(format!(
                "pack checksum mismatch (stored {stored:#018x}, computed {computed:#018x})"
            ))
        }
    }

    /// The record with sequence `seq` (which the pack must contain), its offsets checked:
    /// 16-aligned, after the table, increasing and inside the pack. Its own checksum is not.
    #[inline]
    pub(crate) fn record(&self, seq: u64) -> Result<&'t [u8]> {
        let i = seq.wrapping_sub(self.first()) as usize;
        // `parse` checked that the table fits, so these reads stay inside it.
        let table = &self.bytes[PACK_HEADER_LEN..PACK_HEADER_LEN + 4 * self.count];
        if i < self.count {
            let start = table_entry(table, i);
            let end = if i + 1 < self.count {
                table_entry(table, i + 1)
            } else {
                self.bytes.len()
            };
            if start >= table_end(self.count)
                && start.is_multiple_of(record::RECORD_ALIGN)
                && start < end
                && end <= self.bytes.len()
            {
                return Ok(&self.bytes[start..end]);
            }
        }
        Err(self.bad_record(seq))
    }

    /// Why [`Pack::record`] refused `seq`.
    #[cold]
    fn bad_record(&self, seq: u64) -> Error {
        let i = seq.wrapping_sub(self.first()) as usize;
        if i >= self.count {
            return Error::corrupt(
                seq,
                format!(
                    "not in the pack of sequences {}..={}",
                    self.first(),
                    self.last
                ),
            );
        }
        let table = &self.bytes[PACK_HEADER_LEN..PACK_HEADER_LEN + 4 * self.count];
        let start = table_entry(table, i);
        let end = if i + 1 < self.count {
            table_entry(table, i + 1)
        } else {
            self.bytes.len()
        };
        Error::corrupt(
            seq,
            format!(
                "its pack's offset table places it at bytes {start}..{end} of {} \
                 (offsets are 16-aligned, increasing, after the table)",
                self.bytes.len()
            ),
        )
    }
}

/// Entry `i` of an offset table (which holds more than `i` entries).
#[inline]
fn table_entry(table: &[u8], i: usize) -> usize {
    let mut b = [0u8; 4];
    b.copy_from_slice(&table[4 * i..4 * i + 4]);
    u32::from_le_bytes(b) as usize
}

#[cfg(feature = "__internals")]
/// The byte ranges of a pack's records, for tests that forge or damage one; `None` if the pack
/// is malformed.
pub(crate) fn record_ranges(last: u64, bytes: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    let pack = Pack::parse(last, bytes).ok()?;
    (pack.first()..=last)
        .map(|seq| {
            let r = pack.record(seq).ok()?;
            let start = r.as_ptr() as usize - bytes.as_ptr() as usize;
            Some(start..start + r.len())
        })
        .collect()
}

#[cfg(feature = "__internals")]
/// Writes the checksum a pack stored under `last` must carry (for tests that forge a pack).
pub(crate) fn reseal(last: u64, bytes: &mut [u8]) {
    let checksum = checksum_of(last, bytes);
    bytes[..FORMAT_AT].copy_from_slice(&checksum.to_le_bytes());
}

/// The pack holding `seq`, if the log has it: one positioned lookup (packs are keyed by their
/// last sequence, so the first key at or above `seq` names it).
pub(crate) fn get_pack<'t>(dbs: &Dbs, txn: &'t RoTxn<'_>, seq: u64) -> Result<Option<Pack<'t>>> {
    if seq == 0 {
        return Ok(None);
    }
    Ok(pack_at_or_after(dbs, txn, seq)?.filter(|pack| pack.contains(seq)))
}

/// The first pack whose last sequence is `seq` or later: the one holding `seq`, or, where
/// `seq` was removed, the next one.
pub(crate) fn pack_at_or_after<'t>(
    dbs: &Dbs,
    txn: &'t RoTxn<'_>,
    seq: u64,
) -> Result<Option<Pack<'t>>> {
    let Some((key, value)) = dbs
        .events
        .get_greater_than_or_equal_to(txn, &keys::seq_key(seq))
        .lmdb()?
    else {
        return Ok(None);
    };
    let last = keys::decode_seq_key(key)
        .ok_or_else(|| Error::corrupt(seq, format!("malformed events-log key {key:02x?}")))?;
    Pack::parse(last, value).map(Some)
}

/// The pack whose last record is `seq`, found by an exact lookup of its inline key (LMDB's
/// stack cursor: no allocation); `None` if there is none, or it lies on overflow pages.
pub(crate) fn get_single<'t>(dbs: &Dbs, txn: &'t RoTxn<'_>, seq: u64) -> Result<Option<Pack<'t>>> {
    match dbs.events.get(txn, &keys::seq_key(seq)).lmdb()? {
        None => Ok(None),
        Some(value) => Pack::parse(seq, value).map(Some),
    }
}

/// Builds the packs of an append (or an import) and writes each with `APPEND`.
#[derive(Debug, Default)]
pub(crate) struct PackWriter {
    /// The pack being built: header and table space, then the records.
    buf: Vec<u8>,
    /// Offset table slots reserved at the start of `buf`.
    slots: usize,
    count: usize,
    last: u64,
}

impl PackWriter {
    /// Adds the record of `seq` (the next sequence after the previous one), writing the pack
    /// first if the record does not fit. `remaining` counts the records still to come with
    /// this one, so that the offset table is sized once.
    pub(crate) fn push(
        &mut self,
        dbs: &Dbs,
        wtxn: &mut RwTxn<'_>,
        inline_max: usize,
        seq: u64,
        record: &[u8],
        remaining: usize,
    ) -> Result<()> {
        if self.needs_cut(seq, record.len()) {
            // Cut to make room: the record that follows is this transaction's.
            self.write(dbs, wtxn, inline_max, FLAG_CONTINUED)?;
        }
        // A pack's length is a `u32`: a record too long to fit one, with its table, is refused
        // before anything of it is written.
        let start = if self.count == 0 {
            table_end(remaining.clamp(1, PACK_RECORDS_MAX))
        } else {
            self.buf.len()
        };
        if start + record.len() > PACK_LEN_LIMIT {
            return Err(Error::EventTooLarge {
                size: record.len(),
                max: PACK_LEN_LIMIT - table_end(1),
            });
        }
        self.add(seq, record, remaining);
        Ok(())
    }

    /// Whether the pack being built must be written before the record of `seq`.
    fn needs_cut(&self, seq: u64, record_len: usize) -> bool {
        self.count > 0
            && (self.count == self.slots
                || self.buf.len() + record_len > PACK_BYTES_MAX
                || Some(seq) != self.last.checked_add(1))
    }

    /// Adds a record to the pack being built (starting one if there is none).
    fn add(&mut self, seq: u64, record: &[u8], remaining: usize) {
        debug_assert!(record.len().is_multiple_of(record::RECORD_ALIGN));
        if self.count == 0 {
            self.slots = remaining.clamp(1, PACK_RECORDS_MAX);
            self.buf.clear();
            self.buf.resize(table_end(self.slots), 0);
        }
        let offset = self.buf.len() as u32;
        let at = PACK_HEADER_LEN + 4 * self.count;
        self.buf[at..at + 4].copy_from_slice(&offset.to_le_bytes());
        self.buf.extend_from_slice(record);
        self.count += 1;
        self.last = seq;
    }

    /// Writes the pack being built, if any, as the end of a commit group: called between
    /// whole appends only.
    pub(crate) fn flush(
        &mut self,
        dbs: &Dbs,
        wtxn: &mut RwTxn<'_>,
        inline_max: usize,
    ) -> Result<()> {
        self.write(dbs, wtxn, inline_max, 0)
    }

    fn write(
        &mut self,
        dbs: &Dbs,
        wtxn: &mut RwTxn<'_>,
        inline_max: usize,
        flags: u8,
    ) -> Result<()> {
        // Last sequences only grow, so APPEND skips the search and fills pages completely.
        self.write_with(dbs, wtxn, inline_max, flags, PutFlags::APPEND)
    }

    fn write_with(
        &mut self,
        dbs: &Dbs,
        wtxn: &mut RwTxn<'_>,
        inline_max: usize,
        flags: u8,
        put: PutFlags,
    ) -> Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let last = self.last;
        let pack = self.finish(flags);
        let key = if pack.len() <= inline_max {
            &keys::seq_key(last)[..]
        } else {
            &keys::seq_key_long(last)[..]
        };
        let written = dbs.events.put_with_flags(wtxn, put, key, pack).lmdb();
        self.count = 0;
        written
    }

    /// Seals the pack in `buf`: a table cut short of its slots moves the records down.
    fn finish(&mut self, flags: u8) -> &[u8] {
        let reserved = table_end(self.slots);
        let used = table_end(self.count);
        if used < reserved {
            let shift = reserved - used;
            self.buf.copy_within(reserved.., used);
            self.buf.truncate(self.buf.len() - shift);
            for i in 0..self.count {
                let at = PACK_HEADER_LEN + 4 * i;
                let offset = le_u32(&self.buf, at).unwrap_or(0) - shift as u32;
                self.buf[at..at + 4].copy_from_slice(&offset.to_le_bytes());
            }
            // The table's padding.
            self.buf[PACK_HEADER_LEN + 4 * self.count..used].fill(0);
        }
        let len = self.buf.len() as u32;
        self.buf[FORMAT_AT] = PACK_FORMAT;
        self.buf[FORMAT_AT + 1] = flags;
        self.buf[10..12].copy_from_slice(&(self.count as u16).to_le_bytes());
        self.buf[12..16].copy_from_slice(&len.to_le_bytes());
        let checksum = checksum_of(self.last, &self.buf);
        self.buf[..FORMAT_AT].copy_from_slice(&checksum.to_le_bytes());
        &self.buf
    }
}

/// Writes `run` (records of consecutive sequences, at most a pack's worth, taken from one pack)
/// as a pack of its own with `flags`, where the log may already hold later packs: a removal's
/// rewrite of the runs a pack keeps (see [`removal`](super::removal)).
pub(crate) fn write_run(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    inline_max: usize,
    run: &[(u64, &[u8])],
    flags: u8,
) -> Result<()> {
    let mut writer = PackWriter::default();
    for (i, (seq, record)) in run.iter().enumerate() {
        writer.add(*seq, record, run.len() - i);
    }
    writer.write_with(dbs, wtxn, inline_max, flags, PutFlags::empty())
}

/// The records of the log from a sequence on, pack by pack, as [`LogEntry`]s.
///
/// With `trust_packs`, a pack whose checksum matches hands out its records as checked (their
/// own checksums are not computed again); a pack whose checksum fails hands them out
/// unchecked, so that each record's own checksum finds the damage and the others still read.
/// An LMDB error is yielded once and ends the walk; a malformed key or pack is yielded once and
/// the walk goes on with the next pack.
pub(crate) struct LogIter<'t> {
    cursor: Option<heed::RoRange<'t, heed::types::Bytes, heed::types::Bytes, keys::SeqOrder>>,
    failed: Option<Error>,
    pack: Option<Pack<'t>>,
    /// The next sequence to hand out of `pack`.
    next: u64,
    /// `pack`'s checksum matched (with `trust_packs`).
    trusted: bool,
    trust_packs: bool,
    from_seq: u64,
}

/// One record of the log, as [`LogIter`] hands it out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogEntry<'t> {
    pub(crate) seq: u64,
    pub(crate) record: &'t [u8],
    /// The record's bytes are covered by a pack checksum that matched.
    pub(crate) checked: bool,
    /// The record is the last of its commit group: of its pack, and the pack is not
    /// CONTINUED.
    pub(crate) ends_group: bool,
}

impl<'t> LogIter<'t> {
    pub(crate) fn new(
        opened: Result<heed::RoRange<'t, heed::types::Bytes, heed::types::Bytes, keys::SeqOrder>>,
        from_seq: u64,
        trust_packs: bool,
    ) -> Self {
        let (cursor, failed) = match opened {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e)),
        };
        LogIter {
            cursor,
            failed,
            pack: None,
            next: 0,
            trusted: false,
            trust_packs,
            from_seq,
        }
    }

    /// Opens the log at the pack holding `from_seq` (see [`LogIter::new`]).
    pub(crate) fn open(
        check: Result<()>,
        dbs: &Dbs,
        txn: &'t RoTxn<'_, heed::WithoutTls>,
        from_seq: u64,
        trust_packs: bool,
    ) -> Self {
        let start = keys::seq_key(from_seq);
        let range = (
            std::ops::Bound::Included(&start[..]),
            std::ops::Bound::Unbounded,
        );
        let opened = check.and_then(|()| dbs.events.range(txn, &range).lmdb());
        LogIter::new(opened, from_seq, trust_packs)
    }
}

impl<'t> Iterator for LogIter<'t> {
    type Item = Result<LogEntry<'t>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(pack) = &self.pack {
                let seq = self.next;
                if seq <= pack.last() {
                    self.next += 1;
                    let ends_group = seq == pack.last() && !pack.continued();
                    return Some(pack.record(seq).map(|record| LogEntry {
                        seq,
                        record,
                        checked: self.trusted,
                        ends_group,
                    }));
                }
                self.pack = None;
            }
            if let Some(e) = self.failed.take() {
                return Some(Err(e));
            }
            let (key, value) = match self.cursor.as_mut()?.next()? {
                Ok(entry) => entry,
                Err(e) => {
                    self.cursor = None;
                    return Some(Err(Error::lmdb(e)));
                }
            };
            let Some(last) = keys::decode_seq_key(key) else {
                return Some(Err(Error::corrupt(
                    0,
                    format!("malformed events-log key {key:02x?}"),
                )));
            };
            let pack = match Pack::parse(last, value) {
                Ok(pack) => pack,
                Err(e) => return Some(Err(e)),
            };
            self.trusted = self.trust_packs && pack.check_checksum().is_ok();
            self.next = pack.first().max(self.from_seq);
            self.pack = Some(pack);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pack built the way [`PackWriter`] builds one, from records of the given lengths.
    fn build(first: u64, lens: &[usize], slots: usize) -> Vec<u8> {
        let mut w = PackWriter::default();
        for (i, &len) in lens.iter().enumerate() {
            let record = vec![i as u8 + 1; len];
            assert!(!w.needs_cut(first + i as u64, len));
            w.add(first + i as u64, &record, slots - i);
        }
        w.finish(0).to_vec()
    }

    #[test]
    fn records_are_found_by_sequence_and_stay_aligned() {
        for slots in [3, 4, 100] {
            let bytes = build(10, &[64, 96, 80], slots);
            assert_eq!(bytes.len() % 16, 0);
            let pack = Pack::parse(12, &bytes).unwrap();
            assert_eq!((pack.first(), pack.last()), (10, 12));
            pack.check_checksum().unwrap();
            for (seq, (len, fill)) in [(10, (64, 1u8)), (11, (96, 2)), (12, (80, 3))] {
                let record = pack.record(seq).unwrap();
                assert_eq!(record.len(), len);
                assert!(record.iter().all(|&b| b == fill));
                let at = record.as_ptr() as usize - bytes.as_ptr() as usize;
                assert_eq!(at % 16, 0);
            }
            assert!(pack.record(9).is_err());
            assert!(pack.record(13).is_err());
        }
    }

    #[test]
    fn a_damaged_pack_is_an_error_never_a_panic() {
        let good = build(1, &[64, 64], 2);
        // Every single-byte change either still parses (and the checksum then fails) or is
        // refused; no record slice ever leaves the pack.
        for at in 0..good.len() {
            for delta in [1u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] = bad[at].wrapping_add(delta);
                match Pack::parse(2, &bad) {
                    Err(Error::Corrupt { .. }) => {}
                    Err(other) => panic!("unexpected error {other}"),
                    Ok(pack) => {
                        assert!(
                            pack.check_checksum().is_err(),
                            "byte {at} changed unnoticed"
                        );
                        for seq in pack.first()..=pack.last() {
                            if let Ok(r) = pack.record(seq) {
                                assert!(
                                    r.as_ptr() as usize + r.len()
                                        <= bad.as_ptr() as usize + bad.len()
                                );
                            }
                        }
                    }
                }
            }
        }
        for short in 0..good.len() {
            assert!(Pack::parse(2, &good[..short]).is_err());
        }
        assert!(
            Pack::parse(1, &good).is_err(),
            "two records cannot end at sequence 1"
        );
        let moved = Pack::parse(3, &good).unwrap();
        assert!(
            moved.check_checksum().is_err(),
            "a pack read under another key"
        );
    }
}
