//! Consumer cursors and parked events: where each named consumer (a processor) stands, and the
//! events it set aside.
//!
//! ```text
//! consumer_cursors  name (UTF-8)             → u64 LE: the seq of the last event it handled
//! parked_events     name ‖ 0x00 ‖ u64 BE seq → the reason (UTF-8)
//! ```
//! Names are UTF-8 bytes, stored as they are: stable across Rust releases and processes.

use std::time::{SystemTime, UNIX_EPOCH};

use heed::{RoTxn, RwTxn};

use super::lmdb::LmdbResultExt;
use super::{Dbs, Storage, last_seq};
use crate::error::{Error, Result};

/// The longest consumer name, in bytes.
pub const CONSUMER_NAME_BYTES_MAX: usize = 255;

/// A consumer as [`Storage::consumers`] lists it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Consumer {
    /// Its name.
    pub name: String,
    /// The seq of the last event it handled.
    pub position: u64,
    /// The store's last seq.
    pub head: u64,
    /// Events it has not handled yet.
    pub lag_events: u64,
    /// How long the oldest event it has not handled has waited, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// Events it parked.
    pub parked: u64,
}

/// An event a consumer parked, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedEvent {
    /// The event's seq.
    pub seq: u64,
    /// The handler's error.
    pub reason: String,
}

impl ParkedEvent {
    /// A parked event (for an import, which writes them back).
    pub fn new(seq: u64, reason: impl Into<String>) -> Self {
        ParkedEvent {
            seq,
            reason: reason.into(),
        }
    }
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > CONSUMER_NAME_BYTES_MAX || name.contains('\0') {
        return Err(Error::InvalidConfig {
            field: "consumer name",
            reason: format!("1 to {CONSUMER_NAME_BYTES_MAX} bytes of UTF-8, without NUL"),
        });
    }
    Ok(())
}

fn parked_key(name: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 9);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn position(dbs: &Dbs, txn: &RoTxn<'_>, name: &str) -> Result<Option<u64>> {
    match dbs.cursors.get(txn, name.as_bytes()).lmdb()? {
        None => Ok(None),
        Some(v) => <[u8; 8]>::try_from(v)
            .map(|b| Some(u64::from_le_bytes(b)))
            .map_err(|_| Error::Corrupt {
                seq: 0,
                reason: format!("the cursor of consumer {name:?} is {} bytes", v.len()),
            }),
    }
}

pub(crate) fn set_position(dbs: &Dbs, wtxn: &mut RwTxn<'_>, name: &str, seq: u64) -> Result<()> {
    dbs.cursors
        .put(wtxn, name.as_bytes(), &seq.to_le_bytes())
        .lmdb()
}

pub(crate) fn park(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    name: &str,
    seq: u64,
    reason: &str,
) -> Result<()> {
    dbs.parked
        .put(wtxn, &parked_key(name, seq), reason.as_bytes())
        .lmdb()
}

pub(crate) fn unpark(dbs: &Dbs, wtxn: &mut RwTxn<'_>, name: &str, seq: u64) -> Result<()> {
    dbs.parked
        .delete(wtxn, &parked_key(name, seq))
        .lmdb()
        .map(drop)
}

pub(crate) fn parked_of(dbs: &Dbs, txn: &RoTxn<'_>, name: &str) -> Result<Vec<ParkedEvent>> {
    let mut prefix = name.as_bytes().to_vec();
    prefix.push(0);
    let mut out = Vec::new();
    for entry in dbs.parked.prefix_iter(txn, &prefix).lmdb()? {
        let (key, value) = entry.lmdb()?;
        let Some(seq) = key
            .get(prefix.len()..)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
        else {
            continue;
        };
        out.push(ParkedEvent {
            seq: u64::from_be_bytes(seq),
            reason: String::from_utf8_lossy(value).into_owned(),
        });
    }
    Ok(out)
}

/// The `meta` key that asks the processor `name` to replay its parked events.
fn replay_key(name: &str) -> String {
    format!("replay_parked/{name}")
}

/// Whether someone asked the processor `name` to hand its parked events to its handler again
/// ([`Storage::request_parked_replay`]).
pub(crate) fn replay_requested(dbs: &Dbs, txn: &RoTxn<'_>, name: &str) -> Result<bool> {
    Ok(dbs.meta.get(txn, &replay_key(name)).lmdb()?.is_some())
}

/// Withdraws the request (the processor took it).
pub(crate) fn clear_replay(dbs: &Dbs, wtxn: &mut RwTxn<'_>, name: &str) -> Result<()> {
    dbs.meta.delete(wtxn, &replay_key(name)).lmdb().map(drop)
}

