//! The soak (`varvedb-crash soak --minutes N`): a mixed workload runs on one store for N
//! minutes while the process's resources are sampled; a series that keeps growing fails it.
//!
//! The workload: writer threads appending at a steady rate to a few thousand encrypted streams
//! (single events, batches, multi-stream appends, payloads over the blob threshold, event ids,
//! `Exact` expectations that sometimes conflict), a default retention policy that keeps each
//! stream's newest events and is enforced in the background, a processor, a consumer group of
//! two members, a subscription to the whole log, a reader thread, and the metrics server,
//! scraped every second.
//!
//! Every sample records the resident memory (all of it, and its anonymous part), the open file
//! descriptors, the data file's size, LMDB's reader-table high-water mark, the appends and
//! their p50 and p99 latency since the last sample, and the processor's lag. At the end each
//! series that must level off is judged by [`levels_off`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use varvedb::{
    Append, AppendOptions, Error, EventHandler, EventId, EventRef, ExpectedVersion, HandlerError,
    Processor, Reader, RetentionPolicy, Storage, StorageConfig, Subscription, SubscriptionItem,
    Writer,
};

use crate::{Entry, MASTER_KEY, Rng};

/// What a soak does.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the workload runs.
    pub duration: Duration,
    /// How often the process is sampled.
    pub sample_every: Duration,
    /// Appends a second, over all writers.
    pub rate: u64,
    /// Writer threads.
    pub writers: u64,
    /// The streams the writers spread over: each keeps its newest [`RETAIN`] events, so the
    /// live events level off at `streams * RETAIN` once every stream has that many.
    pub streams: u64,
    /// Where the store goes (it must not exist).
    pub dir: PathBuf,
    /// The self-test: leaks this many MiB at each sample, which the judgement must catch.
    pub plant_leak_mib: u64,
}

/// The events the default retention policy keeps of each stream.
pub const RETAIN: u64 = 8;
/// The processor's name.
pub const PROCESSOR: &str = "soak-processor";
/// The consumer group's name.
pub const GROUP: &str = "soak-group";

/// One sample.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Seconds since the workload started.
    pub at_s: f64,
    /// Resident memory (VmRSS), bytes: anonymous memory plus the mapped file pages touched.
    pub rss: u64,
    /// Anonymous resident memory (RssAnon), bytes: the heap and the stacks.
    pub anon: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// The data file's size, bytes.
    pub file: u64,
    /// [`Storage::reader_slots`].
    pub reader_slots: u64,
    /// Appends acknowledged since the last sample.
    pub appends: u64,
    /// Append latency since the last sample, microseconds.
    pub p50_us: u64,
    pub p99_us: u64,
    /// The store's last sequence less the processor's position.
    pub lag: u64,
}

impl Sample {
    /// The CSV header of [`Sample::csv`].
    pub const CSV_HEADER: &'static str =
        "at_s,rss_bytes,anon_bytes,fds,file_bytes,reader_slots,appends,p50_us,p99_us,lag_events";

    /// Reads a line of [`Sample::csv`].
    pub fn parse(line: &str) -> Option<Sample> {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 10 {
            return None;
        }
        let n = |i: usize| f[i].trim().parse::<u64>().ok();
        Some(Sample {
            at_s: f[0].trim().parse().ok()?,
            rss: n(1)?,
            anon: n(2)?,
            fds: n(3)?,
            file: n(4)?,
            reader_slots: n(5)?,
            appends: n(6)?,
            p50_us: n(7)?,
            p99_us: n(8)?,
            lag: n(9)?,
        })
    }

    pub fn csv(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{},{},{},{},{}",
            self.at_s,
            self.rss,
            self.anon,
            self.fds,
            self.file,
            self.reader_slots,
            self.appends,
            self.p50_us,
            self.p99_us,
            self.lag
        )
    }
}

