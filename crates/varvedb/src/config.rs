//! Store configuration: location, durability and limits.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// How an acknowledged append survives a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Every commit is flushed to stable storage before the append returns. An acknowledged append
    /// survives a crash of the process or of the machine.
    #[default]
    Sync,
    /// Commits are not flushed (LMDB's `MDB_NOSYNC`). A crash of the process loses nothing, but
    /// a crash of the machine or a power loss may lose the most recent acknowledged appends. The
    /// store stays consistent: it comes back as of some earlier commit.
    NoSync,
}

/// The configuration of a [`Storage`](crate::Storage).
///
/// Sizes are in bytes; every limit names its unit last. `Debug` never shows the master key.
#[derive(Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// The store's directory; it is created if missing.
    pub path: PathBuf,
    /// Flush policy of commits.
    pub durability: Durability,
    /// The memory map size the store starts with. The map grows on demand.
    pub map_bytes_initial: usize,
    /// The largest the memory map (and the data file) may grow. Past it appends fail with
    /// [`Error::StoreFull`].
    pub map_bytes_max: usize,
    /// The largest serialized event accepted (64 MiB by default); a larger one is refused with
    /// [`Error::EventTooLarge`].
    pub event_bytes_max: usize,
    /// Serialized events longer than this go to the blob store: stored once per distinct
    /// content, addressed by BLAKE3 hash, and still read zero-copy. The events log keeps a
    /// 48-byte reference, so it stays small and scans fast. 1 KiB by default; `usize::MAX`
    /// keeps every payload inline.
    pub blob_threshold_bytes: usize,
    /// The most events one append (batch or multi-stream) may carry.
    pub batch_events_max: usize,
    /// The most read transactions open at once in all processes (LMDB's reader table).
    pub readers_max: u32,
    /// How long an append that must grow the map waits for open read transactions to end.
    pub resize_wait_ms_max: u64,
    /// How often the bus looks for appends of other processes, in milliseconds: appends made
    /// through this process are published at once; those of another process that shares the
    /// store reach subscribers at most this long after they commit. The poller is a thread that
    /// starts with the first `subscribe()` and stops when the store closes; 0 turns it off.
    pub bus_poll_ms: u64,
    /// Encrypt every new stream (AES-256-GCM, a key per stream, wrapped by `master_key`).
    /// Requires `master_key`; opening without one is [`Error::InvalidConfig`]. See
    /// `docs/design.md`, "Encryption".
    pub encryption_enabled: bool,
    /// The 32-byte master key that wraps the stream keys. The store copies it into memory that
    /// is zeroized when the store closes; `Storage::config()` does not show it. Opening a
    /// store with another key than it was created with is [`Error::WrongMasterKey`]. Without
    /// a key, an encrypted store still opens: envelopes and plaintext streams read, encrypted
    /// payloads are [`Error::MasterKeyRequired`].
    pub master_key: Option<[u8; 32]>,
    /// How often a store that holds retention policies enforces them in the background, in
    /// milliseconds (a thread that starts at the first open that finds a policy, or the first
    /// policy set, and ends when the store closes); 0 turns it off, leaving
    /// `Storage::enforce_retention` to the application. 60 s by default.
    pub retention_interval_ms: u64,
    /// Whether a store of an older format is upgraded when it opens (in place, in the open's
    /// first write transaction; see `docs/design.md`, "Format versions"). `true` by default.
    /// With `false`, such a store is refused with [`Error::UpgradeRequired`], which names the
    /// command that upgrades it (`varvedb upgrade`), and left untouched.
    pub allow_upgrade: bool,
    /// Whether the data file is checked before LMDB maps it (the page check: every page
    /// reachable from both meta pages, with its nodes, child pages and overflow runs inside
    /// their bounds; see [`check_pages`](crate::check_pages)). LMDB trusts its own pages, so a
    /// damaged one (a flipped bit on disk, a file damaged in a copy) can crash the process;
    /// with the check, it is [`Error::DamagedPage`] instead. It reads every reachable page
    /// once, in proportion to the file (`docs/performance.md`, "The page check"), and only
    /// when this process opens the store's environment, not at each handle. `false` by
    /// default: a store this application wrote and flushed is trusted. Turn it on for stores
    /// that come from elsewhere (a copied file, a user's upload, a disk that reports errors);
    /// the `varvedb` tool always checks.
    pub check_pages_on_open: bool,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .field("map_bytes_initial", &self.map_bytes_initial)
            .field("map_bytes_max", &self.map_bytes_max)
            .field("event_bytes_max", &self.event_bytes_max)
            .field("blob_threshold_bytes", &self.blob_threshold_bytes)
            .field("batch_events_max", &self.batch_events_max)
            .field("readers_max", &self.readers_max)
            .field("resize_wait_ms_max", &self.resize_wait_ms_max)
            .field("bus_poll_ms", &self.bus_poll_ms)
            .field("encryption_enabled", &self.encryption_enabled)
            .field("retention_interval_ms", &self.retention_interval_ms)
            .field("allow_upgrade", &self.allow_upgrade)
            .field("check_pages_on_open", &self.check_pages_on_open)
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The default path of a store: `varvedb-data` in the working directory.
pub const DEFAULT_PATH: &str = "varvedb-data";

