//! Brings a store of the published varvedb 0.4.2 into a VarveDB 0.5 store: every event, in its
//! global order, with its stream, its version and its payload bytes.
//!
//! - **Payloads carry over as they are.** Both use rkyv 0.8, so an event's archived bytes in a
//!   0.4.2 store are the archive a 0.5 [`Reader`](varvedb::Reader) of the same Rust type reads
//!   (zero-copy, validated). Payloads over the target's blob threshold go to its blob store.
//! - **Types.** 0.4.2 stores no type names: [`MigrateOptions::types`] gives the type of each
//!   event (one for all, by 0.4 stream name, or any function of the event). A 0.5 reader of
//!   type `E` reads the events stored under `E`'s name and version.
//! - **Streams.** A 0.4.2 stream is a name and a 64-bit id; a 0.5 stream is a 128-bit id.
//!   [`StreamIds::NameAndId`] (the default) makes it the first 8 bytes of the BLAKE3 hash of
//!   the name, then the id; [`StreamIds::IdOnly`] keeps the id (for a store of one stream
//!   name; two names with one id then fail the migration, naming the event).
//! - **Sequences and versions** start at 1 in 0.5 and at 0 in 0.4.2: event `g` of the old log
//!   is sequence `g + 1`, and the `s`-th event of a stream its version `s + 1`. 0.4.2 stores
//!   no commit times: every event gets the migration's start time.
//! - **What 0.4.2 does not have** needs no mapping: it has no encryption, no consumer cursors,
//!   no blobs (large payloads were inline) and no envelopes.
//! - **Into an encrypted store**, every event is sealed under its stream's key (made as the
//!   stream's first event comes), as an append there would be
//!   ([`Importer::seal_plaintext`](varvedb::export::Importer::seal_plaintext)): the target needs
//!   its master key.
//!
//! The events go in through [`Importer`](varvedb::export::Importer): transactions of 8,192
//! events, each flushed; an interrupted migration leaves a durable prefix, and running it
//! again continues after it. The target must be new (or hold that prefix).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use varvedb::Storage;
use varvedb::export::{ExportHeader, ExportType, Importer, StoredEvent};

/// Why a migration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source is not a varvedb 0.4.2 store.
    #[error("{path} is not a varvedb 0.4.2 store: {reason}")]
    NotAStore {
        /// The directory given.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// The 0.4.2 store could not be read.
    #[error("reading the varvedb 0.4.2 store: {0}")]
    Source(String),
    /// An event of the 0.4.2 store cannot be migrated (unreadable, or mapped onto another
    /// stream's versions).
    #[error("event {global_seq} of the varvedb 0.4.2 store: {reason}")]
    Event {
        /// Its global sequence in the old store (0-based).
        global_seq: u64,
        /// Why.
        reason: String,
    },
    /// The target store refused it.
    #[error(transparent)]
    Store(#[from] varvedb::Error),
}

/// The type of a migrated event: its container (`""` for a struct), name and version, as
/// `#[derive(varvedb::Event)]` gives them to the Rust type that reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventType {
    /// The enum it belongs to, or `""`.
    pub container: String,
    /// Its name.
    pub name: String,
    /// Its schema version.
    pub version: u16,
}

impl EventType {
    /// A struct's type: `name`, version 1.
    pub fn named(name: impl Into<String>) -> Self {
        EventType {
            container: String::new(),
            name: name.into(),
            version: 1,
        }
    }

    /// The same, at `version`.
    pub fn version(mut self, version: u16) -> Self {
        self.version = version;
        self
    }
}

/// An event of the 0.4.2 store, as [`MigrateOptions::types`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct OldEvent<'a> {
    /// Its global sequence (0-based).
    pub global_seq: u64,
    /// Its stream's name.
    pub stream_name: &'a str,
    /// Its stream id within the name.
    pub stream_id: u64,
    /// Its sequence within the stream (0-based).
    pub stream_seq: u64,
    /// Its archived payload.
    pub payload: &'a [u8],
}

/// How a 0.4.2 stream (a name and a 64-bit id) becomes a 0.5 stream id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamIds {
    /// `BLAKE3(name)[..8]` as the high 64 bits, the id as the low 64 bits.
    #[default]
    NameAndId,
    /// The id alone.
    IdOnly,
}

