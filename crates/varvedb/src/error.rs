//! The error type of every fallible VarveDB operation.

use std::path::PathBuf;

use crate::event_id::EventId;
use crate::expected::{Appended, ExpectedVersion};

/// The result type of VarveDB operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in VarveDB.
///
/// Every variant says what happened in words a user can act on. The enum is `#[non_exhaustive]`:
/// later releases add variants (encryption, blobs) without breaking matches that end in `_`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream was not at the version the append expected. Nothing was written.
    #[error(
        "concurrency conflict on stream {stream_id:#x}: expected {expected}, but the stream is at version {actual}"
    )]
    ConcurrencyConflict {
        /// The stream the append targeted.
        stream_id: u128,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was checked (0: the stream has no events).
        actual: u32,
    },

    /// A processor's checkpoint found its consumer's cursor moved by someone else since its
    /// own last write (a reset or a delete, by the tool or another process, or another
    /// processor running under the same name). The processor stops without writing: start it
    /// again, and it begins where the cursor now is.
    #[error(
        "the cursor of consumer {name:?} was moved while its processor ran (it wrote {expected:?}, the store has {found:?}): start the processor again; one processor runs per consumer name (use a consumer group to share the work)"
    )]
    ConsumerMoved {
        /// The consumer.
        name: String,
        /// The position this processor last wrote (or read at its start); `None`: none yet.
        expected: Option<u64>,
        /// The position the store holds; `None`: the consumer was deleted.
        found: Option<u64>,
    },

    /// A record in the events log failed its integrity check.
    #[error("corrupt record at sequence {seq}: {reason}")]
    Corrupt {
        /// The global sequence number of the damaged record.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// A blob's reference count is damaged, found while appending a payload with that content.
    /// The append fails and writes nothing; `varvedb verify` reports the details.
    #[error("corrupt blob {hash}: {reason}")]
    CorruptBlob {
        /// The blob's BLAKE3 hash, in hex.
        hash: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A stream's head, or a link of its stream chain, disagrees with the log.
    #[error("corrupt stream index for stream {stream_id:#x} at version {version}: {reason}")]
    CorruptIndex {
        /// The stream whose head or chain is damaged.
        stream_id: u128,
        /// The version whose entry is damaged.
        version: u32,
        /// What is wrong with it.
        reason: String,
    },

    /// The event was stored as another type than the reader's: nothing was read. Iterators
    /// report it and move on to the next event.
    #[error("event at sequence {seq} is a {found}, not a {expected}")]
    TypeMismatch {
        /// The global sequence number of the event.
        seq: u64,
        /// The types the reader accepts (`Name vN`, or `Enum { A v1, B v2 }`).
        expected: String,
        /// The type the event was stored as (`Name vN`, or `Enum::Variant vN`).
        found: String,
    },

    /// An entry of the store's event-type table is damaged or missing.
    #[error("corrupt event type {id}: {reason}")]
    CorruptType {
        /// The type id (0 when the damaged entry is not one id's).
        id: u32,
        /// What is wrong with it.
        reason: String,
    },

    /// An event type's name is empty or too long (an `Event` implemented by hand). Nothing was
    /// written.
    #[error("invalid event type {name:?}: {reason}")]
    InvalidEventType {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An event's metadata and ids take more than the envelope section allows
    /// (`ENVELOPE_BYTES_MAX`, 64 KiB). Nothing was written.
    #[error("event metadata of {size} bytes exceeds the maximum of {max} bytes")]
    MetadataTooLarge {
        /// The encoded size.
        size: usize,
        /// The maximum.
        max: usize,
    },

    /// A tag is empty, longer than 255 bytes, repeated on one event, or one of more than 255
    /// tags on one event. Nothing was written.
    #[error("invalid tag {tag:?}: {reason}")]
    InvalidTag {
        /// The tag given.
        tag: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A conditional append ([`Append::when`](crate::Append::when)) found an event
    /// matching its query after the position it was given: the decision it carries was made
    /// on facts that changed. Nothing was written; read again and decide again.
    #[error(
        "append condition failed: the event at sequence {seq} matches the query, after {}",
        match after { Some(a) => format!("sequence {a}"), None => "the start of the log".into() }
    )]
    ConditionFailed {
        /// The position the append was conditional on (`None`: the whole log).
        after: Option<u64>,
        /// The first matching event after it.
        seq: u64,
    },

    /// An append carries an event id that the store already has for another event (another
    /// stream, position or payload), or that only some of a batch's events already had.
    /// Nothing was written. A retry of the very same append is not this error: it returns the
    /// original answer.
    #[error("event id {event_id} is already the id of the event at sequence {seq}: {reason}")]
    DuplicateEventId {
        /// The sequence of the event that has the id.
        seq: u64,
        /// The id.
        event_id: EventId,
        /// How the append differs from the one that wrote it.
        reason: String,
    },

    /// A `_with` append was given a different number of options than events. Nothing was
    /// written.
    #[error("{events} events but {options} append options: give one per event")]
    OptionsMismatch {
        /// Events in the append.
        events: usize,
        /// Options given.
        options: usize,
    },

    /// The stream was shredded: its key is gone and its events are unreadable for good.
    /// Iterators report it and move on.
    #[error("event at sequence {seq} belongs to stream {stream_id:#x}, which was shredded")]
    Shredded {
        /// The event's sequence.
        seq: u64,
        /// Its stream.
        stream_id: u128,
    },

    /// An append to a shredded stream. Nothing was written; a shredded stream takes no events.
    #[error("stream {stream_id:#x} was shredded and takes no more events")]
    StreamShredded {
        /// The stream.
        stream_id: u128,
    },

    /// An append to a stream that was hard-deleted ([`Storage::tombstone_stream`](crate::Storage::tombstone_stream)).
    /// Nothing was written; a tombstoned stream takes no events, ever.
    #[error("stream {stream_id:#x} was deleted for good (tombstoned) and takes no more events")]
    StreamDeleted {
        /// The stream.
        stream_id: u128,
    },

    /// What was asked is not supported yet for this store; the reason says what and why.
    /// Nothing changed.
    #[error("not supported yet: {reason}")]
    NotSupported {
        /// What is not supported.
        reason: String,
    },

    /// The stream has no events (nor a key): there is nothing to shred. Nothing changed.
    #[error("stream {stream_id:#x} does not exist: it has no events")]
    StreamNotFound {
        /// The stream.
        stream_id: u128,
    },

    /// A copy (a backup, a compaction) cannot go where it was asked to: the store's own
    /// directory, a directory that holds something, a file. Nothing was written.
    #[error("cannot write a copy of the store to {path}: {reason}")]
    InvalidDestination {
        /// The destination given.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },

    /// Only an encrypted stream can be shredded; this one is plaintext. Nothing changed.
    #[error("stream {stream_id:#x} is not encrypted, so it cannot be crypto-shredded")]
    StreamNotEncrypted {
        /// The stream.
        stream_id: u128,
    },

    /// An encrypted event did not authenticate: it was tampered with, or moved to another
    /// stream, version or sequence. Nothing of it is handed out.
    #[error("event at sequence {seq} does not authenticate: its ciphertext was changed or moved")]
    AuthenticationFailed {
        /// The event's sequence.
        seq: u64,
    },

    /// The master key given does not open this store (its key-check value does not decrypt).
    /// Nothing was read or written.
    #[error("the master key does not open this store: it was created with another key")]
    WrongMasterKey,

    /// The stream is encrypted and the store was opened without its master key.
    #[error("stream {stream_id:#x} is encrypted; open the store with its master key to use it")]
    MasterKeyRequired {
        /// The stream.
        stream_id: u128,
    },

    /// Another handle rotated the store's master key (`rotate_master_key`, `varvedb
    /// rotate-key`), and this handle's key is retired: it creates and unwraps no stream keys,
    /// so that nothing new is ever wrapped under a key that is about to be destroyed. Nothing
    /// was written. Reopen the store with the new master key.
    #[error(
        "the store's master key was rotated by another process: this handle's key is retired; reopen the store with the new master key"
    )]
    MasterKeyRotated,

    /// An encryption operation failed (no randomness from the OS, a malformed wrapped key).
    #[error("encryption failed: {reason}")]
    Crypto {
        /// What failed.
        reason: String,
    },

    /// A task VarveDB ran on tokio's blocking pool panicked or was cancelled (a handler that
    /// panicked, a runtime shutting down).
    #[error("a blocking task failed: {reason}")]
    TaskFailed {
        /// What the runtime reported.
        reason: String,
    },

    /// A processor's handler failed on an event and its policy said stop. The processor
    /// checkpointed before that event: it is handled again on the next run.
    #[error("consumer {consumer:?} stopped at sequence {seq}: its handler failed: {reason}")]
    HandlerFailed {
        /// The processor's name.
        consumer: String,
        /// The event the handler failed on.
        seq: u64,
        /// The handler's error.
        reason: String,
    },

    /// The record is intact but its payload is not a valid archive of the requested event type.
    /// This usually means the reader's type differs from the type the event was written with.
    #[error("event at sequence {seq} is not a valid {type_name}: {reason}")]
    InvalidEvent {
        /// The global sequence number of the event.
        seq: u64,
        /// The Rust type the caller asked for.
        type_name: &'static str,
        /// What rkyv's validation reported.
        reason: String,
    },

    /// The store was written in a format this version of VarveDB cannot read.
    #[error(
        "the store at {path} uses format version {found}, but this VarveDB reads format version {supported}; it was left untouched"
    )]
    UnsupportedFormat {
        /// The store's directory.
        path: PathBuf,
        /// The format version found in the store's meta record.
        found: u32,
        /// The format version this build reads and writes.
        supported: u32,
    },

    /// The store is of an older format that this build upgrades, but
    /// `StorageConfig::allow_upgrade` is off. It was left untouched; `varvedb upgrade --path
    /// PATH` (or an open that allows it) upgrades it.
    #[error(
        "the store at {path} is of format {found}, and this VarveDB writes format {current}: upgrading it ({steps}) is not allowed by this configuration (StorageConfig::allow_upgrade); it was left untouched. Run `varvedb upgrade --path {path}` to upgrade it"
    )]
    UpgradeRequired {
        /// The store's directory.
        path: PathBuf,
        /// Its format.
        found: u32,
        /// The format this build writes.
        current: u32,
        /// What the upgrade does, step by step.
        steps: String,
    },

    /// The directory does not hold a VarveDB store that can be opened.
    #[error("{path} is not a usable VarveDB store: {reason}")]
    InvalidStore {
        /// The store's directory.
        path: PathBuf,
        /// Why it cannot be opened.
        reason: String,
    },

    /// A page of the store's data file is damaged in a way that would crash LMDB (a node or a
    /// page number outside its bounds, a cycle): found by the page check before LMDB mapped
    /// the file (`StorageConfig::check_pages_on_open`, [`check_pages`](crate::check_pages)).
    /// Nothing was opened. Restore the store from a backup, an export or a replica.
    #[error("{path} is damaged: page {page} of its data file: {reason}")]
    DamagedPage {
        /// The store's directory.
        path: PathBuf,
        /// The damaged page (or the page that points at a damaged one).
        page: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// The configuration is invalid. Nothing was opened.
    #[error("invalid configuration: {field}: {reason}")]
    InvalidConfig {
        /// The offending `StorageConfig` field.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },

    /// The path is already open in this process with a different configuration.
    #[error(
        "{path} is already open in this process with a different configuration; reuse that Storage (it is cheap to clone) or close it first"
    )]
    ConfigMismatch {
        /// The store's directory.
        path: PathBuf,
    },

    /// A serialized event is larger than `StorageConfig::event_bytes_max`.
    #[error("event of {size} bytes exceeds the configured maximum of {max} bytes")]
    EventTooLarge {
        /// The serialized size of the event.
        size: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A batch holds more events than `StorageConfig::batch_events_max`.
    #[error("batch of {events} events exceeds the configured maximum of {max} events")]
    BatchTooLarge {
        /// The number of events in the batch.
        events: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A batch (or a multi-stream append) holds no events.
    #[error("empty batch: an append must contain at least one event")]
    EmptyBatch,

    /// The stream id is reserved.
    #[error("stream id {stream_id:#x} is reserved for VarveDB's own use (u128::MAX)")]
    InvalidStreamId {
        /// The rejected stream id.
        stream_id: u128,
    },

    /// The stream cannot grow past version `u32::MAX`.
    #[error(
        "stream {stream_id:#x} is full: appending {events} events to version {version} would pass u32::MAX"
    )]
    StreamFull {
        /// The stream.
        stream_id: u128,
        /// Its current version.
        version: u32,
        /// The number of events the append carried.
        events: usize,
    },

    /// The store reached `StorageConfig::map_bytes_max`. Nothing was written.
    #[error(
        "the store is full: it reached its configured maximum size of {map_bytes_max} bytes; raise StorageConfig::map_bytes_max"
    )]
    StoreFull {
        /// The configured maximum map size.
        map_bytes_max: usize,
    },

    /// The map had to grow for an append, but read transactions of this process stayed open
    /// for too long to do it safely. Nothing was written.
    #[error(
        "the store must grow, but {read_txns} read transaction(s) stayed open for {waited_ms} ms; drop long-lived ReadTxns (including ones held by the appending thread) and retry"
    )]
    ResizeBlocked {
        /// The number of read transactions still open.
        read_txns: usize,
        /// How long the append waited for them.
        waited_ms: u64,
    },

    /// Another process grew the store past this process's memory map. A new snapshot must
    /// first adopt the larger map, which needs every read transaction of this process closed,
    /// and some stayed open (or are held by the calling thread itself).
    #[error(
        "this read cannot begin: another process grew the store, and adopting its larger map needs every read transaction of this process closed, but {read_txns} stayed open for {waited_ms} ms; drop them (including ones held by this thread) and retry"
    )]
    ReadBlocked {
        /// The number of read transactions still open in this process.
        read_txns: usize,
        /// How long the read waited for them.
        waited_ms: u64,
    },

    /// A transaction of another `Storage` was passed in.
    #[error("the read transaction belongs to a different store than this reader")]
    ForeignTransaction,

    /// The transaction that carried this append was aborted as a whole, for a reason that is
    /// not this append's own (for example another append of its group met a damaged log end).
    /// Nothing of this append was written; it may be retried.
    #[error("the commit carrying this append was aborted, nothing was written: {reason}")]
    CommitFailed {
        /// The failure of the shared commit, in words.
        reason: String,
        /// The failure of the shared commit itself (one error, shared by every append of the
        /// group): [`std::error::Error::source`] walks on into it.
        #[source]
        source: SharedError,
    },

    /// The store is closing: the append was refused before anything was written.
    #[error("the store is closing; nothing was written")]
    Closed,

    /// The store refuses this operation after an earlier failure: nothing was written (and for a
    /// read, nothing was read). Drop every handle and open the store again to recover (see
    /// [`Storage::open_after_flush_failure`](crate::Storage::open_after_flush_failure) when
    /// the failure was a flush).
    #[error(
        "the store refuses this operation after an earlier failure (reopen it to recover): {reason}"
    )]
    Poisoned {
        /// The failure that poisoned the store.
        reason: String,
    },

    /// It is unknown whether the append was written: the committer stopped while it was in
    /// flight, or LMDB's commit failed part way. Do not retry blindly (an `Auto` append could be
    /// written twice): reopen the store and read the stream to find out.
    #[error("the outcome of this append is unknown (it may or may not be in the store): {reason}")]
    OutcomeUnknown {
        /// What happened.
        reason: String,
    },

    /// The append was committed, and readers in this process see it, but the flush that makes
    /// it durable failed: a crash of the machine may lose it. The store is poisoned.
    #[error("the append was committed but may not be durable, because the flush failed: {reason}")]
    NotDurable {
        /// Where each event of the append landed.
        appended: Vec<Appended>,
        /// The failure of the flush.
        reason: String,
    },

    /// The path is not an existing store: nothing was created (from
    /// [`Storage::open_existing`](crate::Storage::open_existing)).
    #[error("{path} is not an existing VarveDB store: {reason}; nothing was created")]
    NotFound {
        /// The directory given.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },

    /// rkyv failed to serialize an event.
    #[error("could not serialize event: {reason}")]
    Serialize {
        /// What rkyv reported.
        reason: String,
    },

    /// An I/O error outside LMDB (creating the directory, for example).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The metrics endpoint could not listen on its address (in use, not local, not allowed).
    #[error("cannot serve metrics on {addr}: {reason}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why it failed.
        reason: String,
    },

    /// An imported event (or the export's header) cannot go into this store as it is: out of
    /// order, inconsistent with itself, or different from what the store already holds. The
    /// batch it was in was not written; every batch before it is committed and durable.
    #[error("cannot import {}: {reason}", import_subject(*.seq))]
    InvalidImport {
        /// The sequence of the event refused (0 for the export's header).
        seq: u64,
        /// What is wrong.
        reason: String,
    },

    /// An error reported by LMDB.
    #[error("LMDB error: {0}")]
    Lmdb(LmdbError),
}

