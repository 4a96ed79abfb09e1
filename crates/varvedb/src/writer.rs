//! Appends: [`Writer`] prepares records on the caller's thread and hands them to the store's
//! committer.

use std::fmt;
use std::marker::PhantomData;

use rkyv::api::high::HighSerializer;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::commit::{Blob, Committer, Condition, Outcome, Prepared, StreamAppend};
use crate::error::{Error, Result};
use crate::event::{AppendOptions, EVENT_NAME_BYTES_MAX, Event};
use crate::expected::{Appended, ExpectedVersion};
use crate::storage::Storage;
use crate::storage::{
    BlobRef, FLAG_BLOB, FLAG_ENVELOPE, HEADER_LEN, Query, RECORD_ALIGN, REF_LEN, TypeKey,
    end_draft, payload_digest, record_len,
};

/// The stream id reserved for VarveDB's own use.
pub const RESERVED_STREAM_ID: u128 = u128::MAX;

/// The serializer bound of event types: what `#[derive(rkyv::Serialize)]` provides.
pub trait SerializeEvent:
    for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}
impl<E> SerializeEvent for E where
    E: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}

/// One atomic append, submitted with [`Writer::commit`] (or [`Writer::commit_async`]): events
/// to one or more streams, each stream with its expectation and, if wanted, one
/// [`AppendOptions`] per event, and optionally a condition. Every part commits, or none.
///
/// ```
/// # use varvedb::*;
/// # #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
/// # struct Moved { cents: u64 }
/// # let dir = tempfile::tempdir().unwrap();
/// # let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() }).unwrap();
/// let writer = Writer::<Moved>::new(storage);
/// let out = [Moved { cents: 5 }];
/// let ins = [Moved { cents: 5 }];
/// // A transfer: both streams, or neither; the first event carries an id and metadata.
/// let appended = writer
///     .commit(
///         Append::stream(1, ExpectedVersion::NoStream, &out)
///             .options([AppendOptions::new().event_id(EventId::from_u128(9)).metadata("by", "ada")])
///             .and(2, ExpectedVersion::NoStream, &ins),
///     )
///     .unwrap();
/// assert_eq!(appended.len(), 2);
/// ```
#[must_use = "an Append does nothing until it is given to Writer::commit"]
pub struct Append<'a, E> {
    streams: Vec<Part<'a, E>>,
    condition: Option<Condition>,
}

/// What [`Append::options`] takes: one [`AppendOptions`] (for a part of one event), or a slice,
/// array or `Vec` of them, one per event.
pub trait IntoOptions<'a> {
    /// The options, borrowed or owned.
    fn into_options(self) -> std::borrow::Cow<'a, [AppendOptions]>;
}

impl<'a> IntoOptions<'a> for AppendOptions {
    fn into_options(self) -> std::borrow::Cow<'a, [AppendOptions]> {
        std::borrow::Cow::Owned(vec![self])
    }
}

impl<'a> IntoOptions<'a> for Vec<AppendOptions> {
    fn into_options(self) -> std::borrow::Cow<'a, [AppendOptions]> {
        std::borrow::Cow::Owned(self)
    }
}

impl<'a, const N: usize> IntoOptions<'a> for [AppendOptions; N] {
    fn into_options(self) -> std::borrow::Cow<'a, [AppendOptions]> {
        std::borrow::Cow::Owned(self.into())
    }
}

impl<'a> IntoOptions<'a> for &'a [AppendOptions] {
    fn into_options(self) -> std::borrow::Cow<'a, [AppendOptions]> {
        std::borrow::Cow::Borrowed(self)
    }
}

impl<'a, const N: usize> IntoOptions<'a> for &'a [AppendOptions; N] {
    fn into_options(self) -> std::borrow::Cow<'a, [AppendOptions]> {
        std::borrow::Cow::Borrowed(self)
    }
}