/// The judgement of one series.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub series: &'static str,
    /// Least-squares slope after the warm-up, in units per hour.
    pub slope_per_hour: f64,
    /// The highest value of the first and of the second half after the warm-up.
    pub first_max: f64,
    pub second_max: f64,
    /// Whether it levels off.
    pub ok: bool,
}

/// What a soak found.
#[derive(Debug, Clone)]
pub struct Report {
    pub samples: Vec<Sample>,
    pub judgements: Vec<Judgement>,
    /// Appends acknowledged, conflicts answered (expected), events the processor handled.
    pub appends: u64,
    pub conflicts: u64,
    pub handled: u64,
    /// Events removed by retention.
    pub retained_away: u64,
    /// Metrics scrapes answered with 200.
    pub scrapes: u64,
    /// Everything that went wrong (an empty list is a pass, with every judgement ok).
    pub failures: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.judgements.iter().all(|j| j.ok)
    }
}

/// Whether a series levels off: after a warm-up (the first quarter of the samples, at least
/// two), the highest value of the second half of the rest exceeds the highest of its first half
/// by no more than `relative` of it plus `absolute`. A leak of constant rate sets new highs all
/// through the second half and fails; a series that grows while it warms up and then stays
/// passes. With fewer than four samples after the warm-up, nothing can be judged: it passes.
pub fn levels_off(
    series: &'static str,
    points: &[(f64, f64)],
    relative: f64,
    absolute: f64,
) -> Judgement {
    let warm = (points.len() / 4).max(2).min(points.len());
    let rest = &points[warm..];
    let slope_per_hour = slope(rest) * 3600.0;
    if rest.len() < 4 {
        return Judgement {
            series,
            slope_per_hour,
            first_max: f64::NAN,
            second_max: f64::NAN,
            ok: true,
        };
    }
    let (a, b) = rest.split_at(rest.len() / 2);
    let max = |s: &[(f64, f64)]| s.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let (first_max, second_max) = (max(a), max(b));
    Judgement {
        series,
        slope_per_hour,
        first_max,
        second_max,
        ok: second_max <= first_max + relative * first_max.abs() + absolute,
    }
}

/// The least-squares slope of `points` (per second; 0 for fewer than two points).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// The judgements of a soak's samples: memory, descriptors, file, reader slots, lag, and the
/// p50 latency.
pub fn judge(samples: &[Sample]) -> Vec<Judgement> {
    const MIB: f64 = 1024.0 * 1024.0;
    let series = |f: fn(&Sample) -> u64| -> Vec<(f64, f64)> {
        samples.iter().map(|s| (s.at_s, f(s) as f64)).collect()
    };
    vec![
        levels_off("anon_bytes", &series(|s| s.anon), 0.05, 8.0 * MIB),
        levels_off("rss_bytes", &series(|s| s.rss), 0.05, 8.0 * MIB),
        levels_off("fds", &series(|s| s.fds), 0.0, 4.0),
        levels_off("file_bytes", &series(|s| s.file), 0.05, 2.0 * MIB),
        levels_off("reader_slots", &series(|s| s.reader_slots), 0.0, 2.0),
        levels_off("lag_events", &series(|s| s.lag), 1.0, 10_000.0),
        // A shared machine's flush time varies several-fold from one minute to the next: only
        // a latency that keeps climbing past that fails.
        levels_off("p50_us", &series(|s| s.p50_us), 2.0, 2_000.0),
    ]
}

