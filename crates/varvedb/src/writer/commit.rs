//! Prepared records and the commit of one atomic append (one or more streams).

use std::time::{SystemTime, UNIX_EPOCH};

use heed::PutFlags;
use rkyv::util::AlignedVec;

use super::{Appended, ExpectedVersion};
use crate::error::{Error, Result};
use crate::storage::record::{self, RecordHeader};
use crate::storage::{Storage, keys, stream_head};

/// A record whose payload is serialized and digested, waiting for its stream, version and seq.
pub(crate) struct Prepared {
    /// Header placeholder, payload, zero padding: the exact bytes stored.
    pub(crate) record: AlignedVec,
    pub(crate) payload_len: u32,
    pub(crate) digest: u64,
}

/// The events of one stream inside an atomic append.
pub(crate) struct StreamAppend {
    pub(crate) stream_id: u128,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<Prepared>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Commits every stream's events in one write transaction, or nothing.
pub(crate) fn commit(storage: &Storage, appends: &mut [StreamAppend]) -> Result<Vec<Appended>> {
    let total: usize = appends.iter().map(|a| a.events.len()).sum();
    let inline_max = storage.inline_record_max();
    storage.write(|wtxn, dbs| {
        let mut seq = crate::storage::last_seq(dbs, wtxn)?;
        let timestamp_ns = now_ns();
        let mut out = Vec::with_capacity(total);
        for append in appends.iter_mut() {
            let stream_id = append.stream_id;
            let (current, _) = stream_head(dbs, wtxn, stream_id)?.unwrap_or((0, 0));
            if !append.expected.accepts(current) {
                return Err(Error::ConcurrencyConflict {
                    stream_id,
                    expected: append.expected,
                    actual: current,
                });
            }
            let count = u32::try_from(append.events.len())
                .ok()
                .filter(|n| current.checked_add(*n).is_some());
            if count.is_none() {
                return Err(Error::StreamFull {
                    stream_id,
                    version: current,
                    events: append.events.len(),
                });
            }
            let mut version = current;
            for event in &mut append.events {
                seq += 1;
                version += 1;
                let header = RecordHeader {
                    flags: 0,
                    stream_id,
                    version,
                    timestamp_ns,
                };
                record::seal(&mut event.record, event.payload_len, event.digest, &header);
                // Seqs only grow, so APPEND skips the search and fills pages completely.
                if event.record.len() <= inline_max {
                    dbs.events.put_with_flags(
                        wtxn,
                        PutFlags::APPEND,
                        &keys::seq_key(seq),
                        &event.record,
                    )?;
                } else {
                    dbs.events.put_with_flags(
                        wtxn,
                        PutFlags::APPEND,
                        &keys::seq_key_long(seq),
                        &event.record,
                    )?;
                }
                dbs.index.put_with_flags(
                    wtxn,
                    PutFlags::NO_OVERWRITE,
                    &keys::index_key(stream_id, version),
                    &seq.to_be_bytes(),
                )?;
                out.push(Appended { seq, version });
            }
            dbs.heads.put(
                wtxn,
                &keys::head_key(stream_id),
                &keys::head_value(version, seq),
            )?;
        }
        Ok(out)
    })
}
