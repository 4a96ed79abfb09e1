//! The health of a store: whether it refuses appends or everything after a failure, why, and
//! the paths whose flush failed in this process. One file for all of it, so that the registry
//! (which opens and closes stores) and the transactions (which fail) both depend on it and on
//! nothing of each other.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use heed::WithoutTls;

use super::lmdb::LmdbResultExt;
use super::{Storage, lock};
use crate::error::{Error, Result};

/// Everything works.
pub(crate) const OK: u8 = 0;
/// Appends are refused; reads work.
pub(crate) const WRITES_REFUSED: u8 = 1;
/// The memory map is gone (a failed resize): reads are refused too.
pub(crate) const ALL_REFUSED: u8 = 2;

/// Paths whose flush failed in this process. After a failed `fsync`, Linux may have marked the
/// dirty pages clean: this process (and the page cache it shares) can read data that is not on
/// disk, so a plain reopen here would hide the loss.
static FLUSH_FAILED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Remembers that a flush of `path` failed in this process.
pub(crate) fn mark_flush_failed(path: &Path) {
    lock(&FLUSH_FAILED).insert(path.to_path_buf());
}

/// Whether a flush of `path` failed earlier in this process.
pub(crate) fn flush_failed_before(path: &Path) -> bool {
    lock(&FLUSH_FAILED).contains(path)
}

/// Forgets a failed flush of `path` (`Storage::open_after_flush_failure` checks the store).
pub(crate) fn forget_flush_failure(path: &Path) {
    lock(&FLUSH_FAILED).remove(path);
}

impl Storage {
    pub(crate) fn flush_failed(&self, e: Error) -> Result<()> {
        let reason = format!("the flush failed: {e}");
        self.refuse(WRITES_REFUSED, reason.clone());
        mark_flush_failed(&self.inner.path);
        Err(Error::NotDurable {
            appended: Vec::new(),
            reason,
        })
    }

    /// Refuses appends from now on (or, with `level` [`ALL_REFUSED`], everything).
    pub(crate) fn refuse(&self, level: u8, reason: String) {
        let mut fault = lock(&self.inner.fault);
        if self.inner.health.load(Ordering::Acquire) < level {
            *fault = Some(reason);
            self.inner.health.store(level, Ordering::Release);
        }
    }

    pub(crate) fn poisoned_error(&self) -> Error {
        Error::Poisoned {
            reason: self
                .poison_reason()
                .unwrap_or_else(|| "an earlier failure".into()),
        }
    }

    pub(crate) fn check_readable(&self) -> Result<()> {
        if self.inner.health.load(Ordering::Acquire) == ALL_REFUSED {
            return Err(self.poisoned_error());
        }
        Ok(())
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.is_poisoned() {
            return Err(self.poisoned_error());
        }
        Ok(())
    }
}

/// See [`Storage::is_poisoned`](crate::Storage::is_poisoned).
pub(crate) fn is_poisoned(storage: &Storage) -> bool {
    storage.inner.health.load(Ordering::Acquire) != OK
}

/// See [`Storage::poison_reason`](crate::Storage::poison_reason).
pub(crate) fn poison_reason(storage: &Storage) -> Option<String> {
    lock(&storage.inner.fault).clone()
}

/// Flushes the data file. After a failed resize LMDB's map is gone, and `mdb_env_sync` reads
/// the meta page through it, so the file is flushed directly then (VarveDB never uses
/// `MDB_WRITEMAP`, so the file holds everything LMDB wrote).
pub(crate) fn sync_env(env: &heed::Env<WithoutTls>, health: u8) -> Result<()> {
    if health == ALL_REFUSED {
        let file = env.try_clone_inner_file().lmdb()?;
        file.sync_data()
            .map_err(|e| Error::lmdb(heed::Error::Io(e)))
    } else {
        env.force_sync().lmdb()
    }
}
