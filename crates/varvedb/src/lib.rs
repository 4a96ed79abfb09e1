//! # VarveDB
//!
//! An embedded, append-only event store. Events are your own Rust types, serialized with
//! [rkyv](https://rkyv.org) 0.8 into one [LMDB](http://www.lmdb.tech/doc/) environment (through
//! `heed`), and read back **zero-copy**: a read validates the bytes in place and hands out a
//! reference into the memory map. Every append states an [`ExpectedVersion`]; a wrong guess is an
//! [`Error::ConcurrencyConflict`] naming the expected and actual version. Versions within a stream
//! start at 1 and have no gaps; global sequence numbers start at 1.
//!
//! Appends from many threads, or from tokio tasks through [`Writer::append_async`], share
//! commits: one committer per store writes every waiting append in one transaction with one
//! flush and answers each with its own result (group commit). With the default
//! [`Durability::Sync`] an append returns only once it is on disk.
//!
//! Events longer than [`StorageConfig::blob_threshold_bytes`] (1 KiB) go to a content-addressed
//! blob store: stored once per distinct content under their BLAKE3 hash, reference-counted, and
//! read zero-copy through the same [`EventRef`] ([`EventRef::is_blob`]). [`Storage::verify`]
//! checks a whole store: checksums, stream chains and heads, blob hashes and reference counts.
//!
//! ## Quickstart
//!
//! ```
//! use varvedb::{Storage, StorageConfig, Writer, Reader, ExpectedVersion, Error};
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
//! struct Deposited { account: u64, amount: u64, note: String }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tmp = tempfile::tempdir()?;
//! let dir = tmp.path();
//! let storage = Storage::open(StorageConfig { path: dir.into(), ..Default::default() })?;
//! let writer = Writer::<Deposited>::new(storage.clone());
//! let a = writer.append(7, ExpectedVersion::NoStream, &Deposited { account: 1, amount: 100, note: "hi".into() })?;
//! assert_eq!(a.version, 1);                       // a.seq is the global sequence number
//! let ev = Deposited { account: 1, amount: 50, note: "again".into() };
//! writer.append(7, ExpectedVersion::Exact(1), &ev)?;               // now version 2
//! assert!(matches!(writer.append(7, ExpectedVersion::Exact(1), &ev),
//!                  Err(Error::ConcurrencyConflict { .. })));
//! let reader = Reader::<Deposited>::new(storage.clone());
//! let txn = storage.read_txn()?;
//! let e = reader.get(&txn, a.seq)?.unwrap();      // zero-copy view, derefs to the archived event
//! assert_eq!(e.amount, 100);
//! assert_eq!((e.stream_id(), e.version()), (7, 1));
//! let mut versions = Vec::new();
//! for e in reader.read_stream(&txn, 7, 1) { let e = e?; versions.push(e.version()); }
//! assert_eq!(versions, [1, 2]);
//! let mut seqs = Vec::new();
//! for e in reader.read_all(&txn, 1) { let e = e?; seqs.push(e.seq()); }
//! assert_eq!(seqs, [1, 2]);
//! # Ok(()) }
//! ```
//!
//! ## The event envelope
//!
//! Every event has a type name and schema version ([`Event`], derived), and may carry an event
//! id, a correlation and a causation id, and metadata ([`AppendOptions`]). An append with an
//! event id is idempotent, durably: a retry returns the original answer and writes nothing.
//!
//! ```
//! use varvedb::{Append, AppendOptions, Error, Event, EventId, ExpectedVersion, Reader, Storage, StorageConfig, Writer};
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
//! #[event(name = "OrderPlaced", version = 2)]        // optional; the default name is the type's ident, version 1
//! struct OrderPlaced { order: u64, total_cents: u64 }
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
//! struct OrderShipped { order: u64 }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! # let storage = Storage::open(StorageConfig { path: tmp.path().into(), ..Default::default() })?;
//! # let writer = Writer::<OrderPlaced>::new(storage.clone());
//! let id = EventId::from_u128(0x0190_f00d_0000_7000_8000_0000_0000_0001);
//! let opts = AppendOptions::new().event_id(id).metadata("tenant", "acme").correlation_id(id);
//! let placed = OrderPlaced { order: 1, total_cents: 990 };
//! // Anything past one plain event is an `Append`, given to `commit`.
//! let a = writer.commit(Append::event(7, ExpectedVersion::NoStream, &placed).options(opts.clone()))?[0];
//! // A retry with the same event id, after a timeout or a crash: the original answer, nothing written.
//! let again = writer.commit(Append::event(7, ExpectedVersion::NoStream, &placed).options(opts))?[0];
//! assert_eq!(again, a);
//!
//! let txn = storage.read_txn()?;
//! let e = Reader::<OrderPlaced>::new(storage.clone()).get(&txn, a.seq)?.unwrap();
//! assert_eq!((e.event_type(), e.event_version()), ("OrderPlaced", 2));
//! assert_eq!(e.metadata().get("tenant"), Some("acme"));
//! assert_eq!(e.event_id(), Some(id));
//! // The wrong type is a typed error, never a silent misread.
//! assert!(matches!(Reader::<OrderShipped>::new(storage.clone()).get(&txn, a.seq),
//!                  Err(Error::TypeMismatch { .. })));
//! // Untyped access for tools: type, version, metadata, ids and the payload bytes.
//! let raw = storage.raw_reader().get(&txn, a.seq)?.unwrap();
//! assert_eq!(raw.event_type(), "OrderPlaced");
//! # assert_eq!(storage.seq_of_event_id(id)?, Some(a.seq));
//! # Ok(()) }
//! ```
//!
//! ## Mixing event types
//!
//! A store can hold events of several types, for example one type per stream. Every record
//! names its type, and a reader of another type gets [`Error::TypeMismatch`] (iterators report
//! it and move on). To read the whole log with one reader, write it through one `enum` of your
//! events with `#[derive(Event)]`: each variant is its own event type (see [`Event`] and
//! `examples/event_enum.rs`). To read events without their Rust type, or an old schema version,
//! use [`Storage::raw_reader`] (`examples/upcasting.rs`).
//!
//! ## Tags, queries and conditional appends
//!
//! An event may carry tags ([`AppendOptions::tag`]), indexed in the append's transaction. A
//! [`Query`] selects events by type and tag; [`Reader::read_query`] reads the matches in
//! global order, zero-copy; [`Append::when`] makes an append commit only if no event matching a query
//! came after a position, checked inside the commit ([`Error::ConditionFailed`] otherwise):
//! the conditional append of Dynamic Consistency Boundaries.
//!
//! ## Encryption and crypto-shredding
//!
//! With [`StorageConfig::encryption_enabled`] and a [`StorageConfig::master_key`], every new
//! stream is encrypted with its own AES-256-GCM key, wrapped by the master key; an event's
//! payload and metadata are sealed and bound to its stream, version, sequence and type.
//! [`Storage::shred_stream`] deletes a stream's key: its events read as [`Error::Shredded`]
//! for good. Stream ids, sizes, type names and event ids stay visible.
//!
//! ```
//! use varvedb::{Error, ExpectedVersion, Reader, Storage, StorageConfig, Writer};
//! #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
//! struct Secret { n: u64, text: String }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! # let dir = tmp.path();
//! let storage = Storage::open(StorageConfig { path: dir.into(), encryption_enabled: true, master_key: Some([7u8; 32]), ..Default::default() })?;
//! let writer = Writer::<Secret>::new(storage.clone());
//! writer.append(66, ExpectedVersion::Auto, &Secret { n: 1, text: "card 4111".into() })?;
//! storage.shred_stream(66)?;
//! assert!(matches!(Reader::<Secret>::new(storage.clone()).get(&storage.read_txn()?, 1), Err(Error::Shredded { .. })));
//! assert!(writer.append(66, ExpectedVersion::Auto, &Secret { n: 2, text: "again".into() }).is_err());
//! # Ok(()) }
//! ```
//!
//! ## Reacting to events
//!
//! [`Storage::subscribe`] is a watch of the last committed sequence. A [`Processor`] drives an
//! [`EventHandler`] over the log from a durable, named cursor (at-least-once, with error
//! policies and parked events); an [`AsyncProcessor`] does the same for handlers that await;
//! a [`Subscription`] follows the log or one stream from a position; a [`Projection`] keeps a
//! read model in the store, written with its cursor in one transaction (exactly once).
//! `docs/design.md`, "The bus, subscriptions and processors", has the guarantees.
//!
//! ## When an append fails
//!
//! Every error says whether the append was written ([`Error::written`]): not at all (a
//! conflict, a limit, [`Error::Poisoned`], [`Error::Closed`], ...), committed but perhaps not
//! durable ([`Error::NotDurable`], after a failed flush), or unknown ([`Error::OutcomeUnknown`]:
//! read the stream before retrying, or an `Auto` retry may write the event twice). After a
//! failure it cannot undo, a store refuses work ([`Storage::is_poisoned`]); drop its handles
//! and open it again to recover. [`Storage::flush`] and [`Storage::close`] make everything
//! committed durable and report a failed flush.
//!
//! ## Observability
//!
//! Each store has its own Prometheus registry: [`Storage::metrics_text`] returns the text
//! exposition (appends, conflicts, commit and flush latency, reads, blobs, encryption, the map,
//! every consumer's lag; the README lists the names). The `metrics-http` feature adds
//! `Storage::serve_metrics`, which serves `/metrics` on 127.0.0.1:9477 unless told otherwise.
//! Open, commit, map growth, verify and processor batches are `tracing` spans.
//!
//! ## Cargo features
//!
//! - `uuid`: `EventId` converts to and from `uuid::Uuid`.
//! - `metrics-http`: `/metrics` over HTTP (`Storage::serve_metrics`, `MetricsServer`).
//!
//! ## Platforms
//!
//! Unix only (Linux, macOS, the BSDs): the crate refuses to build elsewhere, because its
//! durability argument relies on LMDB's `fsync` semantics there (see `docs/design.md`).
//!
//! ## Limits
//!
//! Every limit is in [`StorageConfig`]: event size, batch size, map size. Stream id `u128::MAX`
//! is reserved. A stream holds at most `u32::MAX` events.

