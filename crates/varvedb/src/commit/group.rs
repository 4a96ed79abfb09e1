//! The commit of a group of atomic appends in one write transaction.
//!
//! Everything that can fail because of one request (its expectation, its stream's damaged head
//! or chain, a damaged blob count) is checked per request before anything of it is written, so
//! it fails only that request. What fails the transaction (a damaged log end, LMDB itself)
//! fails the whole group.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use heed::RwTxn;
use rkyv::util::AlignedVec;
use std::sync::Arc;

use super::{Blob, Condition, Outcome, Prepared, Request, StreamAppend};
use crate::error::{Error, Result};
use crate::event_id::EventId;
use crate::expected::Appended;
use crate::metrics::CommitTally;
use crate::storage::{
    BlobRef, Cipher, Crypto, Dbs, EventKey, FLAG_BLOB, FLAG_BOUND, FLAG_ENCRYPTED, FLAG_ENVELOPE,
    Fields, HEADER_LEN, LogWriter, NewRecord, RecordHeader, Seal, SealPlace as Place, Spine,
    Storage, StoreKeys, Stored, StreamKey, Txn, TypeKey, check_blob_refs, end_draft, intern_type,
    payload_digest, put_head, seal_bound, seal_record, split_envelope, stream_head,
};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Hashes stream ids for the committer's maps: one multiply-fold instead of SipHash, which
/// showed in profiles of many-stream commits (docs/performance.md). The maps are private to the committer and hold
/// no attacker-chosen keys that could degrade them beyond what a caller's own appends cost.
#[derive(Default, Clone, Copy)]
struct StreamHasher(u64);

