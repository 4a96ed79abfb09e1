//! UmaDB (`umadb-core`), in-process: its own copy-on-write B+tree with MVCC, two fdatasyncs per
//! commit, group commit through its writer thread, and a tag index. A stream is one tag.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot, watch};
use umadb_core::db::UmaDb as Engine;
use umadb_core::mvcc::{Mvcc, StorageOptions};
use umadb_core::writer_thread_blocking::writer_thread_blocking;
use umadb_core::writer_thread_request::WriterThreadRequest;
use umadb_dcb::{
    DcbAppendCondition, DcbError, DcbEvent, DcbEventStoreSync, DcbQuery, DcbQueryItem, DcbResult,
    DcbSequencedEvent,
};

use crate::event::{BenchEvent, Tally};
use crate::store::{BenchError, BenchResult, BenchStore, Concurrency, failed};

/// The event type every event is stored under.
const EVENT_TYPE: &str = "BenchEvent";
/// The most events the writer thread folds into one commit: the value UmaDB's own server uses.
const APPEND_BATCH_MAX_EVENTS: usize = 2_000;
/// Requests that may wait for the writer thread.
const QUEUE: usize = 1_024;
/// Events per `read` call of a scan. UmaDB's `read` collects its whole answer in memory before
/// it returns, so a scan pages through the log to keep memory bounded.
const SCAN_PAGE: u32 = 1_000;

/// Where a stream stands as this client last saw it: its version and the global position of
/// the event at that version.
#[derive(Clone, Copy)]
struct Seen {
    version: u32,
    position: u64,
}

/// UmaDB with `StorageOptions::default()`: durable, file I/O reads, no page cache.
pub struct UmaDb {
    engine: Engine,
    /// Every append goes to the writer thread, `None` once dropped.
    ///
    /// Never call `UmaDb::append` (`DcbEventStoreSync::append`) here: each call builds its own
    /// writer from the latest header and commits it, so two calls from different threads at
    /// once both commit from the same base and one of the acknowledged appends is lost.
    /// UmaDB's group-commit writer thread is its one safe path for concurrent appends, and the
    /// path its own server takes; this peer sends every append, even a lone one, through it,
    /// as VarveDB sends every append through its committer.
    requests: Option<mpsc::Sender<WriterThreadRequest>>,
    writer: Option<JoinHandle<()>>,
    /// The client's knowledge of its streams, for the append conditions.
    seen: Mutex<Knowledge>,
}

struct Knowledge {
    streams: HashMap<u128, Seen>,
    /// The highest position this client has had acknowledged: what it knows of every stream
    /// it wrote holds as of this position.
    head: u64,
    /// Whether the store was empty when this client opened it: then every stream it has not
    /// written is empty.
    complete: bool,
}

/// The tag of a stream.
fn tag(stream: u128) -> String {
    format!("stream-{stream:032x}")
}

fn stream_query(streams: impl IntoIterator<Item = u128>) -> DcbQuery {
    DcbQuery::with_items(
        streams
            .into_iter()
            .map(|s| DcbQueryItem::new().types([EVENT_TYPE]).tags([tag(s)])),
    )
}

fn dcb_event(stream: u128, event: &BenchEvent) -> BenchResult<DcbEvent> {
    // Serialized straight into the `Vec` the event keeps: no copy.
    let bytes = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(event, Vec::new())
        .map_err(failed)?;
    Ok(DcbEvent::new()
        .event_type(EVENT_TYPE)
        .tags([tag(stream)])
        .data(bytes))
}

fn conflict_or_failed(e: DcbError) -> BenchError {
    match e {
        DcbError::IntegrityError(why) => BenchError::Failed(format!("conflict: {why}")),
        other => failed(other),
    }
}

impl UmaDb {
    /// The name in the table.
    pub const NAME: &'static str = "UmaDB";

