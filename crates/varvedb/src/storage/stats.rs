//! [`Stats`]: counts describing a store, read in one snapshot.

use std::sync::atomic::Ordering;

use heed::RoTxn;

use super::lmdb::LmdbResultExt;
use super::{Dbs, Storage, blob, last_seq};
use crate::error::{Error, Result};
use crate::metrics::{ConsumerGauges, FileGauges, Metrics};

/// Counts describing a store, from [`Storage::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Events in the log: `last_seq` less the events removed (truncated, deleted,
    /// tombstoned or past retention).
    pub events: u64,
    /// Events removed from the log since the store was made (their sequences are never given
    /// again).
    pub deleted_events: u64,
    /// Packs in the log: LMDB entries, each holding the events of one append, up to 256.
    pub packs: u64,
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
    /// Write transactions that wrote something, committed since the store was opened in this
    /// process. With group commit, many concurrent appends share one. With
    /// `Durability::Sync` each flushes the data file once; a group in which every append
    /// failed its check writes nothing and is not committed, so it is not counted.
    pub commits: u64,
    /// Flushes issued on their own, outside a commit, since the store was opened in this
    /// process: with `Durability::Sync`, when no later commit flushed an acknowledged one, and
    /// for [`Storage::flush`].
    pub flushes: u64,
    /// The store's format (its `format_version` record): the format this build writes, once
    /// the store is open (an older one was upgraded as it opened).
    pub format: u32,
}

impl Storage {
    fn file_gauges(&self) -> Result<FileGauges> {
        let txn = self.read_txn()?;
        let dbs = self.dbs();
        let info = self.inner.env.info();
        let page_size = dbs.page_size as u64;
        let blob_pages = [&dbs.blobs, &dbs.blob_refs]
            .into_iter()
            .map(|db| {
                db.stat(txn.raw()).lmdb().map(|s| {
                    (s.branch_pages as u64)
                        .saturating_add(s.leaf_pages as u64)
                        .saturating_add(s.overflow_pages as u64)
                })
            })
            .sum::<Result<u64>>()?;
        let last = last_seq(dbs, txn.raw())?;
        Ok(FileGauges {
            map_size_bytes: info.map_size as u64,
            map_used_bytes: (info.last_page_number as u64)
                .saturating_add(1)
                .saturating_mul(page_size),
            // Every sequence up to the last was given once; the removed ones are counted.
            events: last.saturating_sub(super::removal::meta_u64(
                dbs,
                txn.raw(),
                super::removal::META_REMOVED,
            )?),
            last_seq: last,
            blobs: dbs.blob_refs.len(txn.raw()).lmdb()?,
            blob_store_bytes: blob_pages.saturating_mul(page_size),
            consumers: self
                .consumers_in(&txn)?
                .into_iter()
                .map(|c| ConsumerGauges {
                    name: c.name,
                    position: c.position,
                    lag_events: c.lag_events,
                    lag_seconds: c.lag_seconds,
                    parked: c.parked,
                })
                .collect(),
            groups: super::consumer_groups_in(self, &txn)?,
        })
    }

    /// The metrics the commit, readers and processors record into.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// See [`Storage::stats`](crate::Storage::stats).
pub(crate) fn stats(storage: &Storage) -> Result<Stats> {
    let txn = storage.read_txn()?;
    let dbs = storage.dbs();
    let pages = |s: heed::DatabaseStat| -> Result<u64> {
        let pages = (s.branch_pages as u64)
            .checked_add(s.leaf_pages as u64)
            .and_then(|n| n.checked_add(s.overflow_pages as u64))
            .and_then(|n| n.checked_mul(u64::from(s.page_size)));
        pages.ok_or_else(|| Error::InvalidStore {
            path: storage.path().into(),
            reason: "LMDB's page counts overflow".into(),
        })
    };
    let (blobs, blob_references) = blob_counts(dbs, txn.raw())?;
    let blob_bytes = pages(dbs.blobs.stat(txn.raw()).lmdb()?)?
        .saturating_add(pages(dbs.blob_refs.stat(txn.raw()).lmdb()?)?);
    let last = last_seq(dbs, txn.raw())?;
    let deleted = super::removal::meta_u64(dbs, txn.raw(), super::removal::META_REMOVED)?;
    let format = dbs
        .meta
        .get(txn.raw(), super::META_FORMAT_KEY)
        .lmdb()?
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .map_or(0, u32::from_le_bytes);
    Ok(Stats {
        format,
        // Every sequence up to the last was given once; the removed ones are counted.
        events: last.saturating_sub(deleted),
        deleted_events: deleted,
        packs: dbs.events.len(txn.raw()).lmdb()?,
        streams: dbs.heads.len(txn.raw()).lmdb()?,
        last_seq: last,
        log_bytes: pages(dbs.events.stat(txn.raw()).lmdb()?)?,
        index_bytes: pages(dbs.heads.stat(txn.raw()).lmdb()?)?,
        blobs,
        blob_references,
        blob_bytes,
        file_bytes: storage.inner.env.real_disk_size().lmdb()?,
        map_bytes: storage.inner.env.info().map_size,
        commits: storage.inner.commits.load(Ordering::Relaxed),
        flushes: storage.inner.flushes.load(Ordering::Relaxed),
    })
}

/// See [`Storage::metrics_text`](crate::Storage::metrics_text).
pub(crate) fn metrics_text(storage: &Storage) -> String {
    storage.inner.metrics.encode(storage.file_gauges().ok())
}

/// `(distinct blobs, references to them)`, summed over the reference counts.
fn blob_counts(dbs: &Dbs, txn: &RoTxn<'_>) -> Result<(u64, u64)> {
    let mut blobs = 0u64;
    let mut references = 0u64;
    for entry in dbs.blob_refs.iter(txn).lmdb()? {
        let (key, value) = entry.lmdb()?;
        blobs += 1;
        let n = blob::decode_refs(value).map_or(0, |(n, _)| n);
        references = references
            .checked_add(n)
            .ok_or_else(|| Error::CorruptBlob {
                hash: blob::decode_key(key).map_or_else(|| "?".into(), |h| blob::hex(&h)),
                reason: format!("its reference count {n} overflows the sum of all counts"),
            })?;
    }
    Ok((blobs, references))
}
