//! Removing events: a stream's first events (truncation), all of them (deletion), all of them
//! for good (a tombstone). The records leave the log and every index, their blobs are released,
//! and LMDB reuses the pages.
//!
//! - **Bounds.** A stream whose first events were removed has an entry in `stream_bounds`: its
//!   first kept version, and a tombstone flag. Its head keeps its last version and that
//!   version's sequence, so versions never restart: the next append continues the chain. Reads
//!   by version start at the first kept one; no walk of the chain goes below it.
//! - **Packs.** A pack that loses records is rewritten as the runs of consecutive sequences it
//!   keeps, each a pack of format 4 keyed by its last sequence, the records byte for byte. All
//!   runs but the last carry `CONTINUED`, the last the flag the pack had: a commit group stays
//!   one group. No bitmap, so a store with no removals reads exactly as before.
//! - **The log's end.** Sequences are never given twice: when a removal takes the log's last
//!   record, `meta["log_end"]` keeps the end, and [`last_seq`](super::last_seq) reads the
//!   larger of it and the last key.
//! - **Counts.** `meta["removed_events"]` counts every record removed, so that the kept events
//!   are `last_seq - removed`.

use heed::{RoTxn, RwTxn};

use super::lmdb::LmdbResultExt;
use super::pack::{FLAG_CONTINUED, Pack};
use super::{Dbs, Stored, blob, crypto, keys, tags};
use crate::error::{Error, Result};

/// The `meta` key of the log's end, kept once a removal took its last record.
pub(crate) const META_LOG_END: &str = "log_end";
/// The `meta` key of the number of records removed so far.
pub(crate) const META_REMOVED: &str = "removed_events";

/// A stream's bounds flag: tombstoned, so it takes no more events.
const FLAG_TOMBSTONE: u32 = 1;

/// Where a stream's kept events begin, and whether it is tombstoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// The first version still in the log (1 when nothing was removed); the head's version plus
    /// one when every event is gone.
    pub(crate) first_kept: u32,
    /// Whether the stream was hard-deleted: an append to it is `Error::StreamDeleted`.
    pub(crate) tombstoned: bool,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            first_kept: 1,
            tombstoned: false,
        }
    }
}

/// The bounds of `stream_id` (the default when nothing of it was removed).
pub(crate) fn bounds(dbs: &Dbs, txn: &RoTxn<'_>, stream_id: u128) -> Result<Bounds> {
    let Some(value) = dbs.bounds.get(txn, &keys::head_key(stream_id)).lmdb()? else {
        return Ok(Bounds::default());
    };
    let bad = || Error::CorruptIndex {
        stream_id,
        version: 0,
        reason: format!("its bounds entry is {} bytes, expected 8", value.len()),
    };
    let word = |at: usize| -> Result<u32> {
        value
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(bad)
    };
    if value.len() != 8 {
        return Err(bad());
    }
    Ok(Bounds {
        first_kept: word(0)?.max(1),
        tombstoned: word(4)? & FLAG_TOMBSTONE != 0,
    })
}

/// Writes the bounds of `stream_id`.
pub(crate) fn put_bounds(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    stream_id: u128,
    bounds: Bounds,
) -> Result<()> {
    let mut value = [0u8; 8];
    value[..4].copy_from_slice(&bounds.first_kept.to_le_bytes());
    let flags = if bounds.tombstoned { FLAG_TOMBSTONE } else { 0 };
    value[4..].copy_from_slice(&flags.to_le_bytes());
    dbs.bounds
        .put(wtxn, &keys::head_key(stream_id), &value)
        .lmdb()
}

/// A `u64` record of `meta` (0 when absent).
pub(crate) fn meta_u64(dbs: &Dbs, txn: &RoTxn<'_>, key: &str) -> Result<u64> {
    match dbs.meta.get(txn, key).lmdb()? {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v)
            .map(u64::from_le_bytes)
            .map_err(|_| Error::corrupt(0, format!("meta record {key:?} is {} bytes", v.len()))),
    }
}

fn put_meta_u64(dbs: &Dbs, wtxn: &mut RwTxn<'_>, key: &str, value: u64) -> Result<()> {
    dbs.meta.put(wtxn, key, &value.to_le_bytes()).lmdb()
}

/// An import's removals: the source's removed count, and its log's end when the log's last
/// events were removed (so that their sequences are not given again).
pub(crate) fn set_removal_meta(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    log_end: u64,
    removed: u64,
) -> Result<()> {
    if super::last_seq(dbs, wtxn)? < log_end {
        put_meta_u64(dbs, wtxn, META_LOG_END, log_end)?;
    }
    if removed > 0 {
        put_meta_u64(dbs, wtxn, META_REMOVED, removed)?;
    }
    Ok(())
}

