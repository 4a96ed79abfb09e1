//! The LMDB environment, its databases, read transactions and the write loop.
//!
//! This layer knows records and keys, never typed events.

pub(crate) mod blob;
pub(crate) mod chain;
mod gate;
pub(crate) mod keys;
pub(crate) mod record;
mod verify;

use std::collections::BTreeMap;
use std::fmt;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use heed::types::{Bytes, Str};
use heed::{
    CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, MdbError, RoTxn, RwTxn, WithoutTls,
};

use crate::config::{StorageConfig, round_map_bytes};
use crate::error::{Error, Result};
use crate::writer::queue::{CommitQueue, Committer};
use gate::Gate;
pub use verify::{Problem, VERIFY_PROBLEMS_MAX, VerifyPhase, VerifyProgress, VerifyReport};

/// The on-disk format this build reads and writes (the `format_version` meta record).
pub const FORMAT_VERSION: u32 = 2;
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
}

type Raw = Database<'static, Bytes, Bytes>;

/// The databases of one environment.
#[derive(Clone, Copy)]
pub(crate) struct Dbs {
    /// `u64 BE seq` (or `seq ‖ 0u64` for overflow records) → record.
    pub(crate) events: Raw,
    /// `u128 BE stream` → `[u32 version][u32 0][u64 last seq]` LE: where each stream's chain
    /// starts (see [`chain`]).
    pub(crate) heads: Raw,
    /// BLAKE3 hash (32 bytes, or 40 with eight zero bytes for a blob kept in its leaf page) →
    /// payload, zero-padded to 16: the content-addressed blob store (see [`blob`]).
    pub(crate) blobs: Raw,
    /// BLAKE3 hash → `[u64 references][u64 payload length]` LE: how many records hold each blob.
    pub(crate) blob_refs: Raw,
    /// Consumer name → position (used by processors).
    #[expect(
        dead_code,
        reason = "created now so that the format is stable; used by processors"
    )]
    pub(crate) cursors: Raw,
    /// Stream → wrapped data key (used by encryption).
    #[expect(
        dead_code,
        reason = "created now so that the format is stable; used by encryption"
    )]
    pub(crate) keystore: Raw,
    /// `format_version` and other store-wide records.
    #[expect(
        dead_code,
        reason = "read and written at open through its own handle; kept for later migrations"
    )]
    pub(crate) meta: Database<'static, Str, Bytes>,
    /// The environment's page size, which decides where LMDB puts a value (leaf or overflow).
    pub(crate) page_size: usize,
}

/// Every open environment of this process by canonical path: LMDB allows one per path.
static REGISTRY: Mutex<BTreeMap<PathBuf, Weak<Inner>>> = Mutex::new(BTreeMap::new());
/// Serializes `Storage::open` so that two threads opening one path share one environment.
static OPEN_LOCK: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutex here guards state that is consistent between statements (a map of weak
    // pointers, a unit, an optional reason), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct Inner {
    /// Stops (and joins) the committer thread first when the store closes.
    committer: Committer,
    /// Dropped by hand in `Drop`, under the registry lock.
    env: ManuallyDrop<Env<WithoutTls>>,
    dbs: Dbs,
    config: StorageConfig,
    path: PathBuf,
    page_size: usize,
    gate: Gate,
    /// Held by the one writer; resizes happen under it too.
    write_lock: Mutex<()>,
    poisoned: Mutex<Option<String>>,
    /// Write transactions committed since the environment was opened in this process.
    commits: AtomicU64,
    /// Explicit flushes (`force_sync`) since the environment was opened in this process.
    flushes: AtomicU64,
}

impl Drop for Inner {
    #[allow(unsafe_code, reason = "closes the environment under the registry lock")]
    fn drop(&mut self) {
        // The committer holds no handle to the store while idle; stop it before the env closes.
        drop(std::mem::take(&mut self.committer));
        let mut registry = lock(&REGISTRY);
        if registry
            .get(&self.path)
            .is_some_and(|w| w.strong_count() == 0)
        {
            registry.remove(&self.path);
        }
        // SAFETY: `env` is never used after this point; `drop` runs once. Closing under the
        // registry lock keeps a concurrent `open` of this path from seeing a half-closed env.
        unsafe { ManuallyDrop::drop(&mut self.env) };
    }
}

