//! Zero-copy reads: [`Reader`], [`EventRef`] and the stream and global iterators.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use heed::RoTxn;
use rkyv::api::high::{HighDeserializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize};

use crate::error::{Error, Result};
use crate::event::Event;
use crate::metrics::ReadTally;
use crate::storage::{
    self, BLOB_HASH_LEN, BackWalk, Dbs, Found, LogIter, Query, QueryIter, RECORD_ALIGN, ReadTxn,
    RecordHeader, Seal, Section, Storage, Stored, Txn, TypeKey, find_version, locate_versions,
    resolve_type, version_at,
};

/// The largest archived alignment VarveDB can serve zero-copy: payloads start 16-byte aligned.
pub const MAX_EVENT_ALIGN: usize = RECORD_ALIGN;

/// The validation bound of event types: what `#[derive(rkyv::Archive)]` provides (bytecheck is on
/// by default in rkyv 0.8).
pub trait ValidateEvent:
    Archive<Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>>
{
}
impl<E> ValidateEvent for E where
    E: Archive<Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>>
{
}

/// Reads events of type `E` from a store.
///
/// Every read takes a [`ReadTxn`] from [`Storage::read_txn`]; what it returns borrows from that
/// snapshot. Reuse one transaction for many reads rather than beginning one per read.
pub struct Reader<E> {
    storage: Storage,
    /// Which of the store's event type ids this reader accepts, learnt as it reads.
    state: Arc<ReaderState>,
    _event: PhantomData<fn() -> E>,
}

impl<E> Clone for Reader<E> {
    fn clone(&self) -> Self {
        Reader {
            storage: self.storage.clone(),
            state: Arc::clone(&self.state),
            _event: PhantomData,
        }
    }
}

/// What a reader and its iterators share: the store (for stream keys), what it learnt of type
/// ids, and its decryption buffers.
struct ReaderState {
    storage: Storage,
    memo: TypeMemo,
    pool: Arc<BufferPool>,
}

/// What a reader has learnt of a store's event type ids: for each id, whether its type is one
/// of the reader's, and which. A few slots, filled as ids are met, so that checking an event's
/// type costs a compare, not a lookup. Ids never change once committed, so nothing goes stale.
#[derive(Default)]
struct TypeMemo {
    /// `id << 32 | state`; state 0: empty, `REJECTED`, or the index in `E::TYPES` plus 1.
    slots: [AtomicU64; 8],
}

const REJECTED: u64 = 0xffff_ffff;

impl TypeMemo {
    /// The index in `E::TYPES` of the type with id `type_id`, or `TypeMismatch`.
    fn check<E: Event>(&self, dbs: &Dbs, txn: &RoTxn<'_>, seq: u64, type_id: u32) -> Result<u16> {
        let slot = &self.slots[type_id as usize % self.slots.len()];
        let known = slot.load(Ordering::Relaxed);
        if known != 0 && (known >> 32) as u32 == type_id && known as u32 as u64 != REJECTED {
            return Ok((known as u32 - 1) as u16);
        }
        let found = resolve_type(dbs, txn, type_id)?.ok_or_else(|| {
            Error::corrupt(
                seq,
                format!("the record names event type {type_id}, which the store does not have"),
            )
        })?;
        let index = (found.container == E::CONTAINER)
            .then(|| {
                E::TYPES
                    .iter()
                    .position(|t| t.name == found.name && t.version == found.version)
            })
            .flatten()
            .and_then(|i| u16::try_from(i).ok());
        match index {
            Some(i) => {
                slot.store(
                    u64::from(type_id) << 32 | u64::from(i + 1),
                    Ordering::Relaxed,
                );
                Ok(i)
            }
            None => {
                slot.store(u64::from(type_id) << 32 | REJECTED, Ordering::Relaxed);
                Err(Error::TypeMismatch {
                    seq,
                    expected: expected_types::<E>(),
                    found: found.to_string(),
                })
            }
        }
    }
}

