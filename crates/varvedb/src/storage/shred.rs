//! Crypto-shredding, master-key rotation and the compacting copy: the operations on a store's
//! keys that run outside the commit queue (each in one write transaction of its own).

use std::path::Path;

use heed::CompactionOption;

use super::crypto;
use super::lmdb::LmdbResultExt;
use super::{Storage, blob, keys, record, stream_head};
use crate::error::{Error, Result};

/// What [`Storage::shred_stream`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShredReport {
    /// The stream's events, now unreadable for good.
    pub events: u32,
    /// Blobs released (their only references were the stream's events).
    pub blobs_released: u64,
    /// Whether the stream was already shredded (then nothing changed).
    pub already: bool,
}

/// See [`Storage::shred_stream`](crate::Storage::shred_stream).
pub(crate) fn shred_stream(storage: &Storage, stream_id: u128) -> Result<ShredReport> {
    // First: from now on no cached key of the stream, and none put back by a reader of an
    // older snapshot (if the shred fails, the stream is only read without the cache).
    storage.crypto().forget(stream_id);
    // Durable before it returns: a power cut must not bring the key back (found by the
    // power-cut simulation, `docs/reliability.md`).
    let report = storage.write_durable(|wtxn, dbs| {
        let entry = dbs.keystore.get(wtxn, &stream_id.to_be_bytes()).lmdb()?;
        match entry {
            None if stream_head(dbs, wtxn, stream_id)?.is_none() => {
                return Err(Error::StreamNotFound { stream_id });
            }
            None => return Err(Error::StreamNotEncrypted { stream_id }),
            Some(v) if crypto::is_tombstone(v) => {
                let shredded = ShredReport {
                    events: 0,
                    blobs_released: 0,
                    already: true,
                };
                return Ok((shredded, false));
            }
            Some(_) => {}
        }
        // The blobs of the stream's events: each is its own (ciphertexts differ).
        let mut hashes = Vec::new();
        let (mut version, mut seq) = stream_head(dbs, wtxn, stream_id)?.unwrap_or((0, 0));
        // Removed versions have no records (and their blobs went with them).
        let first_kept = super::removal::bounds(dbs, wtxn, stream_id)?.first_kept;
        let events = (version + 1).saturating_sub(first_kept);
        while version >= first_kept.max(1) {
            let value = super::get_record(dbs, wtxn, seq)?.ok_or_else(|| Error::CorruptIndex {
                stream_id,
                version,
                reason: format!("the chain points at sequence {seq}, which does not exist"),
            })?;
            let (header, _, body) = record::open(seq, value)?;
            if header.flags & record::FLAG_BLOB != 0
                && let Some(r) = blob::BlobRef::decode(body)
            {
                hashes.push(r.hash);
            }
            (version, seq) = (version - 1, header.links.prev);
        }
        let mut released = 0;
        for hash in hashes {
            if blob::release(dbs, wtxn, &hash)? == 0 {
                released += 1;
            }
        }
        storage.crypto().shred(dbs, wtxn, stream_id)?;
        let shredded = ShredReport {
            events,
            blobs_released: released,
            already: false,
        };
        Ok((shredded, true))
    })?;
    if !report.already {
        storage.metrics().shredded_streams.inc();
    }
    Ok(report)
}

/// See [`Storage::is_shredded`](crate::Storage::is_shredded).
pub(crate) fn is_shredded(
    storage: &Storage,
    txn: &super::ReadTxn,
    stream_id: u128,
) -> Result<bool> {
    storage.check_txn(txn)?;
    Ok(matches!(
        storage.dbs()
            .keystore
            .get(txn.raw(), &keys::head_key(stream_id))
            .lmdb()?,
        Some(v) if crypto::is_tombstone(v)
    ))
}

