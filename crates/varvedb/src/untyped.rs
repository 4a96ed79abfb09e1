//! The untyped view: [`RawReader`] and [`RawEvent`], for tools that read a store without
//! knowing its Rust event types (the `varvedb` tool, exporters, replicators).
//!
//! A `RawEvent` is the whole envelope of a stored event (sequence, stream, version, timestamp,
//! type name and version, ids, metadata) and its payload bytes, checked (checksum, blob digest)
//! but not validated as any type. [`RawEvent::archived`] validates it as a type on request,
//! which is how a reader upcasts older schema versions.

use std::fmt;

use heed::RoTxn;
use rkyv::Archive;
use rkyv::rancor;

use crate::error::{Error, Result};
use crate::event::Event;
use crate::reader::{MAX_EVENT_ALIGN, ValidateEvent};
use crate::storage::{
    self, BLOB_HASH_LEN, BackWalk, FLAG_ENCRYPTED, Found, LmdbResultExt, Query, QueryIter, ReadTxn,
    RecordHeader, Seal, Section, Storage, Stored, Txn, TypeKey, decode_head_value, find_version,
    locate_versions, open_record, resolve_type, version_at,
};

/// See [`Storage::raw_reader`](crate::Storage::raw_reader).
pub(crate) fn raw_reader(storage: &Storage) -> RawReader {
    RawReader {
        storage: storage.clone(),
    }
}

/// Reads events without knowing their Rust type; from [`Storage::raw_reader`].
#[derive(Debug, Clone)]
pub struct RawReader {
    storage: Storage,
}

/// One stored event, untyped: its envelope and payload bytes, borrowed from the snapshot.
pub struct RawEvent<'t> {
    seq: u64,
    header: RecordHeader,
    event_type: TypeKey<'t>,
    envelope: Section<'t>,
    payload: RawPayload<'t>,
    blob: Option<[u8; BLOB_HASH_LEN]>,
}

/// A raw event's payload.
enum RawPayload<'t> {
    /// Plaintext, in the map.
    Mapped(&'t [u8]),
    /// Decrypted (an encrypted stream, with its key): the plaintext and where its parts are.
    Decrypted {
        buffer: Plaintext,
        payload: std::ops::Range<usize>,
        pairs: std::ops::Range<usize>,
        pair_count: u16,
    },
    /// Encrypted, and this store was opened without the master key.
    Locked,
    /// Its stream was shredded: the payload is unreadable for good.
    Shredded,
}

/// A decrypted payload, wiped when dropped. (A type of its own, without the snapshot's
/// lifetime, so that a `RawEvent` may still be dropped after its snapshot ends.)
struct Plaintext(rkyv::util::AlignedVec<16>);

impl Drop for Plaintext {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.0.as_mut_slice());
    }
}

impl std::ops::Deref for Plaintext {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<'t> RawEvent<'t> {
    /// The global sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The stream.
    pub fn stream_id(&self) -> u128 {
        self.header.stream_id
    }

    /// The version within the stream.
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// The commit time, in nanoseconds since the Unix epoch.
    pub fn timestamp_ns(&self) -> u64 {
        self.header.timestamp_ns
    }

    /// The event's type name.
    pub fn event_type(&self) -> &'t str {
        self.event_type.name
    }

    /// The event's schema version.
    pub fn event_version(&self) -> u16 {
        self.event_type.version
    }

