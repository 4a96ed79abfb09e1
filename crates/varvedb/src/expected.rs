//! Optimistic concurrency: what an append expects of its stream.

use std::fmt;

/// What an append states about the stream's current version.
///
/// Versions start at 1; version 0 means "no events". Order within a stream is strict and gap-free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// The stream's last version is exactly `n` (`Exact(0)`: the stream is empty).
    Exact(u32),
    /// The stream has no events.
    NoStream,
    /// The stream has at least one event.
    StreamExists,
    /// Append at the end, whatever the version. Never fails with a conflict.
    Auto,
}

impl ExpectedVersion {
    /// Whether a stream at version `current` satisfies this expectation.
    pub fn accepts(self, current: u32) -> bool {
        match self {
            ExpectedVersion::Exact(n) => current == n,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::StreamExists => current > 0,
            ExpectedVersion::Auto => true,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Exact(n) => write!(f, "version {n}"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Auto => f.write_str("any version"),
        }
    }
}

/// Where an appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Appended {
    /// The event's global sequence number (the first event of a store is 1).
    pub seq: u64,
    /// The event's version within its stream (the first event of a stream is 1).
    pub version: u32,
}