impl<'a> IntoOptions<'a> for &'a Vec<AppendOptions> {
    fn into_options(self) -> std::borrow::Cow<'a, [AppendOptions]> {
        std::borrow::Cow::Borrowed(self)
    }
}

/// One stream's part of an [`Append`].
struct Part<'a, E> {
    stream_id: u128,
    expected: ExpectedVersion,
    events: &'a [E],
    /// Empty, or one per event.
    options: std::borrow::Cow<'a, [AppendOptions]>,
}

impl<E> Default for Append<'_, E> {
    fn default() -> Self {
        Append {
            streams: Vec::new(),
            condition: None,
        }
    }
}

impl<'a, E> Append<'a, E> {
    /// An append with no parts yet: add them with [`and`](Self::and) (an append of nothing is
    /// [`Error::EmptyBatch`] at commit). For appends built in a loop.
    pub fn new() -> Self {
        Self::default()
    }

    /// `events` to `stream_id`, if the stream satisfies `expected`.
    pub fn stream(stream_id: u128, expected: ExpectedVersion, events: &'a [E]) -> Self {
        Self::new().and(stream_id, expected, events)
    }

    /// One event to `stream_id`, if the stream satisfies `expected`.
    pub fn event(stream_id: u128, expected: ExpectedVersion, event: &'a E) -> Self {
        Self::stream(stream_id, expected, std::slice::from_ref(event))
    }

    /// Adds `events` to `stream_id`, in the same atomic append. Parts apply in order, so a
    /// stream may appear twice (the second expectation sees the first part's events).
    pub fn and(mut self, stream_id: u128, expected: ExpectedVersion, events: &'a [E]) -> Self {
        self.streams.push(Part {
            stream_id,
            expected,
            events,
            options: std::borrow::Cow::Borrowed(&[]),
        });
        self
    }

    /// One [`AppendOptions`] per event of the part added last (event ids, correlation and
    /// causation ids, metadata, tags): one `AppendOptions`, or a slice, array or `Vec` of them.
    /// A count that differs from its events is [`Error::OptionsMismatch`] at commit.
    pub fn options(mut self, options: impl IntoOptions<'a>) -> Self {
        if let Some(last) = self.streams.last_mut() {
            last.options = options.into_options();
        }
        self
    }

    /// Commits only if no event after `after` (`None`: anywhere in the log) matches `query`;
    /// otherwise [`Error::ConditionFailed`], naming the first such event (see
    /// [`Writer::commit`]).
    pub fn when(mut self, query: &Query, after: Option<u64>) -> Self {
        self.condition = Some(Condition {
            query: query.clone(),
            after,
        });
        self
    }
}

/// Appends events of type `E` to a store.
///
/// `Writer` is cheap to clone, `Send` and `Sync`; any number of threads (or tasks, through the
/// `_async` methods) may append at once. Serialization and checksums happen on the caller's
/// thread, outside any lock; the prepared records then go to the store's commit queue, where one
/// committer writes every waiting append in one transaction with one flush (group commit) and
/// answers each with its own result. Every append is atomic and, with the default
/// [`Durability::Sync`](crate::Durability), durable when it returns.
pub struct Writer<E> {
    storage: Storage,
    _event: PhantomData<fn(&E)>,
}

impl<E> Clone for Writer<E> {
    fn clone(&self) -> Self {
        Writer {
            storage: self.storage.clone(),
            _event: PhantomData,
        }
    }
}

impl<E> fmt::Debug for Writer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("storage", &self.storage)
            .field("event", &std::any::type_name::<E>())
            .finish()
    }
}

/// Serialized payloads at least this long are hashed (BLAKE3, for the blob store) on tokio's
/// blocking pool by the `_async` appends, so that a runtime thread never spends long on them.
pub const ASYNC_HASH_OFFLOAD_BYTES: usize = 64 << 10;

