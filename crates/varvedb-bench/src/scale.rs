//! `--scale`: one store grown to 100M events (batches of 1,000 over 10K streams), with the
//! append throughput of every tenth, the file size and memory as it grows, and a full scan at
//! the end. What it answers: does anything degrade as the store grows?

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::event::{BenchEvent, event};
use crate::store::{BenchError, BenchResult, failed};
use crate::workloads::dir_bytes;

/// What a scale run does.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleOptions {
    /// Where the store goes (removed at the end).
    pub dir: PathBuf,
    /// The peer (VarveDB by default).
    pub peer: String,
    /// Events appended in all.
    pub events: u64,
    /// Slices reported (throughput per slice).
    pub slices: u64,
    /// Events per batch (one atomic, durable append).
    pub batch: u64,
    /// Streams the batches go to.
    pub streams: u64,
}

impl ScaleOptions {
    /// The run: 100M events, batches of 1,000, 10K streams, ten slices.
    pub fn full(dir: PathBuf) -> ScaleOptions {
        ScaleOptions {
            dir,
            peer: crate::peers::VarveDb::NAME.into(),
            events: 100_000_000,
            slices: 10,
            batch: 1_000,
            streams: 10_000,
        }
    }
}

/// One slice of the appends.
#[derive(Debug, Clone, Serialize)]
pub struct Slice {
    /// Events in the store at the end of the slice.
    pub events: u64,
    /// The slice's append throughput.
    pub events_per_second: f64,
    /// The store's files at the end of the slice.
    pub file_bytes: u64,
    /// `file_bytes` over `events`.
    pub bytes_per_event: f64,
    /// The process's own memory (anonymous pages) at the end of the slice.
    pub rss_anon_bytes: u64,
    /// Its resident set including mapped file pages (the store's map).
    pub rss_bytes: u64,
    /// The process's CPU time in the slice, user and system, in seconds (`/proc/self/stat`):
    /// with `events_per_second`, whether a slow slice worked more or waited more.
    pub cpu_user_seconds: f64,
    /// The system (kernel) part of the slice's CPU time, in seconds.
    pub cpu_system_seconds: f64,
    /// Bytes the process caused to be written to the disk in the slice (`/proc/self/io`).
    pub disk_write_bytes: u64,
    /// Major page faults in the slice: map pages read back from the disk.
    pub major_faults: u64,
}

/// The process's counters that tell work from waiting: CPU ticks (user, system), major
/// faults, and bytes written to the disk.
#[derive(Clone, Copy, Default)]
struct Counters {
    user_ticks: u64,
    system_ticks: u64,
    major_faults: u64,
    write_bytes: u64,
}

impl Counters {
    fn now() -> Counters {
        let mut c = Counters::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Past the command name (in parentheses, which may hold spaces): the fields from
            // the third on; majflt is field 12, utime 14 and stime 15 (man 5 proc).
            let fields: Vec<u64> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest)
                .unwrap_or("")
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
            c.major_faults = field(12);
            c.user_ticks = field(14);
            c.system_ticks = field(15);
        }
        if let Ok(io) = std::fs::read_to_string("/proc/self/io") {
            c.write_bytes = io
                .lines()
                .find_map(|l| l.strip_prefix("write_bytes:")?.trim().parse().ok())
                .unwrap_or(0);
        }
        c
    }
}

/// Clock ticks per second of `/proc/self/stat`'s times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// The result of a scale run.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// What ran.
    pub options: ScaleOptions,
    /// Every slice, in order.
    pub slices: Vec<Slice>,
    /// The full scan at the end (validated, one field).
    pub scan_events_per_second: f64,
    /// Peak resident set (`VmHWM`: anonymous and mapped file pages).
    pub peak_rss_bytes: u64,
    /// The largest anonymous resident set seen (at slice ends and after the scan).
    pub peak_rss_anon_bytes: u64,
    /// The store's files at the end.
    pub file_bytes: u64,
}

/// Fields of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)?
                    .trim_start_matches(':')
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .map_or(0, |kb| kb * 1024)
}

