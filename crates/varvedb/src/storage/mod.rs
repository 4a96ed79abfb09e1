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
mod groups;
mod health;
mod keys;
mod lmdb;
mod log;
mod pack;
mod pages;
#[cfg(feature = "__internals")]
mod probe;
mod record;
mod registry;
mod removal;
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

pub(crate) use chain::jump_version;
pub use consumers::{Consumer, ParkedEvent};
pub(crate) use env::{inline_record_max, node_max};
pub use groups::{
    ConsumerGroup, GROUP_LEASE_MS_DEFAULT, GROUP_PARTITIONS_DEFAULT, GROUP_PARTITIONS_MAX,
    GroupMember, GroupPartition, partition_of,
};
pub(crate) use groups::{
    GroupConfig, Held, checkpoint_in as group_checkpoint_in, consumer_group_in, consumer_groups_in,
    delete as groups_delete, export_groups, import_group, reset as groups_reset,
};
pub(crate) use removal::{
    Bounds as StreamBounds, adopt_removal, bounds as stream_bounds, note_removed,
    put_bounds as put_stream_bounds, set_removal_meta, stream_removals,
};
pub use removal::{RemovalReport, RetentionPolicy, RetentionReport, StreamRemoval};
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
pub(crate) use chain::{
    BackWalk, Found, Spine, find as find_version, locate as locate_versions, version_at,
};
pub(crate) use consumers::{
    check_name as check_consumer_name, park, parked_of, position as consumer_position,
    set_position as set_consumer_position,
};
pub(crate) use crypto::{
    Cipher, Crypto, EventKey, Place as SealPlace, StoreKeys, StreamKey, TOMBSTONE, Txn,
    bump_generation, is_shredded, is_tombstone, seal_bound,
};
pub use envelope::Tags;
pub(crate) use envelope::{ENVELOPE_BYTES_MAX, Fields, Section, pairs, split as split_envelope};
pub(crate) use health::WRITES_REFUSED;
pub(crate) use keys::decode_head_value;
pub(crate) use lmdb::LmdbResultExt;
pub(crate) use log::{LogWriter, NewRecord, Seal, Stored, put_head};
pub(crate) use pack::LogIter;
pub use pages::PageCheck;
/// The operations behind the public methods of [`Storage`] (`crate::store`), one function each.
pub(crate) mod ops {
    pub(crate) use super::consumers::{
        consumer_position, consumers, delete_consumer, parked_events, request_parked_replay,
        reset_consumer,
    };
    pub(crate) use super::health::{is_poisoned, poison_reason};
    pub(crate) use super::registry::{close, open, open_after_flush_failure, open_existing};
    pub(crate) use super::removal::{
        Removal, default_retention, enforce_retention, remove_stream, retention_policies,
        set_default_retention, set_stream_retention, stream_retention,
    };
    pub(crate) use super::seq_at_time;
    pub(crate) use super::shred::{compact_to, is_shredded, rotate_master_key, shred_stream};
    pub(crate) use super::stats::{metrics_text, stats};
    pub(crate) use super::txn::{flush, read_txn};
    pub(crate) use super::{
        config, is_encrypted, last_seq_of, open_read_txns, path, projection_get, reader_slots,
        seq_of_event_id, stream_version, subscribe, verify, verify_with_progress, warnings,
    };
}

/// Probes of the formats, for the benchmarks, the fuzz targets and the tests.
#[cfg(feature = "__internals")]
pub(crate) mod probes {
    pub(crate) use super::probe::*;
}
pub(crate) use record::{
    FLAG_BLOB, FLAG_BOUND, FLAG_ENCRYPTED, FLAG_ENVELOPE, HEADER_LEN, Links, RECORD_ALIGN,
    RECORD_FORMAT, REF_LEN, RecordHeader, end_draft, open as open_record, payload_digest,
    peek as peek_record, record_len, seal as seal_record, stored_checksum,
};
pub(crate) use tags::QueryIter;
pub use tags::{Query, QueryItem};
pub(crate) use types::{
    TypeKey, decode as decode_type_key, intern as intern_type, resolve as resolve_type,
};

/// The on-disk format this build writes (the `format_version` meta record). It reads this one
/// and upgrades the older ones of [`UPGRADES`] (see `docs/design.md`, "Format versions").
pub const FORMAT_VERSION: u32 = 5;

