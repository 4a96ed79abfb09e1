//! Appends: [`Writer`] prepares records on the caller's thread and hands them to the store's
//! committer.

use std::fmt;
use std::marker::PhantomData;

use rkyv::api::high::HighSerializer;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::commit::{Blob, Committer, Condition, Outcome, Prepared, StreamAppend};
use crate::envelope::{AppendOptions, EVENT_NAME_BYTES_MAX, Event};
use crate::error::{Error, Result};
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
    /// [`Error::NotDurable`] and [`Error::OutcomeUnknown`] may have.
    pub fn append(
        &self,
        stream_id: u128,
        expected: ExpectedVersion,
        event: &E,
    ) -> Result<Appended> {
        let appends =
            vec![self.prepare_stream(stream_id, expected, std::slice::from_ref(event), &[])?];
        first(self.submit(appends))
    }

    /// Appends several events to one stream atomically: all of them, with consecutive versions,
    /// or none. Returns where each landed, in order.
    pub fn append_batch(
        &self,
        stream_id: u128,
        expected: ExpectedVersion,
        events: &[E],
    ) -> Result<Vec<Appended>> {
        self.check_batch(events.len())?;
        let appends = vec![self.prepare_stream(stream_id, expected, events, &[])?];
        self.submit(appends)
    }

    /// Appends to several streams in one atomic transaction, each with its own expectation.
    ///
    /// Entries are applied in order, so a stream may appear twice (the second expectation sees
    /// the first entry's events). Any conflict fails the whole append and writes nothing.
    /// Returns where each event landed, in the order given.
    pub fn append_multi(&self, appends: &[(u128, ExpectedVersion, &[E])]) -> Result<Vec<Appended>> {
        self.check_multi(appends)?;
        let prepared = appends
            .iter()
            .map(|(stream_id, expected, events)| {
                self.prepare_stream(*stream_id, *expected, events, &[])
            })
            .collect::<Result<Vec<_>>>()?;
        self.submit(prepared)
    }

    /// [`append`](Self::append) with an event id, correlation and causation ids and metadata.
    ///
    /// **Idempotent with an event id.** If the store already has this id for the same event
    /// (same stream, same payload), this returns the original [`Appended`] and writes nothing,
    /// whatever `expected` says: a retry after a timeout, a crash or a lost answer is safe. The
    /// id index is in the store, so this holds across restarts. The same id with another stream
    /// or payload is [`Error::DuplicateEventId`]. Payloads are compared by their xxh3 digest;
    /// metadata is not compared.
    pub fn append_with(
        &self,
        stream_id: u128,
        expected: ExpectedVersion,
        event: &E,
        options: AppendOptions,
    ) -> Result<Appended> {
        let appends = vec![self.prepare_stream(
            stream_id,
            expected,
            std::slice::from_ref(event),
            std::slice::from_ref(&options),
        )?];
        first(self.submit(appends))
    }

    /// [`append_batch`](Self::append_batch) with one [`AppendOptions`] per event. A retry of a
    /// batch whose ids the store has, all of them, as that same batch, returns the original
    /// answers; a batch of which only some ids are known is [`Error::DuplicateEventId`].
    pub fn append_batch_with(
        &self,
        stream_id: u128,
        expected: ExpectedVersion,
        events: &[E],
        options: &[AppendOptions],
    ) -> Result<Vec<Appended>> {
        self.check_batch(events.len())?;
        let appends = vec![self.prepare_stream(stream_id, expected, events, options)?];
        self.submit(appends)
    }

    /// [`append_multi`](Self::append_multi) with one [`AppendOptions`] per event of each
    /// stream; idempotent like [`append_batch_with`](Self::append_batch_with), over the whole
    /// append.
    pub fn append_multi_with(
        &self,
        appends: &[(u128, ExpectedVersion, &[E], &[AppendOptions])],
    ) -> Result<Vec<Appended>> {
        let prepared = self.prepare_multi_with(appends)?;
        self.submit(prepared)
    }

    /// Appends atomically if no event after `after` matches `query`: the conditional append of
    /// Dynamic Consistency Boundaries (DCB).
    ///
    /// A decision reads the events that matter to it (with
    /// [`Reader::read_query`](crate::Reader::read_query) and the same query), notes the
    /// position it read up to, decides, and appends on the condition that nothing it read has
    /// changed since: if an event matching `query` was appended after `after` (`None`: anywhere
    /// in the log), this fails with [`Error::ConditionFailed`], naming the first such event, and
    /// writes nothing. The condition is checked inside the commit, in the same transaction as
    /// the write, so that no append can come between, and group commit batches conditional
    /// appends like any other. A query whose items all name tags is answered by the tag index,
    /// in a few B-tree descents per item, tag and type; an item without tags reads the log past
    /// `after`.
    ///
    /// Each entry is a stream's events with its expectation and options, as in
    /// [`append_multi_with`](Self::append_multi_with) (empty options: none); give
    /// [`ExpectedVersion::Auto`] where only the condition matters. Tags are set with
    /// [`AppendOptions::tag`]. An append whose event ids the store has is a retry and gets its
    /// original answer, whatever the condition says.
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
    /// let first = writer
    ///     .append_if(&query, None, &[(7, ExpectedVersion::Auto, &[Deposited { cents: 5 }], &tagged)])
    ///     .unwrap();
    /// // A decision that read nothing of account 42 is now stale.
    /// let stale = writer.append_if(&query, None, &[(7, ExpectedVersion::Auto, &[Deposited { cents: 1 }], &tagged)]);
    /// assert!(matches!(stale, Err(Error::ConditionFailed { seq, .. }) if seq == first[0].seq));
    /// // One that read up to the last event appends.
    /// writer
    ///     .append_if(&query, Some(first[0].seq), &[(7, ExpectedVersion::Auto, &[Deposited { cents: 1 }], &tagged)])
    ///     .unwrap();
    /// ```
    pub fn append_if(
        &self,
        query: &Query,
        after: Option<u64>,
        appends: &[(u128, ExpectedVersion, &[E], &[AppendOptions])],
    ) -> Result<Vec<Appended>> {
        let prepared = self.prepare_multi_with(appends)?;
        self.submit_if(
            prepared,
            Some(Condition {
                query: query.clone(),
                after,
            }),
        )
    }

    /// [`append_if`](Self::append_if) for async callers (see
    /// [`append_async`](Self::append_async)).
    pub async fn append_if_async(
        &self,
        query: &Query,
        after: Option<u64>,
        appends: &[(u128, ExpectedVersion, &[E], &[AppendOptions])],
    ) -> Result<Vec<Appended>> {
        let prepared = self.prepare_multi_with_async(appends).await?;
        let condition = Condition {
            query: query.clone(),
            after,
        };
        self.submit_async_if(prepared, Some(condition)).await
    }

    /// The prepared streams of an `append_multi_with` (or `append_if`).
    fn prepare_multi_with(
        &self,
        appends: &[(u128, ExpectedVersion, &[E], &[AppendOptions])],
    ) -> Result<Vec<StreamAppend>> {
        let total = appends.iter().map(|(_, _, events, _)| events.len()).sum();
        self.check_batch(total)?;
        appends
            .iter()
            .map(|(stream_id, expected, events, options)| {
                self.prepare_stream(*stream_id, *expected, events, options)
            })
            .collect()
    }

    /// [`prepare_multi_with`](Self::prepare_multi_with), hashing large payloads on tokio's
    /// blocking pool.
    async fn prepare_multi_with_async(
        &self,
        appends: &[(u128, ExpectedVersion, &[E], &[AppendOptions])],
    ) -> Result<Vec<StreamAppend>> {
        let total = appends.iter().map(|(_, _, events, _)| events.len()).sum();
        self.check_batch(total)?;
        let mut prepared = Vec::with_capacity(appends.len());
        for (stream_id, expected, events, options) in appends {
            prepared.push(
                self.prepare_stream_async(*stream_id, *expected, events, options)
                    .await?,
            );
        }
        Ok(prepared)
    }

    /// [`append_with`](Self::append_with) for async callers (see
    /// [`append_async`](Self::append_async)).
    pub async fn append_with_async(
        &self,
        stream_id: u128,
        expected: ExpectedVersion,
        event: &E,
        options: AppendOptions,
    ) -> Result<Appended> {
        let appends = vec![
            self.prepare_stream_async(
                stream_id,
                expected,
                std::slice::from_ref(event),
                std::slice::from_ref(&options),
            )
            .await?,
        ];
        first(self.submit_async(appends).await)
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
        let appends = vec![
            self.prepare_stream_async(stream_id, expected, std::slice::from_ref(event), &[])
                .await?,
        ];
        first(self.submit_async(appends).await)
    }

    /// [`append_batch`](Self::append_batch) for async callers (see
    /// [`append_async`](Self::append_async)).
    pub async fn append_batch_async(
        &self,
        stream_id: u128,
        expected: ExpectedVersion,
        events: &[E],
    ) -> Result<Vec<Appended>> {
        self.check_batch(events.len())?;
        let appends = vec![
            self.prepare_stream_async(stream_id, expected, events, &[])
                .await?,
        ];
        self.submit_async(appends).await
    }

    /// [`append_multi`](Self::append_multi) for async callers (see
    /// [`append_async`](Self::append_async)).
    pub async fn append_multi_async(
        &self,
        appends: &[(u128, ExpectedVersion, &[E])],
    ) -> Result<Vec<Appended>> {
        self.check_multi(appends)?;
        let mut prepared = Vec::with_capacity(appends.len());
        for (stream_id, expected, events) in appends {
            prepared.push(
                self.prepare_stream_async(*stream_id, *expected, events, &[])
                    .await?,
            );
        }
        self.submit_async(prepared).await
    }

    /// [`append_multi_with`](Self::append_multi_with) for async callers (see
    /// [`append_async`](Self::append_async)).
    pub async fn append_multi_with_async(
        &self,
        appends: &[(u128, ExpectedVersion, &[E], &[AppendOptions])],
    ) -> Result<Vec<Appended>> {
        let prepared = self.prepare_multi_with_async(appends).await?;
        self.submit_async(prepared).await
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
    fn submit(&self, appends: Vec<StreamAppend>) -> Outcome {
        self.submit_if(appends, None)
    }

    fn submit_if(&self, appends: Vec<StreamAppend>, condition: Option<Condition>) -> Outcome {
        // A poisoned store refuses at once, without a trip through the queue.
        self.storage.check_writable()?;
        let holds_snapshot = self.storage.held_by_current_thread();
        Committer::of(&self.storage)?
            .queue()
            .submit(appends, condition, holds_snapshot)
    }

    async fn submit_async(&self, appends: Vec<StreamAppend>) -> Outcome {
        self.submit_async_if(appends, None).await
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

    fn check_multi(&self, appends: &[(u128, ExpectedVersion, &[E])]) -> Result<()> {
        let total = appends.iter().map(|(_, _, events)| events.len()).sum();
        self.check_batch(total)?;
        if appends.iter().any(|(_, _, events)| events.is_empty()) {
            return Err(Error::EmptyBatch);
        }
        Ok(())
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
