//! # varvedb-cqrs
//!
//! An embedded backend for [cqrs-es](https://docs.rs/cqrs-es) 0.5 on VarveDB: the events and
//! snapshots of every aggregate in one LMDB file, no server.
//!
//! [`VarveEventRepository`] implements `cqrs_es::persist::PersistedEventRepository`, so it backs
//! a `PersistedEventStore` (event store, snapshot store or aggregate store) as
//! `postgres-es`'s repository does:
//!
//! ```no_run
//! # #[derive(Default, serde::Serialize, serde::Deserialize)] struct Account;
//! # #[derive(Clone, PartialEq, Debug, serde::Serialize, serde::Deserialize)] struct Opened;
//! # impl cqrs_es::DomainEvent for Opened { fn event_type(&self) -> String { "Opened".into() } fn event_version(&self) -> String { "1.0".into() } }
//! # #[derive(Debug)] struct E; impl std::fmt::Display for E { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("e") } } impl std::error::Error for E {}
//! # impl cqrs_es::Aggregate for Account { const TYPE: &'static str = "account"; type Command = (); type Event = Opened; type Error = E; type Services = ();
//! #   async fn handle(&mut self, _: (), _: &(), _: &cqrs_es::event_sink::EventSink<Self>) -> Result<(), E> { Ok(()) }
//! #   fn apply(&mut self, _: Opened) {} }
//! use cqrs_es::persist::PersistedEventStore;
//! use varvedb::{Storage, StorageConfig};
//! use varvedb_cqrs::VarveEventRepository;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let storage = Storage::open(StorageConfig { path: "./bank".into(), ..Default::default() })?;
//! let store = PersistedEventStore::<_, Account>::new_event_store(VarveEventRepository::new(storage));
//! let cqrs = cqrs_es::CqrsFramework::new(store, vec![], ());
//! # Ok(()) }
//! ```
//!
//! **Layout.** An aggregate instance `(aggregate_type, aggregate_id)` is one stream, whose id is
//! the first 16 bytes of a BLAKE3 hash of the two names; its events' versions are cqrs-es's
//! sequences. Each event is a [`varvedb::JsonEvent`] named by cqrs-es's `event_type`, with the
//! JSON payload as its text, and metadata pairs that name the aggregate (`cqrs.aggregate_type`,
//! `cqrs.aggregate_id`), the `event_version`, and cqrs-es's metadata (`cqrs.metadata`, a JSON
//! object). A hash is never trusted alone: every read and every append checks the names the
//! stream's events carry, so two aggregates whose ids collide fail with an error instead of
//! mixing. Snapshots are events of a second stream per aggregate (hashed with another
//! domain), whose version is the snapshot's version: a snapshot update is appended in the same
//! atomic append as its events, expecting the previous snapshot version.
//!
//! **Conflicts.** An event whose sequence is taken, or a snapshot version already written, is
//! `PersistenceError::OptimisticLockError`, as postgres-es signals it; nothing of the commit is
//! written.

mod query;

pub use query::QueryRunner;

use cqrs_es::Aggregate;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use serde_json::Value;
use varvedb::{
    Append, AppendOptions, Error, ExpectedVersion, JsonEvent, RawEvent, Storage, Writer,
};

/// Metadata key: the aggregate type an event belongs to.
pub const META_AGGREGATE_TYPE: &str = "cqrs.aggregate_type";
/// Metadata key: the aggregate id an event belongs to.
pub const META_AGGREGATE_ID: &str = "cqrs.aggregate_id";
/// Metadata key: cqrs-es's `event_version`.
pub const META_EVENT_VERSION: &str = "cqrs.event_version";
/// Metadata key: cqrs-es's metadata, as a JSON object.
pub const META_METADATA: &str = "cqrs.metadata";
/// The type name of snapshot events.
pub const SNAPSHOT_EVENT: &str = "cqrs.snapshot";

/// Events read per snapshot of the store when streaming all events of an aggregate type.
const REPLAY_BATCH: usize = 1024;

