//! The stream chain: how a stream's events are found by version without a per-event index.
//!
//! Every record points back at two earlier records of its stream: `prev`, the previous version,
//! and `jump`, the version [`jump_version`] names. The jumps follow E. W. Myers' "applicative
//! random-access stack" (1983), in the skew-binary form: from any version, any earlier version
//! is reached in O(log n) steps, each step one exact lookup in the log. The stream-heads table
//! (one entry per stream) holds where each chain starts, so an append writes its record and
//! updates one head, and never inserts into a B-tree keyed by stream: that is what makes appends
//! to many random streams cheap (see docs/design.md, "The stream chain").

use heed::RoTxn;

use super::pack::{Pack, get_pack, get_single};
use super::record::{self, Links};
use super::{Dbs, get_record};
use crate::error::{Error, Result};

/// The version that version `version`'s jump link points at; 0 when it has none (version 1).
///
/// With depth `d = version - 1`, write `d` greedily as a sum of numbers `2^k - 1`, largest
/// first; the jump skips back by the last (smallest) term.
pub(crate) fn jump_version(version: u32) -> u32 {
    if version <= 1 {
        return 0;
    }
    let depth = u64::from(version - 1);
    let mut rest = depth;
    loop {
        // The largest 2^k - 1 not above `rest` (rest >= 1, so k >= 1).
        let k = 63 - (rest + 1).leading_zeros();
        let term = (1u64 << k) - 1;
        if rest == term {
            // depth - term < depth < u32::MAX, so the result fits.
            return u32::try_from(depth - term + 1).unwrap_or(0);
        }
        rest -= term;
    }
}

/// One step from version `at` towards the earlier version `target`: the version to go to, and
/// whether the step follows the jump link (else the prev link).
pub(crate) fn step(at: u32, target: u32) -> (u32, bool) {
    let jump = jump_version(at);
    if jump >= target && jump > 0 {
        (jump, true)
    } else {
        (at - 1, false)
    }
}

fn broken(stream_id: u128, version: u32, reason: String) -> Error {
    Error::CorruptIndex {
        stream_id,
        version,
        reason,
    }
}

/// Reads the record at `seq`, which must be version `version` of `stream_id`, and returns it
/// with its links. A record that is missing, unreadable or of another stream or version means a
/// broken chain.
pub(crate) fn hop<'t>(
    dbs: &Dbs,
    txn: &'t RoTxn<'_>,
    stream_id: u128,
    version: u32,
    seq: u64,
) -> Result<(&'t [u8], Links)> {
    let record = get_record(dbs, txn, seq)?.ok_or_else(|| {
        broken(
            stream_id,
            version,
            format!("the chain points at sequence {seq}, which does not exist"),
        )
    })?;
    let found = checked(stream_id, version, seq, record)?;
    Ok((found.record, found.links))
}

/// A record of a stream, found by version: its sequence, bytes and links.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Found<'t> {
    pub(crate) seq: u64,
    pub(crate) record: &'t [u8],
    pub(crate) links: Links,
}

/// Reads version `version` of `stream_id` at `seq` (see [`hop`]).
pub(crate) fn find<'t>(
    dbs: &Dbs,
    txn: &'t RoTxn<'_>,
    stream_id: u128,
    version: u32,
    seq: u64,
) -> Result<Found<'t>> {
    let (record, links) = hop(dbs, txn, stream_id, version, seq)?;
    Ok(Found { seq, record, links })
}

/// Reads a stream's records backwards over their `prev` links. A stream's events are often
/// neighbours in the log (a batch, an aggregate appended to in a burst): then the previous
/// version is in the same pack, read through its offset table, or at the end of the previous
/// pack, which one cursor step reads instead of a descent of the B-tree. Any other link costs
/// one positioned lookup, as [`find`] does.
pub(crate) struct BackWalk<'t> {
    dbs: Dbs,
    txn: &'t RoTxn<'t, heed::WithoutTls>,
    /// The pack of the record read last.
    pack: Option<Pack<'t>>,
    /// A cursor walking the log downwards, whose next step reads the pack before `pack`.
    cursor:
        Option<heed::RoRevRange<'t, heed::types::Bytes, heed::types::Bytes, super::keys::SeqOrder>>,
    /// The last lookup found a pack of one record: try the next one by exact key first.
    singles: bool,
}

impl<'t> BackWalk<'t> {
    pub(crate) fn new(dbs: &Dbs, txn: &'t RoTxn<'t, heed::WithoutTls>) -> Self {
        BackWalk {
            dbs: *dbs,
            txn,
            pack: None,
            cursor: None,
            singles: false,
        }
    }

