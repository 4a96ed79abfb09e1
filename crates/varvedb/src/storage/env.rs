//! The LMDB environment: opening it, the format check, and growing its memory map.
//!
//! Growth is the one dangerous operation of this layer. `mdb_env_set_mapsize` unmaps the old
//! map before it maps the new one, so if the new `mmap` fails, LMDB's meta pointers point into
//! unmapped memory. Any failed resize therefore marks the store unusable for reads as well as
//! writes ([`health::ALL_REFUSED`]) before anything can touch the environment again.

use std::path::Path;
use std::sync::MutexGuard;
use std::time::Duration;

use heed::types::{Bytes, Str};
use heed::{CommitOrAbort, Env, EnvFlags, EnvOpenOptions, MdbError, WithoutTls};

use super::gate::Blocked;
use super::lmdb::LmdbResultExt;
use super::{Dbs, FORMAT_VERSION, META_FORMAT_KEY, Storage, db_names, health, keys, record};
use crate::config::{Durability, StorageConfig, round_map_bytes};
use crate::error::{Error, Result};

/// The most named databases an environment holds: VarveDB's own fifteen, and the read models of
/// exactly-once projections (one each).
pub(crate) const DBS_MAX: u32 = 128;

/// Whether [`open`] may create a store.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Create {
    Yes,
    No,
}

