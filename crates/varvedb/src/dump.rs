//! Export and import: every event of a store in its stored form, and a store rebuilt from them
//! with byte-identical records and blobs (`varvedb export` and `varvedb import`).
//!
//! An export is an [`ExportHeader`] (the event types with their ids, the wrapped stream keys,
//! the key check, the consumers) and the events as [`StoredEvent`]s in global order. Nothing is
//! decrypted: an encrypted event carries its ciphertext, so an export needs no master key and
//! holds no plaintext of an encrypted stream. An [`Importer`] writes them back: the records it
//! builds are the exported store's, byte for byte (same sequence, stream, version, type id,
//! timestamp, links, envelope and payload), and so is every blob.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::event::EventId;
use crate::storage::{
    self, BlobRef, Crypto, Dbs, EventKey, FLAG_BLOB, FLAG_BOUND, FLAG_ENCRYPTED, FLAG_ENVELOPE,
    Fields, HEADER_LEN, Links, LmdbResultExt, LogIter, LogWriter, NewRecord, ParkedEvent,
    RECORD_FORMAT, ReadTxn, RecordHeader, SealPlace, Spine, Storage, Stored, StreamKey,
    StreamRemoval, TOMBSTONE, Txn as CryptoTxn, TypeKey, blob_padded_len, bump_generation,
    check_consumer_name, consumer_position, decode_type_key, end_draft, intern_type, is_shredded,
    is_tombstone, pairs, park, parked_of, peek_record, put_head, seal_bound, seal_record,
    set_consumer_position, split_envelope, stored_checksum,
};

/// The store-wide part of an export, read in the same snapshot as its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportHeader {
    /// The record format of the exported store.
    pub format: u32,
    /// The last global sequence of the snapshot: the export holds events 1 to this. An
    /// importer given this header refuses an event past it before it writes anything of that
    /// event's batch; `u64::MAX` says the source has no end (a replica following its source).
    pub last_seq: u64,
    /// The stored checksum of the store's first event, which names its history: an import
    /// into a store whose first event differs is refused as an export of another store.
    /// `None`: the store was empty, or the export is older than this field.
    pub origin: Option<u64>,
    /// Every event type of the store, with its id (the id is in each record's header).
    pub types: Vec<ExportType>,
    /// Every encrypted stream's key, wrapped by the master key (never in the clear).
    pub keys: Vec<ExportKey>,
    /// The store's master-key check value, if it has one.
    pub key_check: Option<Vec<u8>>,
    /// The durable consumers, with their positions and parked events. Projections (whose
    /// read model lives beside their cursor) are left out: they rebuild from the events.
    pub consumers: Vec<ExportConsumer>,
    /// Events removed from the log (truncations, deletions, retention): the export's
    /// sequences have gaps where they were, and an importer takes them.
    pub removed_events: u64,
    /// The streams that lost events, with their first kept version, tombstone and head.
    pub bounds: Vec<ExportBounds>,
    /// The consumer groups of processors, with each partition's cursor (not their members
    /// and leases, which are live state; nor groups of projections, whose model is not
    /// exported).
    pub groups: Vec<ExportGroup>,
}

/// A consumer group, as exported: its settings, each partition's cursor, and its parked events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportGroup {
    /// Its name.
    pub name: String,
    /// How many partitions the streams are split into.
    pub partitions: u32,
    /// How long a member's lease lasts, in milliseconds.
    pub lease_ms: u64,
    /// Each partition's cursor, partition 0 first (as many as `partitions`).
    pub positions: Vec<u64>,
    /// The events its members parked.
    pub parked: Vec<ParkedEvent>,
}

/// A stream that lost its first events ([`Storage::truncate_stream`](crate::Storage::truncate_stream),
/// deletions, retention), as exported: an importer gives it the same bounds and, when none of
/// its events is left, its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportBounds {
    /// The stream.
    pub stream_id: u128,
    /// Its first kept version (its version plus one when none is kept).
    pub first_kept: u32,
    /// Whether it is tombstoned (takes no appends).
    pub tombstoned: bool,
    /// Its version, and the sequence of that version (perhaps removed), at the export.
    pub head: (u32, u64),
}

/// An event type and its id in the exported store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportType {
    /// The id records carry.
    pub id: u32,
    /// The enum of events it was written through (`""` for a struct).
    pub container: String,
    /// The type's name.
    pub name: String,
    /// The schema version.
    pub version: u16,
}

/// An encrypted stream's key entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportKey {
    /// The stream.
    pub stream_id: u128,
    /// The key wrapped by the master key; `None` when the stream was shredded.
    pub wrapped: Option<Vec<u8>>,
}

/// A durable consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConsumer {
    /// Its name.
    pub name: String,
    /// The sequence of the last event it handled.
    pub position: u64,
    /// The events it parked.
    pub parked: Vec<ParkedEvent>,
}

/// One event in its stored form: everything its record and its blob are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The global sequence.
    pub seq: u64,
    /// The stream.
    pub stream_id: u128,
    /// The version within the stream.
    pub version: u32,
    /// The commit time, unix nanoseconds.
    pub timestamp_ns: u64,
    /// The type's container (`""` for a struct).
    pub type_container: String,
    /// The type's name.
    pub type_name: String,
    /// The type's schema version.
    pub type_version: u16,
    /// The event id its append gave.
    pub event_id: Option<EventId>,
    /// The correlation id.
    pub correlation_id: Option<EventId>,
    /// The causation id.
    pub causation_id: Option<EventId>,
    /// The tags, in stored order (in the clear, even for an encrypted event).
    pub tags: Vec<String>,
    /// The metadata pairs, in stored order (empty for an encrypted event, whose metadata is
    /// sealed with its payload).
    pub metadata: Vec<(String, String)>,
    /// Whether the payload is sealed (an encrypted stream).
    pub encrypted: bool,
    /// Whether the seal also binds the store id (carried by the key check), the timestamp,
    /// the type's name and version, and the ids and tags: every event encrypted since store
    /// ids. `false` for plaintext and for events encrypted before them.
    pub bound: bool,
    /// Whether the payload lives in the blob store.
    pub blob: bool,
    /// The stored payload: the rkyv archive, or for an encrypted event the sealed bytes
    /// (nonce, ciphertext with the metadata, tag). For a blob event, the blob's content.
    /// `None` only for a blob event of a shredded stream, whose blob was released.
    pub payload: Option<Vec<u8>>,
    /// The 48-byte blob reference of a blob event whose payload is gone (shredded).
    pub blob_ref: Option<Vec<u8>>,
    /// The record's checksum as stored (xxh3 over its header and body; a blob event's body is
    /// its blob's reference, BLAKE3 hash and digest, so the checksum covers the blob too). An
    /// importer rebuilds the record and refuses the event if the checksum differs: a payload,
    /// envelope or header changed on the way. `None`: not checked (an export of before
    /// checksums, or a replication message).
    pub checksum: Option<u64>,
    /// The record's chain links `(prev, jump)`, when one of them points into its stream's
    /// removed versions: an importer cannot rebuild those, and takes them as given. `None`
    /// for every other event (the importer rebuilds its links).
    pub links: Option<(u64, u64)>,
    /// The event is the last of its commit group: the events since the previous one that
    /// ends a group were written by one transaction, and hold whole appends (an atomic
    /// append of several events never spans two groups). An importer does not need it;
    /// a replica that must not show half an append applies whole groups
    /// ([`Importer::push_group`]).
    pub ends_group: bool,
}