/// A cqrs-es event repository on a VarveDB store. Cheap to clone; every clone shares the
/// store and its group commit.
#[derive(Debug, Clone)]
pub struct VarveEventRepository {
    storage: Storage,
    writer: Writer<JsonEvent>,
}

/// What this backend refuses, inside `PersistenceError::UnknownError` or
/// `DeserializationError`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CqrsError {
    /// Two aggregates hash to one stream: the stream's events name another aggregate.
    #[error(
        "stream {stream_id:#x} holds aggregate ({found_type}, {found_id}), not ({aggregate_type}, {aggregate_id})"
    )]
    Collision {
        /// The stream.
        stream_id: u128,
        /// The aggregate asked for.
        aggregate_type: String,
        /// Its id.
        aggregate_id: String,
        /// The aggregate the stream holds.
        found_type: String,
        /// Its id.
        found_id: String,
    },
    /// An event of the stream is not one this backend wrote (no JSON data, or no names).
    #[error("event {seq} is not a cqrs-es event of this backend: {reason}")]
    NotCqrsEvent {
        /// Its global sequence.
        seq: u64,
        /// What is missing.
        reason: String,
    },
    /// The events of one `persist` are not one aggregate's consecutive sequences.
    #[error("a commit's events must be one aggregate's, with consecutive sequences: {0}")]
    BadCommit(String),
}

/// A snapshot update's part of an atomic append.
struct SnapshotPart {
    stream_id: u128,
    expected: ExpectedVersion,
    event: [JsonEvent; 1],
    options: AppendOptions,
}

fn unknown(e: impl std::error::Error + Send + Sync + 'static) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(e))
}

fn store_error(e: Error) -> PersistenceError {
    match e {
        Error::ConcurrencyConflict { .. } => PersistenceError::OptimisticLockError,
        other => unknown(other),
    }
}

/// The stream of an aggregate instance (`domain` 0) or of its snapshots (`domain` 1).
pub fn stream_of(aggregate_type: &str, aggregate_id: &str, domain: u8) -> u128 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"varvedb-cqrs\0");
    hasher.update(&[domain]);
    hasher.update(&(aggregate_type.len() as u64).to_le_bytes());
    hasher.update(aggregate_type.as_bytes());
    hasher.update(aggregate_id.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    // Stream 0 and `u128::MAX` are reserved by the store.
    u128::from_le_bytes(id).clamp(1, u128::MAX - 1)
}

impl VarveEventRepository {
    /// A repository on `storage`.
    pub fn new(storage: Storage) -> Self {
        VarveEventRepository {
            writer: Writer::new(storage.clone()),
            storage,
        }
    }

    /// The store.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The events of an aggregate instance from version `from` on.
    fn read<A: Aggregate>(
        &self,
        aggregate_id: &str,
        from: u32,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let stream_id = stream_of(A::TYPE, aggregate_id, 0);
        let txn = self.storage.read_txn().map_err(unknown)?;
        let raw = self.storage.raw_reader();
        let mut out = Vec::new();
        for event in raw.read_stream(&txn, stream_id, from.max(1)) {
            let event = event.map_err(unknown)?;
            let serialized = to_serialized(&event)?;
            check_names(stream_id, A::TYPE, aggregate_id, &serialized)?;
            out.push(serialized);
        }
        Ok(out)
    }

    /// The version of a stream now (0: it has no events).
    fn stream_version(&self, stream_id: u128) -> Result<u32, PersistenceError> {
        let txn = self.storage.read_txn().map_err(unknown)?;
        self.storage
            .stream_version(&txn, stream_id)
            .map_err(unknown)
    }