impl std::hash::Hasher for StreamHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        let folded = u128::from(self.0 ^ word) * 0x9E37_79B9_7F4A_7C15;
        self.0 = (folded as u64) ^ ((folded >> 64) as u64);
    }

    fn write_u128(&mut self, word: u128) {
        self.write_u64(word as u64);
        self.write_u64((word >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type StreamMap<V> = HashMap<u128, V, std::hash::BuildHasherDefault<StreamHasher>>;

/// A stream's head as the group being committed sees it.
struct Head {
    version: u32,
    seq: u64,
    /// The jump spine of the head, once known (from the cache, a load, or this group's appends).
    spine: Option<Spine>,
    dirty: bool,
    /// The stream's encryption, once checked.
    mode: Option<Mode>,
}

/// How a stream's events are written.
#[derive(Clone)]
enum Mode {
    Plain,
    /// Encrypted with this key.
    Key(EventKey),
    /// A new stream of an encrypting store: its key is created with its first event.
    New,
}

/// The heads the committer wrote last, with their spines, kept between groups so that a stream
/// appended to again costs no lookup and no record read. Valid while the log ends where the
/// committer left it: another process that appends to the same store moves the end, and the
/// cache is dropped.
#[derive(Default)]
pub(crate) struct HeadCache {
    last_seq: u64,
    /// The commit timestamp of the log's last record: commits never go back in time.
    last_timestamp: u64,
    map: StreamMap<(u32, u64, Spine)>,
    /// The ids of the event types committed so far. A type's id never changes once committed,
    /// so this is never dropped.
    types: HashMap<TypeKey<'static>, u32>,
}

/// The most streams the cache remembers (a few tens of bytes each); past it, it starts over.
const HEAD_CACHE_MAX: usize = 1 << 18;

impl HeadCache {
    /// Takes back the heads (and the new event types) of a committed group.
    fn adopt(
        &mut self,
        heads: StreamMap<Head>,
        types: Vec<(TypeKey<'static>, u32)>,
        (last_seq, last_timestamp): (u64, u64),
    ) {
        self.types.extend(types);
        if self.map.len() + heads.len() > HEAD_CACHE_MAX {
            self.map.clear();
        }
        for (stream_id, head) in heads {
            if let Some(spine) = head.spine {
                self.map.insert(stream_id, (head.version, head.seq, spine));
            }
        }
        self.last_seq = last_seq;
        self.last_timestamp = self.last_timestamp.max(last_timestamp);
    }
}

/// The heads of the streams a group touches, read once (from the cache or the store) and
/// written once, in key order, at the end of the group.
struct Heads<'c> {
    map: StreamMap<Head>,
    cache: &'c mut HeadCache,
    /// Event types interned by this group's transaction; the cache takes them after the commit.
    new_types: Vec<(TypeKey<'static>, u32)>,
    /// The type of the last event written, and its id.
    last_type: Option<(TypeKey<'static>, u32)>,
    /// Stream keys created by this group's transaction; the key cache takes them after the
    /// commit.
    new_keys: Vec<(u128, Arc<Cipher>)>,
}

fn same_type(a: &TypeKey<'static>, b: &TypeKey<'static>) -> bool {
    let same = |x: &str, y: &str| std::ptr::eq(x, y) || x == y;
    a.version == b.version && same(a.name, b.name) && same(a.container, b.container)
}

impl Heads<'_> {
    /// The id of an event type, interning it in this transaction if the store has not seen it.
    fn type_id(&mut self, dbs: &Dbs, wtxn: &mut RwTxn<'_>, key: TypeKey<'static>) -> Result<u32> {
        // Most events of a group share their type: compare with the last one first (the names
        // are `&'static str`s of one `Event` impl, so usually the same pointers).
        if let Some((last, id)) = self.last_type
            && same_type(&last, &key)
        {
            return Ok(id);
        }
        let id = self.type_id_slow(dbs, wtxn, key)?;
        self.last_type = Some((key, id));
        Ok(id)
    }

    fn type_id_slow(
        &mut self,
        dbs: &Dbs,
        wtxn: &mut RwTxn<'_>,
        key: TypeKey<'static>,
    ) -> Result<u32> {
        if let Some(id) = self.cache.types.get(&key) {
            return Ok(*id);
        }
        if let Some((_, id)) = self.new_types.iter().find(|(k, _)| *k == key) {
            return Ok(*id);
        }
        let (id, _) = intern_type(dbs, wtxn, &key)?;
        self.new_types.push((key, id));
        Ok(id)
    }

    fn get(&mut self, dbs: &Dbs, wtxn: &RwTxn<'_>, stream_id: u128) -> Result<&mut Head> {
        use std::collections::hash_map::Entry;
        match self.map.entry(stream_id) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                // Taken out of the cache, not copied: it comes back after the commit (a rerun
                // after map growth finds it missing and reads the store, which is unchanged).
                let head = match self.cache.map.remove(&stream_id) {
                    Some((version, seq, spine)) => Head {
                        version,
                        seq,
                        spine: Some(spine),
                        dirty: false,
                        mode: None,
                    },
                    None => {
                        let (version, seq) = stream_head(dbs, wtxn, stream_id)?.unwrap_or((0, 0));
                        Head {
                            version,
                            seq,
                            spine: (version == 0).then(Spine::default),
                            dirty: false,
                            mode: None,
                        }
                    }
                };
                Ok(e.insert(head))
            }
        }
    }

    fn write(&self, dbs: &Dbs, wtxn: &mut RwTxn<'_>) -> Result<()> {
        let mut dirty: Vec<(u128, u32, u64)> = self
            .map
            .iter()
            .filter(|(_, h)| h.dirty)
            .map(|(s, h)| (*s, h.version, h.seq))
            .collect();
        // In key order the B-tree descent of each put starts where the last one ended.
        dirty.sort_unstable_by_key(|(s, _, _)| *s);
        for (stream_id, version, seq) in dirty {
            put_head(dbs, wtxn, stream_id, version, seq)?;
        }
        Ok(())
    }
}

/// What a checked request does.
enum Verdict {
    /// Write it.
    Write,
    /// The store already has it (every event id, as this same append): answer with where it
    /// landed, write nothing.
    Replay(Vec<Appended>),
}

/// Replaces a prepared event's body with its sealed form (see [`crypto`]): the ids stay
/// visible in the envelope section, the metadata and payload are encrypted, and a sealed body
/// past `blob_threshold` goes to the blob store (as ciphertext: plaintext never reaches disk).
/// The stored form of an encrypted event, built from its prepared plaintext, which stays as it
/// was: the commit's closure runs again after the map grows, and must then seal the plaintext
/// again (under a key that may be new, with a new nonce), never the ciphertext.
struct Sealed {
    record: AlignedVec,
    payload_len: u32,
    digest: u64,
    flags: u8,
    blob: Option<Box<Blob>>,
}

fn encrypt(
    event: &Prepared,
    key: &EventKey,
    place: &Place,
    blob_threshold: usize,
) -> Result<Sealed> {
    let body = &event.record[HEADER_LEN..HEADER_LEN + event.payload_len as usize];
    let (section, rest) = split_envelope(0, event.flags & FLAG_ENVELOPE != 0, body)?;
    let payload = match &event.blob {
        Some(b) => &b.buffer[b.offset..b.offset + b.reference.len as usize],
        None => rest,
    };
    let (pairs, pair_count) = section.encoded_pairs();
    let visible = Fields {
        event_id: section.event_id(),
        correlation_id: section.correlation_id(),
        causation_id: section.causation_id(),
        tags: section.tags().map(str::to_owned).collect(),
        metadata: Vec::new(),
    }
    .encode()?;
    let sealed = seal_bound(
        key,
        place,
        event.event_type,
        &visible,
        (pairs, pair_count),
        payload,
    )?;
    let mut flags = FLAG_ENCRYPTED | FLAG_BOUND;
    if !visible.is_empty() {
        flags |= FLAG_ENVELOPE;
    }
    let mut record =
        AlignedVec::<16>::with_capacity(HEADER_LEN + visible.len() + sealed.len() + 16);
    record.extend_from_slice(&[0u8; HEADER_LEN]);
    record.extend_from_slice(&visible);
    let blob = if visible.len() + sealed.len() > blob_threshold {
        let reference = BlobRef::of(&sealed);
        let mut buffer = AlignedVec::<16>::with_capacity(sealed.len().next_multiple_of(16));
        buffer.extend_from_slice(&sealed);
        buffer.resize(sealed.len().next_multiple_of(16), 0);
        record.extend_from_slice(&reference.encode());
        flags |= FLAG_BLOB;
        Some(Box::new(Blob {
            reference,
            buffer,
            offset: 0,
        }))
    } else {
        record.extend_from_slice(&sealed);
        None
    };
    let (payload_len, digest) = end_draft(&mut record)?;
    Ok(Sealed {
        record,
        payload_len,
        digest,
        flags,
        blob,
    })
}

/// The xxh3-64 of a stored event's payload (decrypted if need be), for comparing a retried
/// event with the one that has its id.
fn stored_payload_digest(
    dbs: &Dbs,
    txn: &RwTxn<'_>,
    crypto: &Crypto,
    stored: &Stored<'_>,
) -> Result<u64> {
    let key = match stored.seal(dbs, txn, crypto, Txn::Write)? {
        Seal::Plain => {
            // A blob reference carries its payload's digest.
            return Ok(match stored.blob_ref()? {
                Some(r) => r.digest,
                None => payload_digest(stored.rest()),
            });
        }
        Seal::Key(key) => key,
        Seal::Shredded => {
            return Err(Error::StreamShredded {
                stream_id: stored.header.stream_id,
            });
        }
    };
    let event_type = stored.event_type(dbs, txn)?;
    let (sealed, _) = stored.payload(dbs, txn)?;
    let opened = stored.decrypt(&key, event_type, sealed, AlignedVec::new())?;
    Ok(payload_digest(&opened.buffer[opened.payload]))
}

/// Checks a request's event ids against the `event_ids` index (in this transaction, so that a
/// request sees the ids of the requests before it in the group).
fn check_ids(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    pending: &mut LogWriter,
    crypto: &Crypto,
    appends: &[StreamAppend],
) -> Result<Option<Verdict>> {
    let events = appends.iter().flat_map(|a| a.events.iter());
    if events.clone().all(|e| e.event_id.is_none()) {
        return Ok(None);
    }
    let duplicate = |seq: u64, id: u128, reason: String| Error::DuplicateEventId {
        seq,
        event_id: EventId::from_u128(id),
        reason,
    };
    let mut seen: HashMap<u128, ()> = HashMap::new();
    let mut found = Vec::new();
    for event in events {
        let seq = match event.event_id.map(u128::from_le_bytes) {
            Some(id) => {
                if seen.insert(id, ()).is_some() {
                    return Err(duplicate(0, id, "the append carries this id twice".into()));
                }
                crate::storage::event_id_seq(dbs, wtxn, id)?.map(|seq| (id, seq))
            }
            None => None,
        };
        found.push(seq);
    }
    let known = found.iter().flatten().count();
    if known == 0 {
        return Ok(None);
    }
    // The records of a retry may be in the group's pack still being built: write it first.
    pending.flush(dbs, wtxn)?;
    if known < found.len() {
        let (id, seq) = found.iter().flatten().next().copied().unwrap_or((0, 0));
        return Err(duplicate(
            seq,
            id,
            format!(
                "the store has {known} of this append's {} event ids; a retry must carry the same events with the same ids",
                found.len()
            ),
        ));
    }
    // Every id is known: it must be this very append, event for event.
    let mut answers = Vec::with_capacity(found.len());
    let mut found = found.into_iter().flatten();
    for append in appends {
        let mut previous: Option<(u32, u64)> = None;
        for event in &append.events {
            let Some((id, seq)) = found.next() else {
                break;
            };
            let record =
                crate::storage::get_record(dbs, wtxn, seq)?.ok_or_else(|| Error::CorruptIndex {
                    stream_id: append.stream_id,
                    version: 0,
                    reason: format!(
                        "the event-id index points {} at sequence {seq}, which does not exist",
                        EventId::from_u128(id)
                    ),
                })?;
            let stored = Stored::open(seq, record, false)?;
            let header = stored.header;
            if header.stream_id != append.stream_id {
                return Err(duplicate(
                    seq,
                    id,
                    format!(
                        "it is in stream {:#x}, not {:#x}",
                        header.stream_id, append.stream_id
                    ),
                ));
            }
            let stored_digest = stored_payload_digest(dbs, wtxn, crypto, &stored)?;
            if stored_digest != event.payload_digest {
                return Err(duplicate(seq, id, "its payload differs".into()));
            }
            if let Some((version, at)) = previous
                && (header.version != version + 1 || seq <= at)
            {
                return Err(duplicate(
                    seq,
                    id,
                    "the events with these ids were not appended as this one batch".into(),
                ));
            }
            previous = Some((header.version, seq));
            answers.push(Appended {
                seq,
                version: header.version,
            });
        }
    }
    Ok(Some(Verdict::Replay(answers)))
}

/// Checks a conditional append's query: no event after its position may match. The index is
/// written with each event, so it shows the group's earlier requests; a query that reads the log
/// first writes the group's pending pack.
fn check_condition(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    pending: &mut LogWriter,
    condition: &Condition,
) -> Result<()> {
    let from = match condition.after {
        None => 0,
        Some(after) => match after.checked_add(1) {
            Some(from) => from,
            None => return Ok(()),
        },
    };
    let resolved = condition.query.resolve(dbs, wtxn)?;
    if resolved.reads_log() {
        pending.flush(dbs, wtxn)?;
    }
    match resolved.first_match(dbs, wtxn, from)? {
        None => Ok(()),
        Some(seq) => Err(Error::ConditionFailed {
            after: condition.after,
            seq,
        }),
    }
}

/// Checks one request's expectations against the heads, without writing anything.
///
/// It reads the log only for an idempotent retry (after writing the group's pending pack) and
/// for a stream's spine when its head has none. A head gets its spine before its stream's first
/// record goes into the pending pack (`apply`), so a spine is only ever read from records
/// already in the log.
#[allow(
    clippy::too_many_arguments,
    reason = "the commit's context, passed down once"
)]
fn check(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    pending: &mut LogWriter,
    heads: &mut Heads<'_>,
    crypto: &Crypto,
    store_keys: StoreKeys,
    appends: &[StreamAppend],
    condition: Option<&Condition>,
) -> Result<Verdict> {
    // A retry of an append the store already has is answered whatever its expectation (or
    // condition: its own events match it) says.
    if let Some(verdict) = check_ids(dbs, wtxn, pending, crypto, appends)? {
        return Ok(verdict);
    }
    if let Some(condition) = condition {
        check_condition(dbs, wtxn, pending, condition)?;
    }
    // A stream may appear twice in one request: the second entry sees the first one's events.
    // (A map, not a list: a request may carry thousands of streams.)
    let mut overlay: StreamMap<u32> = StreamMap::default();
    for append in appends {
        let stream_id = append.stream_id;
        let current = match overlay.get(&stream_id) {
            Some(v) => *v,
            None => heads.get(dbs, wtxn, stream_id)?.version,
        };
        // The stream's encryption: a shredded stream takes nothing, an encrypted one needs its
        // key, and a new stream of an encrypted store gets one. Encryption is the store's: a
        // handle without the master key cannot create a stream in an encrypted store (it would
        // be plaintext, and could never be shredded).
        let head = heads.get(dbs, wtxn, stream_id)?;
        if head.mode.is_none() {
            // Once per stream and group, with its key: a tombstoned stream takes nothing (a
            // lookup of a table that is usually empty). No removal runs inside a group.
            if crate::storage::stream_bounds(dbs, wtxn, stream_id)?.tombstoned {
                return Err(Error::StreamDeleted { stream_id });
            }
            head.mode = Some(match crypto.stream_key(dbs, wtxn, stream_id, Txn::Write)? {
                StreamKey::Shredded => return Err(Error::StreamShredded { stream_id }),
                StreamKey::Key(key) => Mode::Key(key),
                StreamKey::Plain if head.version == 0 && store_keys.encrypted => {
                    if !crypto.has_master_key() {
                        return Err(Error::MasterKeyRequired { stream_id });
                    }
                    if store_keys.retired {
                        return Err(Error::MasterKeyRotated);
                    }
                    Mode::New
                }
                StreamKey::Plain => Mode::Plain,
            });
        }
        let encrypted = !matches!(head.mode, Some(Mode::Plain));
        for event in append.events.iter().filter(|_| !encrypted) {
            if let Some(b) = &event.blob {
                // A damaged reference count fails this append before it writes anything.
                check_blob_refs(dbs, wtxn, &b.reference)?;
            }
        }
        if !append.expected.accepts(current) {
            return Err(Error::ConcurrencyConflict {
                stream_id,
                expected: append.expected,
                actual: current,
            });
        }
        let next = u32::try_from(append.events.len())
            .ok()
            .and_then(|n| current.checked_add(n))
            .ok_or(Error::StreamFull {
                stream_id,
                version: current,
                events: append.events.len(),
            })?;
        // The spine is read here, not while writing: a stream whose head or chain is damaged
        // fails this request only.
        let head = heads.get(dbs, wtxn, stream_id)?;
        if head.spine.is_none() {
            head.spine = Some(Spine::load(dbs, wtxn, stream_id, head.version, head.seq)?);
        }
        if appends.len() > 1 {
            overlay.insert(stream_id, next);
        }
    }
    Ok(Verdict::Write)
}