/// An open store: one LMDB environment with the events log, the stream heads and the other
/// databases of VarveDB.
///
/// `Storage` is cheap to clone (an `Arc`), `Send` and `Sync`. Opening the same directory again in
/// one process returns a handle to the same environment, as LMDB requires.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Counts describing a store, from [`Storage::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Events in the log.
    pub events: u64,
    /// Streams with at least one event.
    pub streams: u64,
    /// The last committed global sequence (0 when empty).
    pub last_seq: u64,
    /// Bytes of LMDB pages holding the events log.
    pub log_bytes: u64,
    /// Bytes of LMDB pages holding the stream heads (the only per-stream index: events find
    /// each other through the stream chain).
    pub index_bytes: u64,
    /// Distinct payloads in the blob store (payloads over `blob_threshold_bytes`; identical
    /// payloads are stored once).
    pub blobs: u64,
    /// References to blobs: the events whose payload is in the blob store. Summed over the
    /// reference counts, so `stats` walks them: one entry per distinct blob.
    pub blob_references: u64,
    /// Bytes of LMDB pages holding the blob store (blobs and their reference counts).
    pub blob_bytes: u64,
    /// Bytes of the data file on disk.
    pub file_bytes: u64,
    /// The current size of the memory map.
    pub map_bytes: usize,
    /// Write transactions (each one flush) committed since the store was opened in this
    /// process. With group commit, many concurrent appends share one.
    pub commits: u64,
    /// Flushes issued on their own, outside a commit, since the store was opened in this
    /// process: with `Durability::Sync`, when no later commit flushed an acknowledged one.
    pub flushes: u64,
}

/// A read-only snapshot of the store.
///
/// Everything a [`Reader`](crate::Reader) returns borrows from it; the snapshot does not change
/// while it is open. Keep it short-lived: while a `ReadTxn` is open, LMDB cannot reuse pages
/// freed after it began, and the map cannot grow (an append that needs to grow it waits up to
/// `StorageConfig::resize_wait_ms_max`).
pub struct ReadTxn {
    // Field order matters: the LMDB transaction ends before the gate is left.
    txn: RoTxn<'static, WithoutTls>,
    guard: ReaderGuard,
}

struct ReaderGuard {
    inner: Arc<Inner>,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.inner.gate.leave();
    }
}

impl fmt::Debug for ReadTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadTxn")
            .field("id", &self.txn.id())
            .finish()
    }
}