    /// The snapshot event of an update to `version` of the aggregate's snapshot, recording
    /// `current_sequence`: its stream, its expectation (the version before), the event and its
    /// options. Shared by a commit with events and a snapshot update alone.
    fn snapshot_part(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        aggregate: Value,
        version: usize,
        current_sequence: u64,
    ) -> Result<SnapshotPart, PersistenceError> {
        if version == 0 {
            return Err(unknown(CqrsError::BadCommit(format!(
                "a snapshot of {aggregate_id} at version 0"
            ))));
        }
        let stream_id = stream_of(aggregate_type, aggregate_id, 1);
        self.check_owner(stream_id, aggregate_type, aggregate_id)?;
        let expected = u32::try_from(version - 1)
            .map(ExpectedVersion::Exact)
            .map_err(|_| unknown(CqrsError::BadCommit("a snapshot version past u32".into())))?;
        let body =
            serde_json::json!({ "aggregate": aggregate, "current_sequence": current_sequence });
        Ok(SnapshotPart {
            stream_id,
            expected,
            event: [JsonEvent::new(SNAPSHOT_EVENT, body.to_string())],
            options: AppendOptions::new()
                .metadata(META_AGGREGATE_TYPE, aggregate_type.to_owned())
                .metadata(META_AGGREGATE_ID, aggregate_id.to_owned()),
        })
    }

    /// A snapshot update with no events (the upstream backends take one): the snapshot event
    /// alone, recording the aggregate's sequence as it stands.
    async fn persist_snapshot<A: Aggregate>(
        &self,
        (aggregate_id, aggregate, version): (String, Value, usize),
    ) -> Result<(), PersistenceError> {
        let current = self.stream_version(stream_of(A::TYPE, &aggregate_id, 0))?;
        let part =
            self.snapshot_part(A::TYPE, &aggregate_id, aggregate, version, current.into())?;
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            writer
                .commit(
                    Append::stream(part.stream_id, part.expected, &part.event)
                        .options(part.options),
                )
                .map(drop)
        })
        .await
        .map_err(unknown)?
        .map_err(store_error)
    }

    /// Checks that the stream, if it has events, is this aggregate's (its first event's
    /// names).
    fn check_owner(
        &self,
        stream_id: u128,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<(), PersistenceError> {
        let txn = self.storage.read_txn().map_err(unknown)?;
        let raw = self.storage.raw_reader();
        if let Some(first) = raw.get_by_version(&txn, stream_id, 1).map_err(unknown)? {
            let (found_type, found_id) = names_of(&first)?;
            if found_type != aggregate_type || found_id != aggregate_id {
                return Err(unknown(CqrsError::Collision {
                    stream_id,
                    aggregate_type: aggregate_type.to_owned(),
                    aggregate_id: aggregate_id.to_owned(),
                    found_type: found_type.to_owned(),
                    found_id: found_id.to_owned(),
                }));
            }
        }
        Ok(())
    }
}

fn names_of<'e>(event: &'e RawEvent<'_>) -> Result<(&'e str, &'e str), PersistenceError> {
    let missing = |what: &str| {
        unknown(CqrsError::NotCqrsEvent {
            seq: event.seq(),
            reason: format!("no {what} metadata"),
        })
    };
    let metadata = event.metadata();
    let aggregate_type = metadata
        .get(META_AGGREGATE_TYPE)
        .ok_or_else(|| missing(META_AGGREGATE_TYPE))?;
    let aggregate_id = metadata
        .get(META_AGGREGATE_ID)
        .ok_or_else(|| missing(META_AGGREGATE_ID))?;
    Ok((aggregate_type, aggregate_id))
}

fn check_names(
    stream_id: u128,
    aggregate_type: &str,
    aggregate_id: &str,
    event: &SerializedEvent,
) -> Result<(), PersistenceError> {
    if event.aggregate_type != aggregate_type || event.aggregate_id != aggregate_id {
        return Err(unknown(CqrsError::Collision {
            stream_id,
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            found_type: event.aggregate_type.clone(),
            found_id: event.aggregate_id.clone(),
        }));
    }
    Ok(())
}

