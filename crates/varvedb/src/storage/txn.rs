//! Transactions: read snapshots, the write-transaction API and flushes (health is in `health`).
//!
//! A store refuses work after a failure it cannot undo: appends after a failed commit or flush
//! (the outcome on disk is unknown), everything after a failed map resize (LMDB's map is gone).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::ThreadId;
use std::time::Duration;

use heed::{MdbError, RoTxn, RwTxn, WithoutTls};

use super::env::Waiter;
use super::health::{self, sync_env};
use super::{Dbs, Inner, Storage, lock};
use crate::config::Durability;
use crate::error::{Error, Result};

/// A read-only snapshot of the store.
///
/// Everything a [`Reader`](crate::Reader) returns borrows from it; the snapshot does not change
/// while it is open. Keep it short-lived: while a `ReadTxn` is open, LMDB cannot reuse pages
/// freed after it began, and the map cannot grow (an append that needs to grow it waits up to
/// `StorageConfig::resize_wait_ms_max`). The thread that holds a snapshot may open more while
/// a resize waits; the resize waits for all of them.
pub struct ReadTxn {
    // Field order matters: the LMDB transaction ends before the gate is left.
    txn: RoTxn<'static, WithoutTls>,
    guard: ReaderGuard,
}

struct ReaderGuard {
    inner: Arc<Inner>,
    owner: ThreadId,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.inner.gate.leave(self.owner);
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

impl Storage {
    /// Runs `f` in a write transaction and commits it when `f` says it wrote something (the
    /// flag it returns); otherwise the transaction is aborted. The commit is durable after the
    /// next flush: with `Durability::Sync` LMDB flushes the data pages at commit and leaves the
    /// meta page for the next flush ([`sync`](Self::sync), or the next commit's).
    ///
    /// `f` may run more than once: when the map is full, the transaction is aborted, the map
    /// grows (up to `map_bytes_max`, waiting at most `resize_wait` for this process's readers)
    /// and `f` runs again on a fresh transaction. A failed commit
    /// other than a full map poisons the store for appends and is
    /// [`Error::OutcomeUnknown`]: LMDB may have written part of it.
    pub(crate) fn write<T>(
        &self,
        resize_wait: Duration,
        f: impl FnMut(&mut RwTxn<'_>, &Dbs) -> Result<(T, bool)>,
    ) -> Result<T> {
        self.write_then(resize_wait, f, |_| {})
    }

    /// [`write`](Self::write), calling `committed` after the commit and before the write lock
    /// is released: no other write transaction of this process runs in between (a master-key
    /// rotation installs the new key there).
    pub(crate) fn write_then<T>(
        &self,
        resize_wait: Duration,
        mut f: impl FnMut(&mut RwTxn<'_>, &Dbs) -> Result<(T, bool)>,
        committed: impl FnOnce(&T),
    ) -> Result<T> {
        let w = lock(&self.inner.write_lock);
        self.check_writable()?;
        let mut cleared = false;
        loop {
            let mut wtxn = match self.inner.env.write_txn() {
                Ok(t) => t,
                Err(heed::Error::Mdb(MdbError::MapResized)) => {
                    self.resize_locked(&w, 0, Waiter::Append, resize_wait)?;
                    continue;
                }
                Err(e) => return Err(Error::lmdb(e)),
            };
            let (value, wrote) = match f(&mut wtxn, &self.inner.dbs) {
                Ok(v) => v,
                Err(e) if e.is_map_full() => {
                    drop(wtxn);
                    self.grow(&w, &mut cleared, resize_wait)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !wrote {
                drop(wtxn);
                return Ok(value);
            }
            match wtxn.commit() {
                Ok(()) => {
                    self.inner.unflushed.store(true, Ordering::Release);
                    self.inner.commits.fetch_add(1, Ordering::Relaxed);
                    committed(&value);
                    self.grow_early(&w);
                    return Ok(value);
                }
                Err(heed::Error::Mdb(MdbError::MapFull)) => {
                    self.grow(&w, &mut cleared, resize_wait)?;
                }
                Err(e) => {
                    let reason = format!("the commit failed: {e}");
                    self.refuse(health::WRITES_REFUSED, reason.clone());
                    return Err(Error::OutcomeUnknown { reason });
                }
            }
        }
    }

    /// Flushes the data file if anything was committed since the last flush, making every
    /// commit so far durable. A failure refuses later appends, and this path is refused by
    /// [`Storage::open`] for the rest of the process.
    pub(crate) fn sync(&self) -> Result<()> {
        let _w = lock(&self.inner.write_lock);
        if !self.inner.unflushed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.inner.flushes.fetch_add(1, Ordering::Relaxed);
        #[cfg(test)]
        if self
            .inner
            .faults
            .fail_next_sync
            .swap(false, Ordering::AcqRel)
        {
            let eio = std::io::Error::from_raw_os_error(5);
            return self.flush_failed(Error::lmdb(heed::Error::Io(eio)));
        }
        let started = std::time::Instant::now();
        match sync_env(&self.inner.env, self.inner.health.load(Ordering::Acquire)) {
            Ok(()) => {
                self.inner
                    .metrics
                    .flush_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.inner.unflushed.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) => self.flush_failed(e),
        }
    }

    /// [`write`](Self::write) for an operation whose answer tells the caller it is done (a
    /// shred, a key rotation, a consumer's reset): with [`Durability::Sync`] the commit is
    /// flushed before the answer, so that a power cut cannot undo it. Appends go through the
    /// committer, which answers after the next flush by itself.
    pub(crate) fn write_durable<T>(
        &self,
        f: impl FnMut(&mut RwTxn<'_>, &Dbs) -> Result<(T, bool)>,
    ) -> Result<T> {
        let out = self.write(self.resize_wait(), f)?;
        self.flush_if_durable()?;
        Ok(out)
    }

    /// [`flush`](Self::flush) with [`Durability::Sync`]; nothing with `NoSync`, whose commits
    /// are not flushed by choice.
    pub(crate) fn flush_if_durable(&self) -> Result<()> {
        match self.config().durability {
            crate::config::Durability::Sync => self.flush(),
            crate::config::Durability::NoSync => Ok(()),
        }
    }

    /// How long a resize waits for readers: `StorageConfig::resize_wait_ms_max`.
    pub(crate) fn resize_wait(&self) -> Duration {
        Duration::from_millis(self.inner.config.resize_wait_ms_max)
    }

    /// Whether the calling thread holds a snapshot of this store (it began a `ReadTxn` that is
    /// still open).
    pub(crate) fn held_by_current_thread(&self) -> bool {
        self.inner.gate.held_by_current_thread()
    }

    /// Whether commits leave their meta page unflushed for the next flush (`Durability::Sync`,
    /// which runs LMDB with `MDB_NOMETASYNC`; see the committer).
    pub(crate) fn defers_meta_flush(&self) -> bool {
        self.inner.config.durability == Durability::Sync
    }
}

/// See [`Storage::read_txn`](crate::Storage::read_txn).
pub(crate) fn read_txn(storage: &Storage) -> Result<ReadTxn> {
    storage.check_readable()?;
    // A moment with no reader of this thread: the best time to grow the map early.
    if let Ok(w) = storage.inner.write_lock.try_lock() {
        storage.grow_early(&w);
        storage.check_readable()?;
    }
    for _ in 0..2 {
        let owner = storage.inner.gate.enter();
        let guard = ReaderGuard {
            inner: Arc::clone(&storage.inner),
            owner,
        };
        // Checked inside the gate: a resize cannot fail between this check and the begin.
        storage.check_readable()?;
        match (*storage.inner.env).clone().static_read_txn() {
            Ok(txn) => return Ok(ReadTxn { txn, guard }),
            Err(heed::Error::Mdb(MdbError::MapResized)) => {
                drop(guard);
                // Another process grew the map: adopt its size, then try again.
                let w = lock(&storage.inner.write_lock);
                storage.resize_locked(&w, 0, Waiter::Read, storage.resize_wait())?;
            }
            Err(e) => return Err(Error::lmdb(e)),
        }
    }
    Err(Error::ReadBlocked {
        read_txns: storage.inner.gate.readers(),
        waited_ms: 0,
    })
}

/// See [`Storage::flush`](crate::Storage::flush).
pub(crate) fn flush(storage: &Storage) -> Result<()> {
    match storage.inner.attached.get() {
        Some(attached) => attached.flush(),
        None => storage.sync(),
    }
}