impl ReadTxn {
    pub(crate) fn raw(&self) -> &RoTxn<'static, WithoutTls> {
        &self.txn
    }

    pub(crate) fn storage_id(&self) -> usize {
        Arc::as_ptr(&self.guard.inner) as usize
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Storage {
    /// Opens the store at `config.path`, creating the directory and the store if missing.
    ///
    /// A store written in an unknown format is refused with [`Error::UnsupportedFormat`] and left
    /// untouched. Opening a path that is already open in this process returns the same
    /// environment if the configuration is equal, and [`Error::ConfigMismatch`] otherwise.
    pub fn open(config: StorageConfig) -> Result<Storage> {
        config.validate()?;
        std::fs::create_dir_all(&config.path).map_err(io_err(&config.path))?;
        let path = std::fs::canonicalize(&config.path).map_err(io_err(&config.path))?;
        // Compare and keep configurations by the canonical path, so that two spellings of one
        // directory are one store.
        let config = StorageConfig {
            path: path.clone(),
            ..config
        };

        let _open = lock(&OPEN_LOCK);
        let existing = lock(&REGISTRY).get(&path).and_then(Weak::upgrade);
        if let Some(inner) = existing {
            return if inner.config == config {
                Ok(Storage { inner })
            } else {
                Err(Error::ConfigMismatch { path })
            };
        }
        let (env, dbs, page_size) = open_env(&config, &path)?;
        let inner = Arc::new(Inner {
            committer: Committer::default(),
            env: ManuallyDrop::new(env),
            dbs,
            config,
            path: path.clone(),
            page_size,
            gate: Gate::default(),
            write_lock: Mutex::new(()),
            poisoned: Mutex::new(None),
            commits: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        });
        inner
            .committer
            .start(Arc::downgrade(&inner), inner.config.batch_events_max)?;
        lock(&REGISTRY).insert(path, Arc::downgrade(&inner));
        Ok(Storage { inner })
    }

    /// The configuration the store was opened with, its path made canonical.
    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    /// The store's directory (canonical).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Begins a read-only snapshot.
    pub fn read_txn(&self) -> Result<ReadTxn> {
        // A moment with no reader of this thread: the best time to grow the map early.
        if let Ok(w) = self.inner.write_lock.try_lock() {
            self.grow_early(&w);
        }
        for _ in 0..2 {
            self.inner.gate.enter();
            let guard = ReaderGuard {
                inner: Arc::clone(&self.inner),
            };
            match (*self.inner.env).clone().static_read_txn() {
                Ok(txn) => return Ok(ReadTxn { txn, guard }),
                Err(heed::Error::Mdb(MdbError::MapResized)) => {
                    drop(guard);
                    // Another process grew the map: adopt its size, then try again.
                    let w = lock(&self.inner.write_lock);
                    self.resize_locked(&w, 0)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Lmdb(heed::Error::Mdb(MdbError::MapResized)))
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

    /// Event, stream and byte counts.
    pub fn stats(&self) -> Result<Stats> {
        let txn = self.read_txn()?;
        let dbs = &self.inner.dbs;
        let pages = |db: &Raw| -> Result<u64> {
            let s = db.stat(txn.raw())?;
            Ok((s.branch_pages + s.leaf_pages + s.overflow_pages) as u64 * u64::from(s.page_size))
        };
        let (blobs, blob_references) = blob_counts(dbs, txn.raw())?;
        Ok(Stats {
            events: dbs.events.len(txn.raw())?,
            streams: dbs.heads.len(txn.raw())?,
            last_seq: last_seq(dbs, txn.raw())?,
            log_bytes: pages(&dbs.events)?,
            index_bytes: pages(&dbs.heads)?,
            blobs,
            blob_references,
            blob_bytes: pages(&dbs.blobs)? + pages(&dbs.blob_refs)?,
            file_bytes: self.inner.env.real_disk_size()?,
            map_bytes: self.inner.env.info().map_size,
            commits: self.inner.commits.load(Ordering::Relaxed),
            flushes: self.inner.flushes.load(Ordering::Relaxed),
        })
    }

    /// Checks the whole store in one snapshot and reports every inconsistency it finds: each
    /// record's checksum and key, that the log is gap-free, that every stream's chain links
    /// each version to the previous one and to its jump target, that the stream heads match
    /// the log, that every referenced blob exists and hashes (BLAKE3) to its address, that the
    /// reference counts are right, and that no blob is orphaned.
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
        let txn = self.read_txn()?;
        verify::run(
            &self.inner.dbs,
            txn.raw(),
            self.inline_record_max(),
            &mut progress,
        )
    }

    pub(crate) fn dbs(&self) -> &Dbs {
        &self.inner.dbs
    }

    /// The longest record that stays in its leaf page under an 8-byte key.
    pub(crate) fn inline_record_max(&self) -> usize {
        inline_record_max(self.inner.page_size)
    }

    pub(crate) fn check_txn(&self, txn: &ReadTxn) -> Result<()> {
        if txn.storage_id() == Arc::as_ptr(&self.inner) as usize {
            Ok(())
        } else {
            Err(Error::ForeignTransaction)
        }
    }

    /// Runs `f` in a write transaction and commits it durably (per `Durability`).
    ///
    /// `f` may run more than once: when the map is full, the transaction is aborted, the map
    /// grows (up to `map_bytes_max`) and `f` runs again on a fresh transaction. A failed commit
    /// other than a full map poisons the store: LMDB may have flushed part of it, so later
    /// writes are refused until the store is reopened.
    pub(crate) fn write<T>(
        &self,
        mut f: impl FnMut(&mut RwTxn<'_>, &Dbs) -> Result<T>,
    ) -> Result<T> {
        let w = lock(&self.inner.write_lock);
        if let Some(reason) = lock(&self.inner.poisoned).clone() {
            return Err(Error::Poisoned { reason });
        }
        loop {
            let mut wtxn = match self.inner.env.write_txn() {
                Ok(t) => t,
                Err(heed::Error::Mdb(MdbError::MapResized)) => {
                    self.resize_locked(&w, 0)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let value = match f(&mut wtxn, &self.inner.dbs) {
                Ok(v) => v,
                Err(e) if e.is_map_full() => {
                    drop(wtxn);
                    self.grow(&w)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match wtxn.commit() {
                Ok(()) => {
                    self.inner.commits.fetch_add(1, Ordering::Relaxed);
                    self.grow_early(&w);
                    return Ok(value);
                }
                Err(heed::Error::Mdb(MdbError::MapFull)) => self.grow(&w)?,
                Err(e) => {
                    *lock(&self.inner.poisoned) = Some(e.to_string());
                    return Err(e.into());
                }
            }
        }
    }

    /// Doubles the map, without waiting, when the data file uses more than half of it and no
    /// reader is open. Growing early means the map rarely fills while a reader is open, the one
    /// case where growth must wait (for example a thread that appends while it holds a
    /// snapshot).
    #[allow(
        unsafe_code,
        reason = "heed's resize is unsafe: no transaction may be active"
    )]
    fn grow_early(&self, _w: &MutexGuard<'_, ()>) {
        let info = self.inner.env.info();
        let used = (info.last_page_number + 1).saturating_mul(self.inner.page_size);
        let max = round_map_bytes(self.inner.config.map_bytes_max);
        if used.saturating_mul(2) < info.map_size || info.map_size >= max {
            return;
        }
        let target = round_map_bytes(info.map_size.saturating_mul(2)).min(max);
        // A failed early resize is not an error: the append path grows (and reports) on demand.
        let _ = self.inner.gate.try_exclusive(|| {
            // SAFETY: heed requires that no transaction of this process is active. No reader is
            // inside the gate (checked under its lock, and new ones are held back), and write
            // transactions only exist under the write lock, which the caller holds (`w`) with
            // no transaction open.
            unsafe { self.inner.env.resize(target) }
        });
    }

    fn grow(&self, w: &MutexGuard<'_, ()>) -> Result<()> {
        let max = round_map_bytes(self.inner.config.map_bytes_max);
        let current = self.inner.env.info().map_size;
        if current >= max {
            return Err(Error::StoreFull {
                map_bytes_max: self.inner.config.map_bytes_max,
            });
        }
        let target = round_map_bytes(current.saturating_mul(2)).min(max);
        self.resize_locked(w, target)
    }

    /// Resizes the map (0: adopt the size another process set). Requires the write lock.
    #[allow(
        unsafe_code,
        reason = "heed's resize is unsafe: no transaction may be active"
    )]
    fn resize_locked(&self, _w: &MutexGuard<'_, ()>, bytes: usize) -> Result<()> {
        let wait = Duration::from_millis(self.inner.config.resize_wait_ms_max);
        self.inner.gate.exclusive(wait, || {
            // SAFETY: heed requires that no transaction of this process is active. Readers are
            // all outside the gate (it waited for them and holds new ones back), and write
            // transactions only exist under the write lock, which this thread holds and whose
            // transaction it has dropped.
            unsafe { self.inner.env.resize(bytes) }.map_err(Error::from)
        })
    }

    /// Why the store refuses writes, if it does.
    pub(crate) fn poisoned(&self) -> Option<String> {
        lock(&self.inner.poisoned).clone()
    }

    /// Whether commits leave their meta page unflushed for the next flush (`Durability::Sync`,
    /// which runs LMDB with `MDB_NOMETASYNC`; see the committer).
    pub(crate) fn defers_meta_flush(&self) -> bool {
        self.inner.config.durability == crate::config::Durability::Sync
    }

    /// Flushes the data file, making every commit so far durable. A failure poisons the store.
    pub(crate) fn flush(&self) -> Result<()> {
        let _w = lock(&self.inner.write_lock);
        self.inner.flushes.fetch_add(1, Ordering::Relaxed);
        self.inner.env.force_sync().map_err(|e| {
            *lock(&self.inner.poisoned) = Some(e.to_string());
            Error::from(e)
        })
    }

    /// The store's commit queue (group commit).
    pub(crate) fn commit_queue(&self) -> &CommitQueue {
        self.inner.committer.queue()
    }

    /// A handle from the committer's weak reference, while the store is open.
    pub(crate) fn from_weak(inner: &Weak<Inner>) -> Option<Storage> {
        inner.upgrade().map(|inner| Storage { inner })
    }

    /// The number of read transactions open in this process.
    pub fn open_read_txns(&self) -> usize {
        self.inner.gate.readers()
    }
}

pub(crate) fn last_seq(dbs: &Dbs, txn: &RoTxn<'_>) -> Result<u64> {
    match dbs.events.last(txn)? {
        None => Ok(0),
        Some((key, _)) => keys::decode_seq_key(key)
            .ok_or_else(|| Error::corrupt(0, "the last key of the events log is malformed")),
    }
}

pub(crate) fn stream_head(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    stream_id: u128,
) -> Result<Option<(u32, u64)>> {
    match dbs.heads.get(txn, &keys::head_key(stream_id))? {
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

/// Finds the record with sequence `seq`, under either key length. Returns the raw value.
///
/// Two exact lookups rather than one range lookup: `mdb_get` uses a cursor on the stack, while a
/// range lookup opens (and mallocs) a cursor per call. Inline records, the common case, are found
/// by the first lookup.
pub(crate) fn get_record<'t>(dbs: &Dbs, txn: &'t RoTxn<'_>, seq: u64) -> Result<Option<&'t [u8]>> {
    if let Some(value) = dbs.events.get(txn, &keys::seq_key(seq))? {
        return Ok(Some(value));
    }
    Ok(dbs.events.get(txn, &keys::seq_key_long(seq))?)
}

#[allow(
    unsafe_code,
    reason = "heed's open and flags are unsafe: one environment per path"
)]
/// Opens the environment and its databases; returns them with the page size.
fn open_env(config: &StorageConfig, path: &Path) -> Result<(Env<WithoutTls>, Dbs, usize)> {
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options
        .map_size(round_map_bytes(config.map_bytes_initial))
        .max_dbs(16)
        .max_readers(config.readers_max);
    match config.durability {
        crate::config::Durability::NoSync => {
            // SAFETY: NO_SYNC only drops the flush at commit; the user opted in and the risk
            // (losing the last commits on a machine crash, never consistency) is documented on
            // Durability.
            unsafe { options.flags(EnvFlags::NO_SYNC) };
        }
        crate::config::Durability::Sync => {
            // SAFETY: NO_META_SYNC keeps integrity (LMDB: "preserves the ACI properties") and only
            // defers the meta page to the next flush of the file. The committer acknowledges a
            // commit only after that next flush (the next commit's data flush, or
            // `force_sync`), so no acknowledged append depends on an unflushed page.
            unsafe { options.flags(EnvFlags::NO_META_SYNC) };
        }
    }
    let mut attempts = 0;
    let env = loop {
        // SAFETY: the registry and OPEN_LOCK ensure one environment per path in this process,
        // and VarveDB never modifies the files other than through LMDB.
        match unsafe { options.open(path) } {
            Ok(env) => break env,
            // A handle of this path is being closed by another thread right now.
            Err(heed::Error::EnvAlreadyOpened) if attempts < 500 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(heed::Error::Mdb(MdbError::Invalid | MdbError::VersionMismatch)) => {
                return Err(Error::InvalidStore {
                    path: path.into(),
                    reason: "the data file is not an LMDB environment".into(),
                });
            }
            Err(e) => return Err(e.into()),
        }
    };

    // Check the format before creating anything, so that an unknown store is left untouched.
    let rtxn = env.read_txn()?;
    let meta = env.open_databases_and_commit(rtxn, |opener, rtxn| -> Result<_> {
        let meta = opener.open_database::<Str, Bytes>(rtxn, Some(db_names::META))?;
        if let Some(meta) = meta {
            check_format(path, meta.get(rtxn, META_FORMAT_KEY)?)?;
        }
        Ok(CommitOrAbort::<_, std::convert::Infallible>::Commit(()))
    })?;
    let CommitOrAbort::Commit(()) = meta;

    let wtxn = env.write_txn()?;
    let created = env.create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_> {
        let events = opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::EVENTS))?;
        let heads = opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::STREAM_HEADS))?;
        let blobs = opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::BLOBS))?;
        let blob_refs = opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::BLOB_REFS))?;
        let cursors =
            opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::CONSUMER_CURSORS))?;
        let keystore = opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::KEYSTORE))?;
        let meta = opener.create_database::<Str, Bytes>(wtxn, Some(db_names::META))?;
        match meta.get(wtxn, META_FORMAT_KEY)? {
            Some(found) => check_format(path, Some(found))?,
            None if events.len(wtxn)? > 0 => {
                return Err(Error::InvalidStore {
                    path: path.into(),
                    reason: "events exist but the format record is missing".into(),
                });
            }
            None => meta.put(wtxn, META_FORMAT_KEY, &FORMAT_VERSION.to_le_bytes())?,
        }
        Ok(CommitOrAbort::<_, std::convert::Infallible>::Commit((
            events, heads, blobs, blob_refs, cursors, keystore, meta,
        )))
    })?;
    let CommitOrAbort::Commit((events, heads, blobs, blob_refs, cursors, keystore, meta)) = created;
    let page_size = {
        let rtxn = env.read_txn()?;
        events.stat(&rtxn)?.page_size as usize
    };
    let dbs = Dbs {
        events,
        heads,
        blobs,
        blob_refs,
        cursors,
        keystore,
        meta,
        page_size,
    };
    Ok((env, dbs, page_size))
}