/// What a reader of `E` accepts, for [`Error::TypeMismatch`].
pub(crate) fn expected_types<E: Event>() -> String {
    let one = |t: &crate::EventType| format!("{} v{}", t.name, t.version);
    if E::CONTAINER.is_empty() && E::TYPES.len() == 1 {
        return one(&E::TYPES[0]);
    }
    let list: Vec<String> = E::TYPES.iter().map(one).collect();
    format!("{} {{ {} }}", E::CONTAINER, list.join(", "))
}

impl<E> fmt::Debug for Reader<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("storage", &self.storage)
            .field("event", &std::any::type_name::<E>())
            .finish()
    }
}

enum Payload<'t> {
    /// Borrowed from the memory map: the zero-copy case.
    Mapped(&'t [u8]),
    /// Copied into an aligned buffer because the mapped bytes were not 16-byte aligned. The
    /// storage layout makes this unreachable for records written by this format; it is kept so
    /// that a surprise from LMDB costs a copy, never undefined behaviour.
    Copied(AlignedVec<RECORD_ALIGN>),
    /// Decrypted into a buffer of the reader's pool (an encrypted stream).
    Decrypted(Box<Decrypted>),
}

impl<'t> Payload<'t> {
    /// The payload as it lies in the map: borrowed if aligned, else copied.
    #[inline]
    fn mapped(bytes: &'t [u8]) -> Self {
        if (bytes.as_ptr() as usize).is_multiple_of(RECORD_ALIGN) {
            Payload::Mapped(bytes)
        } else {
            let mut copy = AlignedVec::<RECORD_ALIGN>::with_capacity(bytes.len());
            copy.extend_from_slice(bytes);
            Payload::Copied(copy)
        }
    }
}

/// A decrypted event in a buffer that goes back to its reader's pool when the event is dropped,
/// so that a scan of an encrypted stream reuses a few buffers rather than allocating one per
/// event.
struct Decrypted {
    buffer: AlignedVec<RECORD_ALIGN>,
    payload: std::ops::Range<usize>,
    pairs: std::ops::Range<usize>,
    pair_count: u16,
    pool: Arc<BufferPool>,
}

impl Drop for Decrypted {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        self.pool.put(buffer);
    }
}

/// The decryption buffers of a reader.
#[derive(Default)]
struct BufferPool(std::sync::Mutex<Vec<AlignedVec<RECORD_ALIGN>>>);

/// The most idle buffers a reader keeps.
const POOL_MAX: usize = 8;

impl BufferPool {
    fn take(&self) -> AlignedVec<RECORD_ALIGN> {
        crate::storage::lock(&self.0).pop().unwrap_or_default()
    }

    fn put(&self, mut buffer: AlignedVec<RECORD_ALIGN>) {
        // Plaintext of an encrypted stream: wiped before it is kept or freed.
        zeroize::Zeroize::zeroize(buffer.as_mut_slice());
        let mut pool = crate::storage::lock(&self.0);
        if pool.len() < POOL_MAX {
            buffer.clear();
            pool.push(buffer);
        }
    }
}

/// One event, read zero-copy: it dereferences to the archived event inside the memory map.
///
/// An `EventRef` borrows the [`ReadTxn`] it was read in, so it cannot outlive the snapshot whose
/// pages it points into:
///
/// ```compile_fail
/// use varvedb::{EventRef, Reader, Storage};
/// #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
/// struct Event { x: u64 }
///
/// fn escape(storage: &Storage, reader: &Reader<Event>) -> EventRef<'static, Event> {
///     let txn = storage.read_txn().unwrap();
///     reader.get(&txn, 1).unwrap().unwrap() // error[E0515]: returns a value referencing `txn`
/// }
/// ```
pub struct EventRef<'t, E: Archive> {
    seq: u64,
    stream_id: u128,
    timestamp_ns: u64,
    version: u32,
    payload: Payload<'t>,
    /// The BLAKE3 hash of a payload served from the blob store.
    blob: Option<&'t [u8; BLOB_HASH_LEN]>,
    /// The event's type: its index in `E::TYPES`.
    type_index: u16,
    /// Its ids and metadata (empty when the record has none).
    envelope: Section<'t>,
    _event: PhantomData<fn() -> E>,
}