    /// Version `version` of `stream_id` at `seq`, checked as [`hop`] checks it.
    pub(crate) fn find(&mut self, stream_id: u128, version: u32, seq: u64) -> Result<Found<'t>> {
        if let Some(pack) = self.pack
            && pack.contains(seq)
        {
            return checked(stream_id, version, seq, pack.record(seq)?);
        }
        if let Some(pack) = self.pack
            && pack.first().checked_sub(1) == Some(seq)
            && let Some(cursor) = &mut self.cursor
            && let Some(Ok((key, value))) = cursor.next()
            && super::keys::decode_seq_key(key) == Some(seq)
        {
            let pack = Pack::parse(seq, value)?;
            self.pack = Some(pack);
            return checked(stream_id, version, seq, pack.record(seq)?);
        }
        // Any other link: one lookup. Where the packs are single records (a log of lone
        // appends), the record's own key finds it with an exact lookup on LMDB's stack cursor;
        // otherwise a positioned lookup, which opens (and allocates) a cursor.
        self.cursor = None;
        self.pack = None;
        let single = match self.singles {
            true => get_single(&self.dbs, self.txn, seq)?,
            false => None,
        };
        let pack = match single {
            Some(pack) => pack,
            None => get_pack(&self.dbs, self.txn, seq)?.ok_or_else(|| {
                broken(
                    stream_id,
                    version,
                    format!("the chain points at sequence {seq}, which does not exist"),
                )
            })?,
        };
        self.singles = pack.first() == pack.last();
        self.pack = Some(pack);
        let found = checked(stream_id, version, seq, pack.record(seq)?)?;
        // If the next link will name the previous pack's last record, walk on with a cursor
        // (positioned at the first step, and allocated once for the run). Scattered streams
        // never pay it.
        if found.links.prev != 0 && found.links.prev.checked_add(1) == Some(pack.first()) {
            let upper = super::keys::seq_key_long(found.links.prev);
            let range = (
                std::ops::Bound::Unbounded,
                std::ops::Bound::Included(&upper[..]),
            );
            if let Ok(cursor) = self.dbs.events.rev_range(self.txn, &range) {
                self.cursor = Some(cursor);
            }
        }
        Ok(found)
    }
}

/// `record`, found at `seq`, as version `version` of `stream_id`: what [`hop`] checks.
fn checked(stream_id: u128, version: u32, seq: u64, record: &[u8]) -> Result<Found<'_>> {
    let peek = record::peek(record).ok_or_else(|| {
        broken(
            stream_id,
            version,
            format!("the chain points at sequence {seq}, which is not a record"),
        )
    })?;
    if peek.stream_id != stream_id || peek.version != version {
        return Err(broken(
            stream_id,
            version,
            format!(
                "the chain points at sequence {seq}, which holds version {} of stream {:#x}",
                peek.version, peek.stream_id
            ),
        ));
    }
    Ok(Found {
        seq,
        record,
        links: peek.links,
    })
}

/// The record of `version` of `stream_id` in `txn`'s snapshot: from the stream's head, over
/// the chain's jumps. `None` when the stream has no such version.
pub(crate) fn version_at<'t>(
    dbs: &Dbs,
    txn: &'t RoTxn<'_>,
    stream_id: u128,
    version: u32,
) -> Result<Option<Found<'t>>> {
    let Some((head_version, head_seq)) = super::stream_head(dbs, txn, stream_id)? else {
        return Ok(None);
    };
    if version == 0 || version > head_version {
        return Ok(None);
    }
    // A removed version (truncated or deleted) is not there.
    if version < super::removal::bounds(dbs, txn, stream_id)?.first_kept {
        return Ok(None);
    }
    let head = find(dbs, txn, stream_id, head_version, head_seq)?;
    locate(dbs, txn, stream_id, (head_version, head), version).map(Some)
}

/// Walks from `start`, version `from` of `stream_id`, back to version `target <= from`.
pub(crate) fn locate<'t>(
    dbs: &Dbs,
    txn: &'t RoTxn<'_>,
    stream_id: u128,
    (from, start): (u32, Found<'t>),
    target: u32,
) -> Result<Found<'t>> {
    let (mut at, mut found) = (from, start);
    while at > target {
        let (next, by_jump) = step(at, target);
        let seq = if by_jump {
            found.links.jump
        } else {
            found.links.prev
        };
        at = next;
        found = find(dbs, txn, stream_id, at, seq)?;
    }
    Ok(found)
}

/// The jump spine of a stream's head: the head, its jump target, that one's jump target, and so
/// on down to version 1 (stored version 1 first). The next append's links follow from its top
/// three entries alone (Myers' rule: a node's jump is its parent's jump's jump when the two gaps
/// are equal, else its parent), so a writer that keeps the spine reads no record to append.
/// It has O(log n) entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Spine(Vec<(u32, u64)>);