fn check_format(path: &Path, found: Option<&[u8]>) -> Result<()> {
    let Some(bytes) = found else { return Ok(()) };
    let found = <[u8; 4]>::try_from(bytes)
        .map(u32::from_le_bytes)
        .map_err(|_| Error::InvalidStore {
            path: path.into(),
            reason: format!("the format record is {} bytes, expected 4", bytes.len()),
        })?;
    if found == FORMAT_VERSION {
        Ok(())
    } else {
        Err(Error::UnsupportedFormat {
            path: path.into(),
            found,
            supported: FORMAT_VERSION,
        })
    }
}

/// The longest record (a multiple of 16) that LMDB keeps in its leaf page under an 8-byte key.
///
/// LMDB moves a value to overflow pages when `8 (node header) + key + value > nodemax`, with
/// `nodemax = (((page_size - 16) / 2) & !1) - 2` (mdb.c, `me_nodemax`).
pub(crate) fn inline_record_max(page_size: usize) -> usize {
    (node_max(page_size) - 8 - keys::SEQ_KEY_LEN) / record::RECORD_ALIGN * record::RECORD_ALIGN
}

/// The longest leaf node LMDB builds before it moves the value to overflow pages (mdb.c,
/// `me_nodemax`): a node is an 8-byte header, the key and the value.
pub(crate) fn node_max(page_size: usize) -> usize {
    (((page_size - 16) / 2) & !1) - 2
}

/// `(distinct blobs, references to them)`, summed over the reference counts.
fn blob_counts(dbs: &Dbs, txn: &RoTxn<'_>) -> Result<(u64, u64)> {
    let mut blobs = 0;
    let mut references = 0u64;
    for entry in dbs.blob_refs.iter(txn)? {
        let (_, value) = entry?;
        blobs += 1;
        references += blob::decode_refs(value).map_or(0, |(n, _)| n);
    }
    Ok((blobs, references))
}

#[cfg(test)]
mod tests {
    #[test]
    fn inline_limit_for_4k_pages() {
        // nodemax 2038 → 2038 - 16 = 2022 → 2016.
        assert_eq!(super::inline_record_max(4096), 2016);
    }
}