/// Reads a `kB` field of /proc/self/status, in bytes.
fn status_bytes(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The store a soak runs on.
pub fn config(dir: &Path) -> StorageConfig {
    StorageConfig {
        path: dir.to_path_buf(),
        encryption_enabled: true,
        master_key: Some(MASTER_KEY),
        retention_interval_ms: 1_000,
        ..Default::default()
    }
}

/// The processor's handler: counts, and checks that sequences only go up.
struct Counter {
    handled: Arc<AtomicU64>,
    last: u64,
    failures: Arc<Mutex<Vec<String>>>,
}

impl EventHandler<Entry> for Counter {
    fn handle(&mut self, event: &EventRef<'_, Entry>) -> Result<(), HandlerError> {
        if event.seq() <= self.last {
            crate::lock_push(
                &self.failures,
                format!(
                    "the processor saw seq {} after seq {}",
                    event.seq(),
                    self.last
                ),
            );
        }
        self.last = event.seq();
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One HTTP GET of the metrics page; whether it answered 200.
fn scrape(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200") && answer.windows(8).any(|w| w == b"varvedb_")
}

/// Runs a soak.
pub fn run(options: &Options, mut on_sample: impl FnMut(&Sample)) -> Result<Report, String> {
    if options.dir.exists() {
        return Err(format!(
            "{} exists: a soak makes its own store",
            options.dir.display()
        ));
    }
    let storage = Storage::open(config(&options.dir)).map_err(|e| format!("open: {e}"))?;
    storage
        .set_default_retention(RetentionPolicy {
            max_count: Some(RETAIN),
            max_age: None,
        })
        .map_err(|e| format!("retention: {e}"))?;
    let metrics = storage
        .serve_metrics(Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))))
        .map_err(|e| format!("metrics server: {e}"))?;
    let metrics_addr = metrics.local_addr();

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let appends = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let handled = Arc::new(AtomicU64::new(0));
    let scrapes = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();

    // The writers.
    let writer = Writer::<Entry>::new(storage.clone());
    let per_writer = Duration::from_secs_f64(options.writers as f64 / options.rate.max(1) as f64);
    for w in 0..options.writers {
        let (writer, stop, failures) = (writer.clone(), stop.clone(), failures.clone());
        let (latencies, appends, conflicts) =
            (latencies.clone(), appends.clone(), conflicts.clone());
        let (storage, streams) = (storage.clone(), options.streams.max(1));
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng::new(w + 1);
            let mut next = Instant::now();
            let mut op = 0u64;
            while !stop.load(Ordering::Relaxed) {
                next += per_writer;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                op += 1;
                let (parts, id) = workload_append(&storage, &mut rng, streams, w, op);
                let mut request = parts
                    .iter()
                    .fold(Append::new(), |r, (s, e, events)| r.and(*s, *e, events));
                if let Some(id) = id {
                    request = request.options(AppendOptions::new().event_id(id));
                }
                let started = Instant::now();
                match writer.commit(request) {
                    Ok(_) => {
                        let us = started.elapsed().as_micros() as u64;
                        crate::lock(&latencies).push(us);
                        appends.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Error::ConcurrencyConflict { .. }) => {
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => crate::lock_push(&failures, format!("writer {w}: {e}")),
                }
            }
        }));
    }

    // A reader: short snapshots, stream reads and point reads.
    {
        let (storage, stop, failures) = (storage.clone(), stop.clone(), failures.clone());
        let streams = options.streams.max(1);
        threads.push(std::thread::spawn(move || {
            let reader = Reader::<Entry>::new(storage.clone());
            let mut rng = Rng::new(0x5eed);
            while !stop.load(Ordering::Relaxed) {
                let mut read = || -> Result<(), String> {
                    let txn = storage.read_txn().map_err(|e| e.to_string())?;
                    let stream = u128::from(rng.below(streams) + 1);
                    let mut last = 0;
                    for e in reader.read_stream(&txn, stream, 1) {
                        let e = e.map_err(|e| format!("stream {stream}: {e}"))?;
                        if e.version() <= last {
                            return Err(format!(
                                "stream {stream}: version {} after {last}",
                                e.version()
                            ));
                        }
                        last = e.version();
                    }
                    let head = storage.last_seq(&txn).map_err(|e| e.to_string())?;
                    if head > 0 {
                        // A removed event reads as None; any other answer must decode.
                        let seq = rng.below(head) + 1;
                        reader
                            .get(&txn, seq)
                            .map_err(|e| format!("seq {seq}: {e}"))?;
                    }
                    Ok(())
                };
                if let Err(e) = read() {
                    crate::lock_push(&failures, format!("reader: {e}"));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }));
    }

    // The metrics scraper.
    {
        let (stop, failures, scrapes) = (stop.clone(), failures.clone(), scrapes.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if scrape(metrics_addr) {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                } else {
                    crate::lock_push(&failures, "a metrics scrape failed".to_string());
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }));
    }

    // The processor, the group's two members and the subscription, on one runtime.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let consumers = {
        let (storage, failures, handled) = (storage.clone(), failures.clone(), handled.clone());
        std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    crate::lock_push(&failures, format!("runtime: {e}"));
                    return;
                }
            };
            runtime.block_on(consume(storage, failures, handled, stop_rx));
        })
    };

    // Sampling.
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut leaked: Vec<Vec<u8>> = Vec::new();
    let data_file = options.dir.join("data.mdb");
    while started.elapsed() < options.duration {
        let next = options
            .sample_every
            .min(options.duration.saturating_sub(started.elapsed()));
        std::thread::sleep(next);
        if options.plant_leak_mib > 0 {
            // Touched, so that it is resident.
            leaked.push(vec![0xA5; options.plant_leak_mib as usize * 1024 * 1024]);
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let mut lat = std::mem::take(&mut *crate::lock(&latencies));
        lat.sort_unstable();
        let lag = storage
            .read_txn()
            .and_then(|txn| storage.last_seq(&txn))
            .ok()
            .zip(storage.consumer_position(PROCESSOR).ok())
            .map_or(0, |(head, pos)| head.saturating_sub(pos.unwrap_or(0)));
        let sample = Sample {
            at_s: started.elapsed().as_secs_f64(),
            rss: status_bytes(&status, "VmRSS:"),
            anon: status_bytes(&status, "RssAnon:"),
            fds: open_fds(),
            file: std::fs::metadata(&data_file).map_or(0, |m| m.len()),
            reader_slots: u64::from(storage.reader_slots()),
            appends: lat.len() as u64,
            p50_us: percentile(&lat, 0.50),
            p99_us: percentile(&lat, 0.99),
            lag,
        };
        on_sample(&sample);
        samples.push(sample);
    }
    std::hint::black_box(&leaked);

    stop.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for t in threads {
        if t.join().is_err() {
            crate::lock_push(&failures, "a workload thread panicked".to_string());
        }
    }
    if consumers.join().is_err() {
        crate::lock_push(&failures, "the consumers' thread panicked".to_string());
    }
    drop(metrics);
    let retained_away = storage.stats().map_or(0, |s| s.deleted_events);
    match storage.verify() {
        Ok(report) if report.is_clean() => {}
        Ok(report) => crate::lock_push(&failures, format!("verify: {:?}", report.problems)),
        Err(e) => crate::lock_push(&failures, format!("verify: {e}")),
    }
    let failures = std::mem::take(&mut *crate::lock(&failures));
    Ok(Report {
        judgements: judge(&samples),
        samples,
        appends: appends.load(Ordering::Relaxed),
        conflicts: conflicts.load(Ordering::Relaxed),
        handled: handled.load(Ordering::Relaxed),
        retained_away,
        scrapes: scrapes.load(Ordering::Relaxed),
        failures,
    })
}