// The durability argument of group commit (an answer waits for the next flush, which also
// flushes the meta page LMDB wrote without one) holds where LMDB flushes with fsync/fdatasync.
// On Windows LMDB writes data through a write-through handle and skips the commit-time sync,
// which breaks it; VarveDB is neither built nor tested there.
#[cfg(not(unix))]
compile_error!(
    "VarveDB supports Unix (Linux, macOS, the BSDs) only: its durability argument relies on LMDB's MDB_NOMETASYNC semantics with fsync, which do not hold on Windows"
);

// Layers, each importing only from those below it:
// writer, reader → commit → storage → config, error, expected.
// `#[derive(Event)]` names `::varvedb`; in this crate's own tests that is the crate itself.
#[cfg(test)]
extern crate self as varvedb;

mod commit;
mod config;
mod consumer;
mod dump;
mod error;
mod event;
mod event_id;
mod expected;
#[cfg(test)]
mod fault_tests;
mod json;
mod metrics;
/// Serving the store's metrics over HTTP ([`Storage::serve_metrics`]).
#[cfg(feature = "metrics-http")]
pub mod metrics_http;
mod reader;
mod storage;
mod store;
mod untyped;
mod writer;

// The application's names: open a store, append, read, react.
pub use config::{Durability, StorageConfig};
pub use consumer::{
    AsyncEventHandler, AsyncProcessor, EventHandler, HandlerError, Model, OnError, OwnedEvent,
    Processor, ProcessorOptions, Projection, ProjectionHandler, Subscription, SubscriptionItem,
};
pub use error::{Error, ErrorKind, LmdbError, Result, SharedError, Written};
pub use event::{AppendOptions, Event, EventId, EventType, Metadata};
pub use expected::{Appended, ExpectedVersion};
pub use json::{ArchivedJsonEvent, JsonEvent};
pub use reader::{AllIter, EventRef, Reader, StreamIter, ValidateEvent};
pub use storage::{
    Consumer, ParkedEvent, Query, QueryItem, ReadTxn, RemovalReport, RetentionPolicy,
    RetentionReport, ShredReport, Stats, Storage, StreamRemoval, Tags,
};
pub use storage::{ConsumerGroup, GroupMember, GroupPartition};
pub use storage::{PageCheck, check_pages};
/// `#[derive(Event)]`: see [`Event`].
pub use varvedb_derive::Event;
pub use writer::{Append, IntoOptions, SerializeEvent, Writer};