/// What an import error is about: an event, or (sequence 0) the export's header.
fn import_subject(seq: u64) -> String {
    if seq == 0 {
        "the export's header".into()
    } else {
        format!("event {seq}")
    }
}

/// Whether a failed append was written (see [`Error::written`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Written {
    /// Nothing was written: the append can be retried as it is.
    No,
    /// The append was committed but is not known to be durable ([`Error::NotDurable`]).
    NotDurable,
    /// It may or may not have been written ([`Error::OutcomeUnknown`]): read before retrying.
    Unknown,
}

/// An error reported by LMDB, kept opaque so that VarveDB's API does not depend on the
/// version of the LMDB binding it uses.
#[derive(Debug)]
pub struct LmdbError(heed::Error);

impl LmdbError {
    /// LMDB's error code (`MDB_*`, or an `errno` for a system error), when there is one.
    pub fn code(&self) -> Option<i32> {
        match &self.0 {
            heed::Error::Mdb(e) => Some(e.to_err_code()),
            heed::Error::Io(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// Whether LMDB found its own pages damaged: a page of the wrong type
    /// (`MDB_CORRUPTED`), a page that is not there (`MDB_PAGE_NOTFOUND`), or a file that is not
    /// an LMDB file (`MDB_INVALID`). [`Error::kind`] calls these corruption.
    pub fn is_damage(&self) -> bool {
        matches!(
            &self.0,
            heed::Error::Mdb(
                heed::MdbError::Corrupted | heed::MdbError::PageNotFound | heed::MdbError::Invalid
            )
        )
    }

    /// `MDB_BAD_TXN`: the transaction can no longer be used (after an error inside it).
    pub(crate) fn is_bad_txn(&self) -> bool {
        matches!(&self.0, heed::Error::Mdb(heed::MdbError::BadTxn))
    }

    pub(crate) fn new(e: heed::Error) -> Self {
        LmdbError(e)
    }

    pub(crate) fn heed(&self) -> &heed::Error {
        &self.0
    }
}

impl std::fmt::Display for LmdbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_damage() {
            write!(
                f,
                "the store's data file is damaged: LMDB found a page it cannot use ({})",
                self.0
            )
        } else {
            std::fmt::Display::fmt(&self.0, f)
        }
    }
}

impl std::error::Error for LmdbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// One error that failed several operations at once (the commit of a group of appends), shared
/// by the error each of them gets. Its [`source`](std::error::Error::source) is that error, so a
/// walk down the source chain reaches it, and [`error`](Self::error) hands it out.
#[derive(Debug, Clone)]
pub struct SharedError(std::sync::Arc<Error>);

impl SharedError {
    /// The error itself.
    pub fn error(&self) -> &Error {
        &self.0
    }
}

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// What kind of failure an [`Error`] is: the small match a caller acts on
/// ([`Error::kind`]), next to whether an append was written ([`Error::written`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Another writer got there first, or a decision is stale: read again, decide again, retry
    /// (a concurrency conflict, a failed condition, a duplicate event id).
    Conflict,
    /// The call itself is wrong and will fail the same way again: a bad argument, an event or
    /// batch past a limit, the wrong event type, a missing or wrong key, a shredded stream.
    InvalidInput,
    /// The store holds damaged data (a record, a blob, an index, a type, a ciphertext that does
    /// not authenticate): run `verify`, restore from a backup.
    Corruption,
    /// The store cannot take this now, and may later: closing, poisoned after a failure, full,
    /// a resize blocked by readers, a commit aborted for another append's reason, an outcome
    /// unknown or not durable. See [`Error::written`] before retrying an append.
    Unavailable,
    /// The environment failed: LMDB, the file system, the network, a task, the configuration
    /// or the store's files themselves.
    Environment,
}

