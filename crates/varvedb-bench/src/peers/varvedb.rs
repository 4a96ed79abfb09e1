//! VarveDB itself, with its defaults (durable, group commit), in plaintext and encrypted.

use std::path::Path;

use varvedb::{
    Append, AppendOptions, ExpectedVersion, Query, Reader, Storage, StorageConfig, Writer,
};

use crate::event::BenchEvent;
use crate::store::{BenchError, BenchResult, BenchStore, Concurrency, failed};

/// VarveDB with `Durability::Sync`.
pub struct VarveDb {
    name: &'static str,
    storage: Storage,
    writer: Writer<BenchEvent>,
    reader: Reader<BenchEvent>,
}

impl VarveDb {
    /// The name in the table.
    pub const NAME: &'static str = "VarveDB";
    /// The name of the encrypted store in the table.
    pub const NAME_ENCRYPTED: &'static str = "VarveDB encrypted";

    /// Opens a store in `dir`.
    pub fn open(dir: &Path) -> BenchResult<VarveDb> {
        Self::open_with(dir, false)
    }

    /// Opens a store in `dir` that encrypts every stream (AES-256-GCM, a fixed bench key).
    pub fn open_encrypted(dir: &Path) -> BenchResult<VarveDb> {
        Self::open_with(dir, true)
    }

    fn open_with(dir: &Path, encrypted: bool) -> BenchResult<VarveDb> {
        let storage = Storage::open(StorageConfig {
            path: dir.into(),
            encryption_enabled: encrypted,
            master_key: encrypted.then_some([0x5a; 32]),
            ..Default::default()
        })
        .map_err(failed)?;
        Ok(VarveDb {
            name: if encrypted {
                Self::NAME_ENCRYPTED
            } else {
                Self::NAME
            },
            writer: Writer::new(storage.clone()),
            reader: Reader::new(storage.clone()),
            storage,
        })
    }
}

impl BenchStore for VarveDb {
    fn name(&self) -> &'static str {
        self.name
    }

    fn append(&self, stream: u128, version: u32, events: &[BenchEvent]) -> BenchResult<()> {
        let expected = ExpectedVersion::Exact(version);
        match events {
            [one] => self.writer.append(stream, expected, one).map(drop),
            many => self.writer.append_batch(stream, expected, many).map(drop),
        }
        .map_err(failed)
    }

    fn append_multi(&self, batch: &[(u128, u32, BenchEvent)]) -> BenchResult<()> {
        let append = batch.iter().fold(Append::new(), |a, (s, v, e)| {
            a.and(*s, ExpectedVersion::Exact(*v), std::slice::from_ref(e))
        });
        self.writer.commit(append).map(drop).map_err(failed)
    }

    fn concurrency(&self) -> Concurrency {
        Concurrency::GroupCommit
    }

    fn scan(&self) -> BenchResult<(u64, i64)> {
        let txn = self.storage.read_txn().map_err(failed)?;
        let (mut n, mut sum) = (0, 0);
        for event in self.reader.read_all(&txn, 1) {
            let event = event.map_err(failed)?;
            n += 1;
            sum += event.amount.to_native();
        }
        Ok((n, sum))
    }

    fn point_reads(&self, seqs: &[u64]) -> BenchResult<i64> {
        let txn = self.storage.read_txn().map_err(failed)?;
        let mut sum = 0;
        for &seq in seqs {
            let event = self
                .reader
                .get(&txn, seq)
                .map_err(failed)?
                .ok_or_else(|| BenchError::Failed(format!("no event at {seq}")))?;
            sum += event.amount.to_native();
        }
        Ok(sum)
    }

    fn read_stream(&self, stream: u128) -> BenchResult<(u64, i64)> {
        let txn = self.storage.read_txn().map_err(failed)?;
        let (mut n, mut sum) = (0, 0);
        for event in self.reader.read_stream(&txn, stream, 1) {
            let event = event.map_err(failed)?;
            n += 1;
            sum += event.amount.to_native();
        }
        Ok((n, sum))
    }

    fn dcb_append(&self, tag: &str, after: Option<u64>, events: &[BenchEvent]) -> BenchResult<u64> {
        let query = Query::new().types(["BenchEvent"]).tags([tag]);
        let options = vec![AppendOptions::new().tag(tag); events.len()];
        let appended = self
            .writer
            .commit(
                Append::stream(tag_stream(tag), ExpectedVersion::Auto, events)
                    .options(&options)
                    .when(&query, after),
            )
            .map_err(failed)?;
        appended
            .last()
            .map(|a| a.seq)
            .ok_or_else(|| BenchError::Failed("an append of no events".into()))
    }

    fn read_tag(&self, tag: &str) -> BenchResult<(u64, i64)> {
        let txn = self.storage.read_txn().map_err(failed)?;
        let query = Query::new().types(["BenchEvent"]).tags([tag]);
        let (mut n, mut sum) = (0, 0);
        for event in self.reader.read_query(&txn, &query, 0) {
            let event = event.map_err(failed)?;
            n += 1;
            sum += event.amount.to_native();
        }
        Ok((n, sum))
    }

    fn async_appends(&self, tasks: usize, per_task: u32) -> BenchResult<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .map_err(failed)?;
        rt.block_on(async {
            let handles: Vec<_> = (0..tasks)
                .map(|t| {
                    let writer = self.writer.clone();
                    tokio::spawn(async move {
                        let stream = (1u128 << 100) + t as u128;
                        for v in 0..per_task {
                            let e = crate::event::event(u64::from(v));
                            writer
                                .append_async(stream, ExpectedVersion::Exact(v), &e)
                                .await?;
                        }
                        Ok::<_, varvedb::Error>(())
                    })
                })
                .collect();
            for h in handles {
                h.await.map_err(failed)?.map_err(failed)?;
            }
            Ok(())
        })
    }
}

/// The stream of a tag's events: the DCB workloads name tags, and a VarveDB event also belongs
/// to a stream.
fn tag_stream(tag: &str) -> u128 {
    let hash = blake3::hash(tag.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash.as_bytes()[..16]);
    u128::from_le_bytes(id) >> 1
}