impl ScaleReport {
    /// The spread of the slices' throughput: the slowest and fastest over the first slice's.
    pub fn throughput_range(&self) -> (f64, f64) {
        let first = self.slices.first().map_or(1.0, |s| s.events_per_second);
        let (lo, hi) = self
            .slices
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), s| {
                (lo.min(s.events_per_second), hi.max(s.events_per_second))
            });
        (lo / first, hi / first)
    }

    /// The table, for people.
    pub fn markdown(&self) -> String {
        let mb = |b: u64| b as f64 / (1u64 << 20) as f64;
        let mut out = String::new();
        let o = &self.options;
        let _ = writeln!(
            out,
            "{}: {} events in batches of {} over {} streams\n",
            o.peer, o.events, o.batch, o.streams
        );
        out.push_str("| events | append ev/s | × first slice | file MiB | bytes/event | RSS anon MiB | RSS MiB | CPU user s | CPU sys s | disk writes MiB | major faults |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        let first = self.slices.first().map_or(1.0, |s| s.events_per_second);
        for s in &self.slices {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.2} | {:.0} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {} |",
                s.events,
                s.events_per_second,
                s.events_per_second / first,
                mb(s.file_bytes),
                s.bytes_per_event,
                mb(s.rss_anon_bytes),
                mb(s.rss_bytes),
                s.cpu_user_seconds,
                s.cpu_system_seconds,
                mb(s.disk_write_bytes),
                s.major_faults
            );
        }
        let (lo, hi) = self.throughput_range();
        let _ = writeln!(
            out,
            "\nFull scan at the end: {:.0} events/s. Slices from {lo:.2}× to {hi:.2}× the first. \
             Peak RSS {:.0} MiB (mapped store pages included), peak anonymous RSS {:.0} MiB, \
             files {:.0} MiB.",
            self.scan_events_per_second,
            mb(self.peak_rss_bytes),
            mb(self.peak_rss_anon_bytes),
            mb(self.file_bytes)
        );
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Runs the scale workload; `progress` is told the events appended so far.
pub fn run(o: &ScaleOptions, mut progress: impl FnMut(u64)) -> BenchResult<ScaleReport> {
    if o.events == 0 || o.slices == 0 || o.batch == 0 || o.streams == 0 {
        return Err(BenchError::Failed(
            "a scale run needs events, slices, batch and streams".into(),
        ));
    }
    if o.dir.exists() {
        std::fs::remove_dir_all(&o.dir).map_err(failed)?;
    }
    std::fs::create_dir_all(&o.dir).map_err(failed)?;
    let store = crate::peers::open(&o.peer, &o.dir)?;
    let per_slice = o.events.div_ceil(o.slices);
    let mut versions = vec![0u32; usize::try_from(o.streams).map_err(failed)?];
    let mut slices = Vec::new();
    let mut peak_anon = 0;
    let mut done = 0u64;
    let mut batch_no = 0u64;
    let mut buffer: Vec<BenchEvent> = Vec::with_capacity(o.batch as usize);
    while done < o.events {
        let slice_end = (done + per_slice).min(o.events);
        let started = Instant::now();
        let before = Counters::now();
        let slice_start = done;
        while done < slice_end {
            let n = o.batch.min(slice_end - done);
            // Spread over the streams in a fixed, scattered order.
            let s = (batch_no.wrapping_mul(7_919) % o.streams) as usize;
            buffer.clear();
            buffer.extend((done..done + n).map(event));
            store.append(s as u128 + 1, versions[s], &buffer)?;
            versions[s] += n as u32;
            done += n;
            batch_no += 1;
            if batch_no.is_multiple_of(64) {
                progress(done);
            }
        }
        let elapsed = started.elapsed().as_secs_f64().max(1e-9);
        let after = Counters::now();
        let file_bytes = dir_bytes(&o.dir)?;
        let anon = status_bytes("RssAnon");
        peak_anon = peak_anon.max(anon);
        slices.push(Slice {
            events: done,
            events_per_second: (done - slice_start) as f64 / elapsed,
            file_bytes,
            bytes_per_event: file_bytes as f64 / done as f64,
            rss_anon_bytes: anon,
            rss_bytes: status_bytes("VmRSS"),
            cpu_user_seconds: after.user_ticks.saturating_sub(before.user_ticks) as f64
                / TICKS_PER_SECOND,
            cpu_system_seconds: after.system_ticks.saturating_sub(before.system_ticks) as f64
                / TICKS_PER_SECOND,
            disk_write_bytes: after.write_bytes.saturating_sub(before.write_bytes),
            major_faults: after.major_faults.saturating_sub(before.major_faults),
        });
    }
    progress(done);
    let started = Instant::now();
    let (scanned, _) = store.scan()?;
    let scan_rate = scanned as f64 / started.elapsed().as_secs_f64().max(1e-9);
    if scanned != o.events {
        return Err(BenchError::Failed(format!(
            "the scan found {scanned} events, {} were appended",
            o.events
        )));
    }
    peak_anon = peak_anon.max(status_bytes("RssAnon"));
    drop(store);
    let file_bytes = dir_bytes(&o.dir)?;
    std::fs::remove_dir_all(&o.dir).map_err(failed)?;
    Ok(ScaleReport {
        options: o.clone(),
        slices,
        scan_events_per_second: scan_rate,
        peak_rss_bytes: status_bytes("VmHWM"),
        peak_rss_anon_bytes: peak_anon,
        file_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_scale_run_reports_every_slice_and_scans_everything() {
        let dir = tempfile::tempdir().unwrap();
        let options = ScaleOptions {
            dir: dir.path().join("scale"),
            events: 20_000,
            slices: 4,
            batch: 1_000,
            streams: 7,
            ..ScaleOptions::full(dir.path().into())
        };
        let mut seen = 0;
        let report = run(&options, |n| seen = n).unwrap();
        assert_eq!(seen, 20_000);
        assert_eq!(
            report.slices.iter().map(|s| s.events).collect::<Vec<_>>(),
            [5_000, 10_000, 15_000, 20_000]
        );
        assert!(
            report
                .slices
                .iter()
                .all(|s| s.events_per_second > 0.0 && s.file_bytes > 0)
        );
        assert!(report.scan_events_per_second > 0.0);
        assert!(report.peak_rss_bytes > 0 && report.file_bytes > 0);
        assert!(!options.dir.exists(), "the store is removed");
        let table = report.markdown();
        assert!(table.contains("| 20000 |"), "{table}");
    }
}