impl<'t, E: ValidateEvent> EventRef<'t, E> {
    /// Validates `payload` as an archived `E` and wraps it.
    fn new(
        seq: u64,
        header: RecordHeader,
        payload: Payload<'t>,
        blob: Option<&'t [u8; BLOB_HASH_LEN]>,
        type_index: u16,
        envelope: Section<'t>,
    ) -> Result<Self> {
        let event: EventRef<'t, E> = EventRef {
            seq,
            stream_id: header.stream_id,
            timestamp_ns: header.timestamp_ns,
            version: header.version,
            payload,
            blob,
            type_index,
            envelope,
            _event: PhantomData,
        };
        rkyv::access::<E::Archived, rancor::Error>(event.payload_bytes()).map_err(|e| {
            Error::InvalidEvent {
                seq,
                type_name: std::any::type_name::<E>(),
                reason: e.to_string(),
            }
        })?;
        Ok(event)
    }
}

impl<'t, E: Archive> EventRef<'t, E> {
    /// The global sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The stream the event belongs to.
    pub fn stream_id(&self) -> u128 {
        self.stream_id
    }

    /// The event's version within its stream (from 1).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The event's type name, as stored (`#[event(name)]`, or the variant's for an enum).
    pub fn event_type(&self) -> &'static str
    where
        E: Event,
    {
        E::TYPES
            .get(usize::from(self.type_index))
            .map_or("", |t| t.name)
    }

    /// The event's schema version, as stored: for upcasting an older layout.
    pub fn event_version(&self) -> u16
    where
        E: Event,
    {
        E::TYPES
            .get(usize::from(self.type_index))
            .map_or(0, |t| t.version)
    }

    crate::event::envelope_accessors!('t);

    /// The metadata pairs an encrypted event's payload was decrypted with.
    fn opened_pairs(&self) -> Option<(&[u8], u16)> {
        match &self.payload {
            Payload::Decrypted(d) => Some((&d.buffer[d.pairs.clone()], d.pair_count)),
            _ => None,
        }
    }

    /// Whether the event was stored encrypted (and so was decrypted into a buffer to be read:
    /// not zero-copy).
    pub fn is_encrypted(&self) -> bool {
        matches!(self.payload, Payload::Decrypted(_))
    }

    /// The commit time, in nanoseconds since the Unix epoch, as stored in the record header
    /// (every event of one commit has the same). `UNIX_EPOCH + Duration::from_nanos(..)` makes
    /// it a `SystemTime`.
    pub fn timestamp_ns(&self) -> u64 {
        self.timestamp_ns
    }

    /// The archived bytes of the event (validated).
    pub fn payload_bytes(&self) -> &[u8] {
        match &self.payload {
            Payload::Mapped(bytes) => bytes,
            Payload::Copied(copy) => copy,
            Payload::Decrypted(d) => &d.buffer[d.payload.clone()],
        }
    }

    /// Whether the event is served straight from the memory map (always, for this format,
    /// inline or blob).
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.payload, Payload::Mapped(_))
    }

    /// Whether the payload lives in the blob store (it was longer than
    /// `StorageConfig::blob_threshold_bytes`). Nothing else about the event differs: it is read
    /// zero-copy and checked like an inline one.
    pub fn is_blob(&self) -> bool {
        self.blob.is_some()
    }

    /// The BLAKE3 hash of the payload, for an event whose payload lives in the blob store.
    pub fn blob_hash(&self) -> Option<&[u8; 32]> {
        self.blob
    }

    /// The archived event.
    #[allow(
        unsafe_code,
        reason = "the bytes were validated when the EventRef was made"
    )]
    pub fn archived(&self) -> &E::Archived {
        // SAFETY: `EventRef::new` validated these exact bytes as an `E::Archived` with rkyv's
        // bytecheck, at their current address (the mapped bytes do not move while the read
        // transaction lives; the copied buffer is owned and never mutated).
        unsafe { rkyv::access_unchecked::<E::Archived>(self.payload_bytes()) }
    }

    /// Deserializes the event into an owned `E`.
    pub fn deserialize(&self) -> Result<E>
    where
        E::Archived: Deserialize<E, HighDeserializer<rancor::Error>>,
    {
        rkyv::deserialize::<E, rancor::Error>(self.archived()).map_err(|e| Error::InvalidEvent {
            seq: self.seq,
            type_name: std::any::type_name::<E>(),
            reason: e.to_string(),
        })
    }
}

