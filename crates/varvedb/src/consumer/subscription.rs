//! Catch-up subscriptions: follow the log (or one stream) from a position, first from the store,
//! then live, with filters, as an async stream of owned events.
//!
//! A subscription reads batches of at most [`SUBSCRIPTION_BATCH_EVENTS`] events on tokio's
//! blocking pool, one snapshot per batch, released at once; its memory is one batch however
//! far behind it is, and a slow consumer reads from the store at its own pace: it never lags out
//! and is never dropped. No event is skipped or delivered twice: it remembers the position of
//! the last event it read, and the log has no gaps. Once it has read everything up to the head
//! it yields [`SubscriptionItem::CaughtUp`] (once), then waits for the bus (appends of this
//! process) or its poll interval (appends of others).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use rkyv::util::AlignedVec;

use crate::error::{Error, Result};
use crate::event::{Event, EventId};
use crate::reader::{Reader, ValidateEvent};
use crate::storage::Storage;

/// The most events a subscription reads in one snapshot.
pub const SUBSCRIPTION_BATCH_EVENTS: usize = 512;

/// An event a subscription delivers: its envelope, and the archived event in a buffer of its
/// own (validated; [`archived`](Self::archived) reads it without another copy).
pub struct OwnedEvent<E: rkyv::Archive> {
    /// The global sequence number.
    pub seq: u64,
    /// The stream.
    pub stream_id: u128,
    /// The version within the stream.
    pub version: u32,
    /// The commit time, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The event's type name.
    pub event_type: &'static str,
    /// Its schema version.
    pub event_version: u16,
    /// Its event id, if its append gave one.
    pub event_id: Option<EventId>,
    /// Its metadata pairs.
    pub metadata: Vec<(String, String)>,
    payload: AlignedVec<16>,
    _event: std::marker::PhantomData<fn() -> E>,
}

impl<E: rkyv::Archive> std::fmt::Debug for OwnedEvent<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedEvent")
            .field("seq", &self.seq)
            .field("stream_id", &self.stream_id)
            .field("version", &self.version)
            .field("event_type", &self.event_type)
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl<E: ValidateEvent> OwnedEvent<E> {
    /// The archived event.
    #[allow(
        unsafe_code,
        reason = "the bytes were validated when the OwnedEvent was made"
    )]
    pub fn archived(&self) -> &E::Archived {
        // SAFETY: `Subscription::read` validated these exact bytes as an `E::Archived` with
        // rkyv's bytecheck; the buffer is owned, 16-aligned and never mutated since.
        unsafe { rkyv::access_unchecked::<E::Archived>(&self.payload) }
    }
}

impl<E: ValidateEvent> std::ops::Deref for OwnedEvent<E> {
    type Target = E::Archived;

    fn deref(&self) -> &E::Archived {
        self.archived()
    }
}

/// What a subscription yields.
#[derive(Debug)]
pub enum SubscriptionItem<E: rkyv::Archive> {
    /// An event that passed the filters.
    Event(OwnedEvent<E>),
    /// Everything up to the head has been delivered; live events follow. Yielded once.
    CaughtUp,
}

/// Where a subscription reads.
#[derive(Clone, Copy)]
enum Source {
    /// The whole log, from this seq on.
    All { next_seq: u64 },
    /// One stream, from this version on.
    Stream { stream_id: u128, next_version: u32 },
}

/// A catch-up subscription; see the module docs. Make one with [`Subscription::all`] or
/// [`Subscription::stream`].
pub struct Subscription<E: rkyv::Archive> {
    reader: Reader<E>,
    rx: tokio::sync::watch::Receiver<u64>,
    source: Source,
    streams: Option<HashSet<u128>>,
    types: Option<HashSet<String>>,
    poll: Duration,
    queue: VecDeque<Result<OwnedEvent<E>>>,
    caught_up: bool,
}