impl StoredEvent {
    /// Whether `other` is the same event: every field but what a copy of it may lack or set
    /// otherwise (where its commit group ends; the checksum, which replication messages do
    /// not carry; and the links, which an export carries only into removed versions). Two
    /// checksums, or two links, that are both there must agree.
    pub fn is_same_event_as(&self, other: &StoredEvent) -> bool {
        fn agree<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
        }
        agree(self.checksum, other.checksum)
            && agree(self.links, other.links)
            && StoredEvent {
                ends_group: other.ends_group,
                checksum: other.checksum,
                links: other.links,
                ..self.clone()
            } == *other
    }
}

/// What an [`Importer`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Events written.
    pub imported: u64,
    /// Events the store already held, identical (an interrupted import, continued).
    pub already_present: u64,
    /// Consumers written: created, or moved forward to the export's position.
    pub consumers: u64,
    /// Consumers of the export left as the store has them: at a later position than the
    /// export's, or absent from a store the import added no event to (where they may have been
    /// deleted). [`Importer::overwrite_consumers`] writes them instead.
    pub consumers_kept: u64,
}

/// Events an importer writes in one transaction (and one flush), at most.
const IMPORT_BATCH_EVENTS: usize = 8192;
/// Bytes of payload an importer writes in one transaction, at most (past one event).
const IMPORT_BATCH_BYTES: usize = 64 << 20;

fn invalid(seq: u64, reason: impl Into<String>) -> Error {
    Error::InvalidImport {
        seq,
        reason: reason.into(),
    }
}

/// See [`Storage::export_header`](crate::Storage::export_header).
pub(crate) fn export_header(storage: &Storage, txn: &ReadTxn) -> Result<ExportHeader> {
    storage.check_txn(txn)?;
    let dbs = storage.dbs();
    let raw = txn.raw();
    let mut bounds_out = Vec::new();
    for entry in dbs.bounds.iter(raw).lmdb()? {
        let (key, _) = entry.lmdb()?;
        let Ok(key) = <[u8; 16]>::try_from(key) else {
            continue;
        };
        let stream_id = u128::from_be_bytes(key);
        let b = storage::stream_bounds(dbs, raw, stream_id)?;
        bounds_out.push(ExportBounds {
            stream_id,
            first_kept: b.first_kept,
            tombstoned: b.tombstoned,
            head: storage::stream_head(dbs, raw, stream_id)?.unwrap_or((0, 0)),
        });
    }
    let mut types_out = Vec::new();
    for entry in dbs.types.iter(raw).lmdb()? {
        let (k, v) = entry.lmdb()?;
        let id = <[u8; 4]>::try_from(k)
            .map(u32::from_be_bytes)
            .map_err(|_| invalid(0, "a malformed type id in the store"))?;
        let key = decode_type_key(v).ok_or_else(|| Error::CorruptType {
            id,
            reason: "malformed type key".into(),
        })?;
        types_out.push(ExportType {
            id,
            container: key.container.to_owned(),
            name: key.name.to_owned(),
            version: key.version,
        });
    }
    let mut keys_out = Vec::new();
    for entry in dbs.keystore.iter(raw).lmdb()? {
        let (k, v) = entry.lmdb()?;
        let stream_id = <[u8; 16]>::try_from(k)
            .map(u128::from_be_bytes)
            .map_err(|_| Error::Crypto {
                reason: format!("a keystore key of {} bytes", k.len()),
            })?;
        keys_out.push(ExportKey {
            stream_id,
            wrapped: (!is_tombstone(v)).then(|| v.to_vec()),
        });
    }
    let mut consumers_out = Vec::new();
    for c in storage.consumers_in(txn)? {
        let is_projection = storage.has_projection(&c.name);
        if is_projection {
            continue;
        }
        let parked = parked_of(dbs, raw, &c.name)?;
        consumers_out.push(ExportConsumer {
            name: c.name,
            position: c.position,
            parked,
        });
    }
    Ok(ExportHeader {
        format: u32::from(RECORD_FORMAT),
        last_seq: storage::last_seq(dbs, raw)?,
        origin: first_checksum(dbs, raw)?,
        types: types_out,
        keys: keys_out,
        key_check: Crypto::key_check(&dbs.meta, raw)?,
        consumers: consumers_out,
        removed_events: storage::meta_removed(dbs, raw)?,
        bounds: bounds_out,
        groups: storage::export_groups(dbs, raw, |name| storage.has_projection(name))?,
    })
}

/// The stored checksum of the log's first event, if it has one.
fn first_checksum(dbs: &Dbs, txn: &heed::RoTxn<'_, heed::WithoutTls>) -> Result<Option<u64>> {
    LogIter::open(Ok(()), dbs, txn, 1, false)
        .next()
        .transpose()
        .map(|first| first.map(|e| stored_checksum(e.record)))
}

/// See [`Storage::export_events`](crate::Storage::export_events).
pub(crate) fn export_events<'t>(
    storage: &Storage,
    txn: &'t ReadTxn,
    from_seq: u64,
) -> impl Iterator<Item = Result<StoredEvent>> + 't {
    let dbs = *storage.dbs();
    let raw = txn.raw();
    let mut done = false;
    let check = storage.check_txn(txn);
    LogIter::open(check, &dbs, raw, from_seq, false).map_while(move |entry| {
        if done {
            return None;
        }
        let event = entry.and_then(|e| {
            let mut event = stored_event(&dbs, raw, e.seq, e.record)?;
            event.ends_group = e.ends_group;
            Ok(event)
        });
        done = event.is_err();
        Some(event)
    })
}

/// See [`Storage::importer`](crate::Storage::importer).
pub(crate) fn importer(storage: &Storage) -> Importer {
    Importer {
        storage: storage.clone(),
        pending: Vec::new(),
        pending_bytes: 0,
        next_seq: 1,
        last_seq: u64::MAX,
        overwrite_consumers: false,
        started: None,
        heads: HashMap::new(),
        type_ids: TypeIds::default(),
        report: ImportReport::default(),
        removals: None,
        skipped_to: 0,
        seal: false,
    }
}