impl<E: Archive> Deref for EventRef<'_, E> {
    type Target = E::Archived;

    fn deref(&self) -> &E::Archived {
        self.archived()
    }
}

/// Shows where the event is, not its content (an archived type need not be `Debug`); use
/// [`archived`](EventRef::archived) or [`deserialize`](EventRef::deserialize) for that.
impl<E: Archive> fmt::Debug for EventRef<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRef")
            .field("seq", &self.seq)
            .field("stream_id", &self.stream_id)
            .field("version", &self.version)
            .field("timestamp_ns", &self.timestamp_ns)
            .field("payload_bytes", &self.payload_bytes().len())
            .field("is_blob", &self.is_blob())
            .field("event", &std::any::type_name::<E>())
            .finish()
    }
}

/// The event of the record `value` at `seq`: its payload from the record, or from the blob store
/// when the record holds a blob reference.
/// The event's type is checked first: an event of another type is `TypeMismatch`, and its
/// payload is not touched.
fn event_at<'t, E: ValidateEvent + Event>(
    dbs: &Dbs,
    txn: &'t RoTxn<'_>,
    state: &ReaderState,
    seq: u64,
    value: &'t [u8],
    checked: bool,
) -> Result<EventRef<'t, E>> {
    let stored = Stored::open(seq, value, checked)?;
    let type_index = state
        .memo
        .check::<E>(dbs, txn, seq, stored.header.type_id)?;
    // An encrypted event's key first: a shredded stream's blobs are gone.
    let stream_id = stored.header.stream_id;
    let seal = stored.seal(dbs, txn, state.storage.crypto(), Txn::Read)?;
    if let Seal::Shredded = seal {
        return Err(Error::Shredded { seq, stream_id });
    }
    let (sealed, hash) = stored.payload(dbs, txn)?;
    let payload = match seal {
        Seal::Key(key) => {
            // Bound to the type this reader reads it as: a `types` entry swapped for another
            // of the same layout fails here.
            let t = &E::TYPES[usize::from(type_index)];
            let event_type = TypeKey {
                container: E::CONTAINER,
                name: t.name,
                version: t.version,
            };
            let opened = stored.decrypt(&key, event_type, sealed, state.pool.take());
            state.storage.metrics().record_open(&opened);
            let opened = opened?;
            Payload::Decrypted(Box::new(Decrypted {
                buffer: opened.buffer,
                payload: opened.payload,
                pairs: opened.pairs,
                pair_count: opened.pair_count,
                pool: Arc::clone(&state.pool),
            }))
        }
        _ => Payload::mapped(sealed),
    };
    EventRef::new(
        seq,
        stored.header,
        payload,
        hash,
        type_index,
        stored.section,
    )
}

/// Counts one record read on its own (a point read).
fn count_one(storage: &Storage, record_bytes: usize) {
    let metrics = storage.metrics();
    metrics.read_events.inc();
    metrics.read_bytes.inc_by(record_bytes as u64);
}

impl<E: ValidateEvent + Event> Reader<E> {
    /// The largest archived alignment served zero-copy: payloads start 16-byte aligned.
    pub const MAX_EVENT_ALIGN: usize = MAX_EVENT_ALIGN;

    /// A reader of `E` events from `storage`.
    ///
    /// `E`'s archived form must not need more than 16-byte alignment ([`MAX_EVENT_ALIGN`]); this
    /// is checked at compile time. Every rkyv primitive, `u128` included, fits.
    pub fn new(storage: Storage) -> Self {
        const {
            assert!(
                align_of::<E::Archived>() <= MAX_EVENT_ALIGN,
                "VarveDB serves events zero-copy at 16-byte alignment; this event type needs more"
            );
        }
        Reader {
            state: Arc::new(ReaderState {
                storage: storage.clone(),
                memo: TypeMemo::default(),
                pool: Arc::default(),
            }),
            storage,
            _event: PhantomData,
        }
    }