/// Opens the environment and its databases.
#[allow(
    unsafe_code,
    reason = "heed's open and flags are unsafe: one environment per path"
)]
pub(super) fn open(
    config: &StorageConfig,
    path: &Path,
    create: Create,
    crypto: &super::crypto::Crypto,
) -> Result<(
    Env<WithoutTls>,
    Dbs,
    std::collections::HashMap<String, super::Raw>,
)> {
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options
        .map_size(round_map_bytes(config.map_bytes_initial))
        .max_dbs(DBS_MAX)
        .max_readers(config.readers_max);
    match config.durability {
        Durability::NoSync => {
            // SAFETY: NO_SYNC only drops the flush at commit; the user opted in and the risk
            // (losing the last commits on a machine crash, never consistency) is documented on
            // Durability.
            unsafe { options.flags(EnvFlags::NO_SYNC) };
        }
        Durability::Sync => {
            // SAFETY: NO_META_SYNC keeps integrity (LMDB: "preserves the ACI properties") and only
            // defers the meta page to the next flush of the file. The committer acknowledges a
            // commit only after that next flush (the next commit's data flush, or
            // `force_sync`), so no acknowledged append depends on an unflushed page. This holds
            // on Unix, where LMDB flushes with fdatasync/fsync; the crate does not build
            // elsewhere (see lib.rs).
            unsafe { options.flags(EnvFlags::NO_META_SYNC) };
        }
    }
    // LMDB trusts its meta pages: one with a page size of 0 divides by zero inside
    // `mdb_env_open` (found by the `open_store` fuzz target). Refuse such a file first.
    if let Some(reason) = damaged_meta(&path.join("data.mdb")) {
        return Err(Error::InvalidStore {
            path: path.into(),
            reason,
        });
    }
    // Before LMDB maps a file it did not write in this process: its pages, as LMDB would trust
    // them (storage::pages).
    let data_file = path.join("data.mdb");
    if config.check_pages_on_open && data_file.exists() {
        super::pages::check_file(path, &data_file)?;
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
                let reason = match interrupted_creation(&path.join("data.mdb")) {
                    Some(bytes) => format!(
                        "the store's creation was cut short (a crash or power cut while its first \
                         pages were written): its {bytes}-byte data file holds no committed \
                         data. Remove data.mdb to create the store afresh"
                    ),
                    None => "the data file is not an LMDB environment".into(),
                };
                return Err(Error::InvalidStore {
                    path: path.into(),
                    reason,
                });
            }
            // The files cannot be opened (a read-only filesystem, no permission): say where.
            Err(heed::Error::Io(source)) => {
                return Err(Error::Io {
                    path: path.into(),
                    source,
                });
            }
            Err(e) => return Err(Error::lmdb(e)),
        }
    };
    // A process killed while it held a snapshot leaves its reader slot behind, and that slot
    // pins every page freed after its snapshot: clear such slots before anything else.
    env.clear_stale_readers().lmdb()?;
    // A data file shorter than its last commit (truncated by a copy, a full disk or a user)
    // would raise SIGBUS on the first read of a missing page: refuse it before any read.
    let page_bytes = u64::from(env.unnamed_database_stat().page_size);
    let used_bytes = (env.info().last_page_number as u64 + 1).saturating_mul(page_bytes);
    let file_bytes = env.real_disk_size().lmdb()?;
    // LMDB may end a file before its last page when the pages at its end were freed and never
    // written ("the file may be shorter if the freeDB lists the final pages", mdb.c): then
    // the page check, which reads every page in use, decides.
    if file_bytes < used_bytes
        && let Err(e) = super::pages::check_file(path, &data_file)
    {
        return Err(Error::InvalidStore {
            path: path.into(),
            reason: format!(
                "the data file is {file_bytes} bytes, but its last commit uses {used_bytes}, and a page in use is missing ({e}): it is truncated, and reading it would crash the process"
            ),
        });
    }

    // Check the format before creating anything, so that an unknown store is left untouched.
    let rtxn = at_open(&env, || env.read_txn())?;
    let found = env
        .open_databases_and_commit(rtxn, |opener, rtxn| -> Result<_, OpenFail> {
            let meta = opener.open_database::<Str, Bytes>(rtxn, Some(db_names::META))?;
            let found = match meta {
                Some(meta) => {
                    let record = meta.get(rtxn, META_FORMAT_KEY)?;
                    if let Some(old) = check_format(path, record)?
                        && !config.allow_upgrade
                    {
                        return Err(OpenFail(Error::UpgradeRequired {
                            path: path.into(),
                            found: old,
                            current: FORMAT_VERSION,
                            steps: upgrade_steps(old),
                        }));
                    }
                    record.map(|_| ())
                }
                None => None,
            };
            if found.is_none() {
                // No format record: a new store, or another application's LMDB environment
                // (varvedb 0.4's among them), which must not get our databases beside its own.
                if let Some(main) =
                    opener.open_database::<Bytes, heed::types::DecodeIgnore>(rtxn, None)?
                {
                    let foreign: Vec<String> = main
                        .iter(rtxn)?
                        .filter_map(|entry| {
                            entry
                                .ok()
                                .map(|(name, ())| String::from_utf8_lossy(name).into_owned())
                        })
                        .filter(|name| !db_names::ALL.contains(&name.as_str()))
                        .take(4)
                        .collect();
                    if !foreign.is_empty() {
                        return Err(OpenFail(Error::InvalidStore {
                            path: path.into(),
                            reason: format!(
                                "the LMDB environment holds another application's databases \
                                 ({}{}), not a VarveDB store; it was left untouched",
                                foreign.join(", "),
                                if foreign.iter().any(|n| n == "global_events") {
                                    ": it looks like a varvedb 0.4 store"
                                } else {
                                    ""
                                }
                            ),
                        }));
                    }
                }
            }
            Ok(CommitOrAbort::<_, std::convert::Infallible>::Commit(found))
        })
        .map_err(OpenFail::into_error)?;
    let CommitOrAbort::Commit(found) = found;
    if create == Create::No && found.is_none() {
        return Err(Error::InvalidStore {
            path: path.into(),
            reason: "the LMDB environment has no VarveDB format record; it was left untouched"
                .into(),
        });
    }

    let wtxn = at_open(&env, || env.write_txn())?;
    // Whether this open upgrades the format: the commit is then flushed before the open
    // returns, so that a power cut never undoes an upgrade the open reported done.
    let upgraded = std::cell::Cell::new(false);
    let created = env
        .create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_, OpenFail> {
            let events = opener
                .database_options()
                .types::<Bytes, Bytes>()
                .key_comparator::<super::keys::SeqOrder>()
                .name(db_names::EVENTS)
                .create(wtxn)?;
            let heads =
                opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::STREAM_HEADS))?;
            let blobs = opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::BLOBS))?;
            let blob_refs =
                opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::BLOB_REFS))?;
            let cursors =
                opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::CONSUMER_CURSORS))?;
            let keystore =
                opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::KEYSTORE))?;
            let types = opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::TYPES))?;
            let type_ids =
                opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::TYPE_IDS))?;
            let event_ids =
                opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::EVENT_IDS))?;
            let parked = opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::PARKED))?;
            let tags = opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::TAGS))?;
            let bounds =
                opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::STREAM_BOUNDS))?;
            let retention =
                opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::RETENTION))?;
            let groups =
                opener.create_database::<Bytes, Bytes>(wtxn, Some(db_names::CONSUMER_GROUPS))?;
            let meta = opener.create_database::<Str, Bytes>(wtxn, Some(db_names::META))?;
            match meta.get(wtxn, META_FORMAT_KEY)? {
                Some(found) => {
                    if let Some(old) = check_format(path, Some(found))? {
                        // The upgrade: the databases of the newer formats were created above,
                        // in this transaction; the record goes with them.
                        tracing::info!(path = %path.display(), from = old, to = FORMAT_VERSION, steps = %upgrade_steps(old), "upgrading the store's format");
                        meta.put(wtxn, META_FORMAT_KEY, &FORMAT_VERSION.to_le_bytes())?;
                        upgraded.set(true);
                    }
                }
                None if events.len(wtxn)? > 0 => {
                    return Err(OpenFail(Error::InvalidStore {
                        path: path.into(),
                        reason: "events exist but the format record is missing".into(),
                    }));
                }
                None => meta.put(wtxn, META_FORMAT_KEY, &FORMAT_VERSION.to_le_bytes())?,
            }
            Ok(CommitOrAbort::<_, std::convert::Infallible>::Commit((
                events,
                heads,
                blobs,
                blob_refs,
                cursors,
                keystore,
                (types, type_ids, event_ids, parked, tags),
                (meta, bounds, retention, groups),
            )))
        })
        .map_err(OpenFail::into_error)?;
    let CommitOrAbort::Commit((
        events,
        heads,
        blobs,
        blob_refs,
        cursors,
        keystore,
        (types, type_ids, event_ids, parked, tags),
        (meta, bounds, retention, groups),
    )) = created;
    if upgraded.get() {
        // Found by the power-cut simulation of an upgrade: with `MDB_NOMETASYNC` the commit's
        // meta page waits for the next flush, and an open that returned could be undone.
        env.force_sync().lmdb()?;
    }
    let page_size = {
        let rtxn = at_open(&env, || env.read_txn())?;
        events.stat(&rtxn).lmdb()?.page_size as usize
    };
    let dbs = Dbs {
        events,
        heads,
        blobs,
        blob_refs,
        cursors,
        keystore,
        types,
        type_ids,
        event_ids,
        parked,
        tags,
        meta,
        bounds,
        retention,
        groups,
        page_size,
    };
    // The read models of projections: their handles are opened now, before any snapshot, so
    // that every snapshot can read them (a handle opened later is invalid in older ones).
    let rtxn = at_open(&env, || env.read_txn())?;
    let projections = env
        .open_databases_and_commit(rtxn, |opener, rtxn| -> Result<_, OpenFail> {
            let mut found = ProjectionDbs::new();
            let Some(main) = opener.open_database::<Str, heed::types::DecodeIgnore>(rtxn, None)?
            else {
                return Ok(CommitOrAbort::<_, std::convert::Infallible>::Commit(found));
            };
            // An entry that is not UTF-8 is no projection's; an LMDB error ends the open (a
            // cursor that failed answers every later step with the same error: skipping it
            // would loop for ever, which the `open_store` fuzz target found).
            let mut names = Vec::new();
            for entry in main.prefix_iter(rtxn, PROJECTION_PREFIX)? {
                match entry {
                    Ok((name, ())) => names.push(name.to_string()),
                    Err(heed::Error::Decoding(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            for name in names {
                if let Some(db) = opener.open_database::<Bytes, Bytes>(rtxn, Some(&name))? {
                    let projection = name[PROJECTION_PREFIX.len()..].to_string();
                    found.0.insert(projection, db);
                }
            }
            Ok(CommitOrAbort::Commit(found))
        })
        .map_err(OpenFail::into_error)?;
    let CommitOrAbort::Commit(projections) = projections;

    // The master key must open this store: refused here, not at the first read.
    if crypto.has_master_key() {
        let mut wtxn = at_open(&env, || env.write_txn())?;
        crypto.check_master_key(&dbs.meta, &mut wtxn)?;
        wtxn.commit().lmdb()?;
    }
    Ok((env, dbs, projections))
}

/// The prefix of a projection's read-model database name.
pub(crate) const PROJECTION_PREFIX: &str = "projection/";

/// The read-model databases found at open, by projection name (a type of its own, so that
/// heed hands each handle back valid for the environment's life once the transaction commits).
struct ProjectionDbs<'e>(std::collections::HashMap<String, heed::Database<'e, Bytes, Bytes>>);

impl ProjectionDbs<'_> {
    fn new() -> Self {
        ProjectionDbs(std::collections::HashMap::new())
    }
}

impl heed::OnCommit for ProjectionDbs<'_> {
    type Committed = std::collections::HashMap<String, super::Raw>;
    fn on_commit(self, token: &heed::CommitToken) -> Self::Committed {
        self.0
            .into_iter()
            .map(|(name, db)| (name, db.on_commit(token)))
            .collect()
    }
}