impl Storage {
    /// [`consumers`](Self::consumers) as of the snapshot `txn` (the metrics read them in the
    /// snapshot of their other gauges).
    pub(crate) fn consumers_in(&self, txn: &super::ReadTxn) -> Result<Vec<Consumer>> {
        let dbs = self.dbs();
        let head = last_seq(dbs, txn.raw())?;
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut names = Vec::new();
        for entry in dbs.cursors.iter(txn.raw()).lmdb()? {
            let (k, _) = entry.lmdb()?;
            names.push(String::from_utf8_lossy(k).into_owned());
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let position = position(dbs, txn.raw(), &name)?.unwrap_or(0);
            // Only kept events count: removed ones will never be handled.
            let lag_events = super::removal::kept_after(dbs, txn.raw(), position, head)?;
            let lag_seconds =
                match super::removal::record_at_or_after(dbs, txn.raw(), position + 1)? {
                    Some((_, timestamp_ns)) if lag_events > 0 => {
                        now_ns.saturating_sub(timestamp_ns) as f64 / 1e9
                    }
                    _ => 0.0,
                };
            let parked = parked_of(dbs, txn.raw(), &name)?.len() as u64;
            out.push(Consumer {
                name,
                position,
                head,
                lag_events,
                lag_seconds,
                parked,
            });
        }
        Ok(out)
    }
}

/// See [`Storage::consumer_position`](crate::Storage::consumer_position).
pub(crate) fn consumer_position(storage: &Storage, name: &str) -> Result<Option<u64>> {
    let txn = storage.read_txn()?;
    position(storage.dbs(), txn.raw(), name)
}

/// See [`Storage::consumers`](crate::Storage::consumers).
pub(crate) fn consumers(storage: &Storage) -> Result<Vec<Consumer>> {
    storage.consumers_in(&storage.read_txn()?)
}

/// See [`Storage::parked_events`](crate::Storage::parked_events).
pub(crate) fn parked_events(storage: &Storage, name: &str) -> Result<Vec<ParkedEvent>> {
    let txn = storage.read_txn()?;
    parked_of(storage.dbs(), txn.raw(), name)
}

/// See [`Storage::reset_consumer`](crate::Storage::reset_consumer).
pub(crate) fn reset_consumer(storage: &Storage, name: &str, position: u64) -> Result<()> {
    check_name(name)?;
    storage.write_durable(|wtxn, dbs| {
        set_position(dbs, wtxn, name, position)?;
        Ok(((), true))
    })
}

/// See [`Storage::delete_consumer`](crate::Storage::delete_consumer).
pub(crate) fn delete_consumer(storage: &Storage, name: &str) -> Result<bool> {
    storage.write_durable(|wtxn, dbs| {
        let existed = dbs.cursors.delete(wtxn, name.as_bytes()).lmdb()?;
        let parked: Vec<u64> = parked_of(dbs, wtxn, name)?.iter().map(|p| p.seq).collect();
        for seq in &parked {
            unpark(dbs, wtxn, name, *seq)?;
        }
        clear_replay(dbs, wtxn, name)?;
        Ok((existed || !parked.is_empty(), true))
    })
}

/// See [`Storage::request_parked_replay`](crate::Storage::request_parked_replay).
pub(crate) fn request_parked_replay(storage: &Storage, name: &str) -> Result<u64> {
    check_name(name)?;
    storage.write_durable(|wtxn, dbs| {
        let parked = parked_of(dbs, wtxn, name)?.len() as u64;
        if parked == 0 {
            return Ok((0, false));
        }
        dbs.meta.put(wtxn, &replay_key(name), &[1]).lmdb()?;
        Ok((parked, true))
    })
}

impl Storage {
    /// Whether a replay of the consumer `name`'s parked events was requested, in `txn`.
    pub(crate) fn replay_requested_in(&self, txn: &super::ReadTxn, name: &str) -> Result<bool> {
        replay_requested(self.dbs(), txn.raw(), name)
    }

    /// A consumer's checkpoint: parks `parked` and moves its cursor to `position`, in one
    /// transaction, if the cursor is still at `expected` (what this processor last wrote or
    /// read); [`Error::ConsumerMoved`] otherwise, with nothing written.
    pub(crate) fn checkpoint_consumer(
        &self,
        name: &str,
        expected: Option<u64>,
        position: u64,
        parked: &[(u64, String)],
    ) -> Result<()> {
        self.write(self.resize_wait(), |wtxn, dbs| {
            let found = self::position(dbs, wtxn, name)?;
            if found != expected {
                return Err(crate::Error::ConsumerMoved {
                    name: name.to_string(),
                    expected,
                    found,
                });
            }
            for (seq, reason) in parked {
                park(dbs, wtxn, name, *seq, reason)?;
            }
            set_position(dbs, wtxn, name, position)?;
            Ok(((), true))
        })
    }

    /// Ends a replay of the consumer `name`'s parked events: the events its handler took leave
    /// the parked list, and the request is withdrawn, in one transaction.
    pub(crate) fn finish_replay(&self, name: &str, taken: &[u64]) -> Result<()> {
        self.write(self.resize_wait(), |wtxn, dbs| {
            for seq in taken {
                unpark(dbs, wtxn, name, *seq)?;
            }
            clear_replay(dbs, wtxn, name)?;
            Ok(((), true))
        })
    }
}