/// Writes one checked request: its records and (in memory) its heads.
#[allow(
    clippy::too_many_arguments,
    reason = "the commit's context, passed down once"
)]
fn apply(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    heads: &mut Heads<'_>,
    crypto: &Crypto,
    blob_threshold: usize,
    timestamp_ns: u64,
    seq: &mut u64,
    appends: &mut [StreamAppend],
    pending: &mut LogWriter,
    tally: &mut CommitTally,
) -> Result<Vec<Appended>> {
    let mut out = Vec::with_capacity(appends.iter().map(|a| a.events.len()).sum());
    for append in appends.iter_mut() {
        let stream_id = append.stream_id;
        for event in &mut append.events {
            event.type_id = heads.type_id(dbs, wtxn, event.event_type)?;
        }
        let mode = heads.get(dbs, wtxn, stream_id)?.mode.clone();
        let key = match mode {
            Some(Mode::Key(key)) => Some(key),
            Some(Mode::New) => {
                let key = crypto.create_key(dbs, wtxn, stream_id)?;
                heads.new_keys.push((stream_id, Arc::clone(&key.cipher)));
                heads.get(dbs, wtxn, stream_id)?.mode = Some(Mode::Key(key.clone()));
                Some(key)
            }
            _ => None,
        };
        let head = heads.get(dbs, wtxn, stream_id)?;
        let spine = match &mut head.spine {
            Some(spine) => spine,
            none => none.insert(Spine::load(dbs, wtxn, stream_id, head.version, head.seq)?),
        };
        for event in &mut append.events {
            // The log's end comes from disk: a damaged last key must not overflow.
            *seq = seq.checked_add(1).ok_or_else(|| {
                Error::corrupt(
                    *seq,
                    "the events log ends at the largest sequence number; nothing can follow it",
                )
            })?;
            head.version += 1;
            head.seq = *seq;
            let links = spine.push(head.version, *seq);
            let mut sealed = match &key {
                Some(key) => {
                    let place = Place {
                        stream_id,
                        version: head.version,
                        seq: *seq,
                        timestamp_ns,
                    };
                    tally.encrypted += 1;
                    Some(encrypt(event, key, &place, blob_threshold)?)
                }
                None => None,
            };
            let (record, payload_len, digest, flags, stored_blob) = match &mut sealed {
                Some(s) => (
                    &mut s.record,
                    s.payload_len,
                    s.digest,
                    s.flags,
                    s.blob.as_deref(),
                ),
                None => (
                    &mut event.record,
                    event.payload_len,
                    event.digest,
                    event.flags,
                    event.blob.as_deref(),
                ),
            };
            let header = RecordHeader {
                flags,
                stream_id,
                version: head.version,
                type_id: event.type_id,
                timestamp_ns,
                links,
            };
            seal_record(record, payload_len, digest, &header);
            let new = NewRecord {
                seq: *seq,
                record,
                blob: stored_blob.map(|b| (&b.reference, b.stored())),
                type_id: event.type_id,
                event_id: event.event_id.map(u128::from_le_bytes),
            };
            match pending.put(dbs, wtxn, &new)? {
                Some(true) => tally.blob_dedup_hits += 1,
                Some(false) => tally.blob_writes += 1,
                None => {}
            }
            tally.events += 1;
            tally.bytes += record.len() as u64;
            out.push(Appended {
                seq: *seq,
                version: head.version,
            });
        }
        head.dirty = true;
    }
    Ok(out)
}

