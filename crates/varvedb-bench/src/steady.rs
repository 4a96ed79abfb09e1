//! `--steady`: an IoT gateway at steady state. 1,000 sensors (streams) each append a reading
//! per (simulated) second, as one durable append of 1,000 events, as fast as the disk takes
//! them, under a store-wide `max_age` retention that the store enforces in the background.
//! What it answers: once retention runs, does the file stop growing, and do appends keep
//! their throughput and their p99 latency?

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plotters::prelude::*;
use serde::Serialize;
use varvedb::{Append, ExpectedVersion, RetentionPolicy, Storage, StorageConfig, Writer};

use crate::event::{BenchEvent, event};
use crate::store::{BenchError, BenchResult, failed};

/// What a steady-state run does.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyOptions {
    /// Where the store goes (removed at the end).
    pub dir: PathBuf,
    /// Sensors: streams, one reading each per append.
    pub streams: u64,
    /// How long the run appends.
    pub duration: Duration,
    /// The store's `max_age` retention.
    pub max_age: Duration,
    /// How often the store enforces it (`StorageConfig::retention_interval_ms`).
    pub enforce_every: Duration,
    /// How often a sample is taken.
    pub sample_every: Duration,
}

impl SteadyOptions {
    /// The run, sped up: 1,000 streams for 120 s under a 20 s `max_age`, enforced
    /// every second, sampled every 5 s.
    pub fn full(dir: PathBuf) -> SteadyOptions {
        SteadyOptions {
            dir,
            streams: 1_000,
            duration: Duration::from_secs(120),
            max_age: Duration::from_secs(20),
            enforce_every: Duration::from_secs(1),
            sample_every: Duration::from_secs(5),
        }
    }
}

/// One sample of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the start.
    pub seconds: f64,
    /// Events appended in the window, per second.
    pub events_per_second: f64,
    /// The 99th percentile of the window's append latencies (one append: 1,000 events).
    pub p99_ms: f64,
    /// The data file at the end of the window.
    pub file_bytes: u64,
    /// Events in the store (kept).
    pub events_kept: u64,
    /// Events removed so far.
    pub events_removed: u64,
}

/// The result of a steady-state run.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyReport {
    /// What ran.
    pub options: SteadyOptions,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl SteadyReport {
    /// The samples after warm-up: from twice `max_age` on (the first removals have run, and
    /// the file has had the time to reach its size).
    fn steady(&self) -> Vec<&Sample> {
        let warm = 2.0 * self.options.max_age.as_secs_f64();
        self.samples.iter().filter(|s| s.seconds > warm).collect()
    }

    /// The spread of a figure over the steady samples: (min, max) over their median.
    fn spread(values: &[f64]) -> (f64, f64, f64) {
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let median = v.get(v.len() / 2).copied().unwrap_or(0.0);
        let lo = v.first().copied().unwrap_or(0.0);
        let hi = v.last().copied().unwrap_or(0.0);
        (
            median,
            lo / median.max(f64::MIN_POSITIVE),
            hi / median.max(f64::MIN_POSITIVE),
        )
    }

    /// The table, for people.
    pub fn markdown(&self) -> String {
        let mb = |b: u64| b as f64 / (1u64 << 20) as f64;
        let o = &self.options;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} streams, a durable append of one reading each, for {} s; max_age {} s, \
             enforced every {} s\n",
            o.streams,
            o.duration.as_secs(),
            o.max_age.as_secs(),
            o.enforce_every.as_secs_f64()
        );
        out.push_str(
            "| s | appends ev/s | p99 ms | file MiB | kept | removed |\n|---|---|---|---|---|---|\n",
        );
        for s in &self.samples {
            let _ = writeln!(
                out,
                "| {:.0} | {:.0} | {:.2} | {:.1} | {} | {} |",
                s.seconds,
                s.events_per_second,
                s.p99_ms,
                mb(s.file_bytes),
                s.events_kept,
                s.events_removed
            );
        }
        let steady = self.steady();
        let figure =
            |f: fn(&Sample) -> f64| Self::spread(&steady.iter().map(|s| f(s)).collect::<Vec<_>>());
        let (file, file_lo, file_hi) = figure(|s| s.file_bytes as f64);
        let (rate, rate_lo, rate_hi) = figure(|s| s.events_per_second);
        let (p99, p99_lo, p99_hi) = figure(|s| s.p99_ms);
        let _ = writeln!(
            out,
            "\nAfter warm-up ({} samples): file {:.1} MiB ({:.2}× to {:.2}× its median), \
             appends {:.0} ev/s ({:.2}× to {:.2}×), p99 {:.2} ms ({:.2}× to {:.2}×).",
            steady.len(),
            file / (1u64 << 20) as f64,
            file_lo,
            file_hi,
            rate,
            rate_lo,
            rate_hi,
            p99,
            p99_lo,
            p99_hi
        );
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// File size and throughput over time, as an SVG chart.
    pub fn write_svg(&self, path: &Path) -> BenchResult<()> {
        let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let (top, bottom) = root.split_vertically(280);
        let end = self.options.duration.as_secs_f64();
        let mib: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(|s| (s.seconds, s.file_bytes as f64 / (1u64 << 20) as f64))
            .collect();
        let rate: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(|s| (s.seconds, s.events_per_second / 1000.0))
            .collect();
        for (area, title, points, label) in [
            (&top, "data.mdb (MiB) under max_age retention", mib, "MiB"),
            (&bottom, "appends (thousand events/s)", rate, "K ev/s"),
        ] {
            let top_y = points.iter().map(|p| p.1).fold(0.0, f64::max) * 1.15 + 1.0;
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(0.0..end, 0.0..top_y)
                .map_err(failed)?;
            chart
                .configure_mesh()
                .x_desc("seconds")
                .y_desc(label)
                .draw()
                .map_err(failed)?;
            chart
                .draw_series(LineSeries::new(points, &RGBColor(0xd9, 0x5f, 0x02)))
                .map_err(failed)?;
        }
        root.present().map_err(failed)
    }
}