/// Export and import: a store's events in their stored form (ciphertext stays ciphertext), and
/// their way back into a store (`Storage::export_header`, `Storage::export_events`,
/// `Storage::importer`). What `varvedb export` and `varvedb import` and replication use.
pub mod export {
    pub use crate::dump::{
        ExportBounds, ExportConsumer, ExportGroup, ExportHeader, ExportKey, ExportType,
        ImportReport, Importer, StoredEvent,
    };
}

/// What [`Storage::verify`](crate::Storage::verify) reports.
pub mod verify {
    pub use crate::storage::{Problem, VerifyPhase, VerifyProgress, VerifyReport};
}

/// The untyped view of events, for tools: [`Storage::raw_reader`](crate::Storage::raw_reader).
pub mod raw {
    pub use crate::untyped::{RawEvent, RawReader, StreamSummary};
}

// The names of earlier releases, at the root: they still compile. Their documented homes are the
// modules above, and the tuning constants are associated constants of the types they tune
// (`Storage::FORMAT_VERSION`, `AppendOptions::ENVELOPE_BYTES_MAX`, `MetricsServer::HEAD_TIMEOUT`..).
#[doc(hidden)]
pub use config::DEFAULT_PATH;
#[doc(hidden)]
pub use consumer::SUBSCRIPTION_BATCH_EVENTS;
#[doc(hidden)]
pub use event::{ENVELOPE_BYTES_MAX, EVENT_NAME_BYTES_MAX};
#[doc(hidden)]
pub use export::*;
#[doc(hidden)]
pub use json::JSON_CONTAINER;
#[cfg(feature = "metrics-http")]
#[doc(hidden)]
pub use metrics_http::{
    CONNECTIONS_MAX, DEFAULT_METRICS_ADDR, EXCHANGE_TIMEOUT, HEAD_BYTES_MAX, HEAD_TIMEOUT,
    MetricsServer,
};
#[doc(hidden)]
pub use raw::*;
#[doc(hidden)]
pub use reader::MAX_EVENT_ALIGN;
#[doc(hidden)]
pub use storage::{FORMAT_VERSION, META_FORMAT_KEY, VERIFY_PROBLEMS_MAX};
#[doc(hidden)]
pub use verify::*;
#[doc(hidden)]
pub use writer::{ASYNC_HASH_OFFLOAD_BYTES, RESERVED_STREAM_ID};

