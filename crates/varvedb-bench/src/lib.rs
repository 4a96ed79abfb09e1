//! The side-by-side benchmark harness: VarveDB and the stores a user would pick instead,
//! measured in one run on one machine.
//!
//! Each peer implements [`BenchStore`]. [`run`] drives every workload against every peer,
//! takes the median of several runs, and returns a [`Report`] that prints as a markdown table
//! (with VarveDB's ratio against each peer) and serializes to JSON. The `varvedb-bench` binary runs it (`cargo run --release -p varvedb-bench`).

pub mod chart;
pub mod event;
pub mod peers;
pub mod report;
pub mod scale;
pub mod steady;
pub mod store;
mod workloads;

use std::path::PathBuf;

use serde::Serialize;

pub use report::{Cell, Machine, Report, Row};
pub use store::{BenchError, BenchResult, BenchStore, Concurrency};

/// Sizes and choices of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// Where the stores go (must be on a real disk: flush costs are part of the result).
    pub dir: PathBuf,
    /// The peers to run, by name (see [`peers::ALL`]).
    pub peers: Vec<String>,
    /// Runs per figure; the table shows the median.
    pub runs: usize,
    /// (a): single-event appends per run.
    pub single_appends: usize,
    /// (b): concurrent writer threads.
    pub writers: usize,
    /// (b): appends per writer per run.
    pub appends_per_writer: usize,
    /// (c): batches per run, for each batch size.
    pub batches: usize,
    /// The async workload: concurrent tasks, and appends per task.
    pub async_tasks: usize,
    /// Appends per async task.
    pub async_appends_per_task: u32,
    /// (d)–(f): events in the store that is read.
    pub read_events: u64,
    /// (e): point reads per run.
    pub point_reads: usize,
    /// (f): streams read per run.
    pub stream_reads: usize,
    /// (h): batches of 100 10 KiB events per run.
    pub large_batches: usize,
    /// (h): single 1 MiB appends per run.
    pub huge_appends: usize,
    /// (h): 10 KiB events in the store that is scanned.
    pub large_read_events: u64,
    /// (h): 1 MiB events in the store that is scanned.
    pub huge_read_events: u64,
    /// Distinct streams of the "random streams" variants.
    pub random_streams: u64,
    /// Run only the rows with these ids (all when empty), e.g. `d_scan`, `c1000_10k`.
    pub only: Vec<String>,
}

impl Options {
    /// The full run: every figure quoted in the README.
    pub fn full(dir: PathBuf) -> Options {
        Options {
            dir,
            peers: peers::ALL.iter().map(|s| s.to_string()).collect(),
            runs: 3,
            single_appends: 1_000,
            writers: 64,
            appends_per_writer: 50,
            batches: 30,
            async_tasks: 1_000,
            async_appends_per_task: 20,
            read_events: 1_000_000,
            point_reads: 200_000,
            stream_reads: 50,
            random_streams: 1_000_000,
            large_batches: 10,
            huge_appends: 30,
            large_read_events: 20_000,
            huge_read_events: 200,
            only: Vec::new(),
        }
    }

    /// A quick run (well under two minutes here) with the same workloads, smaller.
    pub fn quick(dir: PathBuf) -> Options {
        Options {
            single_appends: 200,
            appends_per_writer: 10,
            batches: 8,
            async_appends_per_task: 5,
            read_events: 100_000,
            point_reads: 50_000,
            stream_reads: 20,
            large_batches: 3,
            huge_appends: 8,
            large_read_events: 2_000,
            huge_read_events: 20,
            ..Options::full(dir)
        }
    }
}

/// Runs every workload against every peer of `options`, printing progress to stderr.
pub fn run(options: &Options) -> BenchResult<Report> {
    for peer in &options.peers {
        if !peers::ALL.contains(&peer.as_str()) {
            return Err(BenchError::Failed(format!(
                "unknown peer {peer:?} (known: {})",
                peers::ALL.join(", ")
            )));
        }
    }
    std::fs::create_dir_all(&options.dir).map_err(store::failed)?;
    let rows = workloads::run_all(options)?;
    Ok(Report {
        machine: Machine::detect(&options.dir),
        event_bytes: event::archived_len(),
        options: options.clone(),
        rows,
    })
}