/// The formats this build upgrades, each with what its upgrade does: a step from each to the
/// next, all in one write transaction (the open's, which also creates the databases a newer
/// format has). A SIGKILL leaves the old store or the new one.
pub(crate) const UPGRADES: [(u32, &str); 1] = [(
    4,
    "format 4 to 5: adds the databases stream_bounds, retention and consumer_groups (empty), \
     then records format 5; in place, in one transaction",
)];
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
    pub(crate) const STREAM_BOUNDS: &str = "stream_bounds";
    pub(crate) const RETENTION: &str = "retention";
    pub(crate) const CONSUMER_GROUPS: &str = "consumer_groups";
    /// Every name above: an environment holding any other (but projections' read models) is
    /// not a VarveDB store.
    pub(crate) const ALL: [&str; 15] = [
        EVENTS,
        STREAM_HEADS,
        BLOBS,
        BLOB_REFS,
        CONSUMER_CURSORS,
        KEYSTORE,
        META,
        TYPES,
        TYPE_IDS,
        EVENT_IDS,
        PARKED,
        TAGS,
        STREAM_BOUNDS,
        RETENTION,
        CONSUMER_GROUPS,
    ];
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
    /// `u128 BE stream` → `[u32 first kept version][u32 flags]` LE: the streams whose first
    /// events were removed (truncated, deleted or tombstoned; see [`removal`]). No entry: none
    /// was.
    pub(crate) bounds: Raw,
    /// `u128 BE stream` (or `default`, the store's) → a retention policy (see [`removal`]).
    pub(crate) retention: Raw,
    /// Consumer groups: settings, members, leases and partition cursors (see [`groups`]).
    pub(crate) groups: Raw,
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
    /// Set once the thread that enforces retention policies has started.
    retention_task: OnceLock<()>,
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

    /// Starts, once, the thread that enforces the retention policies every
    /// `retention_interval_ms` (see [`removal`]). It holds the store weakly: it ends once the
    /// store is closed.
    pub(crate) fn start_retention_task(&self) {
        let every = self.inner.config.retention_interval_ms;
        if every == 0 || self.inner.retention_task.set(()).is_err() {
            return;
        }
        let store = self.downgrade();
        let spawned = std::thread::Builder::new()
            .name("varvedb-retention".into())
            .spawn(move || {
                let step = std::time::Duration::from_millis(every.min(200));
                let mut waited = 0u64;
                loop {
                    std::thread::sleep(step);
                    waited += step.as_millis() as u64;
                    let Some(storage) = store.upgrade() else {
                        return;
                    };
                    if waited < every {
                        continue;
                    }
                    waited = 0;
                    if let Err(e) = removal::enforce_retention(&storage) {
                        tracing::warn!(error = %e, "retention enforcement failed; it runs again next time");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "the retention thread could not start; call enforce_retention");
        }
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

/// See [`Storage::config`](crate::Storage::config).
/// Checks the data file of the store at `path` as LMDB would trust it, without opening it:
/// every branch and leaf page reachable from both meta pages, with node offsets and sizes
/// inside the page, child page numbers and overflow runs inside the file, and no page reached
/// twice. A damaged page is [`Error::DamagedPage`](crate::Error::DamagedPage) naming it. The
/// file is read with plain reads, never mapped, so no page of it can crash the caller. Its
/// cost is one read of every reachable page. `StorageConfig::check_pages_on_open` runs it
/// before an open.
///
/// A store that another process writes while it runs may change under the check; run it on
/// a store at rest (a copy, a backup, a file before its first open).
pub fn check_pages(path: impl AsRef<Path>) -> crate::Result<PageCheck> {
    let path = path.as_ref();
    pages::check_file(path, &path.join("data.mdb"))
}

pub(crate) fn config(storage: &Storage) -> &StorageConfig {
    &storage.inner.config
}

/// See [`Storage::path`](crate::Storage::path).
pub(crate) fn path(storage: &Storage) -> &Path {
    &storage.inner.path
}

/// See [`Storage::warnings`](crate::Storage::warnings).
pub(crate) fn warnings(storage: &Storage) -> &[String] {
    &storage.inner.warnings
}

/// See [`Storage::subscribe`](crate::Storage::subscribe).
pub(crate) fn subscribe(storage: &Storage) -> tokio::sync::watch::Receiver<u64> {
    storage.start_bus_poller();
    storage.inner.bus.subscribe()
}

/// See [`Storage::is_encrypted`](crate::Storage::is_encrypted).
pub(crate) fn is_encrypted(storage: &Storage) -> bool {
    storage
        .read_txn()
        .and_then(|txn| crypto::Crypto::key_check(&storage.inner.dbs.meta, txn.raw()))
        .map_or(storage.inner.crypto.has_master_key(), |check| {
            check.is_some()
        })
}

/// See [`Storage::projection_get`](crate::Storage::projection_get).
pub(crate) fn projection_get<'t>(
    storage: &Storage,
    txn: &'t ReadTxn,
    name: &str,
    key: &[u8],
) -> Result<Option<&'t [u8]>> {
    storage.check_txn(txn)?;
    let Some(db) = lock(&storage.inner.projections).get(name).copied() else {
        return Ok(None);
    };
    match db.get(txn.raw(), key) {
        // EINVAL: the handle is newer than this snapshot, which cannot see the model.
        Err(heed::Error::Io(e)) if e.raw_os_error() == Some(22) => Ok(None),
        other => other.lmdb(),
    }
}

/// See [`Storage::seq_of_event_id`](crate::Storage::seq_of_event_id).
pub(crate) fn seq_of_event_id(storage: &Storage, id: crate::EventId) -> Result<Option<u64>> {
    let txn = storage.read_txn()?;
    event_id_seq(&storage.inner.dbs, txn.raw(), id.as_u128())
}

/// See [`Storage::last_seq`](crate::Storage::last_seq).
pub(crate) fn last_seq_of(storage: &Storage, txn: &ReadTxn) -> Result<u64> {
    storage.check_txn(txn)?;
    last_seq(&storage.inner.dbs, txn.raw())
}

/// See [`Storage::stream_version`](crate::Storage::stream_version).
pub(crate) fn stream_version(storage: &Storage, txn: &ReadTxn, stream_id: u128) -> Result<u32> {
    storage.check_txn(txn)?;
    Ok(stream_head(&storage.inner.dbs, txn.raw(), stream_id)?.map_or(0, |(v, _)| v))
}

/// See [`Storage::verify`](crate::Storage::verify).
pub(crate) fn verify(storage: &Storage) -> Result<VerifyReport> {
    storage.verify_with_progress(|_| {})
}

/// See [`Storage::verify_with_progress`](crate::Storage::verify_with_progress).
pub(crate) fn verify_with_progress(
    storage: &Storage,
    mut progress: impl FnMut(&VerifyProgress),
) -> Result<VerifyReport> {
    let span = tracing::info_span!(
        "varvedb.verify",
        path = %storage.inner.path.display(),
        problems = tracing::field::Empty
    );
    let _entered = span.enter();
    let txn = storage.read_txn()?;
    let info = storage.inner.env.info();
    let file_bytes = storage.inner.env.real_disk_size().lmdb()?;
    let last_page = info.last_page_number as u64;
    let page_size = storage.inner.dbs.page_size;
    let short_file = (file_bytes < (last_page + 1).saturating_mul(page_size as u64)).then(|| {
        let path = &storage.inner.path;
        pages::check_file(path, &path.join("data.mdb"))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    verify::run(
        &storage.inner.dbs,
        txn.raw(),
        verify::Layout {
            inline_max: storage.inline_record_max(),
            page_size,
            last_page,
            file_bytes,
            short_file,
        },
        &mut progress,
    )
    .inspect(|report| {
        span.record("problems", report.problems.len());
    })
}

/// See [`Storage::open_read_txns`](crate::Storage::open_read_txns).
pub(crate) fn open_read_txns(storage: &Storage) -> usize {
    storage.inner.gate.readers()
}

pub(crate) fn reader_slots(storage: &Storage) -> u32 {
    storage.inner.env.info().number_of_readers
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
    let last_key = match dbs.events.last(txn).lmdb()? {
        None => 0,
        Some((key, _)) => keys::decode_seq_key(key)
            .ok_or_else(|| Error::corrupt(0, "the last key of the events log is malformed"))?,
    };
    // A removal that took the log's last records keeps its end here: sequences are never
    // given twice.
    Ok(last_key.max(removal::meta_u64(dbs, txn, removal::META_LOG_END)?))
}

/// See [`Storage::seq_at_time`](crate::Storage::seq_at_time).
pub(crate) fn seq_at_time(
    storage: &Storage,
    txn: &ReadTxn,
    time: std::time::SystemTime,
) -> Result<Option<u64>> {
    storage.check_txn(txn)?;
    let ns = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    removal::seq_at_time(&storage.inner.dbs, txn.raw(), ns)
}

/// The events removed from the log so far.
pub(crate) fn meta_removed(dbs: &Dbs, txn: &RoTxn<'_>) -> Result<u64> {
    removal::meta_u64(dbs, txn, removal::META_REMOVED)
}

/// The commit timestamp of the log's last record (0 for an empty log).
pub(crate) fn last_timestamp(dbs: &Dbs, txn: &RoTxn<'_>) -> Result<u64> {
    let Some((key, value)) = dbs.events.last(txn).lmdb()? else {
        return Ok(0);
    };
    let last = keys::decode_seq_key(key)
        .ok_or_else(|| Error::corrupt(0, "the last key of the events log is malformed"))?;
    let record = pack::Pack::parse(last, value)?.record(last)?;
    Ok(record::open(last, record)?.0.timestamp_ns)
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