/// The error of the database-opening closures, which heed requires to be `From<heed::Error>`;
/// private, so that no such conversion is part of VarveDB's API.
struct OpenFail(Error);

impl From<heed::Error> for OpenFail {
    fn from(e: heed::Error) -> Self {
        OpenFail(Error::lmdb(e))
    }
}

impl From<Error> for OpenFail {
    fn from(e: Error) -> Self {
        OpenFail(e)
    }
}

impl OpenFail {
    fn into_error(self) -> Error {
        self.0
    }
}

/// What upgrading a store of format `from` does, step by step.
pub(crate) fn upgrade_steps(from: u32) -> String {
    super::UPGRADES
        .iter()
        .filter(|(f, _)| *f >= from)
        .map(|(_, what)| *what)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks a format record: `None` for the current format (or no record), `Some(old)` for an
/// older format this build upgrades, and an error for any other.
fn check_format(path: &Path, found: Option<&[u8]>) -> Result<Option<u32>> {
    let Some(bytes) = found else { return Ok(None) };
    let found = <[u8; 4]>::try_from(bytes)
        .map(u32::from_le_bytes)
        .map_err(|_| Error::InvalidStore {
            path: path.into(),
            reason: format!("the format record is {} bytes, expected 4", bytes.len()),
        })?;
    if found == FORMAT_VERSION {
        Ok(None)
    } else if super::UPGRADES.iter().any(|(f, _)| *f == found) {
        Ok(Some(found))
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

/// The length of a data file that LMDB refused but that is only the start of a store's
/// creation: one of its two meta pages (the first two pages) is missing or all zeros, and the
/// other is zeros or a page with LMDB's magic number. LMDB writes both meta pages when it
/// creates the file, and every commit flushes them before it writes a meta page of its own, so
/// such a file has no committed transaction: it holds no data. Anything else might.
fn interrupted_creation(data_file: &Path) -> Option<u64> {
    const PAGE: usize = 4096;
    const MAGIC: [u8; 4] = 0xBEEF_C0DE_u32.to_le_bytes();
    use std::io::Read;
    let file = std::fs::File::open(data_file).ok()?;
    let len = file.metadata().ok()?.len();
    // The two meta pages only: the file may be large.
    let mut bytes = Vec::new();
    file.take(2 * PAGE as u64).read_to_end(&mut bytes).ok()?;
    let meta = |i: usize| {
        bytes
            .get(i * PAGE..((i + 1) * PAGE).min(bytes.len()))
            .unwrap_or(&[])
    };
    let zero = |page: &[u8]| page.iter().all(|&b| b == 0);
    let plausible = |page: &[u8]| zero(page) || page.windows(4).take(64).any(|w| w == MAGIC);
    let (first, second) = (meta(0), meta(1));
    (plausible(first) && plausible(second) && (zero(first) || zero(second))).then_some(len)
}

/// Why LMDB must not open this data file, if one of its meta pages carries LMDB's magic number
/// but a page size LMDB cannot use (`mdb_env_open` divides by it, and steps by it to the second
/// meta page). `None` when there is no file, or its metas look sound, or LMDB will refuse it
/// by itself (no magic number).
fn damaged_meta(data_file: &Path) -> Option<String> {
    use std::io::Read;
    const MAGIC: u32 = 0xBEEF_C0DE;
    // In a meta page: the page header (16 bytes), then mm_magic, mm_version, mm_address,
    // mm_mapsize, and mm_dbs[0], whose first field holds the page size.
    const MAGIC_AT: usize = 16;
    const PSIZE_AT: usize = 40;
    let mut head = Vec::new();
    std::fs::File::open(data_file)
        .ok()?
        .take(2 * 65536 + 64)
        .read_to_end(&mut head)
        .ok()?;
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?))
    };
    let sane = |psize: u32| psize.is_power_of_two() && (256..=65536).contains(&psize);
    let mut at = 0usize;
    for meta in 0..2 {
        if u32_at(at + MAGIC_AT) != Some(MAGIC) {
            return None;
        }
        let psize = u32_at(at + PSIZE_AT)?;
        if !sane(psize) {
            return Some(format!(
                "meta page {meta} is damaged: it gives a page size of {psize} bytes"
            ));
        }
        at += psize as usize;
    }
    None
}