fn stored_event(dbs: &Dbs, txn: &heed::RoTxn<'_>, seq: u64, value: &[u8]) -> Result<StoredEvent> {
    let stored = Stored::open(seq, value, false)?;
    let (header, section) = (stored.header, stored.section);
    let event_type = stored.event_type(dbs, txn)?;
    let encrypted = stored.is_encrypted();
    let bound = header.flags & FLAG_BOUND != 0;
    let is_blob = stored.is_blob();
    let (payload, blob_ref) = match stored.payload(dbs, txn) {
        Ok((bytes, _)) => (Some(bytes.to_vec()), None),
        // Shredding released the stream's blobs; the reference is all there is.
        Err(e) if is_blob && is_shredded(dbs, txn, header.stream_id)? => {
            drop(e);
            (None, Some(stored.rest().to_vec()))
        }
        Err(e) => return Err(e),
    };
    let metadata = if encrypted {
        Vec::new()
    } else {
        let (encoded, count) = section.encoded_pairs();
        pairs(encoded, count)
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    Ok(StoredEvent {
        seq,
        stream_id: header.stream_id,
        version: header.version,
        timestamp_ns: header.timestamp_ns,
        type_container: event_type.container.to_owned(),
        type_name: event_type.name.to_owned(),
        type_version: event_type.version,
        event_id: section.event_id().map(EventId::from_u128),
        correlation_id: section.correlation_id().map(EventId::from_u128),
        causation_id: section.causation_id().map(EventId::from_u128),
        tags: section.tags().map(str::to_owned).collect(),
        metadata,
        encrypted,
        bound,
        blob: is_blob,
        payload,
        blob_ref,
        checksum: Some(stored_checksum(value)),
        links: removed_links(dbs, txn, &header)?,
        ends_group: false,
    })
}

/// A record's links, when one points into its stream's removed versions (see
/// [`StoredEvent::links`]).
fn removed_links(
    dbs: &Dbs,
    txn: &heed::RoTxn<'_>,
    header: &RecordHeader,
) -> Result<Option<(u64, u64)>> {
    let jump = storage::jump_version(header.version);
    let lowest = if jump > 0 {
        jump.min(header.version - 1)
    } else {
        header.version.saturating_sub(1)
    };
    if lowest == 0 {
        return Ok(None);
    }
    let first_kept = storage::stream_bounds(dbs, txn, header.stream_id)?.first_kept;
    Ok((lowest < first_kept).then_some((header.links.prev, header.links.jump)))
}

/// A stream's head as the importer last committed it.
#[derive(Clone)]
struct ImportHead {
    version: u32,
    seq: u64,
    spine: Spine,
    /// Whether the stream has a key entry (encrypted), and whether it was shredded.
    keyed: bool,
    shredded: bool,
}

/// Writes exported events into a store, from [`Storage::importer`].
///
/// Call [`begin`](Self::begin) with the export's header, [`push`](Self::push) each event in
/// order, then [`finish`](Self::finish). Events are written in transactions of a few thousand,
/// each flushed before the next, so an interrupted import leaves a durable prefix; importing
/// the same export again into that store checks that prefix (each record must be identical)
/// and goes on after it. The store must hold no other events: an import never merges logs.
///
/// Everything is checked before it is written: sequences without gaps from 1, versions
/// without gaps within each stream, types and keys that agree with the store, an encrypted
/// event only in a stream with a key, a payload where one is needed. A refusal is
/// [`Error::InvalidImport`] naming the event; what was committed before it stays.
pub struct Importer {
    storage: Storage,
    pending: Vec<StoredEvent>,
    pending_bytes: usize,
    /// The sequence the next pushed event must have.
    next_seq: u64,
    /// The last sequence the header announced: an event past it is refused before it is
    /// queued, so that an import that fails at `finish` has not written it.
    last_seq: u64,
    /// Whether `finish` sets every consumer to the export's position (see
    /// [`overwrite_consumers`](Self::overwrite_consumers)).
    overwrite_consumers: bool,
    /// The store's last sequence when the import began, and the sequence the importer has
    /// committed (or checked) up to.
    started: Option<(u64, u64)>,
    heads: HashMap<u128, ImportHead>,
    type_ids: TypeIds,
    report: ImportReport,
    /// The export's removals: its sequences have gaps, and these streams start past version 1.
    removals: Option<Removals>,
    /// The source's sequences up to here were removed ([`skip_to`](Self::skip_to)): the
    /// next write counts them and keeps the log's end past them.
    skipped_to: u64,
    /// Whether plaintext events are sealed under their stream's key
    /// ([`seal_plaintext`](Self::seal_plaintext)).
    seal: bool,
}

/// What an export says of its removed events (see [`ExportHeader::removed_events`]).
#[derive(Debug, Clone, Default)]
struct Removals {
    removed_events: u64,
    /// Each stream's first kept version.
    first_kept: HashMap<u128, u32>,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("next_seq", &self.next_seq)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

/// The most stream heads an importer remembers between batches; past it, it starts over.
const IMPORT_HEADS_MAX: usize = 1 << 18;

impl Importer {
    /// Applies the export's header: its event types (with their ids) and its stream keys and
    /// key check, which must agree with what the store already has.
    pub fn begin(&mut self, header: &ExportHeader) -> Result<()> {
        if header.format != u32::from(RECORD_FORMAT) {
            return Err(invalid(
                0,
                format!(
                    "the export is of record format {}, this store writes format {}",
                    header.format, RECORD_FORMAT
                ),
            ));
        }
        self.last_seq = header.last_seq;
        if header.removed_events > 0 || !header.bounds.is_empty() {
            self.removals = Some(Removals {
                removed_events: header.removed_events,
                first_kept: header
                    .bounds
                    .iter()
                    .map(|b| (b.stream_id, b.first_kept))
                    .collect(),
            });
        }
        let storage = self.storage.clone();
        let accepts = |check: &[u8]| storage.crypto().accepts_check(check);
        let wait = storage.resize_wait();
        storage.write(wait, |wtxn, dbs| {
            // Another store's export is named as such, before anything of it is compared.
            if let (Some(theirs), Some(ours)) = (header.origin, first_checksum(dbs, wtxn)?)
                && theirs != ours
            {
                return Err(invalid(
                    0,
                    format!(
                        "the export is of another store: its first event (checksum \
                         {theirs:016x}) is not this store's (checksum {ours:016x}); an import \
                         never merges two stores' logs, so import it into a new path"
                    ),
                ));
            }
            for t in &header.types {
                let key = TypeKey {
                    container: &t.container,
                    name: &t.name,
                    version: t.version,
                };
                check_type_name(0, &key)?;
                let encoded = key.encode();
                let by_id = dbs.types.get(wtxn, &t.id.to_be_bytes()).lmdb()?;
                let by_key = dbs.type_ids.get(wtxn, &encoded).lmdb()?;
                match (by_id, by_key) {
                    (None, None) => {
                        dbs.types.put(wtxn, &t.id.to_be_bytes(), &encoded).lmdb()?;
                        dbs.type_ids
                            .put(wtxn, &encoded, &t.id.to_le_bytes())
                            .lmdb()?;
                    }
                    (Some(k), Some(id)) if k == encoded && id == t.id.to_le_bytes() => {}
                    _ => {
                        return Err(invalid(
                            0,
                            format!(
                                "the export gives type {key} the id {}, and the store has \
                                 another type under that id or another id for that type",
                                t.id
                            ),
                        ));
                    }
                }
            }
            let had_keys = dbs.keystore.first(wtxn).lmdb()?.is_some();
            if !header.keys.is_empty() {
                // Shredded marks among them reach every process's key cache.
                bump_generation(&dbs.meta, wtxn)?;
            }
            // Wrapped keys with no key check: nothing says which master key wraps them, and a
            // later rotation would fail on them for the whole store.
            let has_check =
                header.key_check.is_some() || Crypto::key_check(&dbs.meta, wtxn)?.is_some();
            if !has_check && let Some(k) = header.keys.iter().find(|k| k.wrapped.is_some()) {
                return Err(invalid(
                    0,
                    format!(
                        "the export has a wrapped key (stream {:#x}) but no key check: it cannot \
                         say which master key wraps its streams",
                        k.stream_id
                    ),
                ));
            }
            // The streams' bounds, and the heads of those that kept no event (no event will
            // bring them): before any event, so that a tombstone holds from the start.
            for b in &header.bounds {
                if b.first_kept == 0 || b.first_kept > b.head.0.saturating_add(1) {
                    return Err(invalid(
                        0,
                        format!(
                            "stream {:#x} keeps versions from {} but is at version {}",
                            b.stream_id, b.first_kept, b.head.0
                        ),
                    ));
                }
                storage::put_stream_bounds(
                    dbs,
                    wtxn,
                    b.stream_id,
                    storage::StreamBounds {
                        first_kept: b.first_kept,
                        tombstoned: b.tombstoned,
                    },
                )?;
                if b.first_kept > b.head.0
                    && storage::stream_head(dbs, wtxn, b.stream_id)?.is_none()
                {
                    put_head(dbs, wtxn, b.stream_id, b.head.0, b.head.1)?;
                }
            }
            for k in &header.keys {
                let value: &[u8] = k.wrapped.as_deref().unwrap_or(TOMBSTONE);
                if value.is_empty() {
                    return Err(invalid(
                        0,
                        format!("the export gives stream {:#x} an empty key", k.stream_id),
                    ));
                }
                match dbs.keystore.get(wtxn, &k.stream_id.to_be_bytes()).lmdb()? {
                    None => {
                        // With the master key at hand, a wrapped key that does not open under
                        // it is refused now, not at the first read or the next rotation.
                        if k.wrapped.is_some()
                            && !storage.crypto().opens_wrapped(k.stream_id, value)
                        {
                            return Err(invalid(
                                0,
                                format!(
                                    "the export's key of stream {:#x} does not open under this \
                                     store's master key",
                                    k.stream_id
                                ),
                            ));
                        }
                        dbs.keystore
                            .put(wtxn, &k.stream_id.to_be_bytes(), value)
                            .lmdb()?
                    }
                    Some(v) if v == value => {}
                    Some(_) => {
                        return Err(invalid(
                            0,
                            format!(
                                "stream {:#x} has another key in the store than in the export",
                                k.stream_id
                            ),
                        ));
                    }
                }
            }
            if let Some(check) = &header.key_check {
                match Crypto::key_check(&dbs.meta, wtxn)? {
                    None => Crypto::put_key_check(&dbs.meta, wtxn, check)?,
                    Some(stored) if stored == *check => {}
                    Some(stored) if accepts(check) => {
                        // The same master key; the export's encrypted events are bound to its
                        // store id, which this store takes if it has no encrypted stream of
                        // its own yet (a new store made for the import).
                        let crypto = storage.crypto();
                        let theirs = crypto.store_id_in(check);
                        let ours = crypto.store_id_in(&stored);
                        if theirs.is_some() && theirs != ours {
                            if !had_keys {
                                Crypto::put_key_check(&dbs.meta, wtxn, check)?;
                            } else if !header.keys.is_empty() {
                                return Err(invalid(
                                    0,
                                    "the export's encrypted events are bound to another store \
                                     (its key check carries another store id), and this store \
                                     has encrypted streams of its own: import it into a new \
                                     store",
                                ));
                            }
                        }
                    }
                    Some(_) => {
                        return Err(invalid(
                            0,
                            "the export's streams are encrypted under another master key than \
                             this store's",
                        ));
                    }
                }
            }
            Ok(((), true))
        })?;
        Ok(())
    }

    /// Brings the store's keystore to a source's, for a replica that follows it (the NATS
    /// restorer, at every connection and on every change it is told of): a stream the source
    /// shredded is shredded here ([`Storage::shred_stream`], its blobs released); a stream
    /// whose wrapped key changed (the source rotated its master key) takes the new wrapped
    /// key; and the key check follows the source's, in one transaction with the keys. Streams
    /// this store does not have yet are left for [`begin`](Self::begin), with their first
    /// event. Returns how many streams were shredded and how many keys were replaced.
    ///
    /// The replica needs no master key for this: it copies wrapped keys, and unwraps nothing.
    pub fn adopt_keys(
        &mut self,
        key_check: Option<&[u8]>,
        keys: &[ExportKey],
    ) -> Result<(u64, u64)> {
        self.commit()?;
        let mut shred = Vec::new();
        let mut rewrapped = 0u64;
        let storage = self.storage.clone();
        storage.write_durable(|wtxn, dbs| {
            let mut wrote = false;
            rewrapped = 0;
            shred.clear();
            for k in keys {
                let stored = dbs.keystore.get(wtxn, &k.stream_id.to_be_bytes()).lmdb()?;
                match (stored, &k.wrapped) {
                    (None, _) => {}
                    (Some(v), _) if is_tombstone(v) => {}
                    (Some(_), None) => shred.push(k.stream_id),
                    (Some(v), Some(w)) if v == w.as_slice() => {}
                    (Some(_), Some(w)) => {
                        if w.is_empty() || is_tombstone(w) {
                            return Err(invalid(
                                0,
                                format!("the source gives stream {:#x} an empty key", k.stream_id),
                            ));
                        }
                        dbs.keystore
                            .put(wtxn, &k.stream_id.to_be_bytes(), w)
                            .lmdb()?;
                        rewrapped += 1;
                        wrote = true;
                    }
                }
            }
            if let Some(check) = key_check
                && Crypto::key_check(&dbs.meta, wtxn)?.as_deref() != Some(check)
            {
                Crypto::put_key_check(&dbs.meta, wtxn, check)?;
                wrote = true;
            }
            if wrote {
                bump_generation(&dbs.meta, wtxn)?;
            }
            Ok(((), wrote))
        })?;
        let mut shredded = 0;
        for stream_id in shred {
            if !self.storage.shred_stream(stream_id)?.already {
                shredded += 1;
            }
        }
        Ok((shredded, rewrapped))
    }

    /// Queues one event; a full batch is written (and flushed) before this returns.
    pub fn push(&mut self, event: StoredEvent) -> Result<()> {
        self.check_size(&event)?;
        // An export with removed events has gaps where they were.
        let gap_ok = self.removals.is_some() && event.seq > self.next_seq;
        if event.seq != self.next_seq && !gap_ok {
            return Err(invalid(
                event.seq,
                format!(
                    "events must come in order from sequence 1 without gaps; expected {}",
                    self.next_seq
                ),
            ));
        }
        self.check_announced(event.seq)?;
        self.next_seq = event.seq.saturating_add(1);
        self.pending_bytes = self
            .pending_bytes
            .saturating_add(event.payload.as_ref().map_or(0, Vec::len));
        self.pending.push(event);
        if self.pending.len() >= IMPORT_BATCH_EVENTS || self.pending_bytes >= IMPORT_BATCH_BYTES {
            self.write_pending()?;
        }
        Ok(())
    }

    /// An event past the header's `last_seq` is refused: the export does not hold it, so it is
    /// not the export's (two exports run together, or lines appended to one).
    fn check_announced(&self, seq: u64) -> Result<()> {
        if seq > self.last_seq {
            return Err(invalid(
                seq,
                format!(
                    "the export's header announces events up to sequence {}, and this one is \
                     past it: the events after the header's last do not belong to the export; \
                     nothing of them was written",
                    self.last_seq
                ),
            ));
        }
        Ok(())
    }

    /// An event longer than the store's `event_bytes_max` is refused, as an append of it
    /// would be: an import is no way around the limit.
    fn check_size(&self, event: &StoredEvent) -> Result<()> {
        let max = self.storage.config().event_bytes_max;
        let size = event.payload.as_ref().map_or(0, Vec::len);
        if size > max {
            return Err(Error::EventTooLarge { size, max });
        }
        Ok(())
    }

    /// Continues the store's own log: the next event to push is the one after the store's
    /// last, which this returns. For a replica that follows its source: each run resumes
    /// where the last one committed, without reading back the events it already holds.
    pub fn resume(&mut self) -> Result<u64> {
        self.write_pending()?;
        let last = self.storage.last_seq(&self.storage.read_txn()?)?;
        self.next_seq = last.saturating_add(1);
        self.started = Some((last, last));
        Ok(last)
    }

    /// Queues a whole commit group (the events up to one with
    /// [`ends_group`](StoredEvent::ends_group)) so that no transaction of the import ends
    /// inside it: a reader of the store never sees part of an atomic append. A full batch is
    /// written first; a group larger than a batch gets a transaction of its own. Returns
    /// whether everything queued, this group included, has been written (and flushed).
    pub fn push_group(&mut self, events: Vec<StoredEvent>) -> Result<bool> {
        for event in &events {
            self.check_size(event)?;
        }
        let bytes: usize = events
            .iter()
            .map(|e| e.payload.as_ref().map_or(0, Vec::len))
            .sum();
        if !self.pending.is_empty()
            && (self.pending.len() + events.len() > IMPORT_BATCH_EVENTS
                || self.pending_bytes.saturating_add(bytes) > IMPORT_BATCH_BYTES)
        {
            self.write_pending()?;
        }
        // Checked whole before anything of the group is queued. With removals, the sequences
        // have gaps where removed events were.
        let mut expected = self.next_seq;
        for event in &events {
            self.check_announced(event.seq)?;
            let gap_ok = self.removals.is_some() && event.seq > expected;
            if event.seq != expected && !gap_ok {
                return Err(invalid(
                    event.seq,
                    format!("events must come in order without gaps; expected {expected}"),
                ));
            }
            expected = event.seq.saturating_add(1);
        }
        self.next_seq = expected;
        self.pending_bytes = self.pending_bytes.saturating_add(bytes);
        self.pending.extend(events);
        if self.pending.len() >= IMPORT_BATCH_EVENTS || self.pending_bytes >= IMPORT_BATCH_BYTES {
            self.write_pending()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes what is queued, in one transaction, flushed before this returns.
    pub fn commit(&mut self) -> Result<()> {
        self.write_pending()
    }

    /// The sequence the next pushed event must have (or, once gaps are taken, the least it
    /// may have).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Seals the events that come in plaintext under their stream's key (made when the stream
    /// has none), as an append to an encrypted store seals them: ids and tags stay in the
    /// clear, the metadata and payload are sealed and bound to the store, the stream, version,
    /// sequence, time, type and the clear section. For bringing plaintext data (a varvedb 0.4.2
    /// store) into an encrypted store. Needs the store's master key
    /// ([`Error::MasterKeyRequired`] otherwise). A sealed event has a fresh nonce, so an
    /// interrupted sealing import continues with [`resume`](Self::resume), not by pushing the
    /// events it wrote again.
    pub fn seal_plaintext(&mut self, seal: bool) -> Result<&mut Self> {
        if seal && !self.storage.crypto().has_master_key() {
            return Err(Error::MasterKeyRequired { stream_id: 0 });
        }
        self.seal = seal;
        Ok(self)
    }

    /// Takes events whose sequences have gaps: the sequences between them were removed at the
    /// source (truncations, deletions, retention), and the store counts them as removed, so
    /// that `verify` adds them up and they are never given again. For a replica of a store
    /// with removals; an import takes them from its header's `removed_events`.
    pub fn take_gaps(&mut self) {
        self.removals.get_or_insert_with(Removals::default);
    }

    /// Marks every sequence from [`next_seq`](Self::next_seq) up to `seq` as removed at the
    /// source (see [`take_gaps`](Self::take_gaps), which this implies): written with the next
    /// batch, which keeps the log's end at `seq` when nothing comes after. A `seq` below
    /// `next_seq` does nothing.
    pub fn skip_to(&mut self, seq: u64) -> Result<()> {
        self.take_gaps();
        if seq < self.next_seq {
            return Ok(());
        }
        self.check_announced(seq)?;
        self.next_seq = seq.saturating_add(1);
        self.skipped_to = seq;
        Ok(())
    }

    /// Takes a source's removal of a stream (a replica following it, see
    /// [`Storage::stream_removals`]): what is queued is written first; then the store's own
    /// events of the stream below `removal.first_kept` are removed, its version moves up to
    /// the last removed one when it is behind (events it never received), and it takes the
    /// bounds and the tombstone. Later events of the stream must start at the first kept
    /// version. Returns the events removed from this store; a removal already taken removes
    /// and writes nothing.
    ///
    /// [`Storage::stream_removals`]: crate::Storage::stream_removals
    pub fn adopt_removal(&mut self, removal: &StreamRemoval) -> Result<u64> {
        self.write_pending()?;
        let removed = storage::adopt_removal(&self.storage, removal)?;
        self.heads.remove(&removal.stream_id);
        let removals = self.removals.get_or_insert_with(Removals::default);
        let first = removals.first_kept.entry(removal.stream_id).or_insert(1);
        *first = (*first).max(removal.first_kept);
        Ok(removed)
    }

    /// Writes what is queued, checks that the export's events all came (`header.last_seq`),
    /// then writes the consumers of `header` (their positions within the imported log), and
    /// flushes.
    pub fn finish(mut self, header: &ExportHeader) -> Result<ImportReport> {
        self.write_pending()?;
        let last = self.next_seq - 1;
        // With removals, every sequence up to the header's last is an event or a removed one.
        let counted = self.report.imported + self.report.already_present + header.removed_events;
        let whole = match &self.removals {
            Some(_) => counted == header.last_seq && last <= header.last_seq,
            None => last == header.last_seq,
        };
        if !whole {
            return Err(invalid(
                last.saturating_add(1),
                format!(
                    "the export's header announces {} events and {last} came: it is truncated \
                     or its events do not belong to it (what came is imported; importing the \
                     whole export again continues after it)",
                    header.last_seq
                ),
            ));
        }
        for c in &header.consumers {
            check_consumer_name(&c.name)?;
            if c.position > last {
                return Err(invalid(
                    0,
                    format!(
                        "consumer {:?} is at sequence {}, past the last imported event {last}",
                        c.name, c.position
                    ),
                ));
            }
        }
        let overwrite = self.overwrite_consumers;
        // A consumer the store lacks is created when the import brought events (the export is
        // ahead of the store, or the store was empty); into a store the import added nothing
        // to, it may be one the store deleted since the export, and is not brought back.
        let brought_events = self.report.imported > 0;
        let wait = self.storage.resize_wait();
        let removals = self.removals.clone();
        let (written, kept) = self.storage.write(wait, |wtxn, dbs| {
            if let Some(r) = &removals {
                storage::set_removal_meta(dbs, wtxn, header.last_seq, r.removed_events)?;
            }
            let (mut written, mut kept) = (0u64, 0u64);
            for c in &header.consumers {
                let ours = consumer_position(dbs, wtxn, &c.name)?;
                if !overwrite && ours == Some(c.position) {
                    // Where the export has it already: nothing to do.
                    continue;
                }
                let write = overwrite
                    || match ours {
                        Some(ours) => c.position > ours,
                        None => brought_events,
                    };
                if !write {
                    kept += 1;
                    continue;
                }
                written += 1;
                set_consumer_position(dbs, wtxn, &c.name, c.position)?;
                for p in &c.parked {
                    park(dbs, wtxn, &c.name, p.seq, &p.reason)?;
                }
            }
            for g in &header.groups {
                check_consumer_name(&g.name)?;
                if g.positions.iter().any(|p| *p > last) {
                    return Err(invalid(
                        0,
                        format!(
                            "consumer group {:?} has a partition past the last imported event \
                             {last}",
                            g.name
                        ),
                    ));
                }
                let (w, k) = storage::import_group(dbs, wtxn, g, overwrite, brought_events)?;
                written += w;
                kept += k;
            }
            Ok(((written, kept), written > 0 || removals.is_some()))
        })?;
        self.storage.sync()?;
        self.report.consumers = written;
        self.report.consumers_kept = kept;
        Ok(self.report)
    }

    /// Makes [`finish`](Self::finish) set every consumer of the export to the export's
    /// position, creating the missing ones, even where that moves a consumer of the store
    /// back (it then handles events again) or brings back one the store deleted. By default a
    /// consumer only moves forward.
    pub fn overwrite_consumers(&mut self, overwrite: bool) -> &mut Self {
        self.overwrite_consumers = overwrite;
        self
    }

    fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() && self.skipped_to == 0 {
            return Ok(());
        }
        let skipped_to = self.skipped_to;
        let seal = self.seal;
        let blob_threshold = self.storage.config().blob_threshold_bytes;
        let storage = self.storage.clone();
        let inline_max = storage.inline_record_max();
        let started = self.started;
        let pending = &self.pending;
        let cached_heads = &self.heads;
        let cached_types = &self.type_ids;
        let removals = self.removals.as_ref();
        let (heads, types, present, store_last, last) =
            storage.write(storage.resize_wait(), |wtxn, dbs| {
                let store_last = storage::last_seq(dbs, wtxn)?;
                let (began_at, done) = started.unwrap_or((store_last, 0));
                // The log may only have moved by this import's own writes.
                if store_last != began_at.max(done) {
                    return Err(invalid(
                        pending.first().map_or(0, |e| e.seq),
                        format!(
                            "the store changed during the import (its log ends at {store_last}, \
                             expected {})",
                            began_at.max(done)
                        ),
                    ));
                }
                let mut heads: HashMap<u128, ImportHead> = HashMap::new();
                let mut types = TypeIds::default();
                let mut present = 0u64;
                let mut last = done;
                // The records go into packs: a pack ends where the batch or a run ends.
                let mut log = LogWriter::new(inline_max, pending.len());
                // The stream keys of this batch, found or made (see `seal_plaintext`).
                let mut keys: HashMap<u128, EventKey> = HashMap::new();
                for event in pending {
                    let sealed;
                    let event = if seal && !event.encrypted && event.seq > store_last {
                        let key = match keys.entry(event.stream_id) {
                            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                            std::collections::hash_map::Entry::Vacant(e) => {
                                let crypto = storage.crypto();
                                let key = match crypto.stream_key(
                                    dbs,
                                    wtxn,
                                    event.stream_id,
                                    CryptoTxn::Write,
                                )? {
                                    StreamKey::Key(k) => k,
                                    StreamKey::Plain => {
                                        crypto.create_key(dbs, wtxn, event.stream_id)?
                                    }
                                    StreamKey::Shredded => {
                                        return Err(invalid(
                                            event.seq,
                                            format!(
                                                "stream {:#x} is shredded: nothing more is \
                                                 sealed into it",
                                                event.stream_id
                                            ),
                                        ));
                                    }
                                };
                                e.insert(key)
                            }
                        };
                        sealed = seal_stored(event, key, blob_threshold)?;
                        &sealed
                    } else {
                        event
                    };
                    let type_id = import_type_id(dbs, wtxn, cached_types, &mut types, event)?;
                    if event.seq <= store_last {
                        // An earlier, interrupted import of this export: the record there must
                        // be this one. Its links are taken as stored (verify checks chains).
                        let stored = storage::get_record(dbs, wtxn, event.seq)?;
                        let links = stored.and_then(peek_record).map(|p| p.links);
                        let same = match (stored, links) {
                            (Some(stored), Some(links)) => {
                                build_record(event, links, type_id)?.record == stored
                            }
                            _ => false,
                        };
                        if !same {
                            return Err(invalid(
                                event.seq,
                                "the store already holds a different event at this sequence \
                                 (import into an empty store)",
                            ));
                        }
                        present += 1;
                        last = event.seq;
                        log.skip(1);
                        continue;
                    }
                    let head = match heads.entry(event.stream_id) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            let head = match cached_heads.get(&event.stream_id) {
                                Some(h) => h.clone(),
                                None => load_head(dbs, wtxn, event.stream_id, removals)?,
                            };
                            e.insert(head)
                        }
                    };
                    check_event(event, head)?;
                    // The more precise refusal first: an id the store has, then the checksum.
                    let event_id = event.event_id.map(EventId::as_u128);
                    if let Some(id) = event_id
                        && let Some(seq) = storage::event_id_seq(dbs, wtxn, id)?
                    {
                        return Err(invalid(
                            event.seq,
                            format!(
                                "event id {} is already event {seq}'s",
                                EventId::from_u128(id)
                            ),
                        ));
                    }
                    let mut links = head.spine.push(event.version, event.seq);
                    // Links into the stream's removed versions come with the event: nothing
                    // here could rebuild them (and no walk follows them).
                    if let Some((prev, jump)) = event.links {
                        links = Links { prev, jump };
                    }
                    let built = build_record(event, links, type_id)?;
                    head.version = event.version;
                    head.seq = event.seq;
                    log.put(
                        dbs,
                        wtxn,
                        &NewRecord {
                            seq: event.seq,
                            record: &built.record,
                            blob: built
                                .blob
                                .as_ref()
                                .map(|(r, stored)| (r, stored.as_slice())),
                            type_id,
                            event_id,
                        },
                    )?;
                    last = event.seq;
                }
                log.flush(dbs, wtxn)?;
                // Removed at the source: the gaps between the sequences written (and before
                // the first), and what was skipped after the last.
                let mut removed = 0u64;
                let mut prev = store_last;
                for event in pending.iter().filter(|e| e.seq > store_last) {
                    removed += event.seq - prev - 1;
                    prev = event.seq;
                }
                if skipped_to > prev {
                    removed += skipped_to - prev;
                    last = skipped_to;
                }
                storage::note_removed(dbs, wtxn, removed, last)?;
                let mut dirty: Vec<(u128, u32, u64)> = heads
                    .iter()
                    .filter(|(_, h)| h.seq > store_last)
                    .map(|(s, h)| (*s, h.version, h.seq))
                    .collect();
                dirty.sort_unstable_by_key(|(s, _, _)| *s);
                for (stream_id, version, seq) in &dirty {
                    put_head(dbs, wtxn, *stream_id, *version, *seq)?;
                }
                let wrote = last > store_last;
                Ok(((heads, types, present, store_last, last), wrote))
            })?;
        if last > store_last {
            self.storage.sync()?;
            self.storage.publish(last);
        }
        self.skipped_to = 0;
        let imported = self.pending.len() as u64 - present;
        self.report.imported += imported;
        self.report.already_present += present;
        self.started = Some((self.started.map_or(store_last, |(b, _)| b), last));
        if self.heads.len() + heads.len() > IMPORT_HEADS_MAX {
            self.heads.clear();
        }
        self.heads.extend(heads);
        self.type_ids.absorb(types);
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }
}

fn check_type_name(seq: u64, key: &TypeKey<'_>) -> Result<()> {
    let fits = |s: &str| s.len() <= 255;
    if key.name.is_empty() || !fits(key.name) || !fits(key.container) {
        return Err(invalid(
            seq,
            format!("type {key}: names are 1 to 255 bytes, containers at most 255"),
        ));
    }
    Ok(())
}

/// Type ids by type, found without allocating: by name, then container and version.
#[derive(Default)]
struct TypeIds(HashMap<String, Vec<(String, u16, u32)>>);

impl TypeIds {
    fn get(&self, key: &TypeKey<'_>) -> Option<u32> {
        self.0
            .get(key.name)?
            .iter()
            .find(|(container, version, _)| container == key.container && *version == key.version)
            .map(|(_, _, id)| *id)
    }

    fn insert(&mut self, key: &TypeKey<'_>, id: u32) {
        self.0.entry(key.name.to_owned()).or_default().push((
            key.container.to_owned(),
            key.version,
            id,
        ));
    }

    fn absorb(&mut self, other: TypeIds) {
        for (name, list) in other.0 {
            self.0.entry(name).or_default().extend(list);
        }
    }
}

fn import_type_id(
    dbs: &Dbs,
    wtxn: &mut heed::RwTxn<'_>,
    cached: &TypeIds,
    batch: &mut TypeIds,
    event: &StoredEvent,
) -> Result<u32> {
    let key = TypeKey {
        container: &event.type_container,
        name: &event.type_name,
        version: event.type_version,
    };
    if let Some(id) = cached.get(&key).or_else(|| batch.get(&key)) {
        return Ok(id);
    }
    check_type_name(event.seq, &key)?;
    let (id, _) = intern_type(dbs, wtxn, &key)?;
    batch.insert(&key, id);
    Ok(id)
}

fn load_head(
    dbs: &Dbs,
    txn: &heed::RoTxn<'_>,
    stream_id: u128,
    removals: Option<&Removals>,
) -> Result<ImportHead> {
    let head = storage::stream_head(dbs, txn, stream_id)?;
    // A stream whose first versions were removed in the source starts past them.
    let first_kept = removals
        .and_then(|r| r.first_kept.get(&stream_id))
        .copied()
        .unwrap_or(1);
    let (version, seq, spine) = match head {
        Some((version, seq)) => (
            version,
            seq,
            Spine::load(dbs, txn, stream_id, version, seq)?,
        ),
        None if first_kept > 1 => (first_kept - 1, 0, Spine::placeholder(first_kept - 1)),
        None => (0, 0, Spine::default()),
    };
    let key = dbs.keystore.get(txn, &stream_id.to_be_bytes()).lmdb()?;
    Ok(ImportHead {
        version,
        seq,
        spine,
        keyed: key.is_some(),
        shredded: key.is_some_and(is_tombstone),
    })
}

fn check_event(event: &StoredEvent, head: &ImportHead) -> Result<()> {
    let seq = event.seq;
    if event.version != head.version.saturating_add(1) {
        return Err(invalid(
            seq,
            format!(
                "stream {:#x} is at version {}, so the next event is version {}, not {}",
                event.stream_id,
                head.version,
                u64::from(head.version) + 1,
                event.version
            ),
        ));
    }
    if event.stream_id == crate::writer::RESERVED_STREAM_ID {
        return Err(invalid(seq, "stream u128::MAX is reserved"));
    }
    if event.encrypted != head.keyed {
        return Err(invalid(
            seq,
            if event.encrypted {
                format!(
                    "an encrypted event of stream {:#x}, which has no key",
                    event.stream_id
                )
            } else {
                format!(
                    "a plaintext event of stream {:#x}, which is encrypted",
                    event.stream_id
                )
            },
        ));
    }
    if event.bound && !event.encrypted {
        return Err(invalid(
            seq,
            "a plaintext event cannot be bound (only a seal binds)",
        ));
    }
    if event.encrypted && !event.metadata.is_empty() {
        return Err(invalid(
            seq,
            "an encrypted event carries its metadata sealed in its payload, not in the clear",
        ));
    }
    match (&event.payload, &event.blob_ref) {
        (Some(_), None) => {}
        (None, Some(r)) if event.blob && head.shredded && BlobRef::decode(r).is_some() => {}
        (None, Some(_)) => {
            return Err(invalid(
                seq,
                "only a blob event of a shredded stream may come without its payload, \
                 with its 48-byte blob reference",
            ));
        }
        (None, None) => return Err(invalid(seq, "the event has no payload")),
        (Some(_), Some(_)) => {
            return Err(invalid(
                seq,
                "the event has both a payload and a blob reference",
            ));
        }
    }
    Ok(())
}

/// A record rebuilt from its stored form, and its blob (reference and padded bytes) if new.
struct Built {
    record: Vec<u8>,
    blob: Option<(BlobRef, Vec<u8>)>,
}

/// The stored form of plaintext `event` sealed under `key`, as an append to an encrypted
/// store seals it (`commit::group`'s `encrypt`): the ids and tags stay in the clear section,
/// the metadata and payload are sealed, bound to the store id, the stream, version, sequence,
/// time, type and the clear section; a sealed body past `blob_threshold` is a blob.
fn seal_stored(event: &StoredEvent, key: &EventKey, blob_threshold: usize) -> Result<StoredEvent> {
    let seq = event.seq;
    let payload = event
        .payload
        .as_deref()
        .ok_or_else(|| invalid(seq, "the event has no payload to seal"))?;
    let visible = Fields {
        event_id: event.event_id.map(EventId::as_u128),
        correlation_id: event.correlation_id.map(EventId::as_u128),
        causation_id: event.causation_id.map(EventId::as_u128),
        tags: event.tags.clone(),
        metadata: Vec::new(),
    }
    .encode()?;
    let metadata = Fields {
        metadata: event.metadata.clone(),
        ..Fields::default()
    }
    .encode()?;
    let (section, _) = split_envelope(seq, !metadata.is_empty(), &metadata)?;
    let place = SealPlace {
        stream_id: event.stream_id,
        version: event.version,
        seq,
        timestamp_ns: event.timestamp_ns,
    };
    let event_type = TypeKey {
        container: &event.type_container,
        name: &event.type_name,
        version: event.type_version,
    };
    let sealed = seal_bound(
        key,
        &place,
        event_type,
        &visible,
        section.encoded_pairs(),
        payload,
    )?;
    Ok(StoredEvent {
        encrypted: true,
        bound: true,
        blob: visible.len() + sealed.len() > blob_threshold,
        metadata: Vec::new(),
        payload: Some(sealed),
        blob_ref: None,
        checksum: None,
        ..event.clone()
    })
}

fn build_record(event: &StoredEvent, links: Links, type_id: u32) -> Result<Built> {
    let seq = event.seq;
    let section = Fields {
        event_id: event.event_id.map(EventId::as_u128),
        correlation_id: event.correlation_id.map(EventId::as_u128),
        causation_id: event.causation_id.map(EventId::as_u128),
        tags: event.tags.clone(),
        metadata: event.metadata.clone(),
    }
    .encode()?;
    let mut flags = 0u8;
    if !section.is_empty() {
        flags |= FLAG_ENVELOPE;
    }
    if event.encrypted {
        flags |= FLAG_ENCRYPTED;
        if event.bound {
            flags |= FLAG_BOUND;
        }
    }
    let mut record = vec![0u8; HEADER_LEN];
    record.extend_from_slice(&section);
    let mut new_blob = None;
    if event.blob {
        flags |= FLAG_BLOB;
        match (&event.payload, &event.blob_ref) {
            (Some(payload), _) => {
                let reference = BlobRef::of(payload);
                let padded_len = blob_padded_len(reference.len)
                    .ok_or_else(|| invalid(seq, "the blob is too large for this platform"))?;
                let mut stored = Vec::with_capacity(padded_len);
                stored.extend_from_slice(payload);
                stored.resize(padded_len, 0);
                record.extend_from_slice(&reference.encode());
                new_blob = Some((reference, stored));
            }
            (None, Some(r)) => record.extend_from_slice(r),
            (None, None) => return Err(invalid(seq, "the event has no payload")),
        }
    } else if let Some(payload) = &event.payload {
        record.extend_from_slice(payload);
    }
    let (payload_len, digest) = end_draft(&mut record)?;
    let header = RecordHeader {
        flags,
        stream_id: event.stream_id,
        version: event.version,
        type_id,
        timestamp_ns: event.timestamp_ns,
        links,
    };
    seal_record(&mut record, payload_len, digest, &header);
    if let Some(expected) = event.checksum {
        let rebuilt = stored_checksum(&record);
        if rebuilt != expected {
            return Err(invalid(
                seq,
                format!(
                    "the event does not match the checksum its export gave (export \
                     {expected:#018x}, rebuilt {rebuilt:#018x}): its payload, envelope or \
                     header was changed on the way"
                ),
            ));
        }
    }
    Ok(Built {
        record,
        blob: new_blob,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Append, AppendOptions, ExpectedVersion, StorageConfig, Writer};

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
    struct Ev {
        n: u64,
        body: Vec<u8>,
    }

    fn open(dir: &std::path::Path, key: Option<[u8; 32]>) -> Storage {
        Storage::open(StorageConfig {
            path: dir.into(),
            encryption_enabled: key.is_some(),
            master_key: key,
            ..Default::default()
        })
        .unwrap()
    }

    /// Every record, and every entry of every other database that an import rebuilds, as
    /// bytes. (Packs follow the batches that wrote them: an import packs its own batches.)
    fn entries(storage: &Storage) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
        let txn = storage.read_txn().unwrap();
        let dbs = storage.dbs();
        let mut out = Vec::new();
        for entry in storage::log_from(Ok(()), dbs, txn.raw(), 1) {
            let (seq, record) = entry.unwrap();
            out.push(("events", seq.to_be_bytes().to_vec(), record.to_vec()));
        }
        for (name, db) in [
            ("heads", dbs.heads),
            ("blobs", dbs.blobs),
            ("blob_refs", dbs.blob_refs),
            ("keystore", dbs.keystore),
            ("types", dbs.types),
            ("type_ids", dbs.type_ids),
            ("event_ids", dbs.event_ids),
            ("tags", dbs.tags),
        ] {
            for entry in db.iter(txn.raw()).unwrap() {
                let (k, v) = entry.unwrap();
                out.push((name, k.to_vec(), v.to_vec()));
            }
        }
        out
    }

    #[test]
    fn every_record_blob_and_index_entry_is_rebuilt_byte_for_byte() {
        let src_dir = tempfile::tempdir().unwrap();
        {
            // Plaintext streams first (created before encryption is on), with payloads that
            // repeat: deduplicated blobs with several references.
            let plain = open(src_dir.path(), None);
            let w = Writer::<Ev>::new(plain.clone());
            for i in 0..60u64 {
                let event = Ev {
                    n: i % 4,
                    body: vec![(i % 4) as u8; 3000],
                };
                let options = AppendOptions::new()
                    .metadata("plain", i.to_string())
                    .tag(format!("n:{}", i % 4));
                w.commit(
                    Append::event(10 + u128::from(i % 3), ExpectedVersion::Auto, &event)
                        .options(options),
                )
                .map(|v| v[0])
                .unwrap();
            }
            w.close().unwrap();
        }
        let src = open(src_dir.path(), Some([3; 32]));
        let w = Writer::<Ev>::new(src.clone());
        for i in 0..300u64 {
            let len = [8, 2000, 70_000][(i % 3) as usize];
            let options = AppendOptions::new()
                .event_id(crate::EventId::from_u128(u128::from(i) + 1))
                .tags([format!("i:{}", i % 9), "sealed".to_owned()])
                .metadata("i", i.to_string());
            let event = Ev {
                n: i,
                body: vec![(i % 7) as u8; len],
            };
            w.commit(
                Append::event(1 + u128::from(i % 5), ExpectedVersion::Auto, &event)
                    .options(options),
            )
            .map(|v| v[0])
            .unwrap();
        }
        src.shred_stream(2).unwrap();
        w.close().unwrap();

        let txn = src.read_txn().unwrap();
        let header = src.export_header(&txn).unwrap();
        let dst_dir = tempfile::tempdir().unwrap();
        let dst = open(dst_dir.path(), None);
        let mut importer = dst.importer();
        importer.begin(&header).unwrap();
        for e in src.export_events(&txn, 1) {
            importer.push(e.unwrap()).unwrap();
        }
        importer.finish(&header).unwrap();
        drop(txn);
        assert_eq!(entries(&dst), entries(&src));
        let (src_stats, dst_stats) = (src.stats().unwrap(), dst.stats().unwrap());
        assert_eq!(dst_stats.events, src_stats.events);
        assert!(
            dst_stats.packs < src_stats.packs,
            "the import packs its batches ({} packs from {})",
            dst_stats.packs,
            src_stats.packs
        );
        let report = dst.verify().unwrap();
        assert!(report.is_clean(), "{report:?}");
    }
}
