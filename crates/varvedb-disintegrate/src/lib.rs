//! An embedded [VarveDB](varvedb) backend for [disintegrate](https://docs.rs/disintegrate) 4:
//! decisions on Dynamic Consistency Boundaries, with the events in one LMDB file.
//!
//! - [`VarveEventStore`] implements [`disintegrate::EventStore`]. Event ids are the store's
//!   global sequence numbers (`u64`). Each domain id of an event becomes a tag
//!   (`ident=value`), and each event name the stored type name, so that a disintegrate query is
//!   a VarveDB [`Query`] answered by the tag index. `append` is a conditional append
//!   ([`varvedb::Append::when`]): the check that no event matching the decision's query
//!   came after its `last_event_id` runs inside the commit.
//! - [`VarveEventListener`] runs [`disintegrate::EventListener`]s from durable cursors (the
//!   store's consumers), with retries, like `PgEventListener`.
//! - [`VarveSnapshotter`] is an optional [`disintegrate::StateSnapshotter`].
//!
//! `docs/design.md`, "The disintegrate backend", has the mapping.

mod listener;
mod snapshot;

use std::marker::PhantomData;

use disintegrate::serde::Serde;
use disintegrate::{Event, EventStore, PersistedEvent, StreamItem, StreamQuery};
use futures::stream::BoxStream;
use rkyv::{Archive, Serialize};
use varvedb::{
    Append, AppendOptions, EventType, ExpectedVersion, Query, QueryItem, Storage, Writer,
};

pub use listener::{ListenerConfig, RetryAction, VarveEventListener, cursor_name};
pub use snapshot::{SNAPSHOT_EVENT, VarveSnapshotter};

/// The container name of events written by this backend.
pub const CONTAINER: &str = "varvedb.disintegrate";

/// Events a stream reads per store snapshot.
const READ_CHUNK: usize = 1024;

/// What can go wrong in the backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An event matching the decision's query was appended after the state it was made on
    /// (the DCB check failed): nothing was written; the decision should be made again.
    #[error("concurrency conflict: event {seq} matches the decision's query, after {after}")]
    Concurrency {
        /// The decision's `last_event_id`.
        after: u64,
        /// The first matching event after it.
        seq: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] varvedb::Error),
    /// A listener failed on an event and its retry policy gave up; its cursor is before the
    /// event.
    #[error("listener {id} failed on event {seq}: {reason}")]
    Listener {
        /// The listener's id.
        id: &'static str,
        /// The event.
        seq: u64,
        /// Its last error.
        reason: String,
    },
    /// A stored event could not be deserialized or converted to the queried type.
    #[error("event {seq}: {reason}")]
    Deserialize {
        /// Its sequence.
        seq: u64,
        /// Why.
        reason: String,
    },
}

/// An event as this backend stores it: its name as the type name, its serialized bytes (from
/// the `Serde` the store was made with) as the payload.
#[derive(Archive, Serialize, Debug)]
struct Stored {
    #[rkyv(with = rkyv::with::Skip)]
    name: &'static str,
    bytes: Vec<u8>,
}

impl varvedb::Event for Stored {
    const CONTAINER: &'static str = CONTAINER;
    // Read through the untyped view.
    const TYPES: &'static [EventType] = &[];
    fn event_type(&self) -> &'static str {
        self.name
    }
    fn event_version(&self) -> u16 {
        1
    }
}

/// A read chunk: the events, the end it read to, and whether more may follow.
pub(crate) type Chunk<QE> = (Vec<PersistedEvent<u64, QE>>, u64, bool);

/// The decision maker of [`decision_maker_with_snapshot`].
pub type SnapshotDecisionMaker<E, S> = disintegrate::DecisionMaker<
    disintegrate::EventSourcedStateStore<
        u64,
        E,
        VarveEventStore<E, S>,
        disintegrate::WithSnapshot<u64, VarveSnapshotter>,
    >,
>;

/// A disintegrate event store in a VarveDB store: where a Postgres application writes
/// `PgEventStore::new(pool, serde).await?`, write `VarveEventStore::new(storage, serde)`
/// (`examples/courses.rs` runs one).
pub struct VarveEventStore<E, S> {
    storage: Storage,
    writer: Writer<Stored>,
    serde: S,
    _event: PhantomData<fn() -> E>,
}