/// Re-export of the rkyv version VarveDB is built with, for deriving event types.
pub use rkyv;

/// The record codec, exposed for the criterion micro-benchmarks (`benches/record.rs`) and for
/// tests that forge or inspect records. Not part of the API: it may change in any release.
#[cfg(feature = "__internals")]
#[doc(hidden)]
pub mod __bench {
    use crate::storage::{Links, RecordHeader, probes, seal_record};
    use crate::writer::SerializeEvent;

    /// What an append does outside the commit: serialize `event` behind a header placeholder,
    /// digest the payload, pad; then what the commit adds: the sealed header. Returns the record.
    pub fn encode<E: SerializeEvent + crate::Event>(
        event: &E,
        version: u32,
    ) -> crate::Result<Vec<u8>> {
        let mut prepared = crate::writer::prepare(event, None, usize::MAX, usize::MAX)?;
        let header = RecordHeader {
            flags: 0,
            stream_id: 7,
            version,
            type_id: 1,
            timestamp_ns: 1,
            links: Links {
                prev: u64::from(version.saturating_sub(1)),
                jump: 1,
            },
        };
        seal_record(
            &mut prepared.record,
            prepared.payload_len,
            prepared.digest,
            &header,
        );
        Ok(prepared.record.to_vec())
    }