/// What a removal did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Removed {
    /// Records removed from the log.
    pub(crate) events: u64,
    /// Bytes of records, and of blobs whose last reference went, given back.
    pub(crate) bytes: u64,
}

/// Removes the records at `seqs` (ascending, without repeats; each in the log) from the log,
/// the event-id index and the tag index, and releases their blobs (a blob shared with a kept
/// record stays). Packs that keep records are rewritten as their runs (see the module).
pub(crate) fn remove_records(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    inline_max: usize,
    seqs: &[u64],
) -> Result<Removed> {
    let mut removed = Removed::default();
    if seqs.is_empty() {
        return Ok(removed);
    }
    let end_before = super::last_seq(dbs, wtxn)?;
    let mut i = 0;
    while i < seqs.len() {
        let seq = seqs[i];
        // The pack holding `seq`, copied out: the transaction rewrites it.
        let (key, last, bytes) = {
            let found = dbs
                .events
                .get_greater_than_or_equal_to(wtxn, &keys::seq_key(seq))
                .lmdb()?;
            let Some((key, value)) = found else {
                return Err(Error::corrupt(seq, "removed, but the log does not have it"));
            };
            let last = keys::decode_seq_key(key).ok_or_else(|| {
                Error::corrupt(seq, format!("malformed events-log key {key:02x?}"))
            })?;
            (key.to_vec(), last, value.to_vec())
        };
        let pack = Pack::parse(last, &bytes)?;
        if !pack.contains(seq) {
            return Err(Error::corrupt(seq, "removed, but the log does not have it"));
        }
        let mut gone = Vec::new();
        while i < seqs.len() && seqs[i] <= last {
            gone.push(seqs[i]);
            i += 1;
        }
        // Each removed record leaves the indexes; its blob loses a reference.
        for &seq in &gone {
            let record = pack.record(seq)?;
            let stored = Stored::open(seq, record, false)?;
            unindex(dbs, wtxn, &stored, &mut removed)?;
            removed.events += 1;
            removed.bytes += record.len() as u64;
        }
        // The pack goes; the runs it keeps come back.
        dbs.events.delete(wtxn, &key).lmdb()?;
        let continued = pack.continued();
        let mut runs: Vec<Vec<(u64, &[u8])>> = Vec::new();
        for s in pack.first()..=last {
            if gone.binary_search(&s).is_ok() {
                continue;
            }
            let record = pack.record(s)?;
            match runs.last_mut() {
                Some(run) if run.last().is_some_and(|(p, _)| p + 1 == s) => run.push((s, record)),
                _ => runs.push(vec![(s, record)]),
            }
        }
        let count = runs.len();
        for (n, run) in runs.into_iter().enumerate() {
            let flags = if n + 1 < count || continued {
                FLAG_CONTINUED
            } else {
                0
            };
            super::pack::write_run(dbs, wtxn, inline_max, &run, flags)?;
        }
    }
    // Sequences are never given twice: the end stays where it was.
    if super::last_seq(dbs, wtxn)? < end_before {
        put_meta_u64(dbs, wtxn, META_LOG_END, end_before)?;
    }
    let total = meta_u64(dbs, wtxn, META_REMOVED)?.saturating_add(removed.events);
    put_meta_u64(dbs, wtxn, META_REMOVED, total)?;
    Ok(removed)
}

/// Takes a removed record out of the event-id and tag indexes, and releases its blob.
fn unindex(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    stored: &Stored<'_>,
    removed: &mut Removed,
) -> Result<()> {
    if let Some(id) = stored.section.event_id() {
        // Only the entry that names this record: an id is unique, but a damaged index must
        // not lose another record's entry.
        let names_it = matches!(
            super::event_id_seq(dbs, wtxn, id)?,
            Some(seq) if seq == stored.seq
        );
        if names_it {
            dbs.event_ids.delete(wtxn, &id.to_be_bytes()).lmdb()?;
        }
    }
    for tag in stored.section.tags() {
        let key = tags::index_key(tag.as_bytes(), stored.header.type_id, stored.seq);
        dbs.tags.delete(wtxn, &key).lmdb()?;
    }
    // A shredded stream's blobs were released by the shred.
    if let Some(reference) = stored.blob_ref()?
        && !crypto::is_shredded(dbs, wtxn, stored.header.stream_id)?
    {
        let len = reference.len;
        if blob::release(dbs, wtxn, &reference.hash)? == 0 {
            removed.bytes = removed.bytes.saturating_add(len);
        }
    }
    Ok(())
}