/// A stored event as cqrs-es's `SerializedEvent`.
fn to_serialized(event: &RawEvent<'_>) -> Result<SerializedEvent, PersistenceError> {
    let (aggregate_type, aggregate_id) = names_of(event)?;
    let text = JsonEvent::data_of(event).ok_or_else(|| {
        unknown(CqrsError::NotCqrsEvent {
            seq: event.seq(),
            reason: "no JSON data".into(),
        })
    })?;
    let payload: Value = serde_json::from_str(&text)
        .map_err(|e| PersistenceError::DeserializationError(Box::new(e)))?;
    let metadata = event.metadata();
    let cqrs_metadata: Value = match metadata.get(META_METADATA) {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| PersistenceError::DeserializationError(Box::new(e)))?,
        None => Value::Object(Default::default()),
    };
    Ok(SerializedEvent {
        aggregate_id: aggregate_id.to_owned(),
        sequence: event.version() as usize,
        aggregate_type: aggregate_type.to_owned(),
        event_type: event.event_type().to_owned(),
        event_version: metadata.get(META_EVENT_VERSION).unwrap_or("").to_owned(),
        payload,
        metadata: cqrs_metadata,
    })
}

fn options(event: &SerializedEvent) -> AppendOptions {
    AppendOptions::new()
        .metadata(META_AGGREGATE_TYPE, event.aggregate_type.clone())
        .metadata(META_AGGREGATE_ID, event.aggregate_id.clone())
        .metadata(META_EVENT_VERSION, event.event_version.clone())
        .metadata(META_METADATA, event.metadata.to_string())
}