/// One append of the workload: its parts (stream, expectation, events), and its event id if
/// it has one.
type Plan = (Vec<(u128, ExpectedVersion, Vec<Entry>)>, Option<EventId>);

fn workload_append(storage: &Storage, rng: &mut Rng, streams: u64, w: u64, op: u64) -> Plan {
    let entry = |rng: &mut Rng, k: u32| Entry {
        run: w,
        op,
        k,
        body: vec![op as u8; [8usize, 100, 1500, 3000][rng.below(4) as usize]],
    };
    let stream = u128::from(rng.below(streams) + 1);
    match rng.below(20) {
        // An expectation read just before: it conflicts when another writer gets there first.
        0 => {
            let version = storage
                .read_txn()
                .and_then(|txn| storage.stream_version(&txn, stream))
                .unwrap_or(0);
            let e = entry(rng, 0);
            (
                vec![(stream, ExpectedVersion::Exact(version), vec![e])],
                None,
            )
        }
        // A batch.
        1..=4 => {
            let n = 2 + rng.below(4) as u32;
            let events = (0..n).map(|k| entry(rng, k)).collect();
            (vec![(stream, ExpectedVersion::Auto, events)], None)
        }
        // A multi-stream append.
        5..=6 => {
            let other = u128::from(rng.below(streams) + 1);
            let (a, b) = (entry(rng, 0), entry(rng, 1));
            (
                vec![
                    (stream, ExpectedVersion::Auto, vec![a]),
                    (other, ExpectedVersion::Auto, vec![b]),
                ],
                None,
            )
        }
        // With an event id.
        7..=8 => {
            let id = EventId::from_u128((u128::from(w) << 64 | u128::from(op)) + 1);
            let e = entry(rng, 0);
            (vec![(stream, ExpectedVersion::Auto, vec![e])], Some(id))
        }
        _ => {
            let e = entry(rng, 0);
            (vec![(stream, ExpectedVersion::Auto, vec![e])], None)
        }
    }
}