    /// The enum of events it was written through (`""` for a struct).
    pub fn event_container(&self) -> &'t str {
        self.event_type.container
    }

    crate::event::envelope_accessors!('t);

    /// The metadata pairs the payload was decrypted with; `Some` of nothing for an encrypted
    /// event that could not be (shredded, or read without the key).
    fn opened_pairs(&self) -> Option<(&[u8], u16)> {
        match &self.payload {
            RawPayload::Decrypted {
                buffer,
                pairs,
                pair_count,
                ..
            } => Some((&buffer[pairs.clone()], *pair_count)),
            _ if self.is_encrypted() => Some((&[], 0)),
            _ => None,
        }
    }

    /// The payload: the rkyv archive of the event (checked against its checksum, digest or
    /// authentication tag, not validated as any type). Empty for a shredded event, or an
    /// encrypted one read without the master key.
    pub fn payload_bytes(&self) -> &[u8] {
        match &self.payload {
            RawPayload::Mapped(bytes) => bytes,
            RawPayload::Decrypted {
                buffer, payload, ..
            } => &buffer[payload.clone()],
            RawPayload::Locked | RawPayload::Shredded => &[],
        }
    }

    /// Whether the event was stored encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.header.flags & FLAG_ENCRYPTED != 0
    }

    /// Whether the event's stream was shredded: its envelope stays, its payload is gone.
    pub fn is_shredded(&self) -> bool {
        matches!(self.payload, RawPayload::Shredded)
    }

    /// Whether the payload lives in the blob store.
    pub fn is_blob(&self) -> bool {
        self.blob.is_some()
    }

    /// The BLAKE3 hash of a payload in the blob store.
    pub fn blob_hash(&self) -> Option<&[u8; 32]> {
        self.blob.as_ref()
    }

    /// The payload validated as an `E`, if the event was stored as one of `E`'s types;
    /// otherwise [`Error::TypeMismatch`]. Zero-copy. This is the upcasting pattern: look at
    /// [`event_version`](Self::event_version), then read the payload as the type of that
    /// version.
    pub fn archived<E: ValidateEvent + Event>(&self) -> Result<&E::Archived> {
        let accepted = self.event_type.container == E::CONTAINER
            && E::TYPES
                .iter()
                .any(|t| t.name == self.event_type.name && t.version == self.event_type.version);
        if !accepted {
            return Err(Error::TypeMismatch {
                seq: self.seq,
                expected: crate::reader::expected_types::<E>(),
                found: self.event_type.to_string(),
            });
        }
        match self.payload {
            RawPayload::Shredded => {
                return Err(Error::Shredded {
                    seq: self.seq,
                    stream_id: self.header.stream_id,
                });
            }
            RawPayload::Locked => {
                return Err(Error::MasterKeyRequired {
                    stream_id: self.header.stream_id,
                });
            }
            _ => {}
        }
        let payload = self.payload_bytes();
        if !(payload.as_ptr() as usize).is_multiple_of(MAX_EVENT_ALIGN)
            || align_of::<<E as Archive>::Archived>() > MAX_EVENT_ALIGN
        {
            return Err(Error::corrupt(
                self.seq,
                "payload not aligned for zero-copy",
            ));
        }
        rkyv::access::<E::Archived, rancor::Error>(payload).map_err(|e| Error::InvalidEvent {
            seq: self.seq,
            type_name: std::any::type_name::<E>(),
            reason: e.to_string(),
        })
    }
}

impl fmt::Debug for RawEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawEvent")
            .field("seq", &self.seq)
            .field("stream_id", &self.header.stream_id)
            .field("version", &self.header.version)
            .field("timestamp_ns", &self.header.timestamp_ns)
            .field("event_type", &self.event_type.to_string())
            .field("event_id", &self.event_id())
            .field("metadata", &self.metadata())
            .field("payload_bytes", &self.payload_bytes().len())
            .field("is_encrypted", &self.is_encrypted())
            .field("is_shredded", &self.is_shredded())
            .field("is_blob", &self.is_blob())
            .finish()
    }
}

/// A stream as its head and last event describe it, from [`RawReader::streams`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSummary {
    /// The stream.
    pub stream_id: u128,
    /// Its version: the number of events in it.
    pub version: u32,
    /// The global sequence of its last event.
    pub last_seq: u64,
    /// When its last event was committed (nanoseconds since the Unix epoch).
    pub last_timestamp_ns: u64,
    /// The type name of its last event.
    pub last_event_type: String,
}