/// Runs the workload; `progress` gets the seconds elapsed.
pub fn run(options: &SteadyOptions, mut progress: impl FnMut(f64)) -> BenchResult<SteadyReport> {
    drop(std::fs::remove_dir_all(&options.dir));
    let storage = Storage::open(StorageConfig {
        path: options.dir.clone(),
        retention_interval_ms: options.enforce_every.as_millis() as u64,
        ..Default::default()
    })
    .map_err(failed)?;
    storage
        .set_default_retention(RetentionPolicy {
            max_age: Some(options.max_age),
            ..Default::default()
        })
        .map_err(failed)?;
    let writer = Writer::<BenchEvent>::new(storage.clone());
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut window_start = Instant::now();
    let mut latencies: Vec<f64> = Vec::new();
    let mut window_events = 0u64;
    let mut i = 0u64;
    while started.elapsed() < options.duration {
        let readings: Vec<BenchEvent> = (0..options.streams).map(|s| event(i + s)).collect();
        i += options.streams;
        let mut append = Append::event(1, ExpectedVersion::Auto, &readings[0]);
        for (s, reading) in readings.iter().enumerate().skip(1) {
            append = append.and(
                s as u128 + 1,
                ExpectedVersion::Auto,
                std::slice::from_ref(reading),
            );
        }
        let t = Instant::now();
        writer.commit(append).map_err(failed)?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        window_events += options.streams;
        if window_start.elapsed() >= options.sample_every {
            let secs = window_start.elapsed().as_secs_f64();
            latencies.sort_by(|a, b| a.total_cmp(b));
            let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
            let stats = storage.stats().map_err(failed)?;
            samples.push(Sample {
                seconds: started.elapsed().as_secs_f64(),
                events_per_second: window_events as f64 / secs,
                p99_ms: p99,
                file_bytes: stats.file_bytes,
                events_kept: stats.events,
                events_removed: stats.deleted_events,
            });
            progress(started.elapsed().as_secs_f64());
            window_start = Instant::now();
            latencies.clear();
            window_events = 0;
        }
    }
    if !storage.verify().map_err(failed)?.is_clean() {
        return Err(BenchError::Failed(
            "verify found problems after the run".into(),
        ));
    }
    drop(writer);
    drop(storage);
    drop(std::fs::remove_dir_all(&options.dir));
    Ok(SteadyReport {
        options: options.clone(),
        samples,
    })
}