async fn consume(
    storage: Storage,
    failures: Arc<Mutex<Vec<String>>>,
    handled: Arc<AtomicU64>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let processor = Processor::new(
        Reader::<Entry>::new(storage.clone()),
        Counter {
            handled: handled.clone(),
            last: 0,
            failures: failures.clone(),
        },
        PROCESSOR,
        storage.subscribe(),
    )
    .run_until(stopped(stop.clone()));
    let member = |name: &'static str| {
        Processor::new(
            Reader::<Entry>::new(storage.clone()),
            Counter {
                handled: Arc::new(AtomicU64::new(0)),
                last: 0,
                failures: failures.clone(),
            },
            GROUP,
            storage.subscribe(),
        )
        .in_group(name)
        .run_until(stopped(stop.clone()))
    };
    let subscription = {
        let (failures, mut stop) = (failures.clone(), stop.clone());
        let mut sub = Subscription::all(Reader::<Entry>::new(storage.clone()), 1);
        async move {
            let mut last = 0;
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    item = sub.next() => match item {
                        Ok(SubscriptionItem::Event(e)) => {
                            if e.seq <= last {
                                crate::lock_push(&failures, format!("the subscription saw seq {} after {last}", e.seq));
                            }
                            last = e.seq;
                        }
                        Ok(SubscriptionItem::CaughtUp) => {}
                        Err(e) => {
                            crate::lock_push(&failures, format!("subscription: {e}"));
                            return;
                        }
                    },
                }
            }
        }
    };
    let (p, a, b, ()) = tokio::join!(processor, member("a"), member("b"), subscription);
    for (name, r) in [
        ("processor", p.err()),
        ("member a", a.err()),
        ("member b", b.err()),
    ] {
        if let Some(e) = r {
            crate::lock_push(&failures, format!("{name}: {e}"));
        }
    }
}