    /// The store this reader reads.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The event with global sequence `seq`, or `None` if there is none.
    pub fn get<'t>(&self, txn: &'t ReadTxn, seq: u64) -> Result<Option<EventRef<'t, E>>> {
        self.storage.check_txn(txn)?;
        let dbs = self.storage.dbs();
        match storage::get_record(dbs, txn.raw(), seq)? {
            None => Ok(None),
            Some(value) => {
                count_one(&self.storage, value.len());
                event_at(dbs, txn.raw(), &self.state, seq, value, false).map(Some)
            }
        }
    }

    /// The event at `version` of `stream_id`, or `None` if the stream has no such version.
    pub fn get_by_version<'t>(
        &self,
        txn: &'t ReadTxn,
        stream_id: u128,
        version: u32,
    ) -> Result<Option<EventRef<'t, E>>> {
        self.storage.check_txn(txn)?;
        let dbs = self.storage.dbs();
        let Some(found) = version_at(dbs, txn.raw(), stream_id, version)? else {
            return Ok(None);
        };
        count_one(&self.storage, found.record.len());
        event_at(dbs, txn.raw(), &self.state, found.seq, found.record, false).map(Some)
    }

    /// The current version of a stream (0 if it has no events). Pass it to
    /// [`ExpectedVersion::Exact`](crate::ExpectedVersion::Exact) for an optimistic append.
    pub fn stream_version(&self, txn: &ReadTxn, stream_id: u128) -> Result<u32> {
        self.storage.stream_version(txn, stream_id)
    }

    /// The last committed global sequence (0 for an empty store).
    pub fn last_seq(&self, txn: &ReadTxn) -> Result<u64> {
        self.storage.last_seq(txn)
    }

    /// The events of `stream_id` from `from_version` on, in version order.
    pub fn read_stream<'t>(
        &self,
        txn: &'t ReadTxn,
        stream_id: u128,
        from_version: u32,
    ) -> StreamIter<'t, E> {
        StreamIter::new(self, txn, stream_id, from_version, false)
    }

    /// The events of `stream_id` from `from_version` down to version 1, newest first.
    /// Pass `u32::MAX` to start at the stream's last event.
    pub fn read_stream_backwards<'t>(
        &self,
        txn: &'t ReadTxn,
        stream_id: u128,
        from_version: u32,
    ) -> StreamIter<'t, E> {
        StreamIter::new(self, txn, stream_id, from_version, true)
    }

    /// Every event from global sequence `from_seq` on, in global order.
    pub fn read_all<'t>(&self, txn: &'t ReadTxn, from_seq: u64) -> AllIter<'t, E> {
        let dbs = *self.storage.dbs();
        let check = self.storage.check_txn(txn);
        AllIter {
            dbs,
            txn: txn.raw(),
            state: Arc::clone(&self.state),
            log: LogIter::open(check, &dbs, txn.raw(), from_seq, true),
            tally: ReadTally::default(),
            _event: PhantomData,
        }
    }

    /// The events matching `query` from global sequence `from_seq` on, in global order,
    /// zero-copy: the read half of a DCB decision (see
    /// [`Append::when`](crate::Append::when)).
    ///
    /// A query whose items all name tags is answered by the tag index (a descent per match and
    /// per tag); an item without tags filters the log from `from_seq` on. An event of a type
    /// this reader does not know is reported as [`Error::TypeMismatch`] and the iteration goes
    /// on, as in [`read_all`](Self::read_all).
    pub fn read_query<'t>(
        &self,
        txn: &'t ReadTxn,
        query: &Query,
        from_seq: u64,
    ) -> impl Iterator<Item = Result<EventRef<'t, E>>> + 't {
        let dbs = *self.storage.dbs();
        let check = self.storage.check_txn(txn);
        let raw = txn.raw();
        let state = Arc::clone(&self.state);
        let metrics = self.storage.clone();
        QueryIter::open(check, &dbs, raw, query, from_seq).map(move |entry| {
            let (seq, record) = entry?;
            let m = metrics.metrics();
            m.read_events.inc();
            m.read_bytes.inc_by(record.len() as u64);
            event_at(&dbs, raw, &state, seq, record, false)
        })
    }
}