impl<E: SerializeEvent + Event> Writer<E> {
    /// Payloads of this many bytes or more are hashed on tokio's blocking pool by the async
    /// appends.
    pub const ASYNC_HASH_OFFLOAD_BYTES: usize = ASYNC_HASH_OFFLOAD_BYTES;
    /// The stream id reserved for VarveDB's own use (`u128::MAX`).
    pub const RESERVED_STREAM_ID: u128 = RESERVED_STREAM_ID;

    /// A writer of `E` events into `storage`.
    pub fn new(storage: Storage) -> Self {
        Writer {
            storage,
            _event: PhantomData,
        }
    }

    /// The store this writer appends to.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The store's bus: see [`Storage::subscribe`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.storage.subscribe()
    }

    /// Appends one event to `stream_id` if the stream satisfies `expected`.
    ///
    /// Fails with [`Error::ConcurrencyConflict`] (nothing written) when it does not. Every
    /// error says whether anything was written ([`Error::written`]): only
    /// [`Error::NotDurable`] and [`Error::OutcomeUnknown`] may have. Everything else (several
    /// events, several streams, ids and metadata, a condition) is an [`Append`] given to
    /// [`commit`](Self::commit).
    pub fn append(
        &self,
        stream_id: u128,
        expected: ExpectedVersion,
        event: &E,
    ) -> Result<Appended> {
        first(self.commit(Append::event(stream_id, expected, event)))
    }

    /// Appends several events to one stream atomically: all of them, with consecutive versions,
    /// or none. Returns where each landed, in order. The same as
    /// `commit(Append::stream(stream_id, expected, events))`.
    pub fn append_batch(
        &self,
        stream_id: u128,
        expected: ExpectedVersion,
        events: &[E],
    ) -> Result<Vec<Appended>> {
        self.commit(Append::stream(stream_id, expected, events))
    }

    /// [`append`](Self::append) for async callers: the commit runs on the store's committer
    /// thread and the task awaits it without blocking its runtime.
    ///
    /// Serialization runs on the calling task, as in `append`. Payloads of
    /// [`ASYNC_HASH_OFFLOAD_BYTES`] or more are hashed on tokio's blocking pool (when called
    /// inside a tokio runtime; elsewhere on the calling task). Once the future has been polled
    /// past preparation the append is queued: dropping the future afterwards does not cancel
    /// it, it only drops the answer.
    pub async fn append_async(
        &self,
        stream_id: u128,
        expected: ExpectedVersion,
        event: &E,
    ) -> Result<Appended> {
        first(
            self.commit_async(Append::event(stream_id, expected, event))
                .await,
        )
    }

    /// Commits one atomic [`Append`]: every stream's events, or none. Returns where each event
    /// landed, in the order given.
    ///
    /// **Idempotent with event ids.** If the store already has the ids of an append's events,
    /// all of them, for the same events (same streams, same payloads), this returns the
    /// original answers and writes nothing, whatever the expectations or the condition say: a
    /// retry after a timeout, a crash or a lost answer is safe. The id index is in the store,
    /// so this holds across restarts. An id the store has for another stream or payload, or an
    /// append of which only some ids are known, is [`Error::DuplicateEventId`]. Payloads are
    /// compared by their xxh3 digest; metadata is not compared.
    ///
    /// **Conditional** ([`Append::when`]): the Dynamic Consistency Boundaries append. A
    /// decision reads the events that matter to it (with
    /// [`Reader::read_query`](crate::Reader::read_query) and the same query), notes the
    /// position it read up to, decides, and appends on the condition that nothing it read has
    /// changed since: if an event matching the query was appended after that position (`None`:
    /// anywhere in the log), this fails with [`Error::ConditionFailed`], naming the first such
    /// event, and writes nothing. The condition is checked inside the commit, in the same
    /// transaction as the write, so that no append can come between. A query whose items all
    /// name tags is answered by the tag index; an item without tags reads the log past the
    /// position.
    ///
    /// ```
    /// # use varvedb::*;
    /// # #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
    /// # struct Deposited { cents: u64 }
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = Storage::open(StorageConfig { path: dir.path().into(), ..Default::default() }).unwrap();
    /// let writer = Writer::<Deposited>::new(storage.clone());
    /// let query = Query::new().types(["Deposited"]).tags(["account:42"]);
    /// let tagged = [AppendOptions::new().tag("account:42")];
    /// let deposit = |cents| Deposited { cents };
    /// let first = writer
    ///     .commit(Append::event(7, ExpectedVersion::Auto, &deposit(5)).options(&tagged).when(&query, None))
    ///     .unwrap();
    /// // A decision that read nothing of account 42 is now stale.
    /// let stale = writer.commit(Append::event(7, ExpectedVersion::Auto, &deposit(1)).options(&tagged).when(&query, None));
    /// assert!(matches!(stale, Err(Error::ConditionFailed { seq, .. }) if seq == first[0].seq));
    /// // One that read up to the last event appends.
    /// writer
    ///     .commit(Append::event(7, ExpectedVersion::Auto, &deposit(1)).options(&tagged).when(&query, Some(first[0].seq)))
    ///     .unwrap();
    /// ```
    pub fn commit(&self, append: Append<'_, E>) -> Result<Vec<Appended>> {
        let (prepared, condition) = self.prepare(append)?;
        self.submit_if(prepared, condition)
    }

    /// [`commit`](Self::commit) for async callers (see [`append_async`](Self::append_async)).
    pub async fn commit_async(&self, append: Append<'_, E>) -> Result<Vec<Appended>> {
        self.check_append(&append)?;
        let mut prepared = Vec::with_capacity(append.streams.len());
        for part in &append.streams {
            prepared.push(
                self.prepare_stream_async(
                    part.stream_id,
                    part.expected,
                    part.events,
                    &part.options,
                )
                .await?,
            );
        }
        self.submit_async_if(prepared, append.condition).await
    }

    /// The prepared streams of an append, and its condition.
    fn prepare(&self, append: Append<'_, E>) -> Result<(Vec<StreamAppend>, Option<Condition>)> {
        self.check_append(&append)?;
        let prepared = append
            .streams
            .iter()
            .map(|p| self.prepare_stream(p.stream_id, p.expected, p.events, &p.options))
            .collect::<Result<Vec<_>>>()?;
        Ok((prepared, append.condition))
    }

    /// Waits until every append made so far (through any handle of this store) is answered
    /// and durable; see [`Storage::flush`].
    pub fn flush(&self) -> Result<()> {
        self.storage.flush()
    }

    /// Drops this writer after [`flush`](Self::flush), reporting a failed flush (which `drop`
    /// cannot). Other writers of the store keep working.
    pub fn close(self) -> Result<()> {
        self.flush()
    }

    /// Hands one atomic append to the committer and waits for its answer.
    fn submit_if(&self, appends: Vec<StreamAppend>, condition: Option<Condition>) -> Outcome {
        // A poisoned store refuses at once, without a trip through the queue.
        self.storage.check_writable()?;
        let holds_snapshot = self.storage.held_by_current_thread();
        Committer::of(&self.storage)?
            .queue()
            .submit(appends, condition, holds_snapshot)
    }

    async fn submit_async_if(
        &self,
        appends: Vec<StreamAppend>,
        condition: Option<Condition>,
    ) -> Outcome {
        self.storage.check_writable()?;
        let rx = Committer::of(&self.storage)?
            .queue()
            .submit_async(appends, condition)?;
        rx.await
            .unwrap_or_else(|_| Err(crate::commit::committer_gone()))
    }

    fn check_batch(&self, events: usize) -> Result<()> {
        let max = self.storage.config().batch_events_max;
        match events {
            0 => Err(Error::EmptyBatch),
            n if n > max => Err(Error::BatchTooLarge { events: n, max }),
            _ => Ok(()),
        }
    }

    /// An append's size: at least one event, at most `batch_events_max` over its streams.
    fn check_append(&self, append: &Append<'_, E>) -> Result<()> {
        let total = append.streams.iter().map(|p| p.events.len()).sum();
        self.check_batch(total)
    }

    fn check_stream(stream_id: u128, events: &[E], options: &[AppendOptions]) -> Result<()> {
        if stream_id == RESERVED_STREAM_ID {
            return Err(Error::InvalidStreamId { stream_id });
        }
        if events.is_empty() {
            return Err(Error::EmptyBatch);
        }
        if !options.is_empty() && options.len() != events.len() {
            return Err(Error::OptionsMismatch {
                events: events.len(),
                options: options.len(),
            });
        }
        Ok(())
    }

    /// Prepares one stream's events; `options` is empty, or one per event.
    fn prepare_stream(
        &self,
        stream_id: u128,
        expected: ExpectedVersion,
        events: &[E],
        options: &[AppendOptions],
    ) -> Result<StreamAppend> {
        Self::check_stream(stream_id, events, options)?;
        let config = self.storage.config();
        let events = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                prepare(
                    e,
                    options.get(i),
                    config.event_bytes_max,
                    config.blob_threshold_bytes,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(StreamAppend {
            stream_id,
            expected,
            events,
        })
    }

    /// [`prepare_stream`](Self::prepare_stream), with the BLAKE3 hashing of large payloads on
    /// tokio's blocking pool.
    async fn prepare_stream_async(
        &self,
        stream_id: u128,
        expected: ExpectedVersion,
        events: &[E],
        options: &[AppendOptions],
    ) -> Result<StreamAppend> {
        Self::check_stream(stream_id, events, options)?;
        let config = self.storage.config();
        let (max, threshold) = (config.event_bytes_max, config.blob_threshold_bytes);
        let serialized = events
            .iter()
            .enumerate()
            .map(|(i, e)| serialize(e, options.get(i), max))
            .collect::<Result<Vec<_>>>()?;
        let large: usize = serialized
            .iter()
            .map(|s| s.payload_len)
            .filter(|&n| n > threshold)
            .sum();
        let finish = move |serialized: Vec<Serialized>| {
            serialized
                .into_iter()
                .map(|s| finish(s, threshold))
                .collect::<Result<Vec<_>>>()
        };
        let events = match tokio::runtime::Handle::try_current() {
            Ok(runtime) if large >= ASYNC_HASH_OFFLOAD_BYTES => runtime
                .spawn_blocking(move || finish(serialized))
                .await
                .map_err(|e| Error::Serialize {
                    reason: format!("hashing the payloads on the blocking pool failed: {e}"),
                })??,
            _ => finish(serialized)?,
        };
        Ok(StreamAppend {
            stream_id,
            expected,
            events,
        })
    }
}