/// Commits a group of requests in one write transaction and one flush.
///
/// Each request is atomic on its own: one whose expectation fails gets its
/// [`Error::ConcurrencyConflict`] and writes nothing, while the others commit. An error of the
/// transaction itself (a full store, a failed flush) fails every request of the group.
/// The flag is true when a transaction with writes committed (and so flushed its data). Flush
/// requests in the group are answered `Ok` with no events; the committer flushes for them.
pub(crate) fn commit_group(
    storage: &Storage,
    cache: &mut HeadCache,
    group: &mut [Request],
    resize_wait: std::time::Duration,
) -> (Vec<Outcome>, bool) {
    let inline_max = storage.inline_record_max();
    let blob_threshold = storage.config().blob_threshold_bytes;
    let _span = tracing::debug_span!("varvedb.commit", group_size = group.len()).entered();
    let started = Instant::now();
    let written = storage.write(resize_wait, |wtxn, dbs| {
        // Counted afresh on each run: the write runs again after the map grows.
        let mut tally = CommitTally::default();
        let mut seq = crate::storage::last_seq(dbs, wtxn)?;
        // The keystore as of this transaction: a shred or a rotation committed by any process
        // is seen here, once per group.
        let store_keys = storage.crypto().store_keys(dbs, wtxn)?;
        if seq != cache.last_seq {
            // Someone else appended (or this is the first group): the cache may be stale.
            cache.map.clear();
            cache.last_seq = seq;
            cache.last_timestamp = crate::storage::last_timestamp(dbs, wtxn)?;
        }
        // Commit timestamps never decrease along the log, whatever the clock does (a step
        // back, another process's clock): reads by time search the log by them.
        let timestamp_ns = now_ns().max(cache.last_timestamp);
        let mut heads = Heads {
            map: StreamMap::with_capacity_and_hasher(
                group.iter().map(|r| r.appends.len()).sum(),
                Default::default(),
            ),
            cache,
            new_types: Vec::new(),
            last_type: None,
            new_keys: Vec::new(),
        };
        let mut outcomes = Vec::with_capacity(group.len());
        let mut wrote = false;
        // The group's records go into packs that span its requests (cut at 256 records).
        let mut pending = LogWriter::new(inline_max, group.iter().map(Request::events).sum());
        #[cfg(test)]
        if storage
            .faults()
            .panic_next_commit
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            panic!("a panic injected by a test");
        }
        for request in group.iter_mut() {
            if request.is_flush() {
                outcomes.push(Ok(Vec::new()));
                continue;
            }
            let events = request.events();
            match check(
                dbs,
                wtxn,
                &mut pending,
                &mut heads,
                storage.crypto(),
                store_keys,
                &request.appends,
                request.condition.as_ref(),
            ) {
                Ok(Verdict::Replay(answers)) => {
                    tally.idempotent_hits += 1;
                    pending.skip(events);
                    outcomes.push(Ok(answers));
                }
                Ok(Verdict::Write) => {
                    wrote = true;
                    outcomes.push(Ok(apply(
                        dbs,
                        wtxn,
                        &mut heads,
                        storage.crypto(),
                        blob_threshold,
                        timestamp_ns,
                        &mut seq,
                        &mut request.appends,
                        &mut pending,
                        &mut tally,
                    )?));
                }
                Err(e) if e.is_lmdb() => return Err(e),
                Err(e) => {
                    if matches!(
                        e,
                        Error::ConcurrencyConflict { .. } | Error::ConditionFailed { .. }
                    ) {
                        tally.conflicts += 1;
                    }
                    pending.skip(events);
                    outcomes.push(Err(e));
                }
            }
        }
        pending.flush(dbs, wtxn)?;
        heads.write(dbs, wtxn)?;
        Ok((
            (
                outcomes,
                heads.map,
                heads.new_types,
                (heads.new_keys, store_keys.generation),
                (seq, if wrote { timestamp_ns } else { 0 }),
                wrote,
                tally,
            ),
            wrote,
        ))
    });
    match written {
        Ok((outcomes, heads, types, (keys, generation), last, wrote, tally)) => {
            cache.adopt(heads, types, last);
            storage.crypto().adopt(keys, generation);
            // Recorded on the committer's thread alone: the histograms' locks are never
            // contended, and no event takes a lock.
            let metrics = storage.metrics();
            metrics.record_commit(&tally);
            if wrote {
                metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            let mut requests = 0u32;
            for request in group.iter().filter(|r| !r.is_flush()) {
                requests += 1;
                let events: usize = request.appends.iter().map(|a| a.events.len()).sum();
                metrics.append_batch_events.observe(events as f64);
            }
            if requests > 0 {
                metrics.commit_group_requests.observe(f64::from(requests));
            }
            (outcomes, wrote)
        }
        Err(e) => {
            cache.map.clear();
            // One request gets the failure itself; in a larger group the failure is the
            // transaction's, not any one request's, and every request gets it alike, with the
            // one shared error as its source.
            let outcomes: Vec<Outcome> = if group.len() == 1 {
                vec![Err(e)]
            } else {
                let shared = Arc::new(e);
                group
                    .iter()
                    .map(|_| Err(Error::for_group(&shared)))
                    .collect()
            };
            (outcomes, false)
        }
    }
}