/// How many events a forward stream read locates at first: it finds the last of them through
/// the chain's jumps, then walks back through `prev` links and yields them in order. Small, so
/// that reading a few events of a long stream stays cheap.
const STREAM_CHUNK_FIRST: u32 = 128;
/// How many it locates at a time after the first chunk: a reader that went on is reading the
/// stream through, and each chunk costs a walk from the head (O(log n) lookups).
const STREAM_CHUNK: u32 = 1024;

/// The events of one stream in version order (or reverse), from [`Reader::read_stream`] and
/// [`Reader::read_stream_backwards`].
///
/// Yields `Result`s. A damaged record is reported once and the iterator moves past it. A broken
/// link of the stream chain, or an LMDB failure, is reported once; a forward read then resumes
/// after the events it could not locate, a backward read ends.
pub struct StreamIter<'t, E> {
    dbs: Dbs,
    txn: &'t RoTxn<'static, heed::WithoutTls>,
    stream_id: u128,
    /// The stream's last version and its sequence in this snapshot.
    head: (u32, u64),
    /// Its first kept version: the versions below were removed.
    first: u32,
    /// The head record, read once for all the chunks that start from it.
    head_record: Option<Found<'t>>,
    /// The next version to yield (0: none left).
    next: u32,
    /// Backwards: the sequence of `next`.
    next_seq: u64,
    backwards: bool,
    /// Forwards: the located events of the current chunk, the next one last.
    chunk: Vec<(u64, &'t [u8])>,
    /// Steps over `prev` links, by cursor where the stream's events are neighbours in the log.
    walk: BackWalk<'t>,
    error: Option<Error>,
    state: Arc<ReaderState>,
    tally: ReadTally,
    _event: PhantomData<fn() -> E>,
}

impl<E> Drop for StreamIter<'_, E> {
    fn drop(&mut self) {
        self.tally.record(self.state.storage.metrics());
    }
}

impl<E> fmt::Debug for StreamIter<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamIter")
            .field("stream_id", &self.stream_id)
            .field("head_version", &self.head.0)
            .field("next_version", &self.next)
            .field("backwards", &self.backwards)
            .field("event", &std::any::type_name::<E>())
            .finish_non_exhaustive()
    }
}

impl<'t, E: ValidateEvent + Event> StreamIter<'t, E> {
    fn new(
        reader: &Reader<E>,
        txn: &'t ReadTxn,
        stream_id: u128,
        from_version: u32,
        backwards: bool,
    ) -> Self {
        let storage = &reader.storage;
        let mut iter = StreamIter {
            dbs: *storage.dbs(),
            txn: txn.raw(),
            stream_id,
            head: (0, 0),
            first: 1,
            head_record: None,
            next: 0,
            next_seq: 0,
            backwards,
            chunk: Vec::new(),
            walk: BackWalk::new(storage.dbs(), txn.raw()),
            error: None,
            state: Arc::clone(&reader.state),
            tally: ReadTally::default(),
            _event: PhantomData,
        };
        let head = storage.check_txn(txn).and_then(|()| {
            let head = storage::stream_head(&iter.dbs, txn.raw(), stream_id)?;
            let first = storage::stream_bounds(&iter.dbs, txn.raw(), stream_id)?.first_kept;
            Ok(head.map(|h| (h, first)))
        });
        match head {
            Err(e) => iter.error = Some(e),
            Ok(None) => {}
            Ok(Some((head, first))) => {
                iter.head = head;
                iter.first = first;
                if !backwards {
                    // Removed versions are not there: the read starts at the first kept one.
                    iter.next = from_version.max(first);
                } else if from_version >= first {
                    let from = from_version.min(head.0);
                    match iter.locate(from) {
                        Ok(found) => (iter.next, iter.next_seq) = (from, found.seq),
                        Err(e) => iter.error = Some(e),
                    }
                }
            }
        }
        iter
    }