    /// Opens the store in `dir` (the file `dir/uma.db`), creating it if need be, and starts its
    /// writer thread.
    pub fn open(dir: &Path) -> BenchResult<UmaDb> {
        std::fs::create_dir_all(dir).map_err(failed)?;
        let options = StorageOptions::default().db_path(dir);
        // `Mvcc::new` prints five lines about the file it opened on stdout, where the table
        // goes. Silence stdout while it runs; if another silencer is active (tests run in
        // parallel), the lines go to stdout, which tests capture.
        let silence = gag::Gag::stdout().ok();
        let mvcc = Mvcc::new(false, options);
        drop(silence);
        let mvcc = Arc::new(mvcc.map_err(failed)?);
        let (requests, queue) = mpsc::channel(QUEUE);
        // Subscribers would watch the head; nothing here does.
        let (head_tx, _) = watch::channel(None);
        let for_writer = Arc::clone(&mvcc);
        let writer = std::thread::Builder::new()
            .name("umadb-writer".into())
            .spawn(move || {
                writer_thread_blocking(for_writer, queue, head_tx, APPEND_BATCH_MAX_EVENTS);
            })
            .map_err(failed)?;
        let engine = Engine::from_arc(mvcc);
        let knowledge = Knowledge {
            streams: HashMap::new(),
            head: 0,
            complete: engine.head().map_err(failed)?.is_none(),
        };
        Ok(UmaDb {
            engine,
            requests: Some(requests),
            writer: Some(writer),
            seen: Mutex::new(knowledge),
        })
    }

    fn seen(&self) -> MutexGuard<'_, Knowledge> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sender(&self) -> BenchResult<&mpsc::Sender<WriterThreadRequest>> {
        self.requests
            .as_ref()
            .ok_or_else(|| BenchError::Failed("the writer thread is gone".into()))
    }

    /// The position of `stream`'s event at `version` (0: none, the stream is new), from what
    /// this client saw, or else read from the store. A stream shorter than `version` is a
    /// conflict.
    fn position_of(&self, stream: u128, version: u32) -> BenchResult<Option<u64>> {
        if version == 0 {
            return Ok(None);
        }
        if let Some(seen) = self.seen().streams.get(&stream)
            && seen.version == version
        {
            return Ok(Some(seen.position));
        }
        let (events, _) = self
            .engine
            .read_with_head(Some(stream_query([stream])), None, false, Some(version))
            .map_err(failed)?;
        match events.last() {
            Some(last) if events.len() == version as usize => Ok(Some(last.position)),
            _ => Err(BenchError::Failed(format!(
                "conflict: stream {stream:#x} has {} events, expected {version}",
                events.len()
            ))),
        }
    }

    /// The request that appends `events` to `stream` if it is still at `version`: no event of
    /// the stream after the position of its `version`-th event.
    fn single_request(
        &self,
        stream: u128,
        version: u32,
        events: &[BenchEvent],
    ) -> BenchResult<Request> {
        let condition = DcbAppendCondition::new(stream_query([stream]))
            .after(self.position_of(stream, version)?);
        let events = events
            .iter()
            .map(|e| dcb_event(stream, e))
            .collect::<BenchResult<Vec<_>>>()?;
        Ok(Request {
            condition,
            after_commit: (1..=events.len() as u32)
                .map(|n| (stream, version + n))
                .collect(),
            events,
        })
    }

    /// Where `streams` stand (absent: empty), and the position as of which that holds.
    ///
    /// On a store this client created it has seen every append, so each stream stands where
    /// the client last saw it as of the highest position it has had acknowledged. (That needs
    /// appends to one stream to come from one thread at a time, as in every workload here.)
    /// Otherwise the client reads the streams in one query, as of the head that read returns.
    fn versions_as_of(
        &self,
        streams: &[(u128, u32)],
    ) -> BenchResult<(Option<u64>, HashMap<u128, u32>)> {
        {
            let seen = self.seen();
            if seen.complete {
                let versions = streams
                    .iter()
                    .filter_map(|(s, _)| seen.streams.get(s).map(|seen| (*s, seen.version)))
                    .collect();
                return Ok(((seen.head > 0).then_some(seen.head), versions));
            }
        }
        let tags: HashMap<String, u128> = streams.iter().map(|(s, _)| (tag(*s), *s)).collect();
        let query = stream_query(streams.iter().map(|(s, _)| *s));
        let (events, head) = self
            .engine
            .read_with_head(Some(query), None, false, None)
            .map_err(failed)?;
        let mut versions = HashMap::new();
        for e in &events {
            for t in &e.event.tags {
                if let Some(stream) = tags.get(t) {
                    *versions.entry(*stream).or_insert(0) += 1;
                }
            }
        }
        Ok((head, versions))
    }

    /// Sends `request` to the writer thread and waits for its commit, from a plain thread.
    fn commit(&self, request: Request) -> BenchResult<()> {
        let Request {
            events,
            condition,
            after_commit,
        } = request;
        let (message, answer) = message(events, condition);
        self.sender()?
            .blocking_send(message)
            .map_err(|_| BenchError::Failed("the writer thread stopped".into()))?;
        let last = answer
            .blocking_recv()
            .map_err(|_| BenchError::Failed("the writer thread dropped an append".into()))?;
        self.acknowledged(&after_commit, last)
    }

    /// Records where the streams of an acknowledged request now stand. `last` is the position
    /// of its last event; the request's events took consecutive positions.
    fn acknowledged(&self, after: &[(u128, u32)], last: DcbResult<u64>) -> BenchResult<()> {
        let last = last.map_err(conflict_or_failed)?;
        let mut seen = self.seen();
        seen.head = seen.head.max(last);
        // `after` is in event order, so a stream's last event is the one that stays; the i-th
        // of n events is `n - 1 - i` positions before `last`.
        let first = last.saturating_sub(after.len().saturating_sub(1) as u64);
        for (position, &(stream, version)) in (first..).zip(after) {
            seen.streams.insert(stream, Seen { version, position });
        }
        Ok(())
    }
}