impl Error {
    /// Whether the append that failed with this error was written. Only
    /// [`NotDurable`](Error::NotDurable) and [`OutcomeUnknown`](Error::OutcomeUnknown) may
    /// have written anything; every other error of an append means nothing was written.
    pub fn written(&self) -> Written {
        match self {
            Error::NotDurable { .. } => Written::NotDurable,
            Error::OutcomeUnknown { .. } => Written::Unknown,
            _ => Written::No,
        }
    }

    /// What kind of failure this is (see [`ErrorKind`]): the few cases a caller acts on
    /// differently, whatever the variant.
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind::*;
        match self {
            Error::ConcurrencyConflict { .. }
            | Error::ConditionFailed { .. }
            | Error::DuplicateEventId { .. }
            | Error::ConsumerMoved { .. } => Conflict,
            Error::TypeMismatch { .. }
            | Error::InvalidEventType { .. }
            | Error::MetadataTooLarge { .. }
            | Error::InvalidTag { .. }
            | Error::OptionsMismatch { .. }
            | Error::Shredded { .. }
            | Error::StreamShredded { .. }
            | Error::StreamNotEncrypted { .. }
            | Error::StreamNotFound { .. }
            | Error::StreamDeleted { .. }
            | Error::NotSupported { .. }
            | Error::InvalidDestination { .. }
            | Error::WrongMasterKey
            | Error::MasterKeyRequired { .. }
            | Error::MasterKeyRotated
            | Error::InvalidEvent { .. }
            | Error::EventTooLarge { .. }
            | Error::BatchTooLarge { .. }
            | Error::EmptyBatch
            | Error::InvalidStreamId { .. }
            | Error::StreamFull { .. }
            | Error::ForeignTransaction
            | Error::Serialize { .. }
            | Error::InvalidImport { .. }
            | Error::HandlerFailed { .. } => InvalidInput,
            Error::Corrupt { .. }
            | Error::CorruptBlob { .. }
            | Error::CorruptIndex { .. }
            | Error::CorruptType { .. }
            | Error::AuthenticationFailed { .. }
            | Error::DamagedPage { .. } => Corruption,
            Error::Lmdb(e) if e.is_damage() => Corruption,
            Error::StoreFull { .. }
            | Error::ResizeBlocked { .. }
            | Error::ReadBlocked { .. }
            | Error::CommitFailed { .. }
            | Error::Closed
            | Error::Poisoned { .. }
            | Error::OutcomeUnknown { .. }
            | Error::NotDurable { .. } => Unavailable,
            Error::Crypto { .. }
            | Error::TaskFailed { .. }
            | Error::UnsupportedFormat { .. }
            | Error::UpgradeRequired { .. }
            | Error::InvalidStore { .. }
            | Error::InvalidConfig { .. }
            | Error::ConfigMismatch { .. }
            | Error::NotFound { .. }
            | Error::Io { .. }
            | Error::Bind { .. }
            | Error::Lmdb(_) => Environment,
        }
    }

    pub(crate) fn lmdb(e: heed::Error) -> Self {
        Error::Lmdb(LmdbError::new(e))
    }

    pub(crate) fn is_lmdb(&self) -> bool {
        matches!(self, Error::Lmdb(_))
    }

    /// The error to give the other appends of a group whose transaction failed with `shared`.
    /// The failures that say something of the store itself are given as they are; any other
    /// is a [`CommitFailed`](Error::CommitFailed) whose source is the one shared error.
    pub(crate) fn for_group(shared: &std::sync::Arc<Error>) -> Error {
        match shared.as_ref() {
            Error::StoreFull { map_bytes_max } => Error::StoreFull {
                map_bytes_max: *map_bytes_max,
            },
            Error::ResizeBlocked {
                read_txns,
                waited_ms,
            } => Error::ResizeBlocked {
                read_txns: *read_txns,
                waited_ms: *waited_ms,
            },
            Error::Poisoned { reason } => Error::Poisoned {
                reason: reason.clone(),
            },
            Error::Closed => Error::Closed,
            Error::OutcomeUnknown { reason } => Error::OutcomeUnknown {
                reason: reason.clone(),
            },
            other => Error::CommitFailed {
                reason: other.to_string(),
                source: SharedError(std::sync::Arc::clone(shared)),
            },
        }
    }

    pub(crate) fn is_map_full(&self) -> bool {
        matches!(self, Error::Lmdb(e) if matches!(e.heed(), heed::Error::Mdb(heed::MdbError::MapFull)))
    }

    pub(crate) fn corrupt(seq: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            seq,
            reason: reason.into(),
        }
    }
}