    /// Version `version` (at most the head's), found by walking from the head.
    fn locate(&mut self, version: u32) -> Result<Found<'t>> {
        let (head_version, head_seq) = self.head;
        let head = match self.head_record {
            Some(head) => head,
            None => *self.head_record.insert(find_version(
                &self.dbs,
                self.txn,
                self.stream_id,
                head_version,
                head_seq,
            )?),
        };
        locate_versions(
            &self.dbs,
            self.txn,
            self.stream_id,
            (head_version, head),
            version,
        )
    }

    /// Locates versions `self.next ..= end` into `self.chunk`.
    fn fill(&mut self, end: u32) -> Result<()> {
        let mut found = self.locate(end)?;
        // At most two allocations for the whole read: the first chunk's, then a full one's.
        self.chunk.reserve((end - self.next + 1) as usize);
        let mut version = end;
        loop {
            self.chunk.push((found.seq, found.record));
            if version == self.next {
                return Ok(());
            }
            version -= 1;
            found = self.walk.find(self.stream_id, version, found.links.prev)?;
        }
    }

    fn next_forward(&mut self) -> Option<Result<EventRef<'t, E>>> {
        if let Some((seq, record)) = self.chunk.pop() {
            self.tally.count(record.len());
            return Some(event_at(
                &self.dbs,
                self.txn,
                &self.state,
                seq,
                record,
                false,
            ));
        }
        if self.next == 0 || self.next > self.head.0 {
            return None;
        }
        let size = if self.chunk.capacity() == 0 {
            STREAM_CHUNK_FIRST
        } else {
            STREAM_CHUNK
        };
        let end = self.next.saturating_add(size - 1).min(self.head.0);
        self.chunk.clear();
        let filled = self.fill(end);
        self.next = end.checked_add(1).unwrap_or(0);
        match filled {
            Ok(()) => self.chunk.pop().map(|(seq, record)| {
                self.tally.count(record.len());
                event_at(&self.dbs, self.txn, &self.state, seq, record, false)
            }),
            Err(e) => {
                // Skip what could not be located; later chunks are reached from the head.
                self.chunk.clear();
                Some(Err(e))
            }
        }
    }

    fn next_backward(&mut self) -> Option<Result<EventRef<'t, E>>> {
        if self.next == 0 || self.next < self.first {
            return None;
        }
        let (version, seq) = (self.next, self.next_seq);
        match self.walk.find(self.stream_id, version, seq) {
            Ok(found) => {
                (self.next, self.next_seq) = (version - 1, found.links.prev);
                self.tally.count(found.record.len());
                Some(event_at(
                    &self.dbs,
                    self.txn,
                    &self.state,
                    seq,
                    found.record,
                    false,
                ))
            }
            Err(e) => {
                // Without this record's links the rest of the stream cannot be reached.
                self.next = 0;
                Some(Err(e))
            }
        }
    }
}

impl<'t, E: ValidateEvent + Event> Iterator for StreamIter<'t, E> {
    type Item = Result<EventRef<'t, E>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            self.next = 0;
            return Some(Err(e));
        }
        if self.backwards {
            self.next_backward()
        } else {
            self.next_forward()
        }
    }
}

/// Every event in global order, from [`Reader::read_all`].
///
/// Yields `Result`s. A damaged record is reported once (as [`Error::Corrupt`] naming its
/// sequence) and the iterator moves past it; an LMDB failure is reported once and ends it.
pub struct AllIter<'t, E> {
    dbs: Dbs,
    txn: &'t RoTxn<'static, heed::WithoutTls>,
    state: Arc<ReaderState>,
    log: LogIter<'t>,
    tally: ReadTally,
    _event: PhantomData<fn() -> E>,
}

impl<E> Drop for AllIter<'_, E> {
    fn drop(&mut self) {
        self.tally.record(self.state.storage.metrics());
    }
}

impl<E> fmt::Debug for AllIter<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllIter")
            .field("event", &std::any::type_name::<E>())
            .finish_non_exhaustive()
    }
}

impl<'t, E: ValidateEvent + Event> Iterator for AllIter<'t, E> {
    type Item = Result<EventRef<'t, E>>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = match self.log.next()? {
            Ok(entry) => entry,
            Err(e) => return Some(Err(e)),
        };
        // Counted before the decode, which leaves the result to be built in place: an event a
        // typed reader rejects is counted as read.
        self.tally.count(entry.record.len());
        Some(event_at(
            &self.dbs,
            self.txn,
            &self.state,
            entry.seq,
            entry.record,
            entry.checked,
        ))
    }
}