/// See [`Storage::rotate_master_key`](crate::Storage::rotate_master_key).
pub(crate) fn rotate_master_key(storage: &Storage, new_master_key: [u8; 32]) -> Result<u64> {
    let new = zeroize::Zeroizing::new(new_master_key);
    if !storage.crypto().has_master_key() {
        return Err(Error::InvalidConfig {
            field: "master_key",
            reason: "rotating the master key needs the current one".into(),
        });
    }
    // The new key is installed under the write lock, right after the commit: no commit
    // group of this process can wrap a new stream key under the old one after the
    // rotation. Other processes see the rotation at their next write transaction (the
    // keystore generation) and refuse to create keys with their retired master key
    // (`Error::MasterKeyRotated`). The stream keys themselves do not change, so the
    // cached ones stay.
    let new_cipher = std::sync::Arc::new(crypto::cipher(&new)?);
    let rewrapped = storage.write_then(
        storage.resize_wait(),
        |wtxn, dbs| Ok((storage.crypto().rewrap_all(dbs, wtxn, &new_cipher)?, true)),
        |_| storage.crypto().set_master(&new, new_cipher.clone()),
    )?;
    // Durable before the caller retires the old master key.
    storage.flush_if_durable()?;
    Ok(rewrapped)
}

/// Where `path` is, through every symbolic link and `..`, whether or not it exists yet: its
/// nearest existing ancestor, resolved, and the rest of it.
fn resolved(path: &Path) -> std::path::PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut rest = Vec::new();
    let mut at = absolute.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent;
            }
            _ => return absolute,
        }
    }
}

/// See [`Storage::compact_to`](crate::Storage::compact_to).
pub(crate) fn compact_to(storage: &Storage, dest: impl AsRef<Path>) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    let dest = dest.as_ref();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let refuse = |reason: String| Error::InvalidDestination {
        path: dest.to_path_buf(),
        reason,
    };
    // The store's own directory is no place for its copy.
    if resolved(dest) == storage.path() {
        return Err(refuse(format!(
            "it is the store's own directory ({}); a backup goes to a new directory",
            storage.path().display()
        )));
    }
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dest)
                .map_err(io(dest))?;
        }
        Err(e) => return Err(io(dest)(e)),
        Ok(meta) => {
            if !meta.file_type().is_dir() {
                return Err(refuse(
                    "it exists and is not a directory (a backup goes to a new directory)".into(),
                ));
            }
            let owner = std::fs::metadata(storage.path())
                .map_err(io(storage.path()))?
                .uid();
            if meta.uid() != owner {
                return Err(refuse(format!(
                    "it belongs to user {}, not to the store's owner {owner}",
                    meta.uid()
                )));
            }
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(refuse(format!(
                    "other users may use it (mode {:o}); a backup's directory must be 0700",
                    meta.permissions().mode() & 0o777
                )));
            }
            let held: Vec<String> = std::fs::read_dir(dest)
                .map_err(io(dest))?
                .take(4)
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            if !held.is_empty() {
                return Err(refuse(format!(
                    "it is not empty (it holds {}{}); a backup goes to a new or empty \
                     directory, and nothing was written",
                    held[..held.len().min(3)].join(", "),
                    if held.len() > 3 { ", …" } else { "" }
                )));
            }
        }
    }
    let file = dest.join("data.mdb");
    // O_CREAT | O_EXCL: no symbolic link is followed, no existing file is reused, and
    // the mode is 0600 from the start.
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .map_err(io(&file))?;
    // The umask may only have narrowed the mode; made exact.
    out.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io(&file))?;
    // A snapshot for the copy: the same reader slot rules as any read.
    let txn = storage.read_txn()?;
    let copied = storage
        .env()
        .copy_to_file(&mut out, CompactionOption::Enabled)
        .lmdb();
    drop(txn);
    if let Err(e) = copied {
        drop(out);
        // No half copy is left behind to be mistaken for a backup.
        let _ = std::fs::remove_file(&file);
        return Err(e);
    }
    out.sync_all().map_err(io(&file))?;
    // The new entry itself is durable too.
    std::fs::File::open(dest)
        .and_then(|d| d.sync_all())
        .map_err(io(dest))?;
    Ok(())
}