impl<E, S: Clone> Clone for VarveEventStore<E, S> {
    fn clone(&self) -> Self {
        VarveEventStore {
            storage: self.storage.clone(),
            writer: self.writer.clone(),
            serde: self.serde.clone(),
            _event: PhantomData,
        }
    }
}

impl<E, S> std::fmt::Debug for VarveEventStore<E, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VarveEventStore")
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

/// The tag of one domain id.
pub fn domain_id_tag(ident: &str, value: &impl std::fmt::Display) -> String {
    format!("{ident}={value}")
}

/// The stream an event goes to: one per first domain id (in disintegrate's order), so that the
/// store's streams are the domain's entities; events without domain ids share one stream.
fn stream_of(first_tag: Option<&str>) -> u128 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"varvedb-disintegrate\0");
    hasher.update(first_tag.unwrap_or("").as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    // Never the reserved stream id.
    u128::from_le_bytes(id) & !(1 << 127)
}

/// The VarveDB query of a disintegrate query, as disintegrate-postgres reads it: for each
/// filter, its events (less the excluded ones) as types, and a filter's domain id applies only
/// to the event types that declare it (an event type without `course_id` is read whatever the
/// filter's `course_id`). One item per filter and set of declared ids; the lowest origin of
/// the filters. `None` when it matches nothing.
///
/// Decisions are the same either way: disintegrate applies each state's events through
/// `StreamQuery::matches`, which requires every domain id of the filter; the extra events this
/// reads are passed over there. Listeners, hand-written queries and the append's conflict
/// check see what they would see on Postgres.
pub(crate) fn to_query<QE: Event + Clone>(query: &StreamQuery<u64, QE>) -> (Option<Query>, u64) {
    build_query(query, true)
}

/// [`to_query`] with `per_type` (disintegrate-postgres's reading, above), or with every domain id
/// of a filter required on every event, as `StreamQuery::matches` does.
fn build_query<QE: Event + Clone>(
    query: &StreamQuery<u64, QE>,
    per_type: bool,
) -> (Option<Query>, u64) {
    let mut items = Vec::new();
    let mut origin = u64::MAX;
    for filter in query.filters() {
        let excluded = filter.excluded_events();
        let types: Vec<&str> = filter
            .events()
            .iter()
            .copied()
            .filter(|e| excluded.is_none_or(|x| !x.contains(e)))
            .collect();
        if types.is_empty() {
            continue;
        }
        origin = origin.min(filter.origin());
        // The filter's ids each type declares (all of them for a type the schema does not
        // describe), and one item per distinct set, in the order first met.
        let mut groups: Vec<(Vec<String>, Vec<&str>)> = Vec::new();
        for name in types {
            let info = QE::SCHEMA.event_info(name).filter(|_| per_type);
            let tags: Vec<String> = filter
                .identifiers()
                .iter()
                .filter(|(ident, _)| info.is_none_or(|info| info.has_domain_id(ident)))
                .map(|(ident, value)| domain_id_tag(ident, value))
                .collect();
            match groups.iter_mut().find(|(t, _)| *t == tags) {
                Some((_, names)) => names.push(name),
                None => groups.push((tags, vec![name])),
            }
        }
        items.extend(
            groups
                .into_iter()
                .map(|(tags, names)| QueryItem::new().types(names).tags(tags)),
        );
    }
    if items.is_empty() {
        (None, 0)
    } else {
        (Some(Query::from_items(items)), origin)
    }
}

/// Whether `query` reads `event` as disintegrate-postgres does: `StreamQuery::matches`, except
/// that a filter's domain id is required only of an event whose type declares it.
fn reads<QE: Event + Clone>(query: &StreamQuery<u64, QE>, event: &PersistedEvent<u64, QE>) -> bool {
    let name = event.name();
    let info = QE::SCHEMA.event_info(name);
    let ids = event.domain_ids();
    query.filters().iter().any(|filter| {
        filter
            .excluded_events()
            .is_none_or(|excluded| !excluded.contains(&name))
            && filter.events().contains(&name)
            && filter.identifiers().iter().all(|(ident, value)| {
                info.is_some_and(|info| !info.has_domain_id(ident)) || ids.get(ident) == Some(value)
            })
            && event.id() > filter.origin()
    })
}

/// The query that names a state's snapshot stream: every domain id on every type, as before
/// the per-type reading, so that snapshots written earlier are found again.
pub(crate) fn snapshot_query<QE: Event + Clone>(query: &StreamQuery<u64, QE>) -> Option<Query> {
    build_query(query, false).0
}