fn stream_summary(
    dbs: &storage::Dbs,
    txn: &RoTxn<'_>,
    key: &[u8],
    value: &[u8],
) -> Result<StreamSummary> {
    let stream_id = <[u8; 16]>::try_from(key)
        .map(u128::from_be_bytes)
        .map_err(|_| Error::CorruptIndex {
            stream_id: 0,
            version: 0,
            reason: format!("a stream head under a key of {} bytes", key.len()),
        })?;
    let (version, last_seq) = decode_head_value(value).ok_or_else(|| Error::CorruptIndex {
        stream_id,
        version: 0,
        reason: format!("stream head of {} bytes", value.len()),
    })?;
    let record = storage::get_record(dbs, txn, last_seq)?.ok_or_else(|| Error::CorruptIndex {
        stream_id,
        version,
        reason: format!("the head points at sequence {last_seq}, which does not exist"),
    })?;
    let (header, _, _) = open_record(last_seq, record)?;
    let event_type = resolve_type(dbs, txn, header.type_id)?
        .map_or_else(|| format!("#{}", header.type_id), |t| t.name.to_owned());
    Ok(StreamSummary {
        stream_id,
        version,
        last_seq,
        last_timestamp_ns: header.timestamp_ns,
        last_event_type: event_type,
    })
}

/// The untyped event of the record `value` at `seq`.
fn raw_at<'t>(
    storage: &Storage,
    txn: &'t RoTxn<'_>,
    seq: u64,
    value: &'t [u8],
) -> Result<RawEvent<'t>> {
    let dbs = storage.dbs();
    let stored = Stored::open(seq, value, false)?;
    let event_type = stored.event_type(dbs, txn)?;
    let event = |payload, blob| RawEvent {
        seq,
        header: stored.header,
        event_type,
        envelope: stored.section,
        payload,
        blob,
    };
    let seal = match stored.seal(dbs, txn, storage.crypto(), Txn::Read) {
        Ok(Seal::Shredded) => return Ok(event(RawPayload::Shredded, None)),
        Err(Error::MasterKeyRequired { .. }) => return Ok(event(RawPayload::Locked, None)),
        other => other?,
    };
    let (sealed, hash) = stored.payload(dbs, txn)?;
    let payload = match seal {
        Seal::Key(key) => {
            let opened = stored.decrypt(&key, event_type, sealed, rkyv::util::AlignedVec::new());
            storage.metrics().record_open(&opened);
            let opened = opened?;
            RawPayload::Decrypted {
                buffer: Plaintext(opened.buffer),
                payload: opened.payload,
                pairs: opened.pairs,
                pair_count: opened.pair_count,
            }
        }
        _ => RawPayload::Mapped(sealed),
    };
    let event = event(payload, hash.copied());
    // The untyped view is the operator's path (export, the tool): one count per event.
    let metrics = storage.metrics();
    metrics.read_events.inc();
    metrics
        .read_bytes
        .inc_by(event.payload_bytes().len() as u64);
    Ok(event)
}

/// How many versions a raw stream read locates at a time.
const RAW_STREAM_CHUNK: u32 = 1024;

