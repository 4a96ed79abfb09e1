//! The public face of a store: every public method of [`Storage`], in one place, each a thin
//! delegation to the layer that does the work (the storage layer's operations, the untyped
//! view, export and import, the metrics server). A reader of the API finds it all here; a
//! reader of the code follows one call down.

use std::path::Path;

use crate::config::StorageConfig;
use crate::dump::{self, ExportHeader, Importer, StoredEvent};
use crate::error::Result;
#[cfg(feature = "metrics-http")]
use crate::metrics_http::{self, MetricsServer};
use crate::storage::{
    self, Consumer, ConsumerGroup, GroupMember, ParkedEvent, ReadTxn, RemovalReport,
    RetentionPolicy, RetentionReport, ShredReport, Stats, Storage, StreamRemoval, VerifyProgress,
    VerifyReport,
};
use crate::untyped::{self, RawReader};
#[cfg(doc)]
use crate::{Durability, Error};

impl Storage {
    /// The on-disk format this build reads and writes (the `format_version` meta record).
    pub const FORMAT_VERSION: u32 = storage::FORMAT_VERSION;
    /// The meta key of the format version; its value is a little-endian `u32`.
    pub const META_FORMAT_KEY: &'static str = storage::META_FORMAT_KEY;

    /// Opens the store at `config.path`, creating the directory and the store if missing.
    ///
    /// A store written in an unknown format is refused with [`Error::UnsupportedFormat`] and left
    /// untouched. Opening a path that is already open in this process returns the same
    /// environment if the configuration is equal, and [`Error::ConfigMismatch`] otherwise. A path
    /// whose flush failed earlier in this process is refused with [`Error::Poisoned`] (see
    /// [`open_after_flush_failure`](Self::open_after_flush_failure)).
    pub fn open(config: StorageConfig) -> Result<Storage> {
        storage::ops::open(config)
    }

    /// Opens an existing store; never creates or changes anything when there is none.
    ///
    /// A missing directory, or a directory without an LMDB data file, is [`Error::NotFound`];
    /// an LMDB environment that is not a VarveDB store is [`Error::InvalidStore`]. What the
    /// `varvedb` tool uses for every command that reads.
    pub fn open_existing(config: StorageConfig) -> Result<Storage> {
        storage::ops::open_existing(config)
    }

    /// Opens a store whose flush failed earlier in this process, after every handle of it was
    /// dropped: it clears the mark that makes [`open`](Self::open) refuse the path, then checks
    /// the whole store with [`verify`](Self::verify) and hands it out only if it is clean.
    ///
    /// After a failed `fsync`, Linux may mark the unwritten pages clean, so the page cache can
    /// show data that never reached the disk; this check cannot see that. Appends answered with
    /// [`Error::NotDurable`] may be lost at the next machine crash. The safe recovery is to
    /// restart the process (or the machine) and reopen.
    pub fn open_after_flush_failure(config: StorageConfig) -> Result<Storage> {
        storage::ops::open_after_flush_failure(config)
    }

    /// Drops this handle after making everything committed so far durable, and reports a
    /// failed flush (which `drop` cannot). Appends still waiting for the flush that
    /// acknowledges them are answered first. The store closes when its last handle is gone;
    /// other handles keep working.
    pub fn close(self) -> Result<()> {
        storage::ops::close(self)
    }

    /// The configuration the store was opened with, its path made canonical.
    pub fn config(&self) -> &StorageConfig {
        storage::ops::config(self)
    }

    /// The store's directory (canonical).
    pub fn path(&self) -> &Path {
        storage::ops::path(self)
    }

    /// What opening the store found worth a warning, such as a directory or data file other
    /// local users can read. The `varvedb` tool prints them.
    pub fn warnings(&self) -> &[String] {
        storage::ops::warnings(self)
    }

