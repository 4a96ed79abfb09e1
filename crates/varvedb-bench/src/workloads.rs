//! The workloads (a)–(g), each run several times against each peer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::event::{BenchEvent, event, large_event};
use crate::report::{Cell, Row, Unit};
use crate::store::{BenchError, BenchResult, BenchStore, Concurrency};
use crate::{Options, peers};

/// Streams of the "few hot streams" variants.
const HOT_STREAMS: u128 = 4;
/// Streams of the store that (d)–(f) read, each written in batches of 100.
const READ_STREAMS: u64 = 1_000;
const READ_BATCH: u64 = 100;
/// The streams of the batch target ("10K random streams").
const TARGET_STREAMS: u64 = 10_000;
/// The archived sizes of the large-payload workloads (h).
const KIB_10: usize = 10 << 10;
const MIB_1: usize = 1 << 20;
/// Events per batch of the 10 KiB workloads.
const LARGE_BATCH: usize = 100;
/// Distinct payloads of the repeated-payload workload.
const DISTINCT_PAYLOADS: u64 = 16;

/// splitmix64: a deterministic stream of well-mixed numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The `i`-th of `n` random-looking stream ids.
fn random_stream(i: u64) -> u128 {
    let mut rng = Rng(i);
    (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 1
}

/// What one run of a workload measured.
enum Measured {
    /// Events (or reads) per second.
    Rate(f64),
    /// Rate, and each operation's latency.
    RateAndLatency(f64, Vec<Duration>),
}

fn rate(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// A writer's view of stream versions (each writer owns its streams).
#[derive(Default)]
struct Versions(HashMap<u128, u32>);

impl Versions {
    fn take(&mut self, stream: u128, n: u32) -> u32 {
        let v = self.0.entry(stream).or_insert(0);
        let current = *v;
        *v += n;
        current
    }
}

fn single_appends(store: &dyn BenchStore, o: &Options, hot: bool) -> BenchResult<Measured> {
    let mut versions = Versions::default();
    let mut rng = Rng(1);
    let start = Instant::now();
    for i in 0..o.single_appends {
        let stream = if hot {
            i as u128 % HOT_STREAMS + 1
        } else {
            random_stream(rng.next() % o.random_streams)
        };
        let v = versions.take(stream, 1);
        store.append(stream, v, &[event(i as u64)])?;
    }
    Ok(Measured::Rate(rate(o.single_appends, start.elapsed())))
}

fn concurrent_appends(store: &dyn BenchStore, o: &Options, hot: bool) -> BenchResult<Measured> {
    let barrier = Arc::new(Barrier::new(o.writers));
    let per_writer_streams = (o.random_streams / o.writers as u64).max(1);
    let (elapsed, latencies) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..o.writers)
            .map(|t| {
                let barrier = Arc::clone(&barrier);
                s.spawn(move || -> BenchResult<Vec<Duration>> {
                    let mut versions = Versions::default();
                    let mut rng = Rng(t as u64 + 1);
                    let mut latencies = Vec::with_capacity(o.appends_per_writer);
                    barrier.wait();
                    for i in 0..o.appends_per_writer {
                        // Each writer owns its streams, so it knows their versions.
                        let stream = if hot {
                            t as u128 + 1
                        } else {
                            let k = rng.next() % per_writer_streams;
                            random_stream(k * o.writers as u64 + t as u64)
                        };
                        let v = versions.take(stream, 1);
                        let e = event((t * o.appends_per_writer + i) as u64);
                        let begun = Instant::now();
                        store.append(stream, v, std::slice::from_ref(&e))?;
                        latencies.push(begun.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let start = Instant::now();
        let mut all = Vec::new();
        for h in handles {
            let joined = h
                .join()
                .map_err(|_| BenchError::Failed("a writer thread panicked".into()))?;
            all.extend(joined?);
        }
        Ok::<_, BenchError>((start.elapsed(), all))
    })?;
    Ok(Measured::RateAndLatency(
        rate(o.writers * o.appends_per_writer, elapsed),
        latencies,
    ))
}

fn batches(
    store: &dyn BenchStore,
    o: &Options,
    size: usize,
    streams: Option<u64>,
) -> BenchResult<Measured> {
    let mut versions = Versions::default();
    let mut rng = Rng(7);
    let mut next = 0u64;
    let mut one_batch = |versions: &mut Versions, rng: &mut Rng, j: usize| -> BenchResult<()> {
        match streams {
            None => {
                let stream = j as u128 % HOT_STREAMS + 1;
                let events: Vec<BenchEvent> = (0..size).map(|k| event(next + k as u64)).collect();
                next += size as u64;
                let v = versions.take(stream, size as u32);
                store.append(stream, v, &events)
            }
            Some(pool) => {
                let batch: Vec<(u128, u32, BenchEvent)> = (0..size)
                    .map(|k| {
                        let stream = random_stream(rng.next() % pool);
                        (stream, versions.take(stream, 1), event(next + k as u64))
                    })
                    .collect();
                next += size as u64;
                // Two events of one batch may share a stream; each carries its own version.
                store.append_multi(&batch)
            }
        }
    };
    if streams == Some(TARGET_STREAMS) {
        // The 10K-stream figure is taken on a store that already holds every stream, several
        // times over, so that each batch updates existing entries as it would in production.
        for j in 0..o.batches {
            one_batch(&mut versions, &mut rng, j)?;
        }
    }
    let start = Instant::now();
    for j in 0..o.batches {
        one_batch(&mut versions, &mut rng, j)?;
    }
    Ok(Measured::Rate(rate(o.batches * size, start.elapsed())))
}

fn async_appends(store: &dyn BenchStore, o: &Options) -> BenchResult<Measured> {
    let start = Instant::now();
    store.async_appends(o.async_tasks, o.async_appends_per_task)?;
    Ok(Measured::Rate(rate(
        o.async_tasks * o.async_appends_per_task as usize,
        start.elapsed(),
    )))
}

/// Fills a store for the read workloads: batches of 100 to 1,000 streams in turn.
fn fill(store: &dyn BenchStore, events: u64) -> BenchResult<()> {
    let mut i = 0;
    while i < events {
        let n = READ_BATCH.min(events - i);
        let batch_no = i / READ_BATCH;
        let stream = u128::from(batch_no % READ_STREAMS) + 1;
        let version = (batch_no / READ_STREAMS * READ_BATCH) as u32;
        let batch: Vec<BenchEvent> = (i..i + n).map(event).collect();
        store.append(stream, version, &batch)?;
        i += n;
    }
    Ok(())
}

/// The expected result of a scan of the filled store: every peer must agree.
fn expected_scan(events: u64) -> (u64, i64) {
    (events, (0..events).map(|i| event(i).amount).sum())
}

fn scan(store: &dyn BenchStore, o: &Options) -> BenchResult<Measured> {
    let start = Instant::now();
    let found = store.scan()?;
    let elapsed = start.elapsed();
    if found != expected_scan(o.read_events) {
        return Err(BenchError::Failed(format!(
            "scan found {found:?}, expected {:?}",
            expected_scan(o.read_events)
        )));
    }
    Ok(Measured::Rate(rate(o.read_events as usize, elapsed)))
}

fn point_reads(store: &dyn BenchStore, o: &Options) -> BenchResult<Measured> {
    let mut rng = Rng(11);
    let seqs: Vec<u64> = (0..o.point_reads)
        .map(|_| rng.next() % o.read_events + 1)
        .collect();
    let expected: i64 = seqs.iter().map(|s| event(s - 1).amount).sum();
    let start = Instant::now();
    let sum = store.point_reads(&seqs)?;
    let elapsed = start.elapsed();
    if sum != expected {
        return Err(BenchError::Failed(format!(
            "point reads summed {sum}, expected {expected}"
        )));
    }
    Ok(Measured::Rate(rate(o.point_reads, elapsed)))
}

fn stream_reads(store: &dyn BenchStore, o: &Options) -> BenchResult<Measured> {
    let mut rng = Rng(13);
    let streams = READ_STREAMS.min(o.read_events.div_ceil(READ_BATCH));
    let mut events = 0;
    let start = Instant::now();
    for _ in 0..o.stream_reads {
        let stream = u128::from(rng.next() % streams) + 1;
        let (n, _) = store.read_stream(stream)?;
        if n == 0 {
            return Err(BenchError::Failed(format!("stream {stream} read empty")));
        }
        events += n as usize;
    }
    Ok(Measured::Rate(rate(events, start.elapsed())))
}

/// (h) Large payloads, 4 hot streams: batches of 100 10 KiB events, or single 1 MiB events.
/// `distinct`: the payloads repeat after this many events (identical events, as when one
/// document is attached to many).
fn large_appends(
    store: &dyn BenchStore,
    size: usize,
    events: usize,
    batch: usize,
    distinct: Option<u64>,
) -> BenchResult<Measured> {
    // The events are built before the clock starts: megabytes of them.
    let batches: Vec<Vec<BenchEvent>> = (0..events)
        .step_by(batch)
        .map(|first| {
            (first..events.min(first + batch))
                .map(|i| large_event(distinct.map_or(i as u64, |d| i as u64 % d), size))
                .collect()
        })
        .collect();
    let mut versions = Versions::default();
    let start = Instant::now();
    for (j, batch) in batches.iter().enumerate() {
        let stream = j as u128 % HOT_STREAMS + 1;
        store.append(stream, versions.take(stream, batch.len() as u32), batch)?;
    }
    Ok(Measured::Rate(rate(events, start.elapsed())))
}

/// Fills a store with `events` large events (batches of up to 100, 4 streams) for a scan.
fn fill_large(store: &dyn BenchStore, size: usize, events: u64) -> BenchResult<()> {
    let batch = (LARGE_BATCH as u64).min((64 << 20) / size as u64).max(1);
    let mut versions = Versions::default();
    let mut i = 0;
    while i < events {
        let n = batch.min(events - i);
        let stream = u128::from(i / batch) % HOT_STREAMS + 1;
        let events: Vec<BenchEvent> = (i..i + n).map(|i| large_event(i, size)).collect();
        store.append(stream, versions.take(stream, n as u32), &events)?;
        i += n;
    }
    Ok(())
}

fn large_scan(store: &dyn BenchStore, events: u64) -> BenchResult<Measured> {
    let start = Instant::now();
    let found = store.scan()?;
    let elapsed = start.elapsed();
    if found != expected_scan(events) {
        return Err(BenchError::Failed(format!(
            "scan found {found:?}, expected {:?}",
            expected_scan(events)
        )));
    }
    Ok(Measured::Rate(rate(events as usize, elapsed)))
}

/// The bytes of the files under `dir` (the peer's store, closed).
pub(crate) fn dir_bytes(dir: &Path) -> BenchResult<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(crate::store::failed)? {
        let entry = entry.map_err(crate::store::failed)?;
        let meta = entry.metadata().map_err(crate::store::failed)?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The tags of the DCB workloads (i).
const DCB_TAGS: u64 = 1_000;
/// Events in the store the DCB query reads run on, and tags read per run.
const DCB_READ_EVENTS: u64 = 100_000;
const DCB_READ_TAGS: u64 = 100;

/// (i) DCB appends: `writers` threads each append single events, each tagged with one of its
/// own tags and conditional on no event with that tag after the last one it wrote (UmaDB's own
/// benchmark shape). Returns events per second.
fn dcb_appends(store: &dyn BenchStore, o: &Options, writers: usize) -> BenchResult<Measured> {
    let per_writer = if writers == 1 {
        o.single_appends
    } else {
        o.appends_per_writer
    };
    let tags_each = (DCB_TAGS / writers as u64).max(1);
    let barrier = Arc::new(Barrier::new(writers));
    let elapsed = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|t| {
                let barrier = Arc::clone(&barrier);
                s.spawn(move || -> BenchResult<()> {
                    let mut last: HashMap<u64, u64> = HashMap::new();
                    let mut rng = Rng(t as u64 + 7);
                    barrier.wait();
                    for i in 0..per_writer {
                        let k = rng.next() % tags_each;
                        let tag = format!("tag-{t}-{k}");
                        let e = event((t * per_writer + i) as u64);
                        let at = store.dcb_append(
                            &tag,
                            last.get(&k).copied(),
                            std::slice::from_ref(&e),
                        )?;
                        last.insert(k, at);
                    }
                    Ok(())
                })
            })
            .collect();
        let start = Instant::now();
        for h in handles {
            h.join()
                .map_err(|_| BenchError::Failed("a writer thread panicked".into()))??;
        }
        Ok::<_, BenchError>(start.elapsed())
    })?;
    Ok(Measured::Rate(rate(writers * per_writer, elapsed)))
}

/// (i) DCB query reads: a store of [`DCB_READ_EVENTS`] events over [`DCB_TAGS`] tags (written
/// in conditional batches of 100, not timed), then [`DCB_READ_TAGS`] tags read by query.
fn dcb_query_reads(store: &dyn BenchStore, _o: &Options) -> BenchResult<Measured> {
    let mut last: HashMap<u64, u64> = HashMap::new();
    let batch = 100u64;
    for b in 0..DCB_READ_EVENTS / batch {
        let k = b % DCB_TAGS;
        let events: Vec<BenchEvent> = (0..batch).map(|i| event(b * batch + i)).collect();
        let at = store.dcb_append(&format!("tag-{k}"), last.get(&k).copied(), &events)?;
        last.insert(k, at);
    }
    let start = Instant::now();
    let mut read = 0u64;
    for k in 0..DCB_READ_TAGS {
        let (n, _) = store.read_tag(&format!("tag-{}", k * (DCB_TAGS / DCB_READ_TAGS)))?;
        if n != DCB_READ_EVENTS / DCB_TAGS {
            return Err(BenchError::Failed(format!(
                "tag {k} has {n} events, expected {}",
                DCB_READ_EVENTS / DCB_TAGS
            )));
        }
        read += n;
    }
    Ok(Measured::Rate(rate(read as usize, start.elapsed())))
}

type WriteFn = fn(&dyn BenchStore, &Options) -> BenchResult<Measured>;

/// The write workloads, in table order: id, title, function.
fn write_workloads(o: &Options) -> Vec<(&'static str, String, WriteFn)> {
    let writers = o.writers;
    let tasks = o.async_tasks;
    vec![
        (
            "a_hot",
            "(a) 1 writer, single events, 4 hot streams".into(),
            |s, o| single_appends(s, o, true),
        ),
        (
            "a_random",
            "(a) 1 writer, single events, 1M random streams".into(),
            |s, o| single_appends(s, o, false),
        ),
        (
            "b_hot",
            format!("(b) {writers} writers, single events, a stream each"),
            |s, o| concurrent_appends(s, o, true),
        ),
        (
            "b_random",
            format!("(b) {writers} writers, single events, 1M random streams"),
            |s, o| concurrent_appends(s, o, false),
        ),
        (
            "async",
            format!("{tasks} async appenders, single events"),
            async_appends,
        ),
        (
            "c100_hot",
            "(c) batches of 100, 4 hot streams".into(),
            |s, o| batches(s, o, 100, None),
        ),
        (
            "c1000_hot",
            "(c) batches of 1,000, 4 hot streams".into(),
            |s, o| batches(s, o, 1_000, None),
        ),
        (
            "c100_random",
            "(c) batches of 100, 1M random streams".into(),
            |s, o| batches(s, o, 100, Some(o.random_streams)),
        ),
        (
            "c1000_random",
            "(c) batches of 1,000, 1M random streams".into(),
            |s, o| batches(s, o, 1_000, Some(o.random_streams)),
        ),
        (
            "c1000_10k",
            "(c) batches of 1,000, 10K random streams".into(),
            |s, o| batches(s, o, 1_000, Some(TARGET_STREAMS)),
        ),
        (
            "i_dcb_1",
            "(i) DCB: 1 writer, single events, a condition on one of 1,000 tags".into(),
            |s, o| dcb_appends(s, o, 1),
        ),
        (
            "i_dcb_n",
            format!("(i) DCB: {writers} writers, single events, a condition on one of their tags"),
            |s, o| dcb_appends(s, o, o.writers),
        ),
        (
            "i_query",
            "(i) DCB: read 100 tags of 100 events by query, in 100K events".into(),
            dcb_query_reads,
        ),
        (
            "h10k_append",
            "(h) 10 KiB events, batches of 100, 4 hot streams".into(),
            |s, o| large_appends(s, KIB_10, o.large_batches * LARGE_BATCH, LARGE_BATCH, None),
        ),
        (
            "h1m_append",
            "(h) 1 MiB events, single appends, 4 hot streams".into(),
            |s, o| large_appends(s, MIB_1, o.huge_appends, 1, None),
        ),
    ]
}

fn store_dir(o: &Options, peer: &str, what: &str) -> PathBuf {
    let slug: String = peer
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    o.dir.join(slug).join(what)
}

fn fresh(dir: &Path) -> BenchResult<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(crate::store::failed)?;
    }
    std::fs::create_dir_all(dir).map_err(crate::store::failed)
}

/// Collects the runs of one peer on one workload into a cell (n/a when unsupported).
struct Runs {
    rates: Vec<f64>,
    latencies: Vec<Duration>,
    unsupported: Option<&'static str>,
    /// How the peer took concurrent appends (asked of the store that ran).
    concurrency: Option<Concurrency>,
}

fn measure(
    o: &Options,
    peer: &str,
    what: &str,
    mut once: impl FnMut(&dyn BenchStore) -> BenchResult<Measured>,
    shared: Option<&dyn BenchStore>,
) -> BenchResult<Runs> {
    let mut runs = Runs {
        rates: Vec::new(),
        latencies: Vec::new(),
        unsupported: None,
        concurrency: None,
    };
    // Each run gets a fresh store, unless the runs read one filled store (`shared`).
    for run in 0..o.runs {
        let result = match shared {
            Some(store) => {
                runs.concurrency = Some(store.concurrency());
                once(store)
            }
            None => {
                let dir = store_dir(o, peer, &format!("{what}-{run}"));
                fresh(&dir)?;
                let store = peers::open(peer, &dir)?;
                runs.concurrency = Some(store.concurrency());
                let r = once(store.as_ref());
                drop(store);
                std::fs::remove_dir_all(&dir).map_err(crate::store::failed)?;
                r
            }
        };
        match result {
            Ok(Measured::Rate(r)) => runs.rates.push(r),
            Ok(Measured::RateAndLatency(r, l)) => {
                runs.rates.push(r);
                runs.latencies.extend(l);
            }
            Err(BenchError::Unsupported(why)) => {
                runs.unsupported = Some(why);
                break;
            }
            Err(e) => return Err(BenchError::Failed(format!("{peer}, {what}: {e}"))),
        }
    }
    Ok(runs)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

fn concurrency_note(concurrency: Option<Concurrency>) -> Option<String> {
    match concurrency {
        Some(Concurrency::OneCommitEach) => Some("one commit per append".into()),
        _ => None,
    }
}

/// The harness's progress: a bar on stderr when it is a terminal (indicatif draws nothing
/// otherwise), and one log line per step either way.
struct Progress(indicatif::ProgressBar);

impl Progress {
    fn new(steps: u64) -> Progress {
        let bar = indicatif::ProgressBar::new(steps);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "bench [{bar:30}] {pos}/{len} {elapsed} {wide_msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Progress(bar)
    }

    /// Starts a step: logs it above the bar.
    fn start(&self, what: String) {
        self.0.suspend(|| eprintln!("varvedb-bench: {what}"));
        self.0.set_message(what);
    }

    fn done(&self) {
        self.0.inc(1);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Runs everything; returns the rows of the table.
pub(crate) fn run_all(o: &Options) -> BenchResult<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    let workloads = write_workloads(o);
    let wanted = |id: &str| o.only.is_empty() || o.only.iter().any(|w| w == id);
    let latency_wanted = ["g_p50", "g_p99", "g_p999"].iter().any(|g| wanted(g));
    let steps = workloads
        .iter()
        .filter(|(id, _, _)| wanted(id) || (*id == "b_hot" && latency_wanted))
        .count()
        + [
            "h10k_scan",
            "h1m_scan",
            "h_dedup",
            "d_scan",
            "e_point",
            "f_stream",
        ]
        .iter()
        .filter(|id| wanted(id))
        .count();
    let progress = Progress::new((steps * o.peers.len()) as u64);
    for (id, title, f) in &workloads {
        if !(wanted(id) || (*id == "b_hot" && latency_wanted)) {
            continue;
        }
        let mut row = Row::new(id, title, Unit::EventsPerSecond);
        let mut latency_rows = if *id == "b_hot" {
            vec![
                Row::new("g_p50", "(g) latency p50 under (b)", Unit::Milliseconds),
                Row::new("g_p99", "(g) latency p99 under (b)", Unit::Milliseconds),
                Row::new("g_p999", "(g) latency p99.9 under (b)", Unit::Milliseconds),
            ]
        } else {
            Vec::new()
        };
        for peer in &o.peers {
            progress.start(format!("{title}: {peer}"));
            let runs = measure(o, peer, id, |s| f(s, o), None)?;
            progress.done();
            // How a peer takes concurrent appends only matters for the concurrent rows.
            let concurrency = runs.concurrency.filter(|_| id.starts_with('b'));
            match runs.unsupported {
                Some(why) => row.cells.push(Cell::not_applicable(peer, why)),
                None => {
                    row.cells.push(Cell::from_runs(
                        peer,
                        runs.rates,
                        concurrency_note(concurrency),
                    ));
                    if !latency_rows.is_empty() {
                        let mut sorted = runs.latencies;
                        sorted.sort_unstable();
                        for (row, p) in latency_rows.iter_mut().zip([0.5, 0.99, 0.999]) {
                            row.cells.push(Cell::single(peer, percentile(&sorted, p)));
                        }
                    }
                }
            }
        }
        rows.push(row);
        rows.extend(latency_rows);
    }

    large_rows(o, &wanted, &mut rows, &progress)?;

    if !["d_scan", "e_point", "f_stream"]
        .iter()
        .any(|id| wanted(id))
    {
        return Ok(rows);
    }
    // (d)–(f) read one filled store per peer.
    let mut scan_row = Row::new(
        "d_scan",
        "(d) full scan, validated, one field",
        Unit::EventsPerSecond,
    );
    let mut point_row = Row::new(
        "e_point",
        "(e) random point reads by sequence",
        Unit::EventsPerSecond,
    );
    let mut stream_row = Row::new(
        "f_stream",
        "(f) read a stream by version",
        Unit::EventsPerSecond,
    );
    for peer in &o.peers {
        progress.start(format!(
            "filling {} events for the reads: {peer}",
            o.read_events
        ));
        let dir = store_dir(o, peer, "reads");
        fresh(&dir)?;
        let store = peers::open(peer, &dir)?;
        fill(store.as_ref(), o.read_events)?;
        for (row, f) in [
            (&mut scan_row, scan as WriteFn),
            (&mut point_row, point_reads as WriteFn),
            (&mut stream_row, stream_reads as WriteFn),
        ] {
            if !wanted(&row.id) {
                continue;
            }
            progress.start(format!("{}: {peer}", row.title));
            let runs = measure(o, peer, &row.id, |s| f(s, o), Some(store.as_ref()))?;
            progress.done();
            row.cells.push(match runs.unsupported {
                Some(why) => Cell::not_applicable(peer, why),
                None => Cell::from_runs(peer, runs.rates, None),
            });
        }
        drop(store);
        std::fs::remove_dir_all(&dir).map_err(crate::store::failed)?;
    }
    rows.extend(
        [scan_row, point_row, stream_row]
            .into_iter()
            .filter(|r| wanted(&r.id)),
    );
    Ok(rows)
}

/// (h) The large-payload reads, and the disk use of repeated payloads.
fn large_rows(
    o: &Options,
    wanted: &dyn Fn(&str) -> bool,
    rows: &mut Vec<Row>,
    progress: &Progress,
) -> BenchResult<()> {
    for (id, title, size, events) in [
        (
            "h10k_scan",
            "(h) 10 KiB events: full scan, validated, one field",
            KIB_10,
            o.large_read_events,
        ),
        (
            "h1m_scan",
            "(h) 1 MiB events: full scan, validated, one field",
            MIB_1,
            o.huge_read_events,
        ),
    ] {
        if !wanted(id) {
            continue;
        }
        let mut row = Row::new(id, title, Unit::EventsPerSecond);
        for peer in &o.peers {
            progress.start(format!("{title}: {peer} (filling {events} events)"));
            let dir = store_dir(o, peer, id);
            fresh(&dir)?;
            let store = peers::open(peer, &dir)?;
            let cell = match fill_large(store.as_ref(), size, events) {
                Err(BenchError::Unsupported(why)) => Cell::not_applicable(peer, why),
                Err(e) => return Err(BenchError::Failed(format!("{peer}, {id}: {e}"))),
                Ok(()) => {
                    let scan = |s: &dyn BenchStore| large_scan(s, events);
                    let runs = measure(o, peer, id, scan, Some(store.as_ref()))?;
                    match runs.unsupported {
                        Some(why) => Cell::not_applicable(peer, why),
                        None => Cell::from_runs(peer, runs.rates, None),
                    }
                }
            };
            row.cells.push(cell);
            progress.done();
            drop(store);
            std::fs::remove_dir_all(&dir).map_err(crate::store::failed)?;
        }
        rows.push(row);
    }
    let id = "h_dedup";
    if wanted(id) {
        let events = o.large_batches * LARGE_BATCH;
        let mut row = Row::new(
            id,
            &format!(
                "(h) 10 KiB events, {DISTINCT_PAYLOADS} distinct payloads: disk bytes per event"
            ),
            Unit::BytesPerEvent,
        );
        for peer in &o.peers {
            progress.start(format!("{}: {peer}", row.title));
            let dir = store_dir(o, peer, id);
            fresh(&dir)?;
            let store = peers::open(peer, &dir)?;
            let distinct = Some(DISTINCT_PAYLOADS);
            let written = large_appends(store.as_ref(), KIB_10, events, LARGE_BATCH, distinct)
                .and_then(|_| store.bytes_in_use());
            drop(store);
            let per_event = |bytes: u64| bytes as f64 / events as f64;
            row.cells.push(match written {
                Err(BenchError::Unsupported(why)) => Cell::not_applicable(peer, why),
                Err(e) => return Err(BenchError::Failed(format!("{peer}, {id}: {e}"))),
                Ok(None) => Cell::single(peer, per_event(dir_bytes(&dir)?)),
                Ok(Some((bytes, how))) => Cell::from_runs(peer, vec![per_event(bytes)], Some(how)),
            });
            progress.done();
            std::fs::remove_dir_all(&dir).map_err(crate::store::failed)?;
        }
        rows.push(row);
    }
    Ok(())
}
