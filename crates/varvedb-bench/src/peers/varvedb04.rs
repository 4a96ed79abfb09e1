//! The published `varvedb` 0.4.2 from crates.io: the original implementation of our seeds.
//!
//! Its API: named typed streams of `u64` stream ids, `append(&mut self)` with no expected
//! version (no optimistic concurrency), 0-based sequences, reads that copy the payload.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rkyv::util::AlignedVec;
use varvedb04::{GlobalReader, GlobalSequence, Stream, StreamId, Varve, VarveConfig};

use crate::event::{BenchEvent, Tally, amount_at as amount};
use crate::store::{BenchError, BenchResult, BenchStore, Concurrency, failed};

/// 0.4.2's serialization buffer: larger than any event of the harness.
/// Its serializer scratch space: a const-generic array inside the stream handle, which bounds
/// the event size. 16 KiB holds the 10 KiB events of (h); a 1 MiB array would not fit the
/// stack of the threads that build the handle.
const BUF: usize = 16 << 10;
/// The largest note an event may carry and still fit `BUF` once archived.
const NOTE_MAX: usize = BUF - 512;

/// One `Varve` with one named stream. `append` takes `&mut self`, so writers share the stream
/// handle behind a mutex: each append is its own commit (0.4.2 has no group commit).
pub struct VarveDb04 {
    stream: Mutex<Stream<BenchEvent, BUF>>,
    global: Mutex<GlobalReader>,
    _varve: Varve,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// 0.4.2 stream ids are 64-bit.
fn id(stream: u128) -> StreamId {
    StreamId((stream as u64) ^ ((stream >> 64) as u64))
}

impl VarveDb04 {
    /// The name in the table.
    pub const NAME: &'static str = "varvedb 0.4.2";

    /// Opens a store in `dir` with a map large enough for any run (its default is 10 MB).
    pub fn open(dir: &Path) -> BenchResult<VarveDb04> {
        std::fs::create_dir_all(dir).map_err(failed)?;
        let mut varve = Varve::with_config(
            dir,
            VarveConfig {
                map_size: 64 << 30,
                ..Default::default()
            },
        )
        .map_err(failed)?;
        let stream = varve.stream::<BenchEvent, BUF>("events").map_err(failed)?;
        Ok(VarveDb04 {
            stream: Mutex::new(stream),
            global: Mutex::new(varve.global_reader()),
            _varve: varve,
        })
    }
}

impl BenchStore for VarveDb04 {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn append(&self, stream: u128, _version: u32, events: &[BenchEvent]) -> BenchResult<()> {
        if events.iter().any(|e| e.note.len() > NOTE_MAX) {
            return Err(BenchError::Unsupported(
                "events are bounded by a fixed serializer array (16 KiB here)",
            ));
        }
        let mut handle = lock(&self.stream);
        match events {
            [one] => handle.append_alloc(id(stream), one).map(drop),
            many => handle.append_batch_alloc(id(stream), many).map(drop),
        }
        .map_err(failed)
    }

    fn append_multi(&self, _batch: &[(u128, u32, BenchEvent)]) -> BenchResult<()> {
        Err(BenchError::Unsupported(
            "a batch holds one stream; no atomic multi-stream append",
        ))
    }

    fn concurrency(&self) -> Concurrency {
        Concurrency::OneCommitEach
    }

    fn scan(&self) -> BenchResult<(u64, i64)> {
        let global = lock(&self.global);
        let mut tally = Tally::default();
        global
            .iter_from(GlobalSequence(0))
            .map_err(failed)?
            .for_each(|e| tally.add(&e.payload))
            .map_err(failed)?;
        tally.finish()
    }

    fn point_reads(&self, seqs: &[u64]) -> BenchResult<i64> {
        let mut global = lock(&self.global);
        let mut buf = AlignedVec::new();
        let mut sum = 0;
        for &seq in seqs {
            // 0.4.2 numbers events from 0 and opens a read transaction per call.
            let bytes = global
                .get_bytes(GlobalSequence(seq - 1))
                .map_err(failed)?
                .ok_or_else(|| BenchError::Failed(format!("no event at {seq}")))?;
            sum += amount(&mut buf, bytes)?;
        }
        Ok(sum)
    }

    fn read_stream(&self, stream: u128) -> BenchResult<(u64, i64)> {
        let reader = lock(&self.stream).reader();
        let mut tally = Tally::default();
        reader
            .iter_stream(id(stream), None)
            .map_err(failed)?
            .for_each(|_, payload| tally.add(payload))
            .map_err(failed)?;
        tally.finish()
    }
}
