//! The storage layer: one LMDB environment, its databases, and the transactions on them.
//!
//! This layer knows records and keys, never typed events, queues or committers. It offers read
//! snapshots ([`ReadTxn`]) and a write-transaction API ([`Storage::write`]) with map growth and
//! poisoning; the committer above it is attached through the narrow [`Attached`] handle so that
//! the store can stop it before the environment closes.
//!
//! Files: `registry` (one environment per path, open and close), `env` (opening LMDB, the format
//! check, map growth), `txn` (snapshots, the write loop, flushes, health), `stats`, `verify`, and
//! the formats: `keys`, `record`, `chain` (stream chains), `blob` (the blob store), `gate` (the
//! resize gate).

mod blob;
mod chain;
mod consumers;
mod crypto;
mod env;
mod envelope;
mod gate;
mod health;
mod keys;
mod lmdb;
mod log;
mod pack;
mod probe;
mod record;
mod registry;
mod shred;
mod stats;
mod tags;
mod txn;
mod types;
mod verify;

use std::any::Any;
use std::fmt;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use heed::types::{Bytes, Str};
use heed::{Database, Env, RoTxn, WithoutTls};

use crate::config::StorageConfig;
use crate::error::{Error, Result};
use gate::Gate;

pub use consumers::{Consumer, ParkedEvent};
pub(crate) use env::{inline_record_max, node_max};
pub use shred::ShredReport;
pub use stats::Stats;
pub use txn::ReadTxn;
pub use verify::{Problem, VERIFY_PROBLEMS_MAX, VerifyPhase, VerifyProgress, VerifyReport};

// The storage face: what the layers above use, and nothing else of the submodules (which are
// private). Records go in through `LogWriter` and out through `Stored`; the formats' names
// that the writer, the importer and the tool need are here by name.
pub(crate) use blob::{
    BlobRef, HASH_LEN as BLOB_HASH_LEN, check_refs as check_blob_refs,
    padded_len as blob_padded_len,
};
pub(crate) use chain::{BackWalk, Found, Spine, find as find_version, locate as locate_versions};
pub(crate) use consumers::{
    check_name as check_consumer_name, clear_replay, park, parked_of, replay_requested,
    set_position as set_consumer_position, unpark,
};
pub(crate) use crypto::{
    Binding, Crypto, EventKey, StoreKeys, StreamKey, TOMBSTONE, Txn, bound_store_id,
    bump_generation, is_shredded, is_tombstone, seal_event,
};
pub use envelope::Tags;
pub(crate) use envelope::{ENVELOPE_BYTES_MAX, Fields, Section, pairs, split as split_envelope};
pub(crate) use health::WRITES_REFUSED;
pub(crate) use keys::decode_head_value;
pub(crate) use lmdb::LmdbResultExt;
pub(crate) use log::{LogWriter, NewRecord, Seal, Stored, put_head};
pub(crate) use pack::LogIter;
/// Probes of the formats, for the benchmarks, the fuzz targets and the tests.
pub(crate) mod probes {
    pub(crate) use super::probe::*;
}
pub(crate) use record::{
    FLAG_BLOB, FLAG_BOUND, FLAG_ENCRYPTED, FLAG_ENVELOPE, HEADER_LEN, Links, RECORD_ALIGN,
    RECORD_FORMAT, REF_LEN, RecordHeader, end_draft, open as open_record, payload_digest,
    peek as peek_record, record_len, seal as seal_record,
};
pub(crate) use tags::QueryIter;
pub use tags::{Query, QueryItem};
pub(crate) use types::{
    TypeKey, decode as decode_type_key, intern as intern_type, resolve as resolve_type,
};

/// The on-disk format this build reads and writes (the `format_version` meta record).
pub const FORMAT_VERSION: u32 = 4;
/// The meta key of the format version; its value is a little-endian `u32`.
pub const META_FORMAT_KEY: &str = "format_version";

/// Names of the LMDB databases of a store.
pub(crate) mod db_names {
    pub(crate) const EVENTS: &str = "events";
    pub(crate) const STREAM_HEADS: &str = "stream_heads";
    pub(crate) const BLOBS: &str = "blobs";
    pub(crate) const BLOB_REFS: &str = "blob_refs";
    pub(crate) const CONSUMER_CURSORS: &str = "consumer_cursors";
    pub(crate) const KEYSTORE: &str = "keystore";
    pub(crate) const META: &str = "meta";
    pub(crate) const TYPES: &str = "types";
    pub(crate) const TYPE_IDS: &str = "type_ids";
    pub(crate) const EVENT_IDS: &str = "event_ids";
    pub(crate) const PARKED: &str = "parked_events";
    pub(crate) const TAGS: &str = "tags";
}