impl StreamIds {
    /// The 0.5 stream id of the 0.4.2 stream `name`/`id`.
    pub fn map(self, name: &str, id: u64) -> u128 {
        match self {
            StreamIds::IdOnly => u128::from(id),
            StreamIds::NameAndId => {
                let hash = blake3::hash(name.as_bytes());
                let mut high = [0u8; 8];
                high.copy_from_slice(&hash.as_bytes()[..8]);
                (u128::from(u64::from_be_bytes(high)) << 64) | u128::from(id)
            }
        }
    }
}

type TypeOf = dyn FnMut(&OldEvent<'_>) -> Option<EventType> + Send;

/// How to migrate.
pub struct MigrateOptions {
    /// The type of each event; `None` refuses the event (the migration stops there, naming it).
    pub types: Box<TypeOf>,
    /// How streams are named.
    pub stream_ids: StreamIds,
}

impl std::fmt::Debug for MigrateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrateOptions")
            .field("stream_ids", &self.stream_ids)
            .finish_non_exhaustive()
    }
}

impl MigrateOptions {
    /// Every event of type `t`.
    pub fn one_type(t: EventType) -> Self {
        MigrateOptions {
            types: Box::new(move |_| Some(t.clone())),
            stream_ids: StreamIds::default(),
        }
    }

    /// Each 0.4.2 stream name's events of its type; an event of a name not listed is refused.
    pub fn by_stream_name(types: HashMap<String, EventType>) -> Self {
        MigrateOptions {
            types: Box::new(move |e| types.get(e.stream_name).cloned()),
            stream_ids: StreamIds::default(),
        }
    }