#[cfg(test)]
thread_local! {
    /// The thread that last hashed a blob payload on this thread (tests only).
    pub(crate) static HASHED_ON: std::cell::Cell<Option<std::thread::ThreadId>> =
        const { std::cell::Cell::new(None) };
}

/// An event serialized behind a header placeholder and its envelope section, not yet digested.
pub(crate) struct Serialized {
    buffer: AlignedVec,
    /// Where the payload starts: after the header and the envelope section.
    offset: usize,
    payload_len: usize,
    event_type: TypeKey<'static>,
    event_id: Option<[u8; 16]>,
}

/// The type `event` is stored as; a hand-written `Event` with an empty or over-long name is
/// refused.
fn event_type<E: Event>(event: &E) -> Result<TypeKey<'static>> {
    let key = TypeKey {
        container: E::CONTAINER,
        name: event.event_type(),
        version: event.event_version(),
    };
    let bad = |name: &str, reason: String| {
        Err(Error::InvalidEventType {
            name: name.into(),
            reason,
        })
    };
    if key.name.is_empty() || key.name.len() > EVENT_NAME_BYTES_MAX {
        return bad(
            key.name,
            format!("a name is 1 to {EVENT_NAME_BYTES_MAX} bytes long"),
        );
    }
    if key.container.len() > EVENT_NAME_BYTES_MAX {
        return bad(
            key.container,
            format!("a container name is at most {EVENT_NAME_BYTES_MAX} bytes long"),
        );
    }
    Ok(key)
}