/// The sequences of versions `from..to` of `stream_id` (`from` at least its first kept
/// version, `to` at most its head's version plus one), walked down the chain from version
/// `to - 1`. Ascending.
pub(crate) fn stream_seqs(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    stream_id: u128,
    from: u32,
    to: u32,
) -> Result<Vec<u64>> {
    let mut seqs = Vec::with_capacity(to.saturating_sub(from) as usize);
    if to <= from {
        return Ok(seqs);
    }
    let Some(found) = super::chain::version_at(dbs, txn, stream_id, to - 1)? else {
        return Ok(seqs);
    };
    let (mut version, mut seq, mut links) = (to - 1, found.seq, found.links);
    loop {
        seqs.push(seq);
        if version == from {
            break;
        }
        let (_, next) = super::chain::hop(dbs, txn, stream_id, version - 1, links.prev)?;
        (version, seq, links) = (version - 1, links.prev, next);
    }
    seqs.reverse();
    Ok(seqs)
}

/// What removing events of a stream did: [`Storage::truncate_stream`](crate::Storage::truncate_stream),
/// [`delete_stream`](crate::Storage::delete_stream) and
/// [`tombstone_stream`](crate::Storage::tombstone_stream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemovalReport {
    /// Events removed by this call.
    pub events_removed: u64,
    /// Bytes given back: the removed records, and the blobs whose last reference went.
    pub bytes_reclaimed: u64,
    /// The stream's first kept version afterwards (its last version plus one when none is
    /// kept).
    pub first_kept: u32,
}

/// Records a removal transaction removes in one step: it takes steps until
/// [`REMOVAL_TXN_BUDGET`] has passed, so that appends wait a few milliseconds at most behind it
/// (a step is at most a pack's records, or as many packs rewritten).
pub(crate) const REMOVAL_STEP: usize = 256;
/// How long a removal transaction goes on taking steps (it takes one at least).
pub(crate) const REMOVAL_TXN_BUDGET: std::time::Duration = std::time::Duration::from_millis(1);
/// Records a removal transaction removes at most, however fast its steps are.
pub(crate) const REMOVAL_TXN_MAX: usize = 1 << 16;

/// How a stream's events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Versions below the given one.
    Before(u32),
    /// Every version; the stream goes on at its next version.
    All,
    /// Every version, and the stream takes no more events.
    Tombstone,
}

/// Removes events of `stream_id` as `how` says, in transactions of about
/// [`REMOVAL_TXN_BUDGET`] each, flushed: a crash between two leaves the stream's first versions removed and
/// the rest kept, consistent, and the same call finishes the work.
pub(crate) fn remove_stream(
    storage: &super::Storage,
    stream_id: u128,
    how: Removal,
) -> Result<RemovalReport> {
    // First, on its own: the stream must have events (a tombstone may also keep one that has
    // none from being made), and a tombstone holds from this transaction on.
    let before = storage.write_durable(|wtxn, dbs| {
        let head = super::stream_head(dbs, wtxn, stream_id)?;
        if head.is_none() && how != Removal::Tombstone {
            return Err(Error::StreamNotFound { stream_id });
        }
        let end = head.map_or(0, |(v, _)| v).saturating_add(1);
        let mut b = bounds(dbs, wtxn, stream_id)?;
        let tombstone = how == Removal::Tombstone && !b.tombstoned;
        if tombstone {
            b.tombstoned = true;
            put_bounds(dbs, wtxn, stream_id, b)?;
        }
        let before = match how {
            Removal::Before(v) => v.min(end),
            Removal::All | Removal::Tombstone => end,
        };
        Ok((before, tombstone))
    })?;
    // Then the events, as retention removes them.
    let removed = remove_in_log_order(storage, &[(stream_id, before)])?;
    let txn = storage.read_txn()?;
    Ok(RemovalReport {
        events_removed: removed.events_removed,
        bytes_reclaimed: removed.bytes_reclaimed,
        first_kept: bounds(storage.dbs(), txn.raw(), stream_id)?.first_kept,
    })
}