impl PersistedEventRepository for VarveEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.read::<A>(aggregate_id, 1)
    }

    /// The events after sequence `last_sequence` (a snapshot's), as postgres-es reads them.
    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let from = u32::try_from(last_sequence.saturating_add(1)).unwrap_or(u32::MAX);
        self.read::<A>(aggregate_id, from)
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let stream_id = stream_of(A::TYPE, aggregate_id, 1);
        let txn = self.storage.read_txn().map_err(unknown)?;
        let version = self
            .storage
            .stream_version(&txn, stream_id)
            .map_err(unknown)?;
        if version == 0 {
            return Ok(None);
        }
        let raw = self.storage.raw_reader();
        let Some(event) = raw
            .get_by_version(&txn, stream_id, version)
            .map_err(unknown)?
        else {
            return Ok(None);
        };
        let serialized = to_serialized(&event)?;
        check_names(stream_id, A::TYPE, aggregate_id, &serialized)?;
        let current_sequence = serialized
            .payload
            .get("current_sequence")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                unknown(CqrsError::NotCqrsEvent {
                    seq: event.seq(),
                    reason: "a snapshot without current_sequence".into(),
                })
            })?;
        let aggregate = serialized
            .payload
            .get("aggregate")
            .cloned()
            .unwrap_or(Value::Null);
        Ok(Some(SerializedSnapshot {
            aggregate_id: aggregate_id.to_owned(),
            aggregate,
            current_sequence: current_sequence as usize,
            current_snapshot: version as usize,
        }))
    }

    /// Writes the events, and the snapshot update if any, in one atomic append. The events
    /// expect their stream at the sequence before the first; the snapshot expects the
    /// snapshot version before its own. Either taken: `OptimisticLockError`, nothing written;
    /// a sequence already written is that conflict whatever the shape of the rest of the
    /// commit, as the upstream backends answer. The snapshot records the last event's
    /// sequence as its own, as postgres-es does; a snapshot update without events records
    /// the aggregate's sequence as it stands.
    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let Some(first) = events.first() else {
            return match snapshot_update {
                Some(update) => self.persist_snapshot::<A>(update).await,
                None => Ok(()),
            };
        };
        let aggregate_id = first.aggregate_id.clone();
        // A conflict first, as the upstream backends answer it (their unique key on the
        // sequence refuses the first taken one): any sequence of the aggregate's that is already
        // written, whatever the shape of the rest of the commit.
        let stream_id = stream_of(A::TYPE, &aggregate_id, 0);
        let taken = self.stream_version(stream_id)?;
        if events.iter().any(|e| {
            e.aggregate_id == aggregate_id
                && e.aggregate_type == A::TYPE
                && e.sequence <= taken as usize
        }) {
            return Err(PersistenceError::OptimisticLockError);
        }
        for (i, e) in events.iter().enumerate() {
            if e.aggregate_id != aggregate_id
                || e.aggregate_type != A::TYPE
                || e.sequence != first.sequence + i
            {
                return Err(unknown(CqrsError::BadCommit(format!(
                    "event {i} is ({}, {}) at sequence {}",
                    e.aggregate_type, e.aggregate_id, e.sequence
                ))));
            }
        }
        self.check_owner(stream_id, A::TYPE, &aggregate_id)?;
        let expected = u32::try_from(first.sequence.saturating_sub(1))
            .map(ExpectedVersion::Exact)
            .map_err(|_| unknown(CqrsError::BadCommit("a sequence past u32".into())))?;
        let json: Vec<JsonEvent> = events
            .iter()
            .map(|e| JsonEvent::new(&e.event_type, e.payload.to_string()))
            .collect();
        let opts: Vec<AppendOptions> = events.iter().map(options).collect();
        let snapshot = match snapshot_update {
            Some((snapshot_id, _, version)) if snapshot_id != aggregate_id => {
                return Err(unknown(CqrsError::BadCommit(format!(
                    "a snapshot of {snapshot_id} version {version} with events of {aggregate_id}"
                ))));
            }
            Some((_, aggregate, version)) => {
                let last = events.last().map_or(0, |e| e.sequence) as u64;
                Some(self.snapshot_part(A::TYPE, &aggregate_id, aggregate, version, last)?)
            }
            None => None,
        };
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut append = Append::stream(stream_id, expected, &json[..]).options(&opts[..]);
            if let Some(part) = &snapshot {
                append = append
                    .and(part.stream_id, part.expected, &part.event)
                    .options(std::slice::from_ref(&part.options));
            }
            writer.commit(append).map(drop)
        })
        .await
        .map_err(unknown)?
        .map_err(store_error)
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let events = self.read::<A>(aggregate_id, 1)?;
        let (mut feed, stream) = ReplayStream::new(events.len().max(1));
        for event in events {
            feed.push(Ok(event)).await?;
        }
        Ok(stream)
    }

    /// Every event of the aggregate type, in global order, read in batches (one store
    /// snapshot each) by a task that feeds the stream as it is consumed.
    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let (mut feed, stream) = ReplayStream::new(REPLAY_BATCH);
        let storage = self.storage.clone();
        tokio::spawn(async move {
            let mut from = 1u64;
            loop {
                let batch = read_type_batch(&storage, A::TYPE, from);
                let (events, next) = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = feed.push(Err(e)).await;
                        return;
                    }
                };
                for event in events {
                    if feed.push(Ok(event)).await.is_err() {
                        return;
                    }
                }
                match next {
                    Some(next) => from = next,
                    None => return,
                }
            }
        });
        Ok(stream)
    }
}

/// The events of `aggregate_type` among up to [`REPLAY_BATCH`] log entries from `from`, and
/// where the next batch starts (`None` at the end of the log).
type Batch = (Vec<SerializedEvent>, Option<u64>);

fn read_type_batch(
    storage: &Storage,
    aggregate_type: &str,
    from: u64,
) -> Result<Batch, PersistenceError> {
    let txn = storage.read_txn().map_err(unknown)?;
    let raw = storage.raw_reader();
    let mut out = Vec::new();
    let mut last = None;
    for event in raw.read_all(&txn, from).take(REPLAY_BATCH) {
        let event = event.map_err(unknown)?;
        last = Some(event.seq());
        if event.event_container() != varvedb::JSON_CONTAINER
            || event.event_type() == SNAPSHOT_EVENT
            || event.metadata().get(META_AGGREGATE_TYPE) != Some(aggregate_type)
        {
            continue;
        }
        out.push(to_serialized(&event)?);
    }
    let end = storage.last_seq(&txn).map_err(unknown)?;
    let next = last.filter(|l| *l < end).map(|l| l + 1);
    Ok((out, next))
}