/// Serializes `event` right after a header placeholder and the envelope section of `options`;
/// refuses it past `max` bytes.
pub(crate) fn serialize<E: SerializeEvent + Event>(
    event: &E,
    options: Option<&AppendOptions>,
    max: usize,
) -> Result<Serialized> {
    let event_type = event_type(event)?;
    let section = match options {
        Some(o) => o.fields.encode()?,
        None => Vec::new(),
    };
    let mut buf = AlignedVec::<16>::with_capacity(256 + section.len());
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    buf.extend_from_slice(&section);
    let offset = buf.len();
    // The header and the section are multiples of 16 bytes, so rkyv's alignment padding
    // (computed from the buffer position) is the same as if the payload started at offset 0.
    let buffer = rkyv::api::high::to_bytes_in::<_, rancor::Error>(event, buf).map_err(|e| {
        Error::Serialize {
            reason: e.to_string(),
        }
    })?;
    let payload_len = buffer.len() - offset;
    if payload_len > max {
        return Err(Error::EventTooLarge {
            size: payload_len,
            max,
        });
    }
    Ok(Serialized {
        buffer,
        offset,
        payload_len,
        event_type,
        event_id: options
            .and_then(|o| o.fields.event_id)
            .map(u128::to_le_bytes),
    })
}