impl RawReader {
    /// The store this reader reads.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The event with global sequence `seq`, or `None`.
    pub fn get<'t>(&self, txn: &'t ReadTxn, seq: u64) -> Result<Option<RawEvent<'t>>> {
        self.storage.check_txn(txn)?;
        let dbs = self.storage.dbs();
        match storage::get_record(dbs, txn.raw(), seq)? {
            None => Ok(None),
            Some(value) => raw_at(&self.storage, txn.raw(), seq, value).map(Some),
        }
    }

    /// The event at `version` of `stream_id`, or `None`.
    pub fn get_by_version<'t>(
        &self,
        txn: &'t ReadTxn,
        stream_id: u128,
        version: u32,
    ) -> Result<Option<RawEvent<'t>>> {
        self.storage.check_txn(txn)?;
        let dbs = self.storage.dbs();
        let Some(found) = version_at(dbs, txn.raw(), stream_id, version)? else {
            return Ok(None);
        };
        raw_at(&self.storage, txn.raw(), found.seq, found.record).map(Some)
    }

    /// Every event from global sequence `from_seq` on, in order. A damaged record is reported
    /// once and skipped; an LMDB failure is reported once and ends the iteration.
    pub fn read_all<'t>(
        &self,
        txn: &'t ReadTxn,
        from_seq: u64,
    ) -> impl Iterator<Item = Result<RawEvent<'t>>> + 't {
        let check = self.storage.check_txn(txn);
        let raw = txn.raw();
        let storage = self.storage.clone();
        storage::log_from(check, self.storage.dbs(), raw, from_seq)
            .map(move |entry| entry.and_then(|(seq, value)| raw_at(&storage, raw, seq, value)))
    }

    /// The events matching `query` from global sequence `from_seq` on, in global order (see
    /// [`Reader::read_query`](crate::Reader::read_query)).
    pub fn read_query<'t>(
        &self,
        txn: &'t ReadTxn,
        query: &Query,
        from_seq: u64,
    ) -> impl Iterator<Item = Result<RawEvent<'t>>> + 't {
        let check = self.storage.check_txn(txn);
        let raw = txn.raw();
        let storage = self.storage.clone();
        QueryIter::open(check, self.storage.dbs(), raw, query, from_seq)
            .map(move |entry| entry.and_then(|(seq, value)| raw_at(&storage, raw, seq, value)))
    }

    /// Every stream with at least one event, in stream-id order, with its version and its
    /// last event's sequence, timestamp and type: what `varvedb streams` lists. A damaged head
    /// or a head pointing at no event is reported once and skipped.
    pub fn streams<'t>(
        &self,
        txn: &'t ReadTxn,
    ) -> impl Iterator<Item = Result<StreamSummary>> + 't {
        let dbs = *self.storage.dbs();
        let raw = txn.raw();
        let opened = self
            .storage
            .check_txn(txn)
            .and_then(|()| dbs.heads.iter(raw).lmdb());
        storage::walk(opened)
            .map(move |entry| entry.and_then(|(key, value)| stream_summary(&dbs, raw, key, value)))
    }

    /// The events of `stream_id` from `from_version` on, in version order: located a chunk
    /// at a time from the head and walked back over `prev` links (a cursor step where the
    /// stream's events are neighbours in the log), as [`Reader::read_stream`](crate::Reader::read_stream)
    /// does. A broken link is reported once and the read resumes at the next chunk.
    pub fn read_stream<'t>(
        &self,
        txn: &'t ReadTxn,
        stream_id: u128,
        from_version: u32,
    ) -> impl Iterator<Item = Result<RawEvent<'t>>> + 't {
        let storage = self.storage.clone();
        let dbs = *storage.dbs();
        let raw = txn.raw();
        let head = storage.check_txn(txn).and_then(|()| {
            let head = storage::stream_head(&dbs, raw, stream_id)?;
            let first = storage::stream_bounds(&dbs, raw, stream_id)?.first_kept;
            Ok((head, first))
        });
        let (mut failed, (head_version, head_seq), first) = match head {
            Ok((head, first)) => (None, head.unwrap_or((0, 0)), first),
            Err(e) => (Some(e), (0, 0), 1),
        };
        // Removed versions are not there: the read starts at the first kept one.
        let mut next = from_version.max(first);
        let mut chunk: Vec<(u64, &'t [u8])> = Vec::new();
        let mut walk = BackWalk::new(&dbs, raw);
        // The head record, read once for every chunk that starts from it.
        let mut head: Option<Found<'t>> = None;
        std::iter::from_fn(move || {
            if let Some(e) = failed.take() {
                next = 0;
                return Some(Err(e));
            }
            if let Some((seq, record)) = chunk.pop() {
                return Some(raw_at(&storage, raw, seq, record));
            }
            if next == 0 || next > head_version {
                return None;
            }
            let end = next.saturating_add(RAW_STREAM_CHUNK - 1).min(head_version);
            let first = next;
            next = end.checked_add(1).unwrap_or(0);
            let head_found = match head {
                Some(found) => Ok(found),
                None => find_version(&dbs, raw, stream_id, head_version, head_seq)
                    .inspect(|found| head = Some(*found)),
            };
            let located = head_found
                .and_then(|head| locate_versions(&dbs, raw, stream_id, (head_version, head), end))
                .and_then(|mut found| {
                    let mut version = end;
                    loop {
                        chunk.push((found.seq, found.record));
                        if version == first {
                            return Ok(());
                        }
                        version -= 1;
                        found = walk.find(stream_id, version, found.links.prev)?;
                    }
                });
            match located {
                Ok(()) => chunk
                    .pop()
                    .map(|(seq, record)| raw_at(&storage, raw, seq, record)),
                Err(e) => {
                    chunk.clear();
                    Some(Err(e))
                }
            }
        })
    }
}