    /// A receiver of the last committed global sequence: it starts at the current head (not at
    /// 0) and changes after each group commit, once the commit's appends are acknowledged. A
    /// subscriber that falls behind misses nothing: the value is the newest head, and the
    /// events up to it are read from the store. Appends of other processes sharing the store
    /// are noticed by polling, every `StorageConfig::bus_poll_ms` (100 ms by default).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        storage::ops::subscribe(self)
    }

    /// Whether the store is encrypted: it has a master-key check (written by the first open
    /// with a master key), so every new stream is encrypted, and a handle without the master
    /// key cannot create one ([`Error::MasterKeyRequired`]). Encryption is the store's, not
    /// the handle's. A store whose snapshot cannot be read answers as its handle was opened.
    pub fn is_encrypted(&self) -> bool {
        storage::ops::is_encrypted(self)
    }

    /// The value under `key` in the read model of the projection `name`, in `txn`'s snapshot;
    /// `None` also when the projection has no model yet. A model created after `txn` began
    /// (its projection's first run in this process) is read from the next snapshot on.
    pub fn projection_get<'t>(
        &self,
        txn: &'t ReadTxn,
        name: &str,
        key: &[u8],
    ) -> Result<Option<&'t [u8]>> {
        storage::ops::projection_get(self, txn, name, key)
    }

    /// The sequence of the event appended with `id`, if there is one (from a snapshot of its
    /// own).
    pub fn seq_of_event_id(&self, id: crate::EventId) -> Result<Option<u64>> {
        storage::ops::seq_of_event_id(self, id)
    }

    /// The last committed global sequence number (0 for an empty store).
    pub fn last_seq(&self, txn: &ReadTxn) -> Result<u64> {
        storage::ops::last_seq_of(self, txn)
    }

    /// The current version of a stream: the version of its last event, 0 if it has none.
    pub fn stream_version(&self, txn: &ReadTxn, stream_id: u128) -> Result<u32> {
        storage::ops::stream_version(self, txn, stream_id)
    }

    /// Checks the whole store in one snapshot and reports every inconsistency it finds: each
    /// record's checksum and key, that the log is gap-free, that every stream's chain links
    /// each version to the previous one and to its jump target, that the stream heads match
    /// the log, that every referenced blob exists and hashes (BLAKE3) to its address, that the
    /// reference counts are right, and that no blob is orphaned. It also checks what it can of
    /// LMDB's own structure: that the data file holds every page the last commit uses, and that
    /// each database's page and entry counts agree with what the walk found.
    ///
    /// Damage is reported in the [`VerifyReport`], never as an error; `Err` means the check
    /// itself could not run (an LMDB failure). The snapshot stays open for the whole check, so
    /// on a large store, concurrent appends that need to grow the map wait for it
    /// (`resize_wait_ms_max`).
    pub fn verify(&self) -> Result<VerifyReport> {
        storage::ops::verify(self)
    }

    /// [`verify`](Self::verify), calling `progress` at the start and end of each pass and
    /// every 16,384 entries in between.
    pub fn verify_with_progress(
        &self,
        progress: impl FnMut(&VerifyProgress),
    ) -> Result<VerifyReport> {
        storage::ops::verify_with_progress(self, progress)
    }

    /// The number of read transactions open in this process.
    pub fn open_read_txns(&self) -> usize {
        storage::ops::open_read_txns(self)
    }

    /// The high-water mark of LMDB's reader table, shared by every process on the store: the
    /// most slots ever taken at once. A read transaction takes a free slot and frees it when
    /// it ends (a dead process's slots are freed at the next open), so the count levels off at
    /// the most snapshots open at once; one that keeps growing means snapshots that are never
    /// closed. At `readers_max` a new snapshot fails ("readers full").
    pub fn reader_slots(&self) -> u32 {
        storage::ops::reader_slots(self)
    }

    /// Begins a read-only snapshot.
    ///
    /// Fails with [`Error::Poisoned`] after a failed map resize, and with
    /// [`Error::ReadBlocked`] when another process grew the store and this process's snapshots
    /// stay open too long for this one to adopt the larger map.
    pub fn read_txn(&self) -> Result<ReadTxn> {
        storage::ops::read_txn(self)
    }

    /// Makes everything committed so far durable: appends still waiting for the flush that
    /// acknowledges them are flushed and answered before this returns.
    ///
    /// With the default [`Durability::Sync`] every acknowledged append is already durable, so
    /// this only matters for appends whose answer was dropped (a dropped future) and for
    /// [`Durability::NoSync`] stores, which it flushes. A failed flush is
    /// [`Error::NotDurable`] and poisons the store for appends.
    pub fn flush(&self) -> Result<()> {
        storage::ops::flush(self)
    }

    /// Whether the store refuses appends (or everything) after a failure; see
    /// [`poison_reason`](Self::poison_reason). Drop every handle and reopen it to recover.
    pub fn is_poisoned(&self) -> bool {
        storage::ops::is_poisoned(self)
    }

    /// Why the store refuses work, if it does.
    pub fn poison_reason(&self) -> Option<String> {
        storage::ops::poison_reason(self)
    }

    /// Removes the events of `stream_id` with a version below `before` (KurrentDB's `$tb`):
    /// they leave the log and every index, their blobs are released (one shared with a kept
    /// event stays), and LMDB reuses the pages. The stream keeps its version: appends go on
    /// after it, and reads by version start at the first kept one. A `before` past the stream's
    /// end removes every event, as [`delete_stream`](Self::delete_stream) does. It runs in
    /// transactions of about a millisecond of work each (at most 65,536 events), each flushed,
    /// so appends wait a few milliseconds at most; after a crash, the same call finishes the
    /// work. A stream with no events is
    /// [`Error::StreamNotFound`].
    pub fn truncate_stream(&self, stream_id: u128, before: u32) -> Result<RemovalReport> {
        storage::ops::remove_stream(self, stream_id, storage::ops::Removal::Before(before))
    }

    /// The sequence of the first event committed at `time` or later, in `txn`'s snapshot;
    /// `None` when every event is older. Commit timestamps never decrease along the log (the
    /// committer clamps each to the last one, whatever the clock does), so this is a binary
    /// search over the log: a few lookups, whatever its size.
    pub fn seq_at_time(&self, txn: &ReadTxn, time: std::time::SystemTime) -> Result<Option<u64>> {
        storage::ops::seq_at_time(self, txn, time)
    }

    /// Soft-deletes `stream_id`: removes every event, as
    /// [`truncate_stream`](Self::truncate_stream) past its end. The stream keeps its version,
    /// so an append with `ExpectedVersion::Exact(last)` or `Auto` continues at the next one.
    pub fn delete_stream(&self, stream_id: u128) -> Result<RemovalReport> {
        storage::ops::remove_stream(self, stream_id, storage::ops::Removal::All)
    }

    /// Hard-deletes `stream_id`: removes every event, and from the first transaction on every
    /// append to it is [`Error::StreamDeleted`], in every process, for good (a reopen, an export
    /// and import, and replication keep the tombstone). A stream with no events can be
    /// tombstoned too, so that it is never created.
    pub fn tombstone_stream(&self, stream_id: u128) -> Result<RemovalReport> {
        storage::ops::remove_stream(self, stream_id, storage::ops::Removal::Tombstone)
    }

    /// Sets how long `stream_id` keeps its events (see [`RetentionPolicy`]); a policy that
    /// keeps everything removes the stream's own, so the store's default applies again. Kept
    /// in the store: it survives a reopen and holds for every process. Events go when
    /// [`enforce_retention`](Self::enforce_retention) runs, by hand or on the store's
    /// background schedule (`StorageConfig::retention_interval_ms`).
    pub fn set_stream_retention(&self, stream_id: u128, policy: RetentionPolicy) -> Result<()> {
        storage::ops::set_stream_retention(self, stream_id, policy)
    }

    /// Sets the policy of every stream that has none of its own.
    pub fn set_default_retention(&self, policy: RetentionPolicy) -> Result<()> {
        storage::ops::set_default_retention(self, policy)
    }

    /// The policy set for `stream_id`, if any (not counting the default).
    pub fn stream_retention(&self, stream_id: u128) -> Result<Option<RetentionPolicy>> {
        storage::ops::stream_retention(self, stream_id)
    }

    /// The store-wide default policy, if any.
    pub fn default_retention(&self) -> Result<Option<RetentionPolicy>> {
        storage::ops::default_retention(self)
    }

    /// Every policy: the default (`None`) first, then each stream's.
    pub fn retention_policies(&self) -> Result<Vec<(Option<u128>, RetentionPolicy)>> {
        storage::ops::retention_policies(self)
    }

    /// Applies every retention policy now: each stream loses the events its policy (or the
    /// default) no longer keeps, as [`truncate_stream`](Self::truncate_stream) would remove
    /// them, in transactions of about a millisecond of work each.
    pub fn enforce_retention(&self) -> Result<RetentionReport> {
        storage::ops::enforce_retention(self)
    }

    /// Crypto-shreds an encrypted stream: deletes its key and marks it shredded, in one
    /// transaction, and releases the blobs its events held. Its events then read as
    /// [`Error::Shredded`] (iterators move on past them), and appends to it are
    /// [`Error::StreamShredded`]. Works without the master key.
    ///
    /// The key's old bytes may stay on LMDB's free pages until they are reused; a compacting
    /// copy ([`compact_to`](Self::compact_to)) carries no trace of them. A plaintext stream
    /// cannot be shredded ([`Error::StreamNotEncrypted`]), and a stream with no events has
    /// nothing to shred ([`Error::StreamNotFound`]).
    pub fn shred_stream(&self, stream_id: u128) -> Result<ShredReport> {
        storage::ops::shred_stream(self, stream_id)
    }

    /// Whether a stream was shredded.
    pub fn is_shredded(&self, txn: &ReadTxn, stream_id: u128) -> Result<bool> {
        storage::ops::is_shredded(self, txn, stream_id)
    }

    /// Rewraps every stream key under `new_master_key`, atomically (one transaction; the
    /// events are not rewritten), and from then on opens the store with it only. Needs the
    /// current master key.
    pub fn rotate_master_key(&self, new_master_key: [u8; 32]) -> Result<u64> {
        storage::ops::rotate_master_key(self, new_master_key)
    }

    /// Writes a compacted copy of the store into the directory `dest`: only the pages in use,
    /// so that no freed page (a shredded stream's old key, a deleted blob) is carried over. The
    /// copy opens as a store like any other.
    ///
    /// `dest` is created with mode 0700 (its parents as needed). An existing `dest` is taken
    /// only if it is an empty directory (not a symbolic link) that only its owner can enter,
    /// owned by the owner of this store's directory; anything else is refused
    /// ([`Error::InvalidDestination`]), so that a directory another user prepared, or a planted
    /// link, never receives the copy; so is the store's own directory. The data file is created exclusively (never through a link,
    /// never over a file) with mode 0600 from its first byte.
    pub fn compact_to(&self, dest: impl AsRef<Path>) -> Result<()> {
        storage::ops::compact_to(self, dest)
    }

    /// The seq of the last event the consumer `name` handled; `None` if it never checkpointed.
    pub fn consumer_position(&self, name: &str) -> Result<Option<u64>> {
        storage::ops::consumer_position(self, name)
    }

    /// Every consumer with its position, the head, and its lag in events and in seconds.
    pub fn consumers(&self) -> Result<Vec<Consumer>> {
        storage::ops::consumers(self)
    }

    /// The events the consumer `name` parked, in seq order.
    pub fn parked_events(&self, name: &str) -> Result<Vec<ParkedEvent>> {
        storage::ops::parked_events(self, name)
    }

    /// Moves the consumer `name` to `position` (the seq of the last event it is to count as
    /// handled; 0: from the start). A processor running under that name, in this process or
    /// another, stops at its next checkpoint with [`Error::ConsumerMoved`](crate::Error::ConsumerMoved) (writing nothing);
    /// started again, it begins after `position`. For a
    /// consumer group, every partition's cursor moves; stop its members first (a running member
    /// commits its own positions when they are ahead).
    pub fn reset_consumer(&self, name: &str, position: u64) -> Result<()> {
        storage::ops::reset_consumer(self, name, position)?;
        storage::groups_reset(self, name, position)?;
        Ok(())
    }

    /// Deletes the consumer `name`: its cursor and its parked events, and the consumer group of
    /// that name with its members, leases and cursors. Returns whether it existed. A processor
    /// running under that name stops at its next checkpoint with [`Error::ConsumerMoved`](crate::Error::ConsumerMoved)
    /// (it recreates nothing).
    pub fn delete_consumer(&self, name: &str) -> Result<bool> {
        let consumer = storage::ops::delete_consumer(self, name)?;
        let group = storage::groups_delete(self, name)?;
        Ok(consumer || group)
    }

    /// Every consumer group ([`Processor::in_group`](crate::Processor::in_group)), by name, with
    /// its members, and each partition's holder, lease, cursor and lag.
    pub fn consumer_groups(&self) -> Result<Vec<ConsumerGroup>> {
        let txn = self.read_txn()?;
        storage::consumer_groups_in(self, &txn)
    }

    /// The members of the consumer group `group`, by name, with the partitions each holds and
    /// when its membership lapses (a member dead for a whole lease is dropped from the list).
    /// Empty when there is no such group.
    pub fn group_members(&self, group: &str) -> Result<Vec<GroupMember>> {
        let txn = self.read_txn()?;
        Ok(storage::consumer_group_in(self, &txn, group)?
            .map(|g| g.members)
            .unwrap_or_default())
    }

    /// Asks the processor `name` to hand its parked events to its handler again, in seq order
    /// (`varvedb consumers replay`): a running processor does it within its poll interval, a
    /// stopped one when it next starts. Each event its handler then takes leaves the parked
    /// list; one that fails again stays. The cursor does not move. Returns the events parked
    /// now; with none, nothing is asked.
    pub fn request_parked_replay(&self, name: &str) -> Result<u64> {
        storage::ops::request_parked_replay(self, name)
    }

    /// Event, stream and byte counts.
    ///
    /// Counts read from disk are summed with overflow checks: a damaged reference count that
    /// would overflow is [`Error::CorruptBlob`], not a wrong figure.
    pub fn stats(&self) -> Result<Stats> {
        storage::ops::stats(self)
    }

    /// The store's Prometheus metrics in the text exposition format (OpenMetrics 1.0, which
    /// Prometheus scrapes), every name in the `varvedb_` namespace. The counters count what
    /// this process did since it opened the store; the gauges of the file (map size and use,
    /// events, last sequence, blobs) are read from one snapshot now. When no snapshot can be
    /// taken (a poisoned store), those gauges keep their last values.
    ///
    /// The README's operator section lists every name.
    pub fn metrics_text(&self) -> String {
        storage::ops::metrics_text(self)
    }

    /// The untyped reader of this store: every event with its envelope and payload bytes,
    /// whatever its type.
    pub fn raw_reader(&self) -> RawReader {
        untyped::raw_reader(self)
    }

    /// The header of an export of this store as `txn` sees it.
    pub fn export_header(&self, txn: &ReadTxn) -> Result<ExportHeader> {
        dump::export_header(self, txn)
    }

    /// Every event from `from_seq` on, in its stored form, in order. A damaged record ends
    /// the export with its error: an export is a faithful copy or none.
    pub fn export_events<'t>(
        &self,
        txn: &'t ReadTxn,
        from_seq: u64,
    ) -> impl Iterator<Item = Result<StoredEvent>> + 't {
        dump::export_events(self, txn, from_seq)
    }

    /// Every stream that lost events (truncations, deletions, tombstones, retention) in
    /// `txn`'s snapshot, in stream order: what a replica needs to follow the removals (see
    /// [`Importer::adopt_removal`]). One entry per such stream; each costs a lookup of its first
    /// kept version.
    pub fn stream_removals(&self, txn: &ReadTxn) -> Result<Vec<StreamRemoval>> {
        self.check_txn(txn)?;
        storage::stream_removals(self.dbs(), txn.raw())
    }

    /// The chain links `(prev, jump)` of the record at `seq` (the sequences of earlier
    /// versions of its stream, 0 for none), or `None` when the log has no record there. A
    /// replica of a stream whose first events were removed needs them: they name records it
    /// never had.
    pub fn record_links(&self, txn: &ReadTxn, seq: u64) -> Result<Option<(u64, u64)>> {
        self.check_txn(txn)?;
        let Some(record) = storage::get_record(self.dbs(), txn.raw(), seq)? else {
            return Ok(None);
        };
        let peek = storage::peek_record(record)
            .ok_or_else(|| crate::Error::corrupt(seq, "unreadable record header"))?;
        Ok(Some((peek.links.prev, peek.links.jump)))
    }

    /// How many events were removed from the log in `txn`'s snapshot (truncations, deletions,
    /// retention): one read. The log holds `last_seq - removed_events` events.
    pub fn removed_events(&self, txn: &ReadTxn) -> Result<u64> {
        self.check_txn(txn)?;
        storage::meta_removed(self.dbs(), txn.raw())
    }

    /// An importer into this store. See [`Importer`].
    pub fn importer(&self) -> Importer {
        dump::importer(self)
    }

    #[cfg(feature = "metrics-http")]
    /// Serves this store's metrics at `http://ADDR/metrics` on a thread of its own, until the
    /// returned [`MetricsServer`] is dropped. `None` listens on [`DEFAULT_METRICS_ADDR`](crate::metrics_http::DEFAULT_METRICS_ADDR)
    /// (127.0.0.1:9477): other machines cannot scrape it unless you pass an address that they
    /// can reach, such as `0.0.0.0:9477`.
    ///
    /// `GET /metrics` answers the exposition of [`metrics_text`](Self::metrics_text); other
    /// paths are `404`, other methods `405`. An address that cannot be bound is
    /// [`Error::Bind`].
    pub fn serve_metrics(&self, addr: Option<std::net::SocketAddr>) -> Result<MetricsServer> {
        metrics_http::serve_metrics(self, addr)
    }
}