pub(crate) type Raw = Database<'static, Bytes, Bytes>;
/// The events log: `Raw`, ordered by [`keys::SeqOrder`] (LMDB's own order, compared faster).
pub(crate) type EventsDb = Database<'static, Bytes, Bytes, keys::SeqOrder>;

/// The databases of one environment.
#[derive(Clone, Copy)]
pub(crate) struct Dbs {
    /// `u64 BE seq` (or `seq ‖ 0u64` for overflow records) → record.
    pub(crate) events: EventsDb,
    /// `u128 BE stream` → `[u32 version][u32 0][u64 last seq]` LE: where each stream's chain
    /// starts (see [`chain`]).
    pub(crate) heads: Raw,
    /// BLAKE3 hash (32 bytes, or 40 with eight zero bytes for a blob kept in its leaf page) →
    /// payload, zero-padded to 16: the content-addressed blob store (see [`blob`]).
    pub(crate) blobs: Raw,
    /// BLAKE3 hash → `[u64 references][u64 payload length]` LE: how many records hold each blob.
    pub(crate) blob_refs: Raw,
    /// Consumer name → position (used by processors; created now so that the format is stable).
    pub(crate) cursors: Raw,
    /// Stream → wrapped data key (used by encryption; created now so that the format is stable).
    pub(crate) keystore: Raw,
    /// `u32 BE id` → event type key: each distinct type once (see [`types`]).
    pub(crate) types: Raw,
    /// Event type key → `u32 LE id`.
    pub(crate) type_ids: Raw,
    /// `u128 BE event id` → `u64 LE seq`: the events appended with an id (idempotency).
    pub(crate) event_ids: Raw,
    /// `consumer name ‖ 0x00 ‖ u64 BE seq` → reason (UTF-8): events a processor parked.
    pub(crate) parked: Raw,
    /// `[u8 len][tag][u32 BE type id][u64 BE seq]` → empty: the tag index (see [`tags`]).
    pub(crate) tags: Raw,
    /// `format_version` and other store-wide records.
    pub(crate) meta: Database<'static, Str, Bytes>,
    /// The environment's page size, which decides where LMDB puts a value (leaf or overflow).
    pub(crate) page_size: usize,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutex of this layer guards state that is consistent between statements (a map of
    // weak pointers, a unit, an optional reason), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A service running on top of a store that must finish before the environment closes: the
/// committer. The store knows it only through this trait, so storage imports nothing above it.
pub(crate) trait Attached: Send + Sync + 'static {
    /// Makes every append answered or waiting for an answer durable, and releases the answers
    /// held for the next flush.
    fn flush(&self) -> Result<()>;
    /// Refuses new work, answers what is queued and stops. Called once, when the store closes.
    fn stop(&self);
    /// For the layer that attached it, to find its own type again.
    fn as_any(&self) -> &dyn Any;
}

pub(crate) struct Inner {
    /// The committer (or whatever the layer above attached); stopped first when the store closes.
    attached: OnceLock<Arc<dyn Attached>>,
    /// Dropped by hand in `Drop`, under the registry lock.
    env: ManuallyDrop<Env<WithoutTls>>,
    dbs: Dbs,
    config: StorageConfig,
    path: PathBuf,
    /// The master key and the stream keys (see [`crypto`]).
    crypto: crypto::Crypto,
    /// What `open` found worth a warning (loose permissions).
    warnings: Vec<String>,
    /// The bus: the last committed sequence whose append was acknowledged, for subscribers.
    bus: tokio::sync::watch::Sender<u64>,
    /// Set once the bus poller runs.
    bus_poller: OnceLock<()>,
    /// The read-model databases of projections, by projection name, once opened.
    projections: Mutex<std::collections::HashMap<String, Raw>>,
    gate: Gate,
    /// Held by the one writer; resizes happen under it too.
    write_lock: Mutex<()>,
    /// One of [`health`]'s values; the reason is in `fault`.
    health: AtomicU8,
    fault: Mutex<Option<String>>,
    /// A commit happened since the last flush: its meta page (or, with `NoSync`, everything) may
    /// still be only in the page cache.
    unflushed: AtomicBool,
    /// Write transactions with writes committed since the environment was opened in this process.
    commits: AtomicU64,
    /// Explicit flushes (`force_sync`) since the environment was opened in this process.
    flushes: AtomicU64,
    /// The store's Prometheus metrics.
    metrics: crate::metrics::Metrics,
    /// Failures the unit tests inject.
    #[cfg(test)]
    pub(crate) faults: Faults,
}

/// Failures the unit tests inject, each taken once.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Faults {
    /// The next flush fails as if `fsync` returned EIO.
    pub(crate) fail_next_sync: AtomicBool,
    /// The committer panics in the middle of its next group.
    pub(crate) panic_next_commit: AtomicBool,
}

