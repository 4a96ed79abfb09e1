//! The error type of every fallible VarveDB operation.

use std::path::PathBuf;

use crate::writer::ExpectedVersion;

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
        "concurrency conflict on stream {stream_id}: expected {expected}, but the stream is at version {actual}"
    )]
    ConcurrencyConflict {
        /// The stream the append targeted.
        stream_id: u128,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was checked (0: the stream has no events).
        actual: u32,
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
    #[error("corrupt stream index for stream {stream_id} at version {version}: {reason}")]
    CorruptIndex {
        /// The stream whose head or chain is damaged.
        stream_id: u128,
        /// The version whose entry is damaged.
        version: u32,
        /// What is wrong with it.
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

    /// The directory does not hold a VarveDB store that can be opened.
    #[error("{path} is not a usable VarveDB store: {reason}")]
    InvalidStore {
        /// The store's directory.
        path: PathBuf,
        /// Why it cannot be opened.
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
    #[error("stream id {stream_id} is reserved for VarveDB's own use (u128::MAX)")]
    InvalidStreamId {
        /// The rejected stream id.
        stream_id: u128,
    },

    /// The stream cannot grow past version `u32::MAX`.
    #[error(
        "stream {stream_id} is full: appending {events} events to version {version} would pass u32::MAX"
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

    /// The map had to grow, but read transactions stayed open for too long to do it safely.
    #[error(
        "the store must grow, but {read_txns} read transaction(s) stayed open for {waited_ms} ms; drop long-lived ReadTxns (including ones held by this thread) and retry"
    )]
    ResizeBlocked {
        /// The number of read transactions still open.
        read_txns: usize,
        /// How long the append waited for them.
        waited_ms: u64,
    },

    /// A transaction of another `Storage` was passed in.
    #[error("the read transaction belongs to a different store than this reader")]
    ForeignTransaction,

    /// The group commit that carried this append failed as a whole (for example its flush
    /// failed); `reason` is that failure. The append is not acknowledged.
    #[error("the commit carrying this append failed: {reason}")]
    CommitFailed {
        /// The failure of the shared commit.
        reason: String,
    },

    /// A durable commit failed; the store refuses further writes until it is reopened.
    #[error("the store refuses writes after a failed commit (reopen it to recover): {reason}")]
    Poisoned {
        /// The failure that poisoned the store.
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

    /// An error reported by LMDB.
    #[error("LMDB error: {0}")]
    Lmdb(#[from] heed::Error),
}

impl Error {
    pub(crate) fn is_lmdb(&self) -> bool {
        matches!(self, Error::Lmdb(_))
    }

    /// The error to give the other appends of a group whose commit failed with `self`.
    pub(crate) fn for_group(&self) -> Error {
        match self {
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
            other => Error::CommitFailed {
                reason: other.to_string(),
            },
        }
    }

    pub(crate) fn is_map_full(&self) -> bool {
        matches!(self, Error::Lmdb(heed::Error::Mdb(heed::MdbError::MapFull)))
    }

    pub(crate) fn corrupt(seq: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            seq,
            reason: reason.into(),
        }
    }
}