impl<E, S> VarveEventStore<E, S>
where
    E: Event + Clone + Send + Sync,
    S: Serde<E> + Clone + Send + Sync,
{
    /// An event store in `storage`, serializing events with `serde` (for instance
    /// `disintegrate::serde::json::Json::default()`).
    pub fn new(storage: Storage, serde: S) -> Self {
        VarveEventStore {
            writer: Writer::new(storage.clone()),
            storage,
            serde,
            _event: PhantomData,
        }
    }

    /// The store.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The stored form of `events`, grouped into runs of one stream (in order).
    fn prepare(&self, events: &[E]) -> Vec<(u128, Vec<Stored>, Vec<AppendOptions>)> {
        let mut runs: Vec<(u128, Vec<Stored>, Vec<AppendOptions>)> = Vec::new();
        for event in events {
            let tags: Vec<String> = event
                .domain_ids()
                .iter()
                .map(|(ident, value)| domain_id_tag(ident, value))
                .collect();
            let stream = stream_of(tags.first().map(String::as_str));
            let stored = Stored {
                name: event.name(),
                bytes: self.serde.serialize(event.clone()),
            };
            let options = AppendOptions::new().tags(tags);
            match runs.last_mut() {
                Some((s, stored_run, opts)) if *s == stream => {
                    stored_run.push(stored);
                    opts.push(options);
                }
                _ => runs.push((stream, vec![stored], vec![options])),
            }
        }
        runs
    }

    async fn write(
        &self,
        events: Vec<E>,
        condition: Option<(Query, u64)>,
    ) -> Result<Vec<PersistedEvent<u64, E>>, Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let runs = self.prepare(&events);
        let append = runs.iter().fold(Append::new(), |a, (s, stored, opts)| {
            a.and(*s, ExpectedVersion::Auto, stored.as_slice())
                .options(opts.as_slice())
        });
        let written = match condition {
            Some((query, after)) => self
                .writer
                .commit_async(append.when(&query, Some(after)))
                .await
                .map_err(|e| match e {
                    varvedb::Error::ConditionFailed { seq, .. } => {
                        Error::Concurrency { after, seq }
                    }
                    other => Error::Store(other),
                })?,
            None => self.writer.commit_async(append).await?,
        };
        Ok(written
            .into_iter()
            .zip(events)
            .map(|(a, e)| PersistedEvent::new(a.seq, e))
            .collect())
    }

    /// Up to [`READ_CHUNK`] matches of `query` from `from` to `end` (`None`: the log's end in
    /// this snapshot), with the end used, and whether more may follow.
    pub(crate) fn read_chunk<QE>(
        &self,
        query: &StreamQuery<u64, QE>,
        varve: &Query,
        from: u64,
        end: Option<u64>,
    ) -> Result<Chunk<QE>, Error>
    where
        QE: TryFrom<E> + Event + Clone,
        <QE as TryFrom<E>>::Error: std::fmt::Display,
    {
        let txn = self.storage.read_txn()?;
        let end = match end {
            Some(end) => end,
            None => self.storage.last_seq(&txn)?,
        };
        let raw = self.storage.raw_reader();
        let mut out = Vec::new();
        let mut more = false;
        for event in raw.read_query(&txn, varve, from) {
            let event = event?;
            let seq = event.seq();
            if seq > end {
                break;
            }
            if out.len() == READ_CHUNK {
                more = true;
                break;
            }
            if event.event_container() != CONTAINER {
                continue;
            }
            let bad = |reason: String| Error::Deserialize { seq, reason };
            let payload = event.payload_bytes();
            if payload.is_empty() {
                return Err(bad("its payload is unreadable (shredded or sealed)".into()));
            }
            let archived = rkyv::access::<ArchivedStored, rkyv::rancor::Error>(payload)
                .map_err(|e| bad(e.to_string()))?;
            let e: E = self
                .serde
                .deserialize(archived.bytes.as_slice().to_vec())
                .map_err(|e| bad(e.to_string()))?;
            let qe = QE::try_from(e).map_err(|e| bad(e.to_string()))?;
            let persisted = PersistedEvent::new(seq, qe);
            // The filters' own origins and exclusions, with each domain id applied to the types
            // that declare it, as disintegrate-postgres reads them.
            if reads(query, &persisted) {
                out.push(persisted);
            }
        }
        Ok((out, end, more))
    }
}