    /// The payload digest the record checksum folds in.
    pub fn payload_digest(payload: &[u8]) -> u64 {
        crate::storage::payload_digest(payload)
    }

    /// Verifies a record (lengths, format, checksum) as every read does; returns its payload.
    pub fn verify(record: &[u8]) -> crate::Result<&[u8]> {
        probes::verify_record(record)
    }

    /// The length of a record's header: its payload starts here.
    pub const HEADER_LEN: usize = crate::storage::HEADER_LEN;

    /// The checksum a record's header must carry (for tests that forge a record).
    pub fn reseal_checksum(record_bytes: &[u8]) -> u64 {
        probes::record_checksum(record_bytes)
    }

    /// Every record of the log, as stored, with its sequence (for tests that compare two
    /// stores byte for byte, whatever their packs).
    pub fn records(storage: &crate::Storage) -> crate::Result<Vec<(u64, Vec<u8>)>> {
        probes::records(storage)
    }

    /// The byte ranges of the records in the pack stored under the key `last` (for tests that
    /// forge or damage a record in place); `None` if it is not a pack.
    pub fn pack_records(last: u64, pack: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
        probes::pack_records(last, pack)
    }

    /// Rewrites the checksum of the pack stored under the key `last` to match its bytes.
    pub fn reseal_pack(last: u64, pack: &mut [u8]) {
        probes::reseal_pack(last, pack);
    }

    /// Whether a map growth is waiting for this process's snapshots to end (for tests that
    /// must act while it waits).
    pub fn resize_waiting(storage: &crate::Storage) -> bool {
        probes::resize_waiting(storage)
    }

    /// A stream's raw keystore entry (for tests that look for it in a file).
    pub fn keystore_entry(storage: &crate::Storage, stream_id: u128) -> Option<Vec<u8>> {
        probes::keystore_entry(storage, stream_id)
    }
}

/// What the fuzz targets drive (`fuzz/`, `docs/reliability.md`); not a stable API.
#[cfg(feature = "__internals")]
#[doc(hidden)]
pub mod __fuzz {
    use crate::reader::ValidateEvent;
    use crate::storage::probes;

    /// Validates `payload` as `E`'s archive, from a 16-aligned copy (as a reader does when a
    /// payload is not aligned in the map).
    fn validates<E: ValidateEvent>(payload: &[u8]) -> bool {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        rkyv::access::<E::Archived, rkyv::rancor::Error>(&aligned).is_ok()
    }

    /// Everything a read does with a value of the events log: parses it as the pack stored
    /// under `last`, checks its checksum, takes every record through the offset table, and
    /// decodes each as a scan does (trusting a matching pack checksum) and as a point read
    /// does (checking the record's own), then splits its envelope and validates its payload as
    /// `E`. Returns how many records passed; never panics.
    pub fn read_pack<E: ValidateEvent>(last: u64, bytes: &[u8]) -> usize {
        probes::read_pack(last, bytes, validates::<E>)
    }

    /// Decodes `bytes` as one record (as a point read does), then its envelope section and
    /// payload as `E`. Returns whether it passed; never panics.
    pub fn read_record<E: ValidateEvent>(bytes: &[u8]) -> bool {
        probes::read_record(bytes, validates::<E>)
    }

    /// Seals `plain` under a fixed key as the AES-GCM plaintext of an encrypted event, opens it
    /// as a reader does (the decrypted layout: metadata length, pair count, padding, metadata
    /// pairs, payload), and validates the payload as `E`. A reader trusts nothing of the
    /// plaintext's layout; this shows it. Also opens `plain` as a forged sealed event, which
    /// must not authenticate. Never panics.
    pub fn open_sealed<E: ValidateEvent>(plain: &[u8]) -> bool {
        probes::open_sealed(plain, validates::<E>)
    }
}

// The README's Rust blocks are built and run as copied, each with the README's own
// `[dependencies]`, by `crates/varvedb-cli/tests/readme.rs`.