/// The events kept after `position` up to the log's end `head`: `head - position` when nothing
/// was ever removed, else counted pack by pack (what a consumer's lag counts).
pub(crate) fn kept_after(dbs: &Dbs, txn: &RoTxn<'_>, position: u64, head: u64) -> Result<u64> {
    if meta_u64(dbs, txn, META_REMOVED)? == 0 {
        return Ok(head.saturating_sub(position));
    }
    let from = position.saturating_add(1);
    let mut kept = 0u64;
    let start = keys::seq_key(from);
    let range = (
        std::ops::Bound::Included(&start[..]),
        std::ops::Bound::Unbounded,
    );
    for entry in dbs.events.range(txn, &range).lmdb()? {
        let (key, value) = entry.lmdb()?;
        let last = keys::decode_seq_key(key)
            .ok_or_else(|| Error::corrupt(from, format!("malformed events-log key {key:02x?}")))?;
        let first = Pack::parse(last, value)?.first().max(from);
        kept += last.saturating_add(1).saturating_sub(first);
    }
    Ok(kept)
}

/// The first record at or after `seq`: its sequence and commit timestamp.
pub(crate) fn record_at_or_after(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    seq: u64,
) -> Result<Option<(u64, u64)>> {
    let Some(pack) = super::pack::pack_at_or_after(dbs, txn, seq.max(1))? else {
        return Ok(None);
    };
    let at = seq.max(pack.first());
    let record = pack.record(at)?;
    Ok(Some((at, super::record::open(at, record)?.0.timestamp_ns)))
}

/// See [`Storage::seq_at_time`](crate::Storage::seq_at_time): a binary search over the log,
/// whose commit timestamps never decrease along the sequence (the committer clamps them).
pub(crate) fn seq_at_time(dbs: &Dbs, txn: &RoTxn<'_>, time_ns: u64) -> Result<Option<u64>> {
    let end = super::last_seq(dbs, txn)?;
    // The smallest `s` whose first record at or after it was committed at `time_ns` or later.
    let (mut lo, mut hi) = (1u64, end.saturating_add(1));
    let mut found = None;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match record_at_or_after(dbs, txn, mid)? {
            Some((seq, ts)) if ts >= time_ns => {
                found = Some(seq);
                hi = mid;
            }
            Some((seq, _)) => lo = seq + 1,
            None => hi = mid,
        }
    }
    Ok(found)
}

/// How long a stream keeps its events: the newest `max_count`, and those younger than
/// `max_age` (KurrentDB's `$maxCount` and `$maxAge`, JetStream's `max_msgs_per_subject` and
/// `max_age`). An event goes when either says so. Both `None`: keep everything.
///
/// Set for a stream ([`Storage::set_stream_retention`](crate::Storage::set_stream_retention)),
/// or for every stream without a policy of its own
/// ([`Storage::set_default_retention`](crate::Storage::set_default_retention)). Policies are
/// kept in the store: they survive a reopen, and every process enforces them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep at most this many of the stream's newest events.
    pub max_count: Option<u64>,
    /// Keep only the events committed less than this long ago.
    pub max_age: Option<std::time::Duration>,
}

impl RetentionPolicy {
    /// Whether it keeps everything (no limit set).
    pub fn keeps_all(&self) -> bool {
        self.max_count.is_none() && self.max_age.is_none()
    }

    fn encode(&self) -> [u8; 17] {
        let mut value = [0u8; 17];
        let flags = u8::from(self.max_count.is_some()) | (u8::from(self.max_age.is_some()) << 1);
        value[0] = flags;
        value[1..9].copy_from_slice(&self.max_count.unwrap_or(0).to_le_bytes());
        let age = self
            .max_age
            .map_or(0, |a| u64::try_from(a.as_nanos()).unwrap_or(u64::MAX));
        value[9..].copy_from_slice(&age.to_le_bytes());
        value
    }

    fn decode(value: &[u8]) -> Option<RetentionPolicy> {
        if value.len() != 17 {
            return None;
        }
        let count = u64::from_le_bytes(value[1..9].try_into().ok()?);
        let age = u64::from_le_bytes(value[9..].try_into().ok()?);
        Some(RetentionPolicy {
            max_count: (value[0] & 1 != 0).then_some(count),
            max_age: (value[0] & 2 != 0).then(|| std::time::Duration::from_nanos(age)),
        })
    }
}

/// What an enforcement of the retention policies did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionReport {
    /// Streams that lost events.
    pub streams: u64,
    /// Events removed.
    pub events_removed: u64,
    /// Bytes given back.
    pub bytes_reclaimed: u64,
}

/// The key of the store-wide default policy in `retention` (a stream's key is 16 bytes).
const DEFAULT_POLICY_KEY: &[u8] = b"default";

