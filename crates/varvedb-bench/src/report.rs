//! The result of a run: a markdown table with ratios, and JSON.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::Options;
use crate::peers::VarveDb;

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    /// Events (or reads) per second: higher is better.
    EventsPerSecond,
    /// Milliseconds of latency: lower is better.
    Milliseconds,
    /// Bytes on disk per event: lower is better.
    BytesPerEvent,
}

/// One peer's figure in a row.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// The peer.
    pub peer: String,
    /// The median of the runs; `None` when the workload does not apply.
    pub median: Option<f64>,
    /// Every run's figure.
    pub runs: Vec<f64>,
    /// Why the figure is missing, or how to read it.
    pub note: Option<String>,
}

impl Cell {
    /// A cell from several runs: their median.
    pub fn from_runs(peer: &str, mut runs: Vec<f64>, note: Option<String>) -> Cell {
        runs.sort_by(f64::total_cmp);
        let median = match runs.len() {
            0 => None,
            n if n % 2 == 1 => Some(runs[n / 2]),
            n => Some((runs[n / 2 - 1] + runs[n / 2]) / 2.0),
        };
        Cell {
            peer: peer.into(),
            median,
            runs,
            note,
        }
    }

    /// A cell of one figure computed over every run (a latency percentile).
    pub fn single(peer: &str, value: f64) -> Cell {
        Cell::from_runs(peer, vec![value], None)
    }

    /// A cell for a workload the peer's API cannot express.
    pub fn not_applicable(peer: &str, why: &str) -> Cell {
        Cell {
            peer: peer.into(),
            median: None,
            runs: Vec::new(),
            note: Some(why.into()),
        }
    }
}

/// One workload: a figure per peer.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// A stable id for scripts.
    pub id: String,
    /// What the row measures, for people.
    pub title: String,
    /// The unit of the figures.
    pub unit: Unit,
    /// One cell per peer, in the order of [`Options::peers`].
    pub cells: Vec<Cell>,
}

impl Row {
    /// An empty row.
    pub fn new(id: &str, title: &str, unit: Unit) -> Row {
        Row {
            id: id.into(),
            title: title.into(),
            unit,
            cells: Vec::new(),
        }
    }

    fn cell(&self, peer: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.peer == peer)
    }

    /// How many times better VarveDB is than `peer` (above 1: VarveDB is ahead).
    pub fn ratio(&self, peer: &str) -> Option<f64> {
        let ours = self.cell(VarveDb::NAME)?.median?;
        let theirs = self.cell(peer)?.median?;
        match self.unit {
            Unit::EventsPerSecond => Some(ours / theirs),
            Unit::Milliseconds | Unit::BytesPerEvent => Some(theirs / ours),
        }
    }
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs available.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// The filesystem of the store directory, from /proc/mounts.
    pub filesystem: String,
}

impl Machine {
    /// Reads what Linux tells about this machine; "unknown" elsewhere.
    pub fn detect(dir: &Path) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let filesystem = read("/proc/mounts")
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_, mount, fs) = (f.next()?, f.next()?, f.next()?);
                dir.starts_with(mount)
                    .then(|| (mount.len(), fs.to_string()))
            })
            .max()
            .map_or_else(|| "unknown".into(), |(_, fs)| fs);
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            filesystem,
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// The archived size of the benchmark event, in bytes.
    pub event_bytes: usize,
    /// The sizes of the run.
    pub options: Options,
    /// The table.
    pub rows: Vec<Row>,
}

fn human(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Milliseconds => format!("{value:.2} ms"),
        Unit::BytesPerEvent if value >= 1e6 => format!("{:.2} MB", value / 1e6),
        Unit::BytesPerEvent if value >= 1e3 => format!("{:.1} KB", value / 1e3),
        Unit::BytesPerEvent => format!("{value:.0} B"),
        Unit::EventsPerSecond if value >= 1e6 => format!("{:.2}M/s", value / 1e6),
        Unit::EventsPerSecond if value >= 1e3 => format!("{:.1}K/s", value / 1e3),
        Unit::EventsPerSecond => format!("{value:.0}/s"),
    }
}

impl Report {
    /// The markdown table: a column per peer, then VarveDB's ratio against each other peer.
    pub fn markdown(&self) -> String {
        let peers = &self.options.peers;
        let others: Vec<&String> = peers.iter().filter(|p| *p != VarveDb::NAME).collect();
        let mut out = String::new();
        let _ = write!(out, "| workload |");
        for p in peers {
            let _ = write!(out, " {p} |");
        }
        if peers.iter().any(|p| p == VarveDb::NAME) {
            for p in &others {
                let _ = write!(out, " × {p} |");
            }
        }
        out.push('\n');
        let columns = 1
            + peers.len()
            + if peers.iter().any(|p| p == VarveDb::NAME) {
                others.len()
            } else {
                0
            };
        out.push_str(&"|---".repeat(columns));
        out.push_str("|\n");
        let mut notes: Vec<String> = Vec::new();
        for row in &self.rows {
            let _ = write!(out, "| {} |", row.title);
            for p in peers {
                let text = match row.cell(p) {
                    Some(Cell {
                        median: Some(m),
                        note,
                        ..
                    }) => {
                        let mut t = human(*m, row.unit);
                        if let Some(n) = note {
                            t.push_str(&footnote(&mut notes, n));
                        }
                        t
                    }
                    Some(Cell { note: Some(n), .. }) => format!("n/a{}", footnote(&mut notes, n)),
                    _ => "n/a".into(),
                };
                let _ = write!(out, " {text} |");
            }
            if peers.iter().any(|p| p == VarveDb::NAME) {
                for p in &others {
                    match row.ratio(p) {
                        Some(r) => {
                            let _ = write!(out, " {r:.2}× |");
                        }
                        None => out.push_str(" – |"),
                    }
                }
            }
            out.push('\n');
        }
        for (i, n) in notes.iter().enumerate() {
            let _ = writeln!(out, "\n[{}] {n}", i + 1);
        }
        let _ = writeln!(
            out,
            "\nMedians of {} runs. Ratios are VarveDB against the peer, above 1 when VarveDB is ahead (for latencies: the peer's latency over VarveDB's). Event: {} bytes archived. Machine: {}, {} CPUs, Linux {}, stores on {}.",
            self.options.runs,
            self.event_bytes,
            self.machine.cpu,
            self.machine.cpus,
            self.machine.kernel,
            self.machine.filesystem
        );
        out
    }

    /// The report as pretty JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

fn footnote(notes: &mut Vec<String>, note: &str) -> String {
    let i = match notes.iter().position(|n| n == note) {
        Some(i) => i,
        None => {
            notes.push(note.to_string());
            notes.len() - 1
        }
    };
    format!(" [{}]", i + 1)
}