impl<E: rkyv::Archive> std::fmt::Debug for Subscription<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("caught_up", &self.caught_up)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl<E> Subscription<E>
where
    E: ValidateEvent + Event + Send + 'static,
{
    /// The most events a subscription reads from the store in one snapshot.
    pub const BATCH_EVENTS: usize = SUBSCRIPTION_BATCH_EVENTS;

    fn new(reader: Reader<E>, source: Source) -> Self {
        let rx = reader.storage().subscribe();
        Subscription {
            reader,
            rx,
            source,
            streams: None,
            types: None,
            poll: Duration::from_millis(100),
            queue: VecDeque::new(),
            caught_up: false,
        }
    }

    /// Every event of the log (`$all`) from global sequence `from_seq` on.
    pub fn all(reader: Reader<E>, from_seq: u64) -> Self {
        Self::new(
            reader,
            Source::All {
                next_seq: from_seq.max(1),
            },
        )
    }

    /// The events of one stream from `from_version` on.
    pub fn stream(reader: Reader<E>, stream_id: u128, from_version: u32) -> Self {
        Self::new(
            reader,
            Source::Stream {
                stream_id,
                next_version: from_version.max(1),
            },
        )
    }

    /// Only the events of these streams.
    pub fn streams(mut self, streams: impl IntoIterator<Item = u128>) -> Self {
        self.streams = Some(streams.into_iter().collect());
        self
    }

    /// Only the events of these type names.
    pub fn event_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// How often, when caught up, the store is polled for appends of other processes (100 ms
    /// by default).
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// Whether events already read wait to be handed out.
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The seq of the last event read from the store (handed out, queued or filtered out);
    /// for a stream subscription, 0.
    pub fn read_position(&self) -> u64 {
        match self.source {
            Source::All { next_seq } => next_seq.saturating_sub(1),
            Source::Stream { .. } => 0,
        }
    }

    /// The next item: an event, `CaughtUp` once, or an error (a damaged event, reported once
    /// and passed). Waits for new appends when caught up; never ends on its own.
    ///
    /// Cancel-safe: a `next()` dropped before it returns (the losing branch of a
    /// `tokio::select!`, a timeout) loses no event and repeats none; the position moves only
    /// when a read's events are queued.
    pub async fn next(&mut self) -> Result<SubscriptionItem<E>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return item.map(SubscriptionItem::Event);
            }
            // A copy: if this future is dropped during the read, the position stays put.
            let (reader, source, streams, types) = (
                self.reader.clone(),
                self.source,
                self.streams.clone(),
                self.types.clone(),
            );
            let (source, batch, more) = tokio::task::spawn_blocking(move || {
                let mut source = source;
                let out = read(&reader, &mut source, streams.as_ref(), types.as_ref());
                (source, out.0, out.1)
            })
            .await
            .map_err(|e| Error::TaskFailed {
                reason: format!("the subscription's blocking read: {e}"),
            })?;
            self.source = source;
            let empty = batch.is_empty();
            self.queue.extend(batch);
            if !empty || more {
                continue;
            }
            if !self.caught_up {
                self.caught_up = true;
                return Ok(SubscriptionItem::CaughtUp);
            }
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(self.poll).await;
                    }
                }
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}

/// Reads one batch after the source's position in one snapshot; moves the position past every
/// event read (delivered or filtered out). Returns the events and whether the batch was full.
fn read<E: ValidateEvent + Event>(
    reader: &Reader<E>,
    source: &mut Source,
    streams: Option<&HashSet<u128>>,
    types: Option<&HashSet<String>>,
) -> (Vec<Result<OwnedEvent<E>>>, bool) {
    let storage: &Storage = reader.storage();
    let txn = match storage.read_txn() {
        Ok(txn) => txn,
        Err(e) => return (vec![Err(e)], false),
    };
    let mut out = Vec::new();
    let mut read = 0;
    let take = |item: Result<crate::EventRef<'_, E>>, out: &mut Vec<Result<OwnedEvent<E>>>| {
        match item {
            Ok(e) => {
                let wanted = streams.is_none_or(|s| s.contains(&e.stream_id()))
                    && types.is_none_or(|t| t.contains(e.event_type()));
                if wanted {
                    out.push(Ok(owned(&e)));
                }
                Some((e.seq(), e.version()))
            }
            // Not this subscription's: another type, or a shredded stream.
            Err(Error::TypeMismatch { seq, .. } | Error::Shredded { seq, .. }) => Some((seq, 0)),
            Err(e) => {
                out.push(Err(e));
                None
            }
        }
    };
    match source {
        Source::All { next_seq } => {
            for item in reader.read_all(&txn, *next_seq) {
                read += 1;
                let err_seq = match &item {
                    Err(Error::Corrupt { seq, .. } | Error::InvalidEvent { seq, .. }) => Some(*seq),
                    _ => None,
                };
                match take(item, &mut out) {
                    Some((seq, _)) => *next_seq = seq + 1,
                    None => {
                        // A damaged event is reported once and passed.
                        if let Some(seq) = err_seq {
                            *next_seq = seq + 1;
                        }
                        break;
                    }
                }
                if read == SUBSCRIPTION_BATCH_EVENTS {
                    break;
                }
            }
        }
        Source::Stream {
            stream_id,
            next_version,
        } => {
            for item in reader.read_stream(&txn, *stream_id, *next_version) {
                read += 1;
                match take(item, &mut out) {
                    Some((_, version)) if version > 0 => *next_version = version + 1,
                    // Passed (not ours), or damaged: reported once, then passed.
                    Some(_) | None => *next_version = next_version.saturating_add(1),
                }
                if read == SUBSCRIPTION_BATCH_EVENTS {
                    break;
                }
            }
        }
    }
    (out, read == SUBSCRIPTION_BATCH_EVENTS)
}

/// Copies an event out of the map with its envelope.
pub(crate) fn owned<E: ValidateEvent + Event>(e: &crate::EventRef<'_, E>) -> OwnedEvent<E> {
    let mut payload = AlignedVec::<16>::with_capacity(e.payload_bytes().len());
    payload.extend_from_slice(e.payload_bytes());
    OwnedEvent {
        seq: e.seq(),
        stream_id: e.stream_id(),
        version: e.version(),
        timestamp_ns: e.timestamp_ns(),
        event_type: e.event_type(),
        event_version: e.event_version(),
        event_id: e.event_id(),
        metadata: e
            .metadata()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        payload,
        _event: std::marker::PhantomData,
    }
}