/// An open store: one LMDB environment with the events log, the stream heads and the other
/// databases of VarveDB.
///
/// `Storage` is cheap to clone (an `Arc`), `Send` and `Sync`. Opening the same directory again in
/// one process returns a handle to the same environment, as LMDB requires. The store closes when
/// its last handle (including those inside writers and readers) is dropped; what was committed
/// is flushed then. [`close`](Self::close) does the same and reports a failed flush.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

/// A handle that does not keep the store open: what the committer holds between groups.
#[derive(Clone)]
pub(crate) struct WeakStorage(Weak<Inner>);

impl WeakStorage {
    /// A handle, while the store is open.
    pub(crate) fn upgrade(&self) -> Option<Storage> {
        self.0.upgrade().map(|inner| Storage { inner })
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.inner.path)
            .field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// The configuration the store was opened with, its path made canonical.
    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    /// The store's directory (canonical).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What opening the store found worth a warning, such as a directory or data file other
    /// local users can read. The `varvedb` tool prints them.
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    /// A receiver of the last committed global sequence: it starts at the current head (not at
    /// 0) and changes after each group commit, once the commit's appends are acknowledged. A
    /// subscriber that falls behind misses nothing: the value is the newest head, and the
    /// events up to it are read from the store. Appends of other processes sharing the store
    /// are noticed by polling, every `StorageConfig::bus_poll_ms` (100 ms by default).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.start_bus_poller();
        self.inner.bus.subscribe()
    }

    /// Starts, once, the thread that publishes appends of other processes.
    fn start_bus_poller(&self) {
        let every = self.inner.config.bus_poll_ms;
        if every == 0 || self.inner.bus_poller.set(()).is_err() {
            return;
        }
        let store = self.downgrade();
        // If the thread cannot start, subscribers still see this process's appends.
        drop(
            std::thread::Builder::new()
                .name("varvedb-bus".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_millis(every));
                        let Some(storage) = store.upgrade() else {
                            return;
                        };
                        // Only this thread's own short snapshot; errors wait for the next turn.
                        if let Ok(txn) = storage.read_txn()
                            && let Ok(head) = last_seq(&storage.inner.dbs, txn.raw())
                        {
                            drop(txn);
                            storage.publish(head);
                        }
                    }
                }),
        );
    }

    /// Publishes a new head to subscribers (only ever forward).
    pub(crate) fn publish(&self, seq: u64) {
        self.inner.bus.send_if_modified(|head| {
            if seq > *head {
                *head = seq;
                true
            } else {
                false
            }
        });
    }

    /// Whether the store is encrypted: it has a master-key check (written by the first open
    /// with a master key), so every new stream is encrypted, and a handle without the master
    /// key cannot create one ([`Error::MasterKeyRequired`]). Encryption is the store's, not
    /// the handle's. A store whose snapshot cannot be read answers as its handle was opened.
    pub fn is_encrypted(&self) -> bool {
        self.read_txn()
            .and_then(|txn| crypto::Crypto::key_check(&self.inner.dbs.meta, txn.raw()))
            .map_or(self.inner.crypto.has_master_key(), |check| check.is_some())
    }

    pub(crate) fn crypto(&self) -> &crypto::Crypto {
        &self.inner.crypto
    }

    pub(crate) fn env(&self) -> &Env<WithoutTls> {
        &self.inner.env
    }

    /// Whether the consumer `name` is a projection with a read model (one this process
    /// opened, or found at open).
    pub(crate) fn has_projection(&self, name: &str) -> bool {
        lock(&self.inner.projections).contains_key(name)
    }

    /// The read-model database of the projection `name` (`projection/<name>`), created if
    /// missing. Under the write lock: no other write transaction, and no resize, meanwhile.
    pub(crate) fn projection_db(&self, name: &str) -> Result<Raw> {
        if let Some(db) = lock(&self.inner.projections).get(name) {
            return Ok(*db);
        }
        let _w = lock(&self.inner.write_lock);
        self.check_writable()?;
        let db_name = format!("{}{name}", env::PROJECTION_PREFIX);
        let wtxn = self.inner.env.write_txn().lmdb()?;
        let created = self
            .inner
            .env
            .create_databases_and_commit(wtxn, |opener, wtxn| {
                opener
                    .create_database::<Bytes, Bytes>(wtxn, Some(&db_name))
                    .map(heed::CommitOrAbort::<_, std::convert::Infallible>::Commit)
            })
            .lmdb()?;
        let heed::CommitOrAbort::Commit(db) = created;
        lock(&self.inner.projections).insert(name.to_string(), db);
        Ok(db)
    }

    /// The value under `key` in the read model of the projection `name`, in `txn`'s snapshot;
    /// `None` also when the projection has no model yet. A model created after `txn` began
    /// (its projection's first run in this process) is read from the next snapshot on.
    pub fn projection_get<'t>(
        &self,
        txn: &'t ReadTxn,
        name: &str,
        key: &[u8],
    ) -> Result<Option<&'t [u8]>> {
        self.check_txn(txn)?;
        let Some(db) = lock(&self.inner.projections).get(name).copied() else {
            return Ok(None);
        };
        match db.get(txn.raw(), key) {
            // EINVAL: the handle is newer than this snapshot, which cannot see the model.
            Err(heed::Error::Io(e)) if e.raw_os_error() == Some(22) => Ok(None),
            other => other.lmdb(),
        }
    }

    /// The sequence of the event appended with `id`, if there is one (from a snapshot of its
    /// own).
    pub fn seq_of_event_id(&self, id: crate::EventId) -> Result<Option<u64>> {
        let txn = self.read_txn()?;
        event_id_seq(&self.inner.dbs, txn.raw(), id.as_u128())
    }

    /// The last committed global sequence number (0 for an empty store).
    pub fn last_seq(&self, txn: &ReadTxn) -> Result<u64> {
        self.check_txn(txn)?;
        last_seq(&self.inner.dbs, txn.raw())
    }

    /// The current version of a stream: the version of its last event, 0 if it has none.
    pub fn stream_version(&self, txn: &ReadTxn, stream_id: u128) -> Result<u32> {
        self.check_txn(txn)?;
        Ok(stream_head(&self.inner.dbs, txn.raw(), stream_id)?.map_or(0, |(v, _)| v))
    }

    /// Checks the whole store in one snapshot and reports every inconsistency it finds: each
    /// record's checksum and key, that the log is gap-free, that every stream's chain links
    /// each version to the previous one and to its jump target, that the stream heads match
    /// the log, that every referenced blob exists and hashes (BLAKE3) to its address, that the
    /// reference counts are right, and that no blob is orphaned. It also checks what it can of
    /// LMDB's own structure: that the data file holds every page the last commit uses, and that
    /// each database's page and entry counts agree with what the walk found.
    ///
    /// Damage is reported in the [`VerifyReport`], never as an error; `Err` means the check
    /// itself could not run (an LMDB failure). The snapshot stays open for the whole check, so
    /// on a large store, concurrent appends that need to grow the map wait for it
    /// (`resize_wait_ms_max`).
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with_progress(|_| {})
    }

    /// [`verify`](Self::verify), calling `progress` at the start and end of each pass and
    /// every 16,384 entries in between.
    pub fn verify_with_progress(
        &self,
        mut progress: impl FnMut(&VerifyProgress),
    ) -> Result<VerifyReport> {
        let span = tracing::info_span!(
            "varvedb.verify",
            path = %self.inner.path.display(),
            problems = tracing::field::Empty
        );
        let _entered = span.enter();
        let txn = self.read_txn()?;
        let info = self.inner.env.info();
        let file_bytes = self.inner.env.real_disk_size().lmdb()?;
        verify::run(
            &self.inner.dbs,
            txn.raw(),
            verify::Layout {
                inline_max: self.inline_record_max(),
                page_size: self.inner.dbs.page_size,
                last_page: info.last_page_number as u64,
                file_bytes,
            },
            &mut progress,
        )
        .inspect(|report| {
            span.record("problems", report.problems.len());
        })
    }

    /// The number of read transactions open in this process.
    pub fn open_read_txns(&self) -> usize {
        self.inner.gate.readers()
    }

    pub(crate) fn dbs(&self) -> &Dbs {
        &self.inner.dbs
    }

    /// The longest record that stays in its leaf page under an 8-byte key.
    pub(crate) fn inline_record_max(&self) -> usize {
        inline_record_max(self.inner.dbs.page_size)
    }

    pub(crate) fn check_txn(&self, txn: &ReadTxn) -> Result<()> {
        if txn.storage_id() == Arc::as_ptr(&self.inner) as usize {
            Ok(())
        } else {
            Err(Error::ForeignTransaction)
        }
    }

    /// The failures a unit test injects.
    #[cfg(test)]
    pub(crate) fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// A handle that does not keep the store open.
    pub(crate) fn downgrade(&self) -> WeakStorage {
        WeakStorage(Arc::downgrade(&self.inner))
    }

    /// The service attached to this store, attaching the one `init` makes if there is none.
    pub(crate) fn attached(&self, init: impl FnOnce() -> Arc<dyn Attached>) -> &dyn Attached {
        self.inner.attached.get_or_init(init).as_ref()
    }
}