/// Digests a serialized payload and pads the record to 16 bytes. A payload longer than
/// `blob_threshold` is also hashed (BLAKE3) and becomes a blob; the record then carries only
/// its envelope section and the blob's reference.
pub(crate) fn finish(serialized: Serialized, blob_threshold: usize) -> Result<Prepared> {
    let Serialized {
        buffer: mut buf,
        offset,
        payload_len,
        event_type,
        event_id,
    } = serialized;
    let section_len = offset - HEADER_LEN;
    let envelope_flag = if section_len > 0 { FLAG_ENVELOPE } else { 0 };
    if payload_len > blob_threshold {
        #[cfg(test)]
        HASHED_ON.with(|t| t.set(Some(std::thread::current().id())));
        let reference = BlobRef::of(&buf[offset..]);
        let body_len = section_len + REF_LEN;
        let mut record = AlignedVec::<16>::with_capacity(record_len(body_len));
        record.extend_from_slice(&buf[..offset]);
        record.extend_from_slice(&reference.encode());
        let (body_len, digest) = end_draft(&mut record)?;
        buf.resize(offset + payload_len.next_multiple_of(RECORD_ALIGN), 0);
        return Ok(Prepared {
            record,
            payload_len: body_len,
            digest,
            payload_digest: reference.digest,
            flags: FLAG_BLOB | envelope_flag,
            blob: Some(Box::new(Blob {
                reference,
                buffer: buf,
                offset,
            })),
            event_type,
            type_id: 0,
            event_id,
        });
    }
    let payload_digest = (section_len > 0).then(|| payload_digest(&buf[offset..]));
    let (body_len, digest) = end_draft(&mut buf)?;
    Ok(Prepared {
        record: buf,
        payload_len: body_len,
        digest,
        payload_digest: payload_digest.unwrap_or(digest),
        flags: envelope_flag,
        blob: None,
        event_type,
        type_id: 0,
        event_id,
    })
}

/// Serializes `event`, digests it and pads the record: everything of an append that happens
/// outside the commit.
pub(crate) fn prepare<E: SerializeEvent + Event>(
    event: &E,
    options: Option<&AppendOptions>,
    max: usize,
    blob_threshold: usize,
) -> Result<Prepared> {
    finish(serialize(event, options, max)?, blob_threshold)
}

fn first(outcome: Outcome) -> Result<Appended> {
    outcome?.into_iter().next().ok_or(Error::EmptyBatch)
}