fn policy_at(dbs: &Dbs, txn: &RoTxn<'_>, key: &[u8]) -> Result<Option<RetentionPolicy>> {
    match dbs.retention.get(txn, key).lmdb()? {
        None => Ok(None),
        Some(v) => RetentionPolicy::decode(v)
            .map(Some)
            .ok_or_else(|| Error::CorruptIndex {
                stream_id: 0,
                version: 0,
                reason: format!("a retention policy of {} bytes, expected 17", v.len()),
            }),
    }
}

fn put_policy(storage: &super::Storage, key: &[u8], policy: RetentionPolicy) -> Result<()> {
    let key = key.to_vec();
    storage.write_durable(|wtxn, dbs| {
        if policy.keeps_all() {
            dbs.retention.delete(wtxn, &key).lmdb()?;
        } else {
            dbs.retention.put(wtxn, &key, &policy.encode()).lmdb()?;
        }
        Ok(((), true))
    })?;
    if !policy.keeps_all() {
        storage.start_retention_task();
    }
    Ok(())
}

/// Whether the store holds any retention policy.
pub(crate) fn has_policies(storage: &super::Storage) -> Result<bool> {
    let txn = storage.read_txn()?;
    Ok(storage.dbs().retention.first(txn.raw()).lmdb()?.is_some())
}

/// See [`Storage::set_stream_retention`](crate::Storage::set_stream_retention).
pub(crate) fn set_stream_retention(
    storage: &super::Storage,
    stream_id: u128,
    policy: RetentionPolicy,
) -> Result<()> {
    put_policy(storage, &keys::head_key(stream_id), policy)
}

/// See [`Storage::set_default_retention`](crate::Storage::set_default_retention).
pub(crate) fn set_default_retention(
    storage: &super::Storage,
    policy: RetentionPolicy,
) -> Result<()> {
    put_policy(storage, DEFAULT_POLICY_KEY, policy)
}

/// See [`Storage::stream_retention`](crate::Storage::stream_retention).
pub(crate) fn stream_retention(
    storage: &super::Storage,
    stream_id: u128,
) -> Result<Option<RetentionPolicy>> {
    let txn = storage.read_txn()?;
    policy_at(storage.dbs(), txn.raw(), &keys::head_key(stream_id))
}

/// See [`Storage::default_retention`](crate::Storage::default_retention).
pub(crate) fn default_retention(storage: &super::Storage) -> Result<Option<RetentionPolicy>> {
    let txn = storage.read_txn()?;
    policy_at(storage.dbs(), txn.raw(), DEFAULT_POLICY_KEY)
}

/// See [`Storage::retention_policies`](crate::Storage::retention_policies).
pub(crate) fn retention_policies(
    storage: &super::Storage,
) -> Result<Vec<(Option<u128>, RetentionPolicy)>> {
    let txn = storage.read_txn()?;
    let mut out = Vec::new();
    for entry in storage.dbs().retention.iter(txn.raw()).lmdb()? {
        let (key, value) = entry.lmdb()?;
        let policy = RetentionPolicy::decode(value).ok_or_else(|| Error::CorruptIndex {
            stream_id: 0,
            version: 0,
            reason: format!("a retention policy of {} bytes, expected 17", value.len()),
        })?;
        let stream = match <[u8; 16]>::try_from(key) {
            Ok(k) => Some(u128::from_be_bytes(k)),
            Err(_) if key == DEFAULT_POLICY_KEY => None,
            Err(_) => continue,
        };
        out.push((stream, policy));
    }
    // The default first, then the streams in order.
    out.sort_by_key(|(s, _)| s.map_or(0, |s| s.saturating_add(1)));
    Ok(out)
}