/// The soak's plot: one panel per series, as SVG.
pub fn plot(samples: &[Sample], judgements: &[Judgement], path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    const MIB: f64 = 1024.0 * 1024.0;
    // Title, series, unit, value.
    type Panel = (&'static str, &'static str, f64, fn(&Sample) -> u64);
    let panels: [Panel; 6] = [
        ("resident memory, MiB", "rss_bytes", MIB, |s| s.rss),
        ("anonymous memory, MiB", "anon_bytes", MIB, |s| s.anon),
        ("data file, MiB", "file_bytes", MIB, |s| s.file),
        ("open file descriptors", "fds", 1.0, |s| s.fds),
        ("reader-table slots", "reader_slots", 1.0, |s| {
            s.reader_slots
        }),
        ("append latency p50 / p99, ms", "p50_us", 1000.0, |s| {
            s.p50_us
        }),
    ];
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((3, 2));
    let minutes = samples
        .last()
        .map_or(1.0, |s| s.at_s / 60.0)
        .max(1.0 / 60.0);
    for (area, (title, series, unit, get)) in areas.iter().zip(panels) {
        let points: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| (s.at_s / 60.0, get(s) as f64 / unit))
            .collect();
        let p99: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| (s.at_s / 60.0, s.p99_us as f64 / unit))
            .collect();
        let with_p99 = series == "p50_us";
        let top = points
            .iter()
            .chain(if with_p99 { p99.iter() } else { [].iter() })
            .map(|p| p.1)
            .fold(0.0, f64::max)
            * 1.15
            + 1e-9;
        let slope = judgements
            .iter()
            .find(|j| j.series == series)
            .map(|j| j.slope_per_hour / unit)
            .unwrap_or(0.0);
        let caption = format!("{title} (slope after warm-up {slope:+.2}/h)");
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..minutes, 0.0..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(points, &BLUE))
            .map_err(|e| e.to_string())?;
        if with_p99 {
            chart
                .draw_series(LineSeries::new(p99, &RED))
                .map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (0..60).map(|i| (i as f64 * 60.0, f(i as f64))).collect()
    }

    #[test]
    fn a_steady_leak_is_caught_and_a_plateau_is_not() {
        // With the memory tolerances of `judge` (5% and 8 MiB), in MiB: 1 MiB a minute on top
        // of 100 MiB, over an hour, sets new highs all through the second half.
        let leak = levels_off("m", &series(|i| 100.0 + i), 0.05, 8.0);
        assert!(!leak.ok, "{leak:?}");
        assert!((leak.slope_per_hour - 60.0).abs() < 1e-6, "{leak:?}");
        // Growth while warming up, then flat with noise.
        let plateau = levels_off(
            "m",
            &series(|i| {
                if i < 10.0 {
                    i * 20.0
                } else {
                    200.0 + (i * 7.0) % 5.0
                }
            }),
            0.05,
            8.0,
        );
        assert!(plateau.ok, "{plateau:?}");
        // A slow leak that stays under the tolerance over the run passes: the tolerance is
        // what a run of this length can tell apart.
        let slow = levels_off("m", &series(|i| 1000.0 + i * 0.1), 0.05, 8.0);
        assert!(slow.ok, "{slow:?}");
        // A count that must not grow at all: one more descriptor than the tolerance fails.
        let fds = levels_off(
            "fds",
            &series(|i| if i > 40.0 { 21.0 } else { 16.0 }),
            0.0,
            4.0,
        );
        assert!(!fds.ok, "{fds:?}");
    }

    #[test]
    fn a_sample_reads_back_from_its_csv_line() {
        let s = Sample {
            at_s: 60.0,
            rss: 1,
            anon: 2,
            fds: 3,
            file: 4,
            reader_slots: 5,
            appends: 6,
            p50_us: 7,
            p99_us: 8,
            lag: 9,
        };
        assert_eq!(Sample::parse(&s.csv()).unwrap().csv(), s.csv());
        assert!(Sample::parse(Sample::CSV_HEADER).is_none());
    }

    #[test]
    fn too_few_samples_are_not_judged() {
        let j = levels_off("m", &[(0.0, 1.0), (1.0, 100.0), (2.0, 1000.0)], 0.0, 0.0);
        assert!(j.ok && j.first_max.is_nan(), "{j:?}");
    }

    #[test]
    fn percentiles_and_status_fields_read_as_expected() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.5), 51);
        assert_eq!(percentile(&sorted, 0.99), 99);
        assert_eq!(percentile(&[], 0.99), 0);
        let status = "Name:\tx\nVmRSS:\t   2048 kB\nRssAnon:\t  1024 kB\n";
        assert_eq!(status_bytes(status, "VmRSS:"), 2048 * 1024);
        assert_eq!(status_bytes(status, "RssAnon:"), 1024 * 1024);
        assert_eq!(status_bytes(status, "RssFile:"), 0);
    }
}
