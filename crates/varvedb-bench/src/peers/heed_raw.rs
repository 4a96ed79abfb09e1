//! Raw heed: the events log alone, no index, no checks. The floor that shows our overhead.

use std::path::Path;

use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions, PutFlags, WithoutTls};
use rkyv::util::AlignedVec;

use crate::event::{BenchEvent, Tally, amount_at as amount};
use crate::store::{BenchError, BenchResult, BenchStore, Concurrency, failed};

/// One LMDB environment with one database: `u64 BE seq` → archived event.
pub struct HeedRaw {
    env: Env<WithoutTls>,
    log: Database<'static, Bytes, Bytes>,
}

impl HeedRaw {
    /// The name in the table.
    pub const NAME: &'static str = "raw heed";

    /// Opens a fresh environment in `dir`.
    pub fn open(dir: &Path) -> BenchResult<HeedRaw> {
        std::fs::create_dir_all(dir).map_err(failed)?;
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(64 << 30).max_dbs(2);
        // SAFETY: the directory is fresh and opened once by this harness.
        let env = unsafe { options.open(dir) }.map_err(failed)?;
        let wtxn = env.write_txn().map_err(failed)?;
        let created = env
            .create_databases_and_commit(wtxn, |opener, wtxn| {
                let log = opener.create_database::<Bytes, Bytes>(wtxn, Some("log"))?;
                Ok::<_, heed::Error>(heed::CommitOrAbort::<_, std::convert::Infallible>::Commit(
                    log,
                ))
            })
            .map_err(failed)?;
        let heed::CommitOrAbort::Commit(log) = created;
        Ok(HeedRaw { env, log })
    }

    fn write(&self, events: &mut dyn Iterator<Item = &BenchEvent>) -> BenchResult<()> {
        let mut wtxn = self.env.write_txn().map_err(failed)?;
        let mut seq = match self.log.last(&wtxn).map_err(failed)? {
            Some((k, _)) => u64::from_be_bytes(k.try_into().map_err(failed)?),
            None => 0,
        };
        for event in events {
            seq += 1;
            // rkyv's output is a multiple of the root's alignment (8 here); with 8-byte keys every
            // value then lands 8-aligned in the map, and reads need no copy.
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(event).map_err(failed)?;
            self.log
                .put_with_flags(&mut wtxn, PutFlags::APPEND, &seq.to_be_bytes(), &bytes)
                .map_err(failed)?;
        }
        wtxn.commit().map_err(failed)
    }
}

impl BenchStore for HeedRaw {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn append(&self, _stream: u128, _version: u32, events: &[BenchEvent]) -> BenchResult<()> {
        self.write(&mut events.iter())
    }

    fn append_multi(&self, batch: &[(u128, u32, BenchEvent)]) -> BenchResult<()> {
        self.write(&mut batch.iter().map(|(_, _, e)| e))
    }

    fn concurrency(&self) -> Concurrency {
        Concurrency::OneCommitEach
    }

    fn scan(&self) -> BenchResult<(u64, i64)> {
        let rtxn = self.env.read_txn().map_err(failed)?;
        let mut tally = Tally::default();
        for entry in self.log.iter(&rtxn).map_err(failed)? {
            tally.add(entry.map_err(failed)?.1);
        }
        tally.finish()
    }

    fn point_reads(&self, seqs: &[u64]) -> BenchResult<i64> {
        let rtxn = self.env.read_txn().map_err(failed)?;
        let mut buf = AlignedVec::new();
        let mut sum = 0;
        for &seq in seqs {
            let bytes = self
                .log
                .get(&rtxn, &seq.to_be_bytes())
                .map_err(failed)?
                .ok_or_else(|| BenchError::Failed(format!("no event at {seq}")))?;
            sum += amount(&mut buf, bytes)?;
        }
        Ok(sum)
    }

    fn read_stream(&self, _stream: u128) -> BenchResult<(u64, i64)> {
        Err(BenchError::Unsupported(
            "the floor keeps the log only, no stream index",
        ))
    }
}