/// A `DecisionMaker` on `event_store`, with `snapshot` (`NoSnapshot`, or
/// `WithSnapshot::new(VarveSnapshotter::new(..))`): what `disintegrate_postgres::decision_maker`
/// is for Postgres.
pub fn decision_maker<E, S, SN>(
    event_store: VarveEventStore<E, S>,
    snapshot: SN,
) -> disintegrate::DecisionMaker<
    disintegrate::EventSourcedStateStore<u64, E, VarveEventStore<E, S>, SN>,
>
where
    E: Event + Clone + Send + Sync + 'static,
    S: Serde<E> + Clone + Send + Sync + 'static,
    SN: disintegrate::SnapshotConfig + Clone,
{
    disintegrate::DecisionMaker::new(disintegrate::EventSourcedStateStore::new(
        event_store,
        snapshot,
    ))
}

/// A `DecisionMaker` that snapshots states after every `every` events (see
/// [`VarveSnapshotter`]).
pub fn decision_maker_with_snapshot<E, S>(
    event_store: VarveEventStore<E, S>,
    every: u64,
) -> SnapshotDecisionMaker<E, S>
where
    E: Event + Clone + Send + Sync + 'static,
    S: Serde<E> + Clone + Send + Sync + 'static,
{
    let snapshotter = VarveSnapshotter::new(event_store.storage().clone(), every);
    decision_maker(event_store, disintegrate::WithSnapshot::new(snapshotter))
}

#[async_trait::async_trait]
impl<E, S> EventStore<u64, E> for VarveEventStore<E, S>
where
    E: Event + Clone + Send + Sync + 'static,
    S: Serde<E> + Clone + Send + Sync + 'static,
{
    type Error = Error;

    /// The events matching `query`, in global order, then [`StreamItem::End`] with the log's
    /// last sequence when the read began (the version a decision's state is at). The read
    /// goes a chunk of events per store snapshot, never past that end.
    fn stream<'a, QE>(
        &'a self,
        query: &'a StreamQuery<u64, QE>,
    ) -> BoxStream<'a, Result<StreamItem<u64, QE>, Self::Error>>
    where
        QE: TryFrom<E> + Event + 'static + Clone + Send + Sync,
        <QE as TryFrom<E>>::Error: std::error::Error + 'static + Send + Sync,
    {
        use futures::StreamExt;
        let (varve, origin) = to_query(query);
        // State: the next position, the end (once known), and whether the End was sent.
        let state = (origin.saturating_add(1), None::<u64>, false);
        futures::stream::unfold(state, move |(from, end, done)| {
            let varve = varve.clone();
            async move {
                if done {
                    return None;
                }
                let Some(varve) = varve else {
                    let last = self
                        .storage
                        .read_txn()
                        .and_then(|t| self.storage.last_seq(&t));
                    return Some(match last {
                        Ok(last) => (vec![Ok(StreamItem::End(last))], (from, end, true)),
                        Err(e) => (vec![Err(Error::Store(e))], (from, end, true)),
                    });
                };
                match self.read_chunk(query, &varve, from, end) {
                    Err(e) => Some((vec![Err(e)], (from, end, true))),
                    Ok((events, end, more)) => {
                        let next = events.last().map_or(from, |e| e.id() + 1);
                        let mut items: Vec<_> = events
                            .into_iter()
                            .map(|e| Ok(StreamItem::Event(e)))
                            .collect();
                        if !more {
                            items.push(Ok(StreamItem::End(end)));
                        }
                        Some((items, (next, Some(end), !more)))
                    }
                }
            }
        })
        .flat_map(futures::stream::iter)
        .boxed()
    }

    /// Appends `events` if no event matching `query` came after `last_event_id` (checked in
    /// the commit); otherwise [`Error::Concurrency`], and nothing is written.
    async fn append<QE>(
        &self,
        events: Vec<E>,
        query: StreamQuery<u64, QE>,
        last_event_id: u64,
    ) -> Result<Vec<PersistedEvent<u64, E>>, Self::Error>
    where
        E: Clone + 'async_trait,
        QE: Event + 'static + Clone + Send + Sync,
    {
        let condition = to_query(&query).0.map(|q| (q, last_event_id));
        self.write(events, condition).await
    }

    /// Appends `events` with no check.
    async fn append_without_validation(
        &self,
        events: Vec<E>,
    ) -> Result<Vec<PersistedEvent<u64, E>>, Self::Error>
    where
        E: Clone + 'async_trait,
    {
        self.write(events, None).await
    }
}