/// The first version of `stream_id` that `policy` keeps at `now_ns` (its version plus one
/// when it keeps none), given its bounds and head.
fn kept_from(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    stream_id: u128,
    (first_kept, version): (u32, u32),
    policy: RetentionPolicy,
    now_ns: u64,
) -> Result<u32> {
    let mut from = first_kept;
    if let Some(max) = policy.max_count {
        let keep = u32::try_from(max).unwrap_or(u32::MAX);
        from = from.max(version.saturating_sub(keep).saturating_add(1));
    }
    if let Some(age) = policy.max_age {
        let cutoff = now_ns.saturating_sub(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX));
        // Timestamps never decrease along the log, so along a stream: the first version
        // committed at the cutoff or later, by a binary search over versions.
        let (mut lo, mut hi) = (from, version.saturating_add(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let ts = match super::chain::version_at(dbs, txn, stream_id, mid)? {
                Some(found) => super::record::open(found.seq, found.record)?.0.timestamp_ns,
                None => 0,
            };
            if ts >= cutoff {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        from = from.max(lo);
    }
    Ok(from)
}

/// See [`Storage::enforce_retention`](crate::Storage::enforce_retention): every policy now,
/// each stream's removal in its own bounded transactions.
pub(crate) fn enforce_retention(storage: &super::Storage) -> Result<RetentionReport> {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    // What to remove, decided in one snapshot; each removal runs in its own transactions.
    let work: Vec<(u128, u32)> = {
        let txn = storage.read_txn()?;
        let dbs = storage.dbs();
        let raw = txn.raw();
        let policies = retention_policies(storage)?;
        let default = policies.iter().find(|(s, _)| s.is_none()).map(|(_, p)| *p);
        let own: std::collections::HashMap<u128, RetentionPolicy> = policies
            .iter()
            .filter_map(|(s, p)| s.map(|s| (s, *p)))
            .collect();
        let mut work = Vec::new();
        let mut consider = |stream_id: u128, policy: RetentionPolicy| -> Result<()> {
            let Some((version, _)) = super::stream_head(dbs, raw, stream_id)? else {
                return Ok(());
            };
            let first_kept = bounds(dbs, raw, stream_id)?.first_kept;
            let from = kept_from(dbs, raw, stream_id, (first_kept, version), policy, now_ns)?;
            if from > first_kept {
                work.push((stream_id, from));
            }
            Ok(())
        };
        match default {
            Some(default) => {
                for entry in dbs.heads.iter(raw).lmdb()? {
                    let (key, _) = entry.lmdb()?;
                    let Ok(key) = <[u8; 16]>::try_from(key) else {
                        continue;
                    };
                    let stream_id = u128::from_be_bytes(key);
                    consider(stream_id, own.get(&stream_id).copied().unwrap_or(default))?;
                }
            }
            None => {
                for (&stream_id, &policy) in &own {
                    consider(stream_id, policy)?;
                }
            }
        }
        work
    };
    remove_in_log_order(storage, &work)
}

/// The most removals one enforcement plans at a time (32 bytes each); past it, it plans again.
const PLAN_MAX: usize = 1 << 20;

/// The `(seq, stream, version)` of the versions below each `(stream, before)` still in the
/// log, ascending by sequence, at most [`PLAN_MAX`]. When they are a good part of the stretch of
/// the log they lie in (an age limit takes the log's oldest events, of every stream), the
/// stretch is scanned in order, a few tens of nanoseconds a record; otherwise each stream's
/// chain is walked from its last version to go, a lookup per version.
fn plan_removals(
    dbs: &Dbs,
    txn: &RoTxn<'_, heed::WithoutTls>,
    work: &[(u128, u32)],
) -> Result<Vec<(u64, u128, u32)>> {
    // Each stream's range of versions to remove, and of sequences they lie in.
    let mut ranges: std::collections::HashMap<u128, (u32, u32)> = std::collections::HashMap::new();
    let (mut lo, mut hi, mut total) = (u64::MAX, 0u64, 0u64);
    for &(stream_id, before) in work {
        let first_kept = bounds(dbs, txn, stream_id)?.first_kept;
        let version = super::stream_head(dbs, txn, stream_id)?.map_or(0, |(v, _)| v);
        let before = before.min(version.saturating_add(1));
        if before <= first_kept {
            continue;
        }
        let first = super::chain::version_at(dbs, txn, stream_id, first_kept)?;
        let last = super::chain::version_at(dbs, txn, stream_id, before - 1)?;
        if let (Some(first), Some(last)) = (first, last) {
            lo = lo.min(first.seq);
            hi = hi.max(last.seq);
        }
        total += u64::from(before - first_kept);
        ranges.insert(stream_id, (first_kept, before));
    }
    let mut plan = Vec::new();
    if ranges.is_empty() {
        return Ok(plan);
    }
    if total.saturating_mul(8) >= hi.saturating_sub(lo).saturating_add(1) {
        for entry in super::LogIter::open(Ok(()), dbs, txn, lo, true) {
            let entry = entry?;
            if entry.seq > hi || plan.len() >= PLAN_MAX {
                break;
            }
            let Some(peek) = super::record::peek(entry.record) else {
                return Err(Error::corrupt(entry.seq, "unreadable record header"));
            };
            if let Some(&(first_kept, before)) = ranges.get(&peek.stream_id)
                && (first_kept..before).contains(&peek.version)
            {
                plan.push((entry.seq, peek.stream_id, peek.version));
            }
        }
        return Ok(plan);
    }
    for (&stream_id, &(first_kept, before)) in &ranges {
        if plan.len() >= PLAN_MAX {
            break;
        }
        let seqs = stream_seqs(dbs, txn, stream_id, first_kept, before)?;
        plan.extend(
            seqs.into_iter()
                .zip(first_kept..)
                .map(|(seq, version)| (seq, stream_id, version)),
        );
    }
    plan.sort_unstable_by_key(|(seq, _, _)| *seq);
    Ok(plan)
}

/// Removes, for each `(stream, before)`, the stream's versions below `before`, in log order:
/// a pack that holds events of many streams (one commit of many streams) is rewritten once,
/// not once per stream. Transactions of steps of [`REMOVAL_STEP`] events for about
/// [`REMOVAL_TXN_BUDGET`] (at most [`REMOVAL_TXN_MAX`] events), each flushed; each
/// moves the first kept version of the streams it touched, so a crash leaves every stream a
/// removed prefix and the next run finishes.
fn remove_in_log_order(storage: &super::Storage, work: &[(u128, u32)]) -> Result<RetentionReport> {
    let inline_max = storage.inline_record_max();
    let mut report = RetentionReport::default();
    let mut touched = std::collections::HashSet::new();
    loop {
        // Plan: (seq, stream, version) of what goes, from one snapshot, at most PLAN_MAX;
        // a plan cut short is made again after it ran (the streams' bounds have moved).
        let mut plan = {
            let txn = storage.read_txn()?;
            plan_removals(storage.dbs(), txn.raw(), work)?
        };
        if plan.is_empty() {
            break;
        }
        plan.sort_unstable_by_key(|(seq, _, _)| *seq);
        let mut rest = &plan[..];
        while !rest.is_empty() {
            let removed = storage.write_durable(|wtxn, dbs| {
                let started = std::time::Instant::now();
                // What another process removed since the plan is a prefix of its stream too:
                // skip it.
                let mut firsts: std::collections::HashMap<u128, Bounds> =
                    std::collections::HashMap::new();
                let mut moved: std::collections::HashMap<u128, u32> =
                    std::collections::HashMap::new();
                let mut seqs = Vec::with_capacity(REMOVAL_STEP);
                let mut removed = Removed::default();
                let (mut taken, mut wrote) = (0usize, false);
                // Steps until the budget is spent: the bounds are written once per stream at
                // the end, so a longer transaction writes fewer of them per event.
                while taken < rest.len()
                    && (taken == 0
                        || (started.elapsed() < REMOVAL_TXN_BUDGET && taken < REMOVAL_TXN_MAX))
                {
                    let step = &rest[taken..rest.len().min(taken + REMOVAL_STEP)];
                    seqs.clear();
                    for &(seq, stream_id, version) in step {
                        let b = match firsts.get(&stream_id) {
                            Some(b) => *b,
                            None => {
                                let b = bounds(dbs, wtxn, stream_id)?;
                                firsts.insert(stream_id, b);
                                b
                            }
                        };
                        if version >= b.first_kept {
                            seqs.push(seq);
                            let next = moved.entry(stream_id).or_insert(0);
                            *next = (*next).max(version + 1);
                        }
                    }
                    let r = remove_records(dbs, wtxn, inline_max, &seqs)?;
                    removed.events += r.events;
                    removed.bytes += r.bytes;
                    wrote |= !seqs.is_empty();
                    taken += step.len();
                }
                for (stream_id, first_kept) in &moved {
                    let mut b = firsts.get(stream_id).copied().unwrap_or_default();
                    b.first_kept = *first_kept;
                    put_bounds(dbs, wtxn, *stream_id, b)?;
                }
                let streams: Vec<u128> = moved.keys().copied().collect();
                Ok(((removed, streams, taken), wrote))
            })?;
            let (removed, streams, taken) = removed;
            rest = &rest[taken..];
            touched.extend(streams);
            report.events_removed += removed.events;
            report.bytes_reclaimed += removed.bytes;
            storage.metrics().deleted_events.inc_by(removed.events);
            storage.metrics().reclaimed_bytes.inc_by(removed.bytes);
        }
    }
    report.streams = touched.len() as u64;
    Ok(report)
}

/// A stream that lost events, as a replica needs to know it: where its kept events begin,
/// whether it is tombstoned, and the last removed version with its sequence (the version
/// before the first kept one, which the kept records link to). From
/// [`Storage::stream_removals`](crate::Storage::stream_removals); a replica takes it with
/// [`Importer::adopt_removal`](crate::export::Importer::adopt_removal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRemoval {
    /// The stream.
    pub stream_id: u128,
    /// Its first kept version (its version plus one when none is kept).
    pub first_kept: u32,
    /// Whether it takes no more events.
    pub tombstoned: bool,
    /// The version before `first_kept` and its sequence; `(0, 0)` when nothing was removed
    /// (a tombstone laid on a stream with no events).
    pub last_removed: (u32, u64),
}

/// Every stream with bounds in `txn`'s snapshot, in stream order.
pub(crate) fn stream_removals(dbs: &Dbs, txn: &RoTxn<'_>) -> Result<Vec<StreamRemoval>> {
    let mut out = Vec::new();
    for entry in dbs.bounds.iter(txn).lmdb()? {
        let (key, _) = entry.lmdb()?;
        let Ok(key) = <[u8; 16]>::try_from(key) else {
            continue;
        };
        let stream_id = u128::from_be_bytes(key);
        let b = bounds(dbs, txn, stream_id)?;
        let head = super::stream_head(dbs, txn, stream_id)?;
        let last_removed = match head {
            _ if b.first_kept <= 1 => (0, 0),
            Some((version, seq)) if version < b.first_kept => (version, seq),
            Some(_) => {
                // The first kept record links to the version before it.
                let found = super::chain::version_at(dbs, txn, stream_id, b.first_kept)?
                    .ok_or_else(|| Error::CorruptIndex {
                        stream_id,
                        version: b.first_kept,
                        reason: "its first kept version is not in the log".into(),
                    })?;
                (b.first_kept - 1, found.links.prev)
            }
            None => (0, 0),
        };
        out.push(StreamRemoval {
            stream_id,
            first_kept: b.first_kept,
            tombstoned: b.tombstoned,
            last_removed,
        });
    }
    Ok(out)
}

/// Brings a replica's stream to its source's removal `r`: its own records below
/// `r.first_kept` are removed (as a truncation removes them), its head moves to the last
/// removed version when it is behind it (the source's events it never had), and it takes the
/// bounds and the tombstone. Returns the records removed. Idempotent: a removal already taken
/// writes nothing.
pub(crate) fn adopt_removal(storage: &super::Storage, r: &StreamRemoval) -> Result<u64> {
    if r.first_kept > 1 && r.last_removed.0 != r.first_kept - 1 {
        return Err(Error::InvalidImport {
            seq: 0,
            reason: format!(
                "stream {:#x} keeps versions from {}, so its last removed version is {}, not {}",
                r.stream_id,
                r.first_kept,
                r.first_kept - 1,
                r.last_removed.0
            ),
        });
    }
    let removed = remove_in_log_order(storage, &[(r.stream_id, r.first_kept)])?;
    storage.write_durable(|wtxn, dbs| {
        let mut wrote = false;
        let head = super::stream_head(dbs, wtxn, r.stream_id)?;
        if r.first_kept > 1 && head.is_none_or(|(v, _)| v < r.last_removed.0) {
            super::put_head(dbs, wtxn, r.stream_id, r.last_removed.0, r.last_removed.1)?;
            wrote = true;
        }
        let mut b = bounds(dbs, wtxn, r.stream_id)?;
        if b.first_kept < r.first_kept || (r.tombstoned && !b.tombstoned) {
            b.first_kept = b.first_kept.max(r.first_kept);
            b.tombstoned |= r.tombstoned;
            put_bounds(dbs, wtxn, r.stream_id, b)?;
            wrote = true;
        }
        Ok(((), wrote))
    })?;
    Ok(removed.events_removed)
}

/// Counts `removed` more records as removed at the source (a replica's gaps) and keeps the
/// log's end at `log_end` when its last records are among them.
pub(crate) fn note_removed(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    removed: u64,
    log_end: u64,
) -> Result<()> {
    if removed == 0 {
        return Ok(());
    }
    let total = meta_u64(dbs, wtxn, META_REMOVED)?.saturating_add(removed);
    put_meta_u64(dbs, wtxn, META_REMOVED, total)?;
    if super::last_seq(dbs, wtxn)? < log_end {
        put_meta_u64(dbs, wtxn, META_LOG_END, log_end)?;
    }
    Ok(())
}