    /// The type of each event, as `f` says.
    pub fn per_event(f: impl FnMut(&OldEvent<'_>) -> Option<EventType> + Send + 'static) -> Self {
        MigrateOptions {
            types: Box::new(f),
            stream_ids: StreamIds::default(),
        }
    }

    /// Sets how streams are named.
    pub fn stream_ids(mut self, ids: StreamIds) -> Self {
        self.stream_ids = ids;
        self
    }
}

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct MigrateReport {
    /// Events written into the target.
    pub events: u64,
    /// Events the target already held from an interrupted run, checked and kept.
    pub already_present: u64,
    /// 0.5 streams written.
    pub streams: u64,
    /// Event types declared.
    pub types: u64,
    /// Payloads that went to the blob store (over the target's blob threshold).
    pub blobs: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// The importer's refusal of an event, named by the event's sequence in the old store.
fn refused(err: varvedb::Error) -> Error {
    match err {
        varvedb::Error::InvalidImport { seq, reason } if seq > 0 => Error::Event {
            global_seq: seq - 1,
            reason,
        },
        other => Error::Store(other),
    }
}

/// Migrates the varvedb 0.4.2 store at `old` into `target` (see the crate docs). The old store
/// is read, never written.
pub fn migrate_from_v04(
    old: &Path,
    target: &Storage,
    mut options: MigrateOptions,
) -> Result<MigrateReport, Error> {
    let started = Instant::now();
    if !old.join("data.mdb").is_file() {
        return Err(Error::NotAStore {
            path: old.into(),
            reason: "it has no data.mdb".into(),
        });
    }
    let varve = varvedb04::Varve::with_config(
        old,
        varvedb04::VarveConfig {
            // The map must cover the file; 0.4.2's default is 10 MB.
            map_size: usize::try_from(
                std::fs::metadata(old.join("data.mdb")).map_or(0, |m| m.len()),
            )
            .unwrap_or(usize::MAX)
            .max(10 << 20)
            .next_multiple_of(1 << 20)
            .saturating_mul(2),
            ..Default::default()
        },
    )
    .map_err(|e| Error::Source(e.to_string()))?;
    let last = varve.next_global_seq().0;
    let format = {
        let txn = target.read_txn()?;
        target.export_header(&txn)?.format
    };
    let header = |types: Vec<ExportType>, last_seq: u64| ExportHeader {
        format,
        last_seq,
        origin: None,
        types,
        keys: Vec::new(),
        key_check: None,
        consumers: Vec::new(),
        removed_events: 0,
        bounds: Vec::new(),
        groups: Vec::new(),
    };
    let mut importer: Importer = target.importer();
    // 0.4.2 stores are plaintext: into an encrypted store, every event is sealed under its
    // stream's key, as an append there would be.
    let encrypted = target.is_encrypted() || target.config().encryption_enabled;
    importer.seal_plaintext(encrypted)?;
    let resumed = importer.resume()?;
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let threshold = target.config().blob_threshold_bytes;
    // Types get ids in the order they first come; a resumed run finds the ones it declared.
    let mut type_ids: HashMap<EventType, u32> = {
        let txn = target.read_txn()?;
        target
            .export_header(&txn)?
            .types
            .into_iter()
            .map(|t| {
                (
                    EventType {
                        container: t.container,
                        name: t.name,
                        version: t.version,
                    },
                    t.id,
                )
            })
            .collect()
    };
    let mut streams = std::collections::HashSet::new();
    let mut report = MigrateReport::default();
    let mut failure: Option<Error> = None;
    let mut expected_global = 0u64;
    let reader = varve.global_reader();
    let iter = reader
        .iter_from(varvedb04::GlobalSequence(0))
        .map_err(|e| Error::Source(e.to_string()))?;
    iter.for_each(|e| {
        if failure.is_some() {
            return;
        }
        let step = (|| -> Result<(), Error> {
            let global_seq = e.global_seq.0;
            if global_seq != expected_global {
                return Err(Error::Event {
                    global_seq: expected_global,
                    reason: "its record is missing or unreadable in the 0.4.2 store".into(),
                });
            }
            expected_global += 1;
            let old = OldEvent {
                global_seq,
                stream_name: &e.stream_name,
                stream_id: e.stream_id.0,
                stream_seq: e.stream_seq.0,
                payload: &e.payload,
            };
            let t = (options.types)(&old).ok_or_else(|| Error::Event {
                global_seq,
                reason: format!("no event type given for stream name {:?}", e.stream_name),
            })?;
            let stream_id = options.stream_ids.map(&e.stream_name, e.stream_id.0);
            let version = u32::try_from(e.stream_seq.0 + 1).map_err(|_| Error::Event {
                global_seq,
                reason: "its stream has more than 4,294,967,295 events".into(),
            })?;
            if !type_ids.contains_key(&t) {
                let id = u32::try_from(type_ids.len() + 1).unwrap_or(u32::MAX);
                importer.commit().map_err(refused)?;
                importer.begin(&header(
                    vec![ExportType {
                        id,
                        container: t.container.clone(),
                        name: t.name.clone(),
                        version: t.version,
                    }],
                    u64::MAX,
                ))?;
                type_ids.insert(t.clone(), id);
            }
            let seq = global_seq + 1;
            if seq <= resumed {
                return Ok(());
            }
            streams.insert(stream_id);
            let blob = e.payload.len() > threshold;
            report.blobs += u64::from(blob);
            importer
                .push(StoredEvent {
                    seq,
                    stream_id,
                    version,
                    timestamp_ns: now_ns,
                    type_container: t.container,
                    type_name: t.name,
                    type_version: t.version,
                    event_id: None,
                    correlation_id: None,
                    causation_id: None,
                    tags: Vec::new(),
                    metadata: Vec::new(),
                    encrypted: false,
                    bound: false,
                    blob,
                    payload: Some(e.payload),
                    blob_ref: None,
                    checksum: None,
                    links: None,
                    ends_group: true,
                })
                .map_err(refused)?;
            Ok(())
        })();
        if let Err(err) = step {
            failure = Some(err);
        }
    })
    .map_err(|e| Error::Source(e.to_string()))?;
    if let Some(err) = failure {
        // What came before it is written: a run after the fix continues there.
        importer.commit().map_err(refused)?;
        return Err(err);
    }
    let done = importer
        .finish(&header(Vec::new(), last))
        .map_err(refused)?;
    report.events = done.imported;
    report.already_present = resumed;
    report.streams = streams.len() as u64;
    report.types = type_ids.len() as u64;
    report.elapsed = started.elapsed();
    Ok(report)
}
