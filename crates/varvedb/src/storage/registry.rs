//! One environment per path in a process: opening, sharing and closing stores.
//!
//! LMDB allows one open environment per data file in a process, so every `Storage::open` of a
//! path goes through a process-wide registry of the stores open now. The registry also remembers
//! the paths whose flush failed in this process (see [`Storage::open_after_flush_failure`]).

use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::crypto::Crypto;
use super::env::{self, Create};
use super::gate::Gate;
use super::health::{self, mark_flush_failed};
use super::{Inner, Storage, lock};
use crate::config::StorageConfig;
use crate::error::{Error, Result};

/// Every open environment of this process by canonical path: LMDB allows one per path.
static REGISTRY: Mutex<BTreeMap<PathBuf, Weak<Inner>>> = Mutex::new(BTreeMap::new());
/// Serializes `Storage::open` so that two threads opening one path share one environment.
static OPEN_LOCK: Mutex<()> = Mutex::new(());
impl Drop for Inner {
    #[allow(unsafe_code, reason = "closes the environment under the registry lock")]
    fn drop(&mut self) {
        // The committer answers what is queued and stops before the environment closes.
        if let Some(attached) = self.attached.get() {
            attached.stop();
        }
        // Commits whose answers were dropped (a dropped future) may still wait for their flush;
        // make them durable now. A failure cannot be reported from `drop`; `Storage::close`
        // reports it.
        if self.unflushed.load(Ordering::Acquire)
            && health::sync_env(&self.env, self.health.load(Ordering::Acquire)).is_err()
        {
            mark_flush_failed(&self.path);
        }
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

/// Creates the store's directory (and missing parents) readable by its owner only (0700), so
/// that other local users cannot read the store.
fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err(path))
}

/// Warnings about an existing store's permissions: a directory or data file others can read.
fn permission_warnings(path: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut warnings = Vec::new();
    for (what, p) in [
        ("directory", path.to_path_buf()),
        ("data file", path.join("data.mdb")),
    ] {
        if let Ok(meta) = std::fs::metadata(&p) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warnings.push(format!(
                    "the store's {what} {} has mode {mode:o}: other local users may read it (VarveDB creates 0700 directories and 0600 files)",
                    p.display()
                ));
            }
        }
    }
    warnings
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Storage {
    fn open_canonical(mut config: StorageConfig, create: Create) -> Result<Storage> {
        // The store keeps the master key only in zeroizing memory: the configuration's copy
        // is wiped here, first thing (the caller's own copies are the caller's to wipe).
        let master_key = config.master_key.as_mut().map(|key| {
            let kept = zeroize::Zeroizing::new(*key);
            zeroize::Zeroize::zeroize(key);
            kept
        });
        config.master_key = None;
        let _span = tracing::info_span!("varvedb.open", path = %config.path.display()).entered();
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
            let same_key = inner.crypto.is_master(master_key.as_deref());
            return if inner.config == config && same_key {
                Ok(Storage { inner })
            } else {
                Err(Error::ConfigMismatch { path })
            };
        }
        if health::flush_failed_before(&path) {
            return Err(Error::Poisoned {
                reason: format!(
                    "a flush of {} failed earlier in this process, so the page cache may show data that is not on disk; restart the process, or use Storage::open_after_flush_failure",
                    path.display()
                ),
            });
        }
        let crypto = Crypto::new(master_key.as_deref())?;
        let (env, dbs, projections) = env::open(&config, &path, create, &crypto)?;
        let warnings = permission_warnings(&path);
        let head = {
            // Every begin of the open adopts a growth another process made meanwhile.
            let rtxn = super::env::at_open(&env, || env.read_txn())?;
            super::last_seq(&dbs, &rtxn)?
        };
        let inner = Arc::new(Inner {
            attached: OnceLock::new(),
            env: ManuallyDrop::new(env),
            dbs,
            config,
            path: path.clone(),
            crypto,
            warnings,
            bus: tokio::sync::watch::Sender::new(head),
            bus_poller: OnceLock::new(),
            retention_task: OnceLock::new(),
            projections: Mutex::new(projections),
            gate: Gate::default(),
            write_lock: Mutex::new(()),
            health: AtomicU8::new(health::OK),
            fault: Mutex::new(None),
            unflushed: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            metrics: crate::metrics::Metrics::new(),
            #[cfg(test)]
            faults: Default::default(),
        });
        lock(&REGISTRY).insert(path, Arc::downgrade(&inner));
        let storage = Storage { inner };
        // A store that holds retention policies enforces them in the background.
        if super::removal::has_policies(&storage)? {
            storage.start_retention_task();
        }
        Ok(storage)
    }
}

/// See [`Storage::open`](crate::Storage::open).
pub(crate) fn open(config: StorageConfig) -> Result<Storage> {
    config.validate()?;
    if config.path.exists() && !config.path.is_dir() {
        return Err(Error::InvalidStore {
            path: config.path.clone(),
            reason: "it is a file, not a directory (a store is a directory); it was left untouched"
                .into(),
        });
    }
    create_private_dir(&config.path)?;
    Storage::open_canonical(config, Create::Yes)
}

/// See [`Storage::open_existing`](crate::Storage::open_existing).
pub(crate) fn open_existing(config: StorageConfig) -> Result<Storage> {
    config.validate()?;
    let missing = |reason: &str| Error::NotFound {
        path: config.path.clone(),
        reason: reason.into(),
    };
    if config.path.exists() && !config.path.is_dir() {
        return Err(missing(
            "it is a file, not a directory (a store is a directory)",
        ));
    }
    if !config.path.is_dir() {
        return Err(missing("no such directory"));
    }
    if !config.path.join("data.mdb").is_file() {
        return Err(missing("the directory holds no data.mdb"));
    }
    Storage::open_canonical(config, Create::No)
}

/// See [`Storage::open_after_flush_failure`](crate::Storage::open_after_flush_failure).
pub(crate) fn open_after_flush_failure(config: StorageConfig) -> Result<Storage> {
    config.validate()?;
    if let Ok(path) = std::fs::canonicalize(&config.path) {
        health::forget_flush_failure(&path);
    }
    let storage = Storage::open(config)?;
    if storage.is_poisoned() {
        // Handles of the failed store are still open: this is that store, not a fresh one.
        let reason = format!(
            "handles of this store are still open after its failure ({}); drop every one of them first",
            storage.poison_reason().unwrap_or_default()
        );
        mark_flush_failed(storage.path());
        return Err(Error::Poisoned { reason });
    }
    let report = storage.verify()?;
    if let Some(problem) = report.problems.first() {
        let path = storage.path().to_path_buf();
        mark_flush_failed(&path);
        return Err(Error::InvalidStore {
            path,
            reason: format!(
                "verify found {} problem(s) after a failed flush, the first: {problem}",
                report.problem_count()
            ),
        });
    }
    Ok(storage)
}

/// See [`Storage::close`](crate::Storage::close).
pub(crate) fn close(storage: Storage) -> Result<()> {
    storage.flush()
}