/// The entries of an LMDB cursor, or the error opening it gave. An LMDB error is yielded once
/// and ends the walk: a failed cursor cannot be advanced.
pub(crate) fn walk<'t, I>(opened: Result<I>) -> impl Iterator<Item = Result<(&'t [u8], &'t [u8])>>
where
    I: Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>>,
{
    let (cursor, failed) = match opened {
        Ok(c) => (Some(c), None),
        Err(e) => (None, Some(e)),
    };
    let mut done = false;
    failed
        .map(Err)
        .into_iter()
        .chain(cursor.into_iter().flatten().map_while(move |entry| {
            if done {
                return None;
            }
            done = entry.is_err();
            Some(entry.map_err(Error::lmdb))
        }))
}

/// The events log from `from_seq` on, as `(seq, record)` (`check` is the caller's check of the
/// snapshot, reported first if it failed). Each record's own checksum is left to the caller.
/// A malformed key or pack is an error and the walk goes on; an LMDB error ends it.
pub(crate) fn log_from<'t>(
    check: Result<()>,
    dbs: &Dbs,
    txn: &'t RoTxn<'static, WithoutTls>,
    from_seq: u64,
) -> impl Iterator<Item = Result<(u64, &'t [u8])>> + use<'t> {
    pack::LogIter::open(check, dbs, txn, from_seq, false)
        .map(|entry| entry.map(|e| (e.seq, e.record)))
}

pub(crate) fn last_seq(dbs: &Dbs, txn: &RoTxn<'_>) -> Result<u64> {
    match dbs.events.last(txn).lmdb()? {
        None => Ok(0),
        Some((key, _)) => keys::decode_seq_key(key)
            .ok_or_else(|| Error::corrupt(0, "the last key of the events log is malformed")),
    }
}

/// The sequence the `event_ids` index gives for `id`.
pub(crate) fn event_id_seq(dbs: &Dbs, txn: &RoTxn<'_>, id: u128) -> Result<Option<u64>> {
    match dbs.event_ids.get(txn, &id.to_be_bytes()).lmdb()? {
        None => Ok(None),
        Some(v) => <[u8; 8]>::try_from(v)
            .map(|b| Some(u64::from_le_bytes(b)))
            .map_err(|_| Error::CorruptIndex {
                stream_id: 0,
                version: 0,
                reason: format!(
                    "the event-id index entry of {} is {} bytes, expected 8",
                    crate::EventId::from_u128(id),
                    v.len()
                ),
            }),
    }
}

pub(crate) fn stream_head(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    stream_id: u128,
) -> Result<Option<(u32, u64)>> {
    match dbs.heads.get(txn, &keys::head_key(stream_id)).lmdb()? {
        None => Ok(None),
        Some(v) => keys::decode_head_value(v)
            .map(Some)
            .ok_or_else(|| Error::CorruptIndex {
                stream_id,
                version: 0,
                reason: format!(
                    "stream head of {} bytes, expected {}",
                    v.len(),
                    keys::HEAD_VALUE_LEN
                ),
            }),
    }
}

/// Finds the record with sequence `seq`: one positioned lookup for its pack, then the pack's
/// offset table. Returns the record's bytes, its own checksum not yet checked.
pub(crate) fn get_record<'t>(dbs: &Dbs, txn: &'t RoTxn<'_>, seq: u64) -> Result<Option<&'t [u8]>> {
    match pack::get_pack(dbs, txn, seq)? {
        None => Ok(None),
        Some(pack) => pack.record(seq).map(Some),
    }
}
