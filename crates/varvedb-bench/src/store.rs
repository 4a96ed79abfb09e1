//! The trait each peer implements, and what a peer cannot do.

use std::fmt;

use crate::event::BenchEvent;

/// Why a figure is missing, or what went wrong.
#[derive(Debug)]
pub enum BenchError {
    /// The peer's API cannot express the workload; the reason goes into the table.
    Unsupported(&'static str),
    /// The peer failed.
    Failed(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Unsupported(why) => write!(f, "n/a: {why}"),
            BenchError::Failed(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for BenchError {}

/// Turns any peer error into [`BenchError::Failed`].
pub fn failed(e: impl fmt::Display) -> BenchError {
    BenchError::Failed(e.to_string())
}

/// The result of a peer operation.
pub type BenchResult<T> = Result<T, BenchError>;

/// A store under test. Every write is one durable commit (the peer's strongest default).
pub trait BenchStore: Send + Sync {
    /// The name in the table.
    fn name(&self) -> &'static str;

    /// Appends `events` to `stream`, which the caller knows to be at `version` (0: new), in one
    /// atomic, durable commit. Peers with optimistic concurrency check `version`.
    fn append(&self, stream: u128, version: u32, events: &[BenchEvent]) -> BenchResult<()>;

    /// Appends one event to each of several streams in one atomic, durable commit.
    fn append_multi(&self, batch: &[(u128, u32, BenchEvent)]) -> BenchResult<()>;

    /// Whether concurrent `append` calls are safe, and if they are serialized, why.
    fn concurrency(&self) -> Concurrency;

    /// Reads every event in global order, touching one field; returns (events, sum of amounts).
    fn scan(&self) -> BenchResult<(u64, i64)>;

    /// Reads the events at the given global sequence numbers (1-based) with one snapshot;
    /// returns the sum of their amounts.
    fn point_reads(&self, seqs: &[u64]) -> BenchResult<i64>;

    /// Reads one stream's events in version order; returns (events, sum of amounts).
    fn read_stream(&self, stream: u128) -> BenchResult<(u64, i64)>;

    /// The bytes the stored data occupies, for a peer whose files are preallocated far beyond
    /// it, with how to read the figure; `None`: the size of the peer's files once closed.
    fn bytes_in_use(&self) -> BenchResult<Option<(u64, String)>> {
        Ok(None)
    }

    /// DCB: appends `events`, each carrying the tag `tag`, in one durable commit, if no event
    /// of the bench type with `tag` came after the position `after` (`None`: ever). Returns the
    /// position of the last event appended.
    fn dcb_append(&self, tag: &str, after: Option<u64>, events: &[BenchEvent]) -> BenchResult<u64> {
        let _ = (tag, after, events);
        Err(BenchError::Unsupported(
            "no tags, no conditional append on a query",
        ))
    }

    /// DCB: reads the events of the bench type carrying `tag`, in global order; returns
    /// (events, sum of amounts).
    fn read_tag(&self, tag: &str) -> BenchResult<(u64, i64)> {
        let _ = tag;
        Err(BenchError::Unsupported("no tags, no query read"))
    }

    /// `tasks` async tasks each append `per_task` single events to their own stream, on a
    /// tokio runtime; returns once all are acknowledged.
    fn async_appends(&self, tasks: usize, per_task: u32) -> BenchResult<()> {
        let _ = (tasks, per_task);
        Err(BenchError::Unsupported("no async append API"))
    }
}

/// How a peer takes concurrent writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// Concurrent appends may share commits.
    GroupCommit,
    /// Concurrent appends are safe but commit one at a time.
    OneCommitEach,
}