/// Begins a transaction while the store is being opened. Another process may grow the map at
/// any moment; LMDB then refuses every begin with `MDB_MAP_RESIZED` until this environment
/// adopts the new size, which it does here (as `ReadTxn` does once the store is open).
#[allow(
    unsafe_code,
    reason = "heed's resize is unsafe: no transaction may be active"
)]
pub(super) fn at_open<T>(
    env: &Env<WithoutTls>,
    mut begin: impl FnMut() -> heed::Result<T>,
) -> Result<T> {
    for _ in 0..1000 {
        match begin() {
            Err(heed::Error::Mdb(MdbError::MapResized)) => {
                // SAFETY: the store is still being opened: no other thread has this environment
                // yet, and the open's previous transaction has ended before this begin.
                unsafe { env.resize(0) }.lmdb()?;
            }
            other => return other.lmdb(),
        }
    }
    Err(Error::lmdb(heed::Error::Mdb(MdbError::MapResized)))
}

/// Who waits for a resize: the error for readers that stay too long names them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiter {
    /// An append (the committer) that needs a larger map.
    Append,
    /// A read that must adopt the larger map another process set.
    Read,
}

impl Storage {
    /// Doubles the map, without waiting, when the data file uses more than half of it and no
    /// reader is open. Growing early means the map rarely fills while a reader is open, the one
    /// case where growth must wait (for example a thread that appends while it holds a
    /// snapshot). A failed resize poisons the store like any other.
    pub(super) fn grow_early(&self, _w: &MutexGuard<'_, ()>) {
        if self.inner.health.load(std::sync::atomic::Ordering::Acquire) == health::ALL_REFUSED {
            return;
        }
        let info = self.inner.env.info();
        let used = (info.last_page_number + 1).saturating_mul(self.inner.dbs.page_size);
        let max = round_map_bytes(self.inner.config.map_bytes_max);
        if used.saturating_mul(2) < info.map_size || info.map_size >= max {
            return;
        }
        // Dead processes' reader slots pin freed pages and make the file grow: clear them first,
        // and grow only if that freed nothing.
        if self.inner.env.clear_stale_readers().is_ok_and(|n| n > 0) {
            return;
        }
        let target = round_map_bytes(info.map_size.saturating_mul(2)).min(max);
        // A reader inside the gate: skip, the append path grows on demand.
        drop(
            self.inner
                .gate
                .try_exclusive(|| self.resize_unguarded(target)),
        );
    }