impl Spine {
    /// The spine of the head `(version, seq)`, read from its records: one read per entry.
    pub(crate) fn load(
        dbs: &Dbs,
        txn: &RoTxn<'_>,
        stream_id: u128,
        version: u32,
        seq: u64,
    ) -> Result<Spine> {
        let mut entries = Vec::new();
        let (mut version, mut seq) = (version, seq);
        // Versions below the first kept one were removed: their records cannot be read, and
        // no walk ever follows a link to them (it never goes below the first kept version).
        // The first removed entry keeps the sequence its link named; the rest are
        // placeholders.
        let first_kept = super::removal::bounds(dbs, txn, stream_id)?.first_kept;
        while version >= first_kept.max(1) {
            entries.push((version, seq));
            if version == 1 {
                break;
            }
            let (_, links) = hop(dbs, txn, stream_id, version, seq)?;
            (version, seq) = (jump_version(version), links.jump);
        }
        if version > 0 && version < first_kept {
            let below = Spine::placeholder(version);
            entries.push((version, seq));
            entries.extend(below.0.into_iter().rev().skip(1));
        }
        entries.reverse();
        Ok(Spine(entries))
    }

    /// The spine of a stream at `version` whose records were all removed: the versions of its
    /// jump spine, each at sequence 0 (no walk follows a link into removed versions).
    pub(crate) fn placeholder(version: u32) -> Spine {
        let mut entries = Vec::new();
        let mut v = version;
        while v > 0 {
            entries.push((v, 0));
            if v == 1 {
                break;
            }
            v = jump_version(v);
        }
        entries.reverse();
        Spine(entries)
    }

    /// Appends version `version` at `seq` (the next version of the stream) and returns its links.
    pub(crate) fn push(&mut self, version: u32, seq: u64) -> Links {
        let s = &mut self.0;
        let n = s.len();
        let links = match n {
            0 => Links::default(),
            1 | 2 => Links {
                prev: s[n - 1].1,
                jump: s[n - 1].1,
            },
            _ => {
                let prev = s[n - 1].1;
                if s[n - 1].0 - s[n - 2].0 == s[n - 2].0 - s[n - 3].0 {
                    let jump = s[n - 3].1;
                    s.truncate(n - 2);
                    Links { prev, jump }
                } else {
                    Links { prev, jump: prev }
                }
            }
        };
        s.push((version, seq));
        links
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Myers' recursive definition, on depths: the reference the closed form must match.
    fn reference(n: usize) -> Vec<u64> {
        let mut j = vec![0u64; n];
        for d in 1..n {
            let p = d as u64 - 1;
            let jp = j[p as usize];
            let jjp = j[jp as usize];
            j[d] = if p - jp == jp - jjp { jjp } else { p };
        }
        j
    }

    #[test]
    fn closed_form_matches_the_recursive_definition() {
        let j = reference(100_000);
        for (d, jump_depth) in j.iter().enumerate().skip(1) {
            let version = d as u32 + 1;
            assert_eq!(
                u64::from(jump_version(version)),
                jump_depth + 1,
                "version {version}"
            );
        }
        assert_eq!(jump_version(1), 0);
        assert_eq!(jump_version(0), 0);
    }

    #[test]
    fn the_spine_gives_the_same_jumps_as_the_closed_form() {
        // Sequences are version * 10, so a link's target version is its sequence / 10.
        let mut spine = Spine::default();
        for version in 1..=100_000u32 {
            let seq = u64::from(version) * 10;
            let links = spine.push(version, seq);
            if version == 1 {
                assert_eq!(links, Links::default());
            } else {
                assert_eq!(links.prev, seq - 10);
                assert_eq!(
                    links.jump / 10,
                    u64::from(jump_version(version)),
                    "{version}"
                );
            }
            assert!(spine.0.len() <= 2 * 32, "the spine stays logarithmic");
        }
    }

    #[test]
    fn every_version_is_reached_in_logarithmic_steps() {
        let hops = |from: u32, target: u32| {
            let (mut at, mut n) = (from, 0u32);
            while at > target {
                at = step(at, target).0;
                n += 1;
            }
            assert_eq!(at, target);
            n
        };
        for from in [1u32, 2, 3, 100, 4_095, 65_536, 1_000_000] {
            for target in [1, from / 3, from / 2, from.saturating_sub(1).max(1), from] {
                let bound = 3 * (32 - from.leading_zeros()) + 2;
                assert!(hops(from, target) <= bound, "{from} -> {target}");
            }
        }
        // The top of the range too: no overflow, still logarithmic.
        assert!(hops(u32::MAX, 1) <= 3 * 32 + 2);
        assert!(hops(u32::MAX, u32::MAX / 2) <= 3 * 32 + 2);
    }
}