impl Default for StorageConfig {
    fn default() -> Self {
        let map_bytes_max = if cfg!(target_pointer_width = "64") {
            1 << 40
        } else {
            1 << 30
        };
        StorageConfig {
            path: PathBuf::from(DEFAULT_PATH),
            durability: Durability::Sync,
            map_bytes_initial: 64 << 20,
            map_bytes_max,
            event_bytes_max: 64 << 20,
            blob_threshold_bytes: 1024,
            batch_events_max: 100_000,
            readers_max: 1024,
            resize_wait_ms_max: 10_000,
            bus_poll_ms: 100,
            encryption_enabled: false,
            master_key: None,
            retention_interval_ms: 60_000,
            allow_upgrade: true,
            check_pages_on_open: false,
        }
    }
}

/// The alignment the map sizes are rounded to; a multiple of every common OS page size.
pub(crate) const MAP_GRANULE_BYTES: usize = 64 << 10;
/// The smallest map a store starts with: room to create its databases before growth kicks in.
pub(crate) const MAP_BYTES_MIN: usize = 1 << 20;
/// The hard ceiling of `event_bytes_max`: the record header stores the payload length as `u32`,
/// and a pack (its 32-byte header and table, then the 64-byte record header and the payload)
/// stores its length as `u32`.
pub(crate) const EVENT_BYTES_LIMIT: usize = (u32::MAX as usize) - 128;

impl StorageConfig {
    /// Where a store lives when no path is given (the `varvedb` tool's default).
    pub const DEFAULT_PATH: &'static str = DEFAULT_PATH;

    /// Checks every field; returns the first invalid one as [`Error::InvalidConfig`].
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.path.as_os_str().is_empty() {
            return bad("path", "must not be empty".into());
        }
        if self.map_bytes_initial < MAP_BYTES_MIN {
            return bad(
                "map_bytes_initial",
                format!("must be at least {MAP_BYTES_MIN} bytes"),
            );
        }
        if self.map_bytes_max < self.map_bytes_initial {
            return bad(
                "map_bytes_max",
                format!(
                    "{} is smaller than map_bytes_initial ({})",
                    self.map_bytes_max, self.map_bytes_initial
                ),
            );
        }
        if self.map_bytes_max > isize::MAX as usize - MAP_GRANULE_BYTES {
            return bad("map_bytes_max", "exceeds the address space".into());
        }
        if self.event_bytes_max == 0 || self.event_bytes_max > EVENT_BYTES_LIMIT {
            return bad(
                "event_bytes_max",
                format!("must be between 1 and {EVENT_BYTES_LIMIT}"),
            );
        }
        if self.batch_events_max == 0 || self.batch_events_max > u32::MAX as usize {
            return bad("batch_events_max", "must be between 1 and u32::MAX".into());
        }
        if self.readers_max == 0 {
            return bad("readers_max", "must be at least 1".into());
        }
        if self.encryption_enabled && self.master_key.is_none() {
            return bad(
                "master_key",
                "encryption_enabled needs a 32-byte master key".into(),
            );
        }
        Ok(())
    }
}

/// Rounds `bytes` up to the map granule, saturating.
pub(crate) fn round_map_bytes(bytes: usize) -> usize {
    bytes
        .div_ceil(MAP_GRANULE_BYTES)
        .saturating_mul(MAP_GRANULE_BYTES)
}