    /// Grows the map for an append that found it full. Before growing, clears the reader slots
    /// of dead processes once: they pin freed pages, and clearing them may make room.
    pub(super) fn grow(
        &self,
        w: &MutexGuard<'_, ()>,
        cleared_once: &mut bool,
        wait: Duration,
    ) -> Result<()> {
        if !*cleared_once {
            *cleared_once = true;
            if self.inner.env.clear_stale_readers().lmdb()? > 0 {
                // The next transaction may reuse the pages those readers pinned.
                return Ok(());
            }
        }
        let max = round_map_bytes(self.inner.config.map_bytes_max);
        let current = self.inner.env.info().map_size;
        if current >= max {
            return Err(Error::StoreFull {
                map_bytes_max: self.inner.config.map_bytes_max,
            });
        }
        let target = round_map_bytes(current.saturating_mul(2)).min(max);
        self.resize_locked(w, target, Waiter::Append, wait)
    }

    /// Resizes the map (0: adopt the size another process set), waiting up to `wait` for this
    /// process's readers to leave. Requires the write lock.
    pub(super) fn resize_locked(
        &self,
        _w: &MutexGuard<'_, ()>,
        bytes: usize,
        waiter: Waiter,
        wait: Duration,
    ) -> Result<()> {
        // A thread that holds a snapshot would wait for itself: it gets its error at once.
        let wait = if self.inner.gate.held_by_current_thread() {
            Duration::ZERO
        } else {
            wait
        };
        match self
            .inner
            .gate
            .exclusive(wait, || self.resize_unguarded(bytes))
        {
            Ok(result) => result,
            Err(Blocked {
                read_txns,
                waited_ms,
            }) => Err(match waiter {
                Waiter::Append => Error::ResizeBlocked {
                    read_txns,
                    waited_ms,
                },
                Waiter::Read => Error::ReadBlocked {
                    read_txns,
                    waited_ms,
                },
            }),
        }
    }

    /// `mdb_env_set_mapsize`; a failure leaves LMDB's map unusable, so it refuses every later
    /// operation. Only under the gate's exclusive section and the write lock.
    #[allow(
        unsafe_code,
        reason = "heed's resize is unsafe: no transaction may be active"
    )]
    fn resize_unguarded(&self, bytes: usize) -> Result<()> {
        let _span = tracing::info_span!("varvedb.map_growth", to_bytes = bytes).entered();
        // SAFETY: heed requires that no transaction of this process is active. Every caller runs
        // this inside the gate's exclusive section (no reader inside, new ones held back), and
        // write transactions only exist under the write lock, which every caller holds with no
        // transaction open.
        let resized = unsafe { self.inner.env.resize(bytes) };
        if resized.is_ok() && bytes > 0 {
            self.inner.metrics.map_growths.inc();
        }
        resized.map_err(|e| {
            let reason = format!(
                "growing the memory map to {bytes} bytes failed ({e}); LMDB's map is gone, so every read and append is refused until every handle is dropped and the store reopened"
            );
            self.refuse(health::ALL_REFUSED, reason.clone());
            Error::Poisoned { reason }
        })
    }
}