/// An append for the writer thread, and what the client learns when it commits.
struct Request {
    events: Vec<DcbEvent>,
    condition: DcbAppendCondition,
    /// For each event, in order: its stream, and the stream's version with it.
    after_commit: Vec<(u128, u32)>,
}

/// The writer thread's message for a conditional append, and where its answer comes.
fn message(
    events: Vec<DcbEvent>,
    condition: DcbAppendCondition,
) -> (WriterThreadRequest, oneshot::Receiver<DcbResult<u64>>) {
    let (response_tx, answer) = oneshot::channel();
    let message = WriterThreadRequest::Append {
        events,
        condition: Some(condition),
        tracking_info: None,
        response_tx,
        cancel: None,
    };
    (message, answer)
}

impl Drop for UmaDb {
    fn drop(&mut self) {
        // Closing the queue ends the writer thread once it has answered every request.
        drop(self.requests.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl BenchStore for UmaDb {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn append(&self, stream: u128, version: u32, events: &[BenchEvent]) -> BenchResult<()> {
        let request = self.single_request(stream, version, events)?;
        self.commit(request)
    }

    fn append_multi(&self, batch: &[(u128, u32, BenchEvent)]) -> BenchResult<()> {
        // Each stream of the batch has its own expected version, but UmaDB's condition has one
        // `after` for its whole query. So the client states what it knows of all the batch's
        // streams as of one position, and the condition rejects any event of theirs after it.
        let mut firsts: Vec<(u128, u32)> = Vec::new();
        let mut next: HashMap<u128, u32> = HashMap::new();
        let mut after_commit = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        for (stream, version, event) in batch {
            match next.get(stream) {
                Some(expected) if expected != version => {
                    return Err(BenchError::Failed(format!(
                        "stream {stream:#x} appears at version {version} after {expected}"
                    )));
                }
                Some(_) => {}
                None => firsts.push((*stream, *version)),
            }
            next.insert(*stream, version + 1);
            after_commit.push((*stream, version + 1));
            events.push(dcb_event(*stream, event)?);
        }
        let (as_of, actual) = self.versions_as_of(&firsts)?;
        for (stream, version) in &firsts {
            let found = actual.get(stream).copied().unwrap_or(0);
            if found != *version {
                return Err(BenchError::Failed(format!(
                    "conflict: stream {stream:#x} is at version {found}, expected {version}"
                )));
            }
        }
        let streams = firsts.iter().map(|(s, _)| *s);
        let condition = DcbAppendCondition::new(stream_query(streams)).after(as_of);
        self.commit(Request {
            events,
            condition,
            after_commit,
        })
    }

    fn concurrency(&self) -> Concurrency {
        Concurrency::GroupCommit
    }

    fn dcb_append(&self, tag: &str, after: Option<u64>, events: &[BenchEvent]) -> BenchResult<u64> {
        let query = DcbQuery::with_items([DcbQueryItem::new().types([EVENT_TYPE]).tags([tag])]);
        let condition = DcbAppendCondition::new(query).after(after);
        let events = events
            .iter()
            .map(|e| {
                let bytes = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(e, Vec::new())
                    .map_err(failed)?;
                Ok(DcbEvent::new()
                    .event_type(EVENT_TYPE)
                    .tags([tag])
                    .data(bytes))
            })
            .collect::<BenchResult<Vec<_>>>()?;
        let (message, answer) = message(events, condition);
        self.sender()?
            .blocking_send(message)
            .map_err(|_| BenchError::Failed("the writer thread stopped".into()))?;
        answer
            .blocking_recv()
            .map_err(|_| BenchError::Failed("the writer thread dropped an append".into()))?
            .map_err(conflict_or_failed)
    }

    fn read_tag(&self, tag: &str) -> BenchResult<(u64, i64)> {
        let query = DcbQuery::with_items([DcbQueryItem::new().types([EVENT_TYPE]).tags([tag])]);
        let (events, _) = self
            .engine
            .read_with_head(Some(query), None, false, None)
            .map_err(failed)?;
        let mut tally = Tally::default();
        for e in &events {
            tally.add(&e.event.data);
        }
        tally.finish()
    }

    fn scan(&self) -> BenchResult<(u64, i64)> {
        let head = self.engine.head().map_err(failed)?.unwrap_or(0);
        let mut tally = Tally::default();
        let mut from = 1;
        while from <= head {
            let (events, _) = self
                .engine
                .read_with_head(None, Some(from), false, Some(SCAN_PAGE))
                .map_err(failed)?;
            let Some(last) = events.last() else {
                return Err(BenchError::Failed(format!(
                    "the log ends before {from}, head {head}"
                )));
            };
            from = last.position + 1;
            for e in &events {
                tally.add(&e.event.data);
            }
        }
        tally.finish()
    }

    fn point_reads(&self, seqs: &[u64]) -> BenchResult<i64> {
        // The sync API has no snapshot spanning calls: each read opens its own (a cheap MVCC
        // reader), where the other peers use one read transaction for all of them.
        let mut tally = Tally::default();
        for &seq in seqs {
            let (events, _) = self
                .engine
                .read_with_head(None, Some(seq), false, Some(1))
                .map_err(failed)?;
            match events.first() {
                Some(DcbSequencedEvent {
                    position, event, ..
                }) if *position == seq => tally.add(&event.data),
                _ => return Err(BenchError::Failed(format!("no event at {seq}"))),
            }
        }
        tally.finish().map(|(_, sum)| sum)
    }

    fn read_stream(&self, stream: u128) -> BenchResult<(u64, i64)> {
        let (events, _) = self
            .engine
            .read_with_head(Some(stream_query([stream])), None, false, None)
            .map_err(failed)?;
        let mut tally = Tally::default();
        for e in &events {
            tally.add(&e.event.data);
        }
        tally.finish()
    }

    fn bytes_in_use(&self) -> BenchResult<Option<(u64, String)>> {
        // UmaDB grows its file by fallocating 256 MiB at a time, so the file's size says little
        // about a small store. Its header's next page id is the high-water mark of the pages it
        // has used, as an LMDB file's size is.
        let header = self.engine.mvcc.get_latest_header_page().map_err(failed)?;
        let pages = header.as_header_node().map_err(failed)?.next_page_id.0;
        let file = std::fs::metadata(&self.engine.mvcc.db_path).map_err(failed)?;
        Ok(Some((
            pages * self.engine.mvcc.page_size as u64,
            format!(
                "pages in use; UmaDB preallocates its file 256 MiB at a time (here {} MiB)",
                file.len() >> 20
            ),
        )))
    }

    fn async_appends(&self, tasks: usize, per_task: u32) -> BenchResult<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .map_err(failed)?;
        let sender = self.sender()?;
        rt.block_on(async {
            let handles: Vec<_> = (0..tasks)
                .map(|t| {
                    let sender = sender.clone();
                    let stream = (1u128 << 100) + t as u128;
                    let events = (0..per_task)
                        .map(|v| dcb_event(stream, &crate::event::event(u64::from(v))))
                        .collect::<BenchResult<Vec<_>>>();
                    tokio::spawn(async move {
                        // Each task owns its stream, so it knows the position of its last event.
                        let mut last: Option<u64> = None;
                        for event in events? {
                            let condition =
                                DcbAppendCondition::new(stream_query([stream])).after(last);
                            let (message, answer) = message(vec![event], condition);
                            sender.send(message).await.map_err(|_| {
                                BenchError::Failed("the writer thread stopped".into())
                            })?;
                            let position = answer
                                .await
                                .map_err(|_| BenchError::Failed("an append was dropped".into()))?
                                .map_err(conflict_or_failed)?;
                            last = Some(position);
                        }
                        Ok::<_, BenchError>(())
                    })
                })
                .collect();
            for h in handles {
                h.await.map_err(failed)??;
            }
            Ok(())
        })
    }
}
