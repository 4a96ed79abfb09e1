//! The crash harness (`docs/reliability.md`).
//!
//! A child process appends a mixed workload to a store and writes a line to stdout after each
//! acknowledgement: single events, batches, multi-stream appends, blobs, appends with event ids
//! and their retries, and, in the encrypted store, a shred now and then; in the plaintext store
//! an exactly-once projection runs alongside. The parent kills the child with SIGKILL at a random
//! moment, reopens the store, and checks it against what was acknowledged:
//! - every acknowledged event is there, with its stream, version and payload (decrypted), or
//!   reads as shredded if its stream's shred was acknowledged;
//! - the global sequence has no gaps, and each stream's versions run 1..=n and end at its head;
//! - no append of the workload is in the log twice (idempotent retries, also across a crash);
//! - `verify` finds no problem;
//! - the projection's read model equals a recount of the events up to its cursor.
//!
//! Every append is a function of `(run, op)`, so the parent rebuilds each acknowledged event and
//! a child can retry the append that a kill interrupted, byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use varvedb::{
    Append, AppendOptions, Error, EventId, ExpectedVersion, HandlerError, Model, OwnedEvent,
    Projection, ProjectionHandler, Reader, Storage, StorageConfig, Writer,
};

/// The harness's event.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
pub struct Entry {
    /// The child run that appended it.
    pub run: u64,
    /// The operation of that run.
    pub op: u64,
    /// The event's place in the operation.
    pub k: u32,
    /// A payload of 8 bytes to 3,000 (over 1 KiB it goes to the blob store).
    pub body: Vec<u8>,
}

/// The master key the encrypted store is created with.
pub const MASTER_KEY: [u8; 32] = [0x5a; 32];
/// The encrypted store's master keys: its workload rotates from one to the other.
pub const MASTER_KEYS: [[u8; 32]; 2] = [MASTER_KEY, [0xa5; 32]];

/// The key (an index into [`MASTER_KEYS`]) the child's store is under now.
static CURRENT_KEY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Opens a store with `config`, under whichever of [`MASTER_KEYS`] opens it (the first for a
/// plaintext store); returns the store and that key's index.
pub fn open_any_key(config: StorageConfig) -> Result<(Storage, usize), Error> {
    if config.master_key.is_none() {
        return Storage::open(config).map(|s| (s, 0));
    }
    match Storage::open(StorageConfig {
        master_key: Some(MASTER_KEYS[0]),
        ..config.clone()
    }) {
        Err(Error::WrongMasterKey) => Storage::open(StorageConfig {
            master_key: Some(MASTER_KEYS[1]),
            ..config
        })
        .map(|s| (s, 1)),
        other => other.map(|s| (s, 0)),
    }
}
/// The projection's name.
pub const PROJECTION: &str = "crash-counts";

/// Which store a run works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plaintext, with a projection running.
    Plain,
    /// Encrypted, with shreds and online backups.
    Encrypted,
    /// Plaintext, written by two child processes at once.
    Shared,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Encrypted => "encrypted",
            Mode::Shared => "shared",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "plain" => Some(Mode::Plain),
            "encrypted" => Some(Mode::Encrypted),
            "shared" => Some(Mode::Shared),
            _ => None,
        }
    }
}

pub mod history;
pub mod soak;

/// Locks a mutex, taking it over from a thread that panicked while holding it.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Adds a line to a shared list of failures.
fn lock_push(list: &std::sync::Mutex<Vec<String>>, line: String) {
    lock(list).push(line);
}

/// xorshift64*: a deterministic stream of numbers for the workload and the kill points.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// One operation of the workload.
#[derive(Debug, Clone)]
pub enum Op {
    /// Appends: one entry per stream (one stream: a single event or a batch; several: an
    /// atomic multi-stream append), with event ids or without.
    Append {
        parts: Vec<(u128, Vec<Entry>)>,
        ids: bool,
    },
    /// Crypto-shreds a stream of the previous run (encrypted store only).
    Shred(u128),
    /// An online backup (`compact_to`) into `backups/RUN-OP` (encrypted store only).
    Backup,
    /// An export of the store imported into `imports/RUN-OP` (encrypted store only). A kill
    /// interrupts it; the next child runs it again, and it continues.
    Import,
    /// Rotates the master key to the other of [`MASTER_KEYS`] (encrypted store only).
    Rotate,
    /// Deletes one of the run's own streams (`delete_stream`: its events go, the stream goes
    /// on at its next version; shared store only).
    Delete(u128),
    /// Gives a stream a retention policy (its newest [`RETAIN_COUNT`] events) and enforces
    /// every policy (the shared store only, with two writers): a kill lands mid-removal.
    Retain(u128),
}

/// The events a [`Op::Retain`] policy keeps of its stream.
pub const RETAIN_COUNT: u64 = 4;

/// The streams a run appends to: the plaintext store keeps 8 streams across runs; the encrypted
/// store gives each run 8 of its own, so that a shred never races the run's own appends.
fn stream(mode: Mode, run: u64, i: u64) -> u128 {
    match mode {
        Mode::Plain => u128::from(i % 8 + 1),
        Mode::Encrypted | Mode::Shared => u128::from(run * 16 + i % 8 + 1),
    }
}

fn body(run: u64, op: u64, k: u32, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(run << 40 ^ op << 8 ^ u64::from(k));
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Operation `op` of run `run`.
pub fn op(mode: Mode, run: u64, op: u64) -> Op {
    let mut rng = Rng::new(run.wrapping_mul(1_000_003) ^ op.wrapping_mul(7_919) ^ 0xC0FFEE);
    if mode == Mode::Encrypted && run > 0 && op % 23 == 22 {
        return Op::Shred(stream(mode, run - 1, rng.below(8)));
    }
    if mode == Mode::Encrypted && op % 29 == 28 {
        return Op::Backup;
    }
    if mode == Mode::Encrypted && op % 31 == 30 {
        return Op::Import;
    }
    if mode == Mode::Encrypted && op % 37 == 36 {
        return Op::Rotate;
    }
    if mode == Mode::Shared && op % 17 == 16 {
        return Op::Retain(stream(mode, run, rng.below(8)));
    }
    if mode == Mode::Shared && op % 19 == 18 {
        return Op::Delete(stream(mode, run, rng.below(8)));
    }
    let streams = match rng.below(10) {
        0..=5 => 1,
        6..=8 => 2,
        _ => 3,
    };
    let mut k = 0u32;
    let first = rng.below(8);
    let parts = (0..streams)
        .map(|s| {
            let events = if streams == 1 && rng.below(3) == 0 {
                2 + rng.below(6)
            } else {
                1
            };
            let entries = (0..events)
                .map(|_| {
                    let len = [8usize, 100, 1500, 3000][rng.below(4) as usize];
                    let e = Entry {
                        run,
                        op,
                        k,
                        body: body(run, op, k, len),
                    };
                    k += 1;
                    e
                })
                .collect();
            (stream(mode, run, first + s), entries)
        })
        .collect();
    Op::Append {
        parts,
        ids: rng.below(2) == 0,
    }
}

/// The event id of entry `k` of operation `op` of run `run`.
pub fn event_id(run: u64, op: u64, k: u32) -> EventId {
    EventId::from_u128((u128::from(run) << 64 | u128::from(op) << 16 | u128::from(k)) + 1)
}

pub fn config(dir: &Path, mode: Mode) -> StorageConfig {
    StorageConfig {
        path: dir.join(mode.name()),
        encryption_enabled: mode == Mode::Encrypted,
        master_key: (mode == Mode::Encrypted).then_some(MASTER_KEY),
        // A small map to start with: it grows (doubling) while the harness runs, so that some
        // kills land during a growth.
        map_bytes_initial: 1 << 20,
        // The simulation's self-test: with no flushes, acknowledged appends must be lost in
        // some power-cut state, and the simulation must say so.
        durability: match std::env::var_os("VARVEDB_CRASH_NO_FLUSH") {
            Some(_) => varvedb::Durability::NoSync,
            None => varvedb::Durability::Sync,
        },
        ..Default::default()
    }
}

/// Where the import of operation `op` of run `run` goes.
pub fn import_path(dir: &Path, run: u64, op: u64) -> std::path::PathBuf {
    dir.join("imports").join(format!("{run}-{op}"))
}

/// Where the backup of operation `op` of run `run` goes.
pub fn backup_path(dir: &Path, run: u64, op: u64) -> std::path::PathBuf {
    dir.join("backups").join(format!("{run}-{op}"))
}

/// The consumer group the plaintext store's children are members of.
pub const GROUP: &str = "crash-group";

/// The group member's handler: it takes every event.
struct Tally;

impl varvedb::EventHandler<Entry> for Tally {
    fn handle(&mut self, _: &varvedb::EventRef<'_, Entry>) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// The projection: per stream, the events and the bytes of their bodies.
struct Counts;

impl ProjectionHandler<Entry> for Counts {
    fn apply(
        &mut self,
        event: &OwnedEvent<Entry>,
        model: &mut Model<'_, '_>,
    ) -> Result<(), HandlerError> {
        let key = event.stream_id.to_be_bytes();
        let (mut count, mut bytes) = match model.get(&key)? {
            Some(v) => (
                u64::from_le_bytes(v[..8].try_into()?),
                u64::from_le_bytes(v[8..16].try_into()?),
            ),
            None => (0, 0),
        };
        count += 1;
        bytes += event.body.len() as u64;
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&count.to_le_bytes());
        value[8..].copy_from_slice(&bytes.to_le_bytes());
        model.put(&key, &value)?;
        Ok(())
    }
}

fn say(out: &mut impl Write, line: std::fmt::Arguments<'_>) {
    // The parent may be gone (it killed us); then there is nobody to tell.
    if out.write_fmt(line).and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// Performs one operation and reports it. Returns the answers of an append, in order.
fn perform(
    storage: &Storage,
    writer: &Writer<Entry>,
    out: &mut impl Write,
    run: u64,
    op_no: u64,
    op: &Op,
) -> Result<Vec<(u64, u128, u32, u32)>, String> {
    match op {
        Op::Import => {
            say(out, format_args!("S {run} {op_no}\n"));
            let dir = storage
                .path()
                .parent()
                .ok_or("the store has no parent directory")?;
            // The copy is under the store's current key: an import refuses another.
            let key = CURRENT_KEY.load(std::sync::atomic::Ordering::Relaxed);
            let dest = Storage::open(StorageConfig {
                path: import_path(dir, run, op_no),
                master_key: Some(MASTER_KEYS[key]),
                ..config(dir, Mode::Encrypted)
            })
            .map_err(|e| format!("import {run}/{op_no}: open: {e}"))?;
            let txn = storage.read_txn().map_err(|e| e.to_string())?;
            let header = storage.export_header(&txn).map_err(|e| e.to_string())?;
            let mut importer = dest.importer();
            importer
                .begin(&header)
                .map_err(|e| format!("import: {e}"))?;
            for e in storage.export_events(&txn, 1) {
                importer
                    .push(e.map_err(|e| format!("export: {e}"))?)
                    .map_err(|e| format!("import: {e}"))?;
            }
            importer
                .finish(&header)
                .map_err(|e| format!("import: {e}"))?;
            say(out, format_args!("I {run} {op_no} {}\n", header.last_seq));
            say(out, format_args!("D {run} {op_no}\n"));
            Ok(Vec::new())
        }
        Op::Backup => {
            say(out, format_args!("S {run} {op_no}\n"));
            let dir = storage
                .path()
                .parent()
                .ok_or("the store has no parent directory")?;
            let dest = backup_path(dir, run, op_no);
            std::fs::create_dir_all(dest.parent().ok_or("no backups directory")?)
                .map_err(|e| e.to_string())?;
            // A retried backup of an interrupted one starts afresh.
            let _ = std::fs::remove_dir_all(&dest);
            storage
                .compact_to(&dest)
                .map_err(|e| format!("backup {run}/{op_no}: {e}"))?;
            say(out, format_args!("B {run} {op_no}\n"));
            say(out, format_args!("D {run} {op_no}\n"));
            Ok(Vec::new())
        }
        Op::Delete(stream_id) => {
            say(out, format_args!("S {run} {op_no}\n"));
            match storage.delete_stream(*stream_id) {
                Ok(report) => say(out, format_args!("X {stream_id} {}\n", report.first_kept)),
                // The stream never got an event (its run was killed early): nothing to delete.
                Err(Error::StreamNotFound { .. }) => {}
                Err(e) => return Err(format!("delete of stream {stream_id}: {e}")),
            }
            say(out, format_args!("D {run} {op_no}\n"));
            Ok(Vec::new())
        }
        Op::Rotate => {
            say(out, format_args!("S {run} {op_no}\n"));
            let next = 1 - CURRENT_KEY.load(std::sync::atomic::Ordering::Relaxed);
            storage
                .rotate_master_key(MASTER_KEYS[next])
                .map_err(|e| format!("rotation to key {next}: {e}"))?;
            CURRENT_KEY.store(next, std::sync::atomic::Ordering::Relaxed);
            say(out, format_args!("K {next}\n"));
            say(out, format_args!("D {run} {op_no}\n"));
            Ok(Vec::new())
        }
        Op::Retain(stream_id) => {
            say(out, format_args!("S {run} {op_no}\n"));
            // Said before anything changes: from here on the stream may lose old events.
            say(out, format_args!("R {stream_id}\n"));
            let policy = varvedb::RetentionPolicy {
                max_count: Some(RETAIN_COUNT),
                ..Default::default()
            };
            storage
                .set_stream_retention(*stream_id, policy)
                .map_err(|e| format!("retention of stream {stream_id}: {e}"))?;
            storage
                .enforce_retention()
                .map_err(|e| format!("enforce_retention: {e}"))?;
            say(out, format_args!("D {run} {op_no}\n"));
            Ok(Vec::new())
        }
        Op::Shred(stream_id) => {
            say(out, format_args!("S {run} {op_no}\n"));
            match storage.shred_stream(*stream_id) {
                Ok(_) => say(out, format_args!("H {stream_id}\n")),
                // The stream never got an event (its run was killed early): nothing to shred.
                Err(Error::StreamNotFound { .. } | Error::StreamNotEncrypted { .. }) => {}
                Err(e) => return Err(format!("shred of stream {stream_id}: {e}")),
            }
            say(out, format_args!("D {run} {op_no}\n"));
            Ok(Vec::new())
        }
        Op::Append { parts, ids } => {
            say(out, format_args!("S {run} {op_no}\n"));
            let options: Vec<Vec<AppendOptions>> = parts
                .iter()
                .map(|(_, entries)| {
                    entries
                        .iter()
                        .map(|e| match ids {
                            true => AppendOptions::new().event_id(event_id(e.run, e.op, e.k)),
                            false => AppendOptions::new(),
                        })
                        .collect()
                })
                .collect();
            let request = parts
                .iter()
                .zip(&options)
                .fold(Append::new(), |a, ((s, entries), o)| {
                    a.and(*s, ExpectedVersion::Auto, entries.as_slice())
                        .options(o.as_slice())
                });
            let answers = writer
                .commit(request)
                .map_err(|e| format!("append {run}/{op_no}: {e}"))?;
            let entries = parts
                .iter()
                .flat_map(|(s, es)| es.iter().map(move |e| (*s, e.k)));
            let mut acked = Vec::new();
            for (a, (stream_id, k)) in answers.iter().zip(entries) {
                say(
                    out,
                    format_args!("A {} {stream_id} {} {run} {op_no} {k}\n", a.seq, a.version),
                );
                acked.push((a.seq, stream_id, a.version, k));
            }
            say(out, format_args!("D {run} {op_no}\n"));
            Ok(acked)
        }
    }
}

/// The child: appends run `run`'s operations to the store under `dir` until it is killed,
/// after retrying the interrupted operation `retry` of an earlier run, if any.
pub fn child(dir: &Path, mode: Mode, run: u64, retry: Option<(u64, u64)>) -> Result<(), String> {
    let (storage, key) = open_any_key(config(dir, mode)).map_err(|e| format!("open: {e}"))?;
    CURRENT_KEY.store(key, std::sync::atomic::Ordering::Relaxed);
    let writer = Writer::<Entry>::new(storage.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // The plaintext store: the projection, and a member of a consumer group (its leases and
    // partition cursors are written while the kills and power cuts land).
    let _projection = (mode == Mode::Plain).then(|| {
        let p = Projection::new(Reader::<Entry>::new(storage.clone()), Counts, PROJECTION)
            .batch_events_max(64);
        let member = varvedb::Processor::new(
            Reader::<Entry>::new(storage.clone()),
            Tally,
            GROUP,
            storage.subscribe(),
        )
        .with_options(varvedb::ProcessorOptions {
            checkpoint_every_events: 16,
            group_lease_ms: 2_000,
            ..Default::default()
        })
        .in_group(format!("member-{run}"));
        std::thread::spawn(move || {
            rt.block_on(async {
                let _ = tokio::join!(
                    p.run_until(std::future::pending::<()>()),
                    member.run_until(std::future::pending::<()>())
                );
            })
        })
    });
    let mut out = std::io::stdout().lock();
    if let Some((r, o)) = retry {
        perform(&storage, &writer, &mut out, r, o, &op(mode, r, o))?;
    }
    for o in 0u64.. {
        let this = op(mode, run, o);
        let first = perform(&storage, &writer, &mut out, run, o, &this)?;
        // Every fifth append with ids is sent twice: the retry must get the same answers.
        if let Op::Append { ids: true, .. } = this
            && o % 5 == 0
        {
            let again = perform(&storage, &writer, &mut out, run, o, &this)?;
            if again != first {
                return Err(format!(
                    "the retry of {run}/{o} was answered {again:?}, the append {first:?}"
                ));
            }
        }
    }
    Ok(())
}

/// What the parent learned from one child's output.
#[derive(Debug, Default)]
struct Heard {
    /// `(seq, stream, version, run, op, k)` of every acknowledged event.
    acked: Vec<(u64, u128, u32, u64, u64, u32)>,
    /// The last operation started and not reported done.
    open: Option<(u64, u64)>,
    shredded: Vec<u128>,
    /// `(run, op)` of every acknowledged backup.
    backups: Vec<(u64, u64)>,
    /// `(run, op, last seq)` of every acknowledged import.
    imports: Vec<(u64, u64, u64)>,
    /// Streams given a retention policy (perhaps: the child may have died before it was set).
    retained: Vec<u128>,
    /// The master key of the last acknowledged rotation.
    key: Option<usize>,
    /// Acknowledged rotations.
    rotations: u64,
    /// Acknowledged deletions: the stream, and its first kept version afterwards.
    deleted: Vec<(u128, u32)>,
}

impl Heard {
    fn take(&mut self, line: &str) -> Result<(), String> {
        let f: Vec<&str> = line.split(' ').collect();
        let n = |i: usize| -> Result<u128, String> {
            f.get(i)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("unreadable line from the child: {line:?}"))
        };
        match f.first().copied() {
            Some("S") => self.open = Some((n(1)? as u64, n(2)? as u64)),
            Some("D") => self.open = None,
            Some("H") => self.shredded.push(n(1)?),
            Some("R") => self.retained.push(n(1)?),
            Some("X") => self.deleted.push((n(1)?, n(2)? as u32)),
            Some("K") => {
                self.key = Some(n(1)? as usize);
                self.rotations += 1;
            }
            Some("B") => self.backups.push((n(1)? as u64, n(2)? as u64)),
            Some("I") => self
                .imports
                .push((n(1)? as u64, n(2)? as u64, n(3)? as u64)),
            Some("A") => self.acked.push((
                n(1)? as u64,
                n(2)?,
                n(3)? as u32,
                n(4)? as u64,
                n(5)? as u64,
                n(6)? as u32,
            )),
            _ => return Err(format!("unexpected line from the child: {line:?}")),
        }
        Ok(())
    }
}

/// What a harness run did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub kill_points: u64,
    /// Acknowledgements the children printed (a retry is acknowledged again).
    pub acknowledgements: u64,
    /// Distinct acknowledged events: each read back at the kill after it was acknowledged, at
    /// every later full check, and in the random samples of the checks between.
    pub acknowledged_events: u64,
    pub events_in_stores: u64,
    pub retries_after_a_kill: u64,
    pub shreds: u64,
    /// Master-key rotations acknowledged.
    pub rotations: u64,
    /// Stream deletions acknowledged.
    pub deletions: u64,
    /// Encrypted stores replaced by a fresh one ([`ENCRYPTED_GENERATION`]).
    pub generations: u64,
    pub backups_checked: u64,
    /// Imports checked record for record against the store, some of them resumed after a kill.
    pub imports_checked: u64,
    /// Kill points at which two child processes were writing to one store.
    pub two_writer_kills: u64,
    /// Events the shared store's retention policies removed, as of the last check.
    pub removed_events: u64,
    pub projection_checks: u64,
    /// Kill points whose check read the whole store (every acknowledged event, `verify`, the
    /// whole log, the projection): every [`FULL_CHECK_EVERY`]th at each store, and each
    /// store's last.
    pub full_checks: u64,
    /// Older acknowledged events read back in the checks that were not full (a random sample
    /// of [`SAMPLE`] each).
    pub sampled_checks: u64,
    /// The time of each successive thousand kill points: flat when a check's cost does not
    /// grow with the stores.
    pub per_thousand: Vec<Duration>,
    pub elapsed: Duration,
}

/// Every how many kill points at one store its check reads everything.
pub const FULL_CHECK_EVERY: u64 = 100;
/// Kill points at one encrypted store before a fresh one replaces it (after a full check).
/// Its workload backs up and imports the whole store every thirty operations or so: a store
/// that grew through 10,000 kill points would make each kill cost what the store weighs.
pub const ENCRYPTED_GENERATION: u64 = 500;
/// Older acknowledged events read back at each check that is not full.
pub const SAMPLE: usize = 256;

/// The state the parent keeps for one store across kills.
#[derive(Debug, Default)]
struct Store {
    acked: HashMap<u64, (u128, u32, u64, u64, u32)>,
    /// The acknowledged sequences, in the order first heard: what the sample is drawn from.
    acked_order: Vec<u64>,
    /// The log's last sequence at the previous check: a check that is not full reads the log
    /// after it.
    checked_last: u64,
    /// Kill points at this store so far.
    kills: u64,
    /// Streams that may have a retention policy: their events older than the newest
    /// [`RETAIN_COUNT`] may be gone.
    retained: HashSet<u128>,
    shredded: HashSet<u128>,
    maybe_shredded: HashSet<u128>,
    retry: Vec<(u64, u64)>,
    runs: u64,
    /// The master key the store must open with (the last acknowledged rotation's), or `None`
    /// while a rotation's outcome is unknown (either key then).
    key: Option<usize>,
    /// Streams whose deletion was acknowledged, with their first kept version after it: their
    /// events before it must be gone.
    deleted: HashMap<u128, u32>,
    /// Streams whose deletion was started and not acknowledged: their events may be gone.
    maybe_deleted: HashSet<u128>,
}

/// A child process and the lines it printed, read by a thread of their own.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

fn spawn(
    exe: &Path,
    dir: &Path,
    mode: Mode,
    run: u64,
    retry: Option<(u64, u64)>,
) -> Result<Running, String> {
    let mut cmd = Command::new(exe);
    cmd.arg("child")
        .arg(dir)
        .arg(mode.name())
        .arg(run.to_string());
    if let Some((r, o)) = retry {
        cmd.arg(r.to_string()).arg(o.to_string());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Ok(Running { child, lines })
}

/// Runs `kills` kill points, rotating over three stores under `dir`: plaintext (with a
/// projection), encrypted (with shreds and backups), and one written by two processes at once.
/// `exe` is the harness binary; it is started as `exe child DIR MODE RUN [RETRY_RUN RETRY_OP]`.
pub fn run(
    exe: &Path,
    dir: &Path,
    kills: u64,
    seed: u64,
    mut progress: impl FnMut(&Report),
) -> Result<Report, String> {
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let fresh = || Store {
        key: Some(0),
        ..Store::default()
    };
    let mut stores = [fresh(), fresh(), fresh()];
    let mut report = Report::default();
    for kill in 0..kills {
        let (mode, store) = match kill % 3 {
            0 => (Mode::Plain, &mut stores[0]),
            1 => (Mode::Encrypted, &mut stores[1]),
            _ => (Mode::Shared, &mut stores[2]),
        };
        let writers = if mode == Mode::Shared { 2 } else { 1 };
        let mut children = Vec::new();
        for _ in 0..writers {
            let run = store.runs;
            store.runs += 1;
            let retry = store.retry.pop();
            report.retries_after_a_kill += u64::from(retry.is_some());
            children.push(spawn(exe, dir, mode, run, retry)?);
        }
        // Kill after a random number of started operations, a random moment later: often in
        // the middle of a commit.
        let target = 1 + rng.below(60);
        let delay = Duration::from_micros(rng.below(3000));
        let mut heard: Vec<Heard> = (0..writers).map(|_| Heard::default()).collect();
        let mut started_ops = 0;
        let mut ended_early = None;
        'listen: while started_ops < target {
            for (i, c) in children.iter().enumerate() {
                match c.lines.recv_timeout(Duration::from_millis(1)) {
                    Ok(line) => {
                        if line.starts_with('S') {
                            started_ops += 1;
                        }
                        heard[i].take(&line)?;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        ended_early = Some(i);
                        break 'listen;
                    }
                }
            }
        }
        std::thread::sleep(delay);
        for c in &mut children {
            let _ = c.child.kill();
        }
        for (i, c) in children.iter_mut().enumerate() {
            let status = c.child.wait().map_err(|e| e.to_string())?;
            // Lines written before the kill are acknowledgements that happened.
            for line in c.lines.iter() {
                heard[i].take(&line)?;
            }
            if ended_early == Some(i) {
                let mut err = String::new();
                if let Some(mut e) = c.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!(
                    "kill point {kill} ({}): a child ended by itself ({status}): {err}",
                    mode.name()
                ));
            }
        }
        let acked_before = store.acked.len() as u64;
        let mut new_acks = Vec::new();
        for heard in &heard {
            for &(seq, s, v, r, o, k) in &heard.acked {
                new_acks.push(seq);
                let old = store.acked.insert(seq, (s, v, r, o, k));
                if old.is_none() {
                    store.acked_order.push(seq);
                }
                if let Some(old) = old
                    && old != (s, v, r, o, k)
                {
                    return Err(format!(
                        "kill point {kill}: seq {seq} acknowledged twice, as {old:?} and {:?}",
                        (s, v, r, o, k)
                    ));
                }
            }
            report.acknowledgements += heard.acked.len() as u64;
            report.shreds += heard.shredded.len() as u64;
            report.rotations += heard.rotations;
            report.deletions += heard.deleted.len() as u64;
            store.shredded.extend(heard.shredded.iter().copied());
            store.retained.extend(heard.retained.iter().copied());
            for &(stream, first_kept) in &heard.deleted {
                let kept = store.deleted.entry(stream).or_default();
                *kept = (*kept).max(first_kept);
            }
            if heard.key.is_some() {
                store.key = heard.key;
            }
            if let Some((r, o)) = heard.open {
                match op(mode, r, o) {
                    Op::Shred(s) => {
                        store.maybe_shredded.insert(s);
                    }
                    // Done or not: either key may open the store now; the next check learns
                    // which, and from then on the store must keep opening with it.
                    Op::Rotate => store.key = None,
                    Op::Delete(s) => {
                        store.maybe_deleted.insert(s);
                    }
                    Op::Append { ids: true, .. } | Op::Import => store.retry.push((r, o)),
                    Op::Append { .. } | Op::Backup => {}
                    // Enforcement finishes at the next one (the policy is kept in the store).
                    Op::Retain(_) => {}
                }
            }
        }
        // Full every FULL_CHECK_EVERY kills at a store, and at each store's last kill; else
        // the log since the last check, the new acknowledgements and a random sample of the
        // older ones, so that a kill's check costs the same however large the stores grow.
        let generation_ends =
            mode == Mode::Encrypted && (store.kills + 1).is_multiple_of(ENCRYPTED_GENERATION);
        let full =
            store.kills.is_multiple_of(FULL_CHECK_EVERY) || kill + 3 >= kills || generation_ends;
        store.kills += 1;
        let scope = if full {
            Scope::Full
        } else {
            let older = store.acked_order.len().saturating_sub(new_acks.len());
            let mut sample = new_acks;
            if older > 0 {
                sample.extend(
                    (0..SAMPLE).map(|_| store.acked_order[rng.below(older as u64) as usize]),
                );
            }
            report.sampled_checks += SAMPLE.min(older) as u64;
            Scope::Since {
                from: store.checked_last,
                acked: sample,
            }
        };
        report.full_checks += u64::from(full);
        let checked = check(dir, mode, store, &scope)
            .map_err(|e| format!("kill point {kill} ({}): {e}", mode.name()))?;
        store.key = Some(checked.key);
        store.checked_last = checked.events;
        // Between full checks a backup or an import is checked at a sample of its records,
        // with no `verify`: both cost what the store weighs.
        let records = |rng: &mut Rng, last: u64| -> Option<Vec<u64>> {
            (!full).then(|| {
                let recent = last.saturating_sub(64) + 1..=last;
                let older = (0..SAMPLE)
                    .filter(|_| last > 0)
                    .map(|_| rng.below(last) + 1);
                recent.chain(older).collect()
            })
        };
        for &(r, o) in heard.iter().flat_map(|h| &h.backups) {
            let sample = records(&mut rng, checked.events);
            check_backup(dir, mode, r, o, checked.events, sample.as_deref())
                .map_err(|e| format!("kill point {kill}: the backup of {r}/{o}: {e}"))?;
            report.backups_checked += 1;
        }
        for &(r, o, last) in heard.iter().flat_map(|h| &h.imports) {
            let sample = records(&mut rng, last);
            check_import(dir, mode, r, o, last, sample.as_deref())
                .map_err(|e| format!("kill point {kill}: the import of {r}/{o}: {e}"))?;
            report.imports_checked += 1;
        }
        report.two_writer_kills += u64::from(writers == 2);
        report.acknowledged_events += store.acked.len() as u64 - acked_before;
        report.events_in_stores = report.events_in_stores.max(checked.events);
        if mode == Mode::Shared {
            report.removed_events = checked.removed;
        }
        report.projection_checks += u64::from(checked.projection);
        if generation_ends {
            for sub in [mode.name(), "imports", "backups"] {
                let _ = std::fs::remove_dir_all(dir.join(sub));
            }
            let (runs, kills_so_far) = (store.runs, store.kills);
            *store = Store {
                runs,
                kills: kills_so_far,
                key: Some(0),
                ..Store::default()
            };
            report.generations += 1;
        }
        report.kill_points += 1;
        report.elapsed = started.elapsed();
        if report.kill_points.is_multiple_of(1000) {
            let before: Duration = report.per_thousand.iter().sum();
            report
                .per_thousand
                .push(report.elapsed.saturating_sub(before));
        }
        progress(&report);
    }
    Ok(report)
}

/// An acknowledged import is clean and holds the store's first `last` records, byte for byte:
/// all of them, after a `verify`, or only those of `sample`.
fn check_import(
    dir: &Path,
    mode: Mode,
    run: u64,
    op: u64,
    last: u64,
    sample: Option<&[u64]>,
) -> Result<(), String> {
    let path = import_path(dir, run, op);
    let result = (|| {
        let (source, _) = open_any_key(config(dir, mode)).map_err(|e| format!("source: {e}"))?;
        let (copy, _) = open_any_key(StorageConfig {
            path: path.clone(),
            ..config(dir, mode)
        })
        .map_err(|e| format!("open: {e}"))?;
        if sample.is_none() {
            let report = copy.verify().map_err(|e| format!("verify: {e}"))?;
            if !report.is_clean() {
                return Err(format!("verify found problems: {:?}", report.problems));
            }
        }
        let (st, ct) = (
            source.read_txn().map_err(|e| e.to_string())?,
            copy.read_txn().map_err(|e| e.to_string())?,
        );
        let (sr, cr) = (source.raw_reader(), copy.raw_reader());
        if copy.last_seq(&ct).map_err(|e| e.to_string())? != last {
            return Err(format!("it ends before {last}"));
        }
        let all: Vec<u64>;
        let seqs = match sample {
            Some(s) => s,
            None => {
                all = (1..=last).collect();
                &all
            }
        };
        for &seq in seqs {
            let a = sr.get(&st, seq).map_err(|e| e.to_string())?;
            let b = cr.get(&ct, seq).map_err(|e| e.to_string())?;
            let same = match (a, b) {
                // A stream the store shredded after the export keeps its events in the copy.
                (Some(a), Some(b)) => {
                    (a.stream_id(), a.version()) == (b.stream_id(), b.version())
                        && (a.is_shredded() || a.payload_bytes() == b.payload_bytes())
                }
                _ => false,
            };
            if !same {
                return Err(format!("seq {seq} differs from the store's"));
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&path);
    result
}

/// An acknowledged backup opens, is clean (a `verify`, or the records of `sample` read back),
/// and holds no more than the store.
fn check_backup(
    dir: &Path,
    mode: Mode,
    run: u64,
    op: u64,
    store_events: u64,
    sample: Option<&[u64]>,
) -> Result<(), String> {
    let path = backup_path(dir, run, op);
    let copy = path.clone();
    let result = (|| {
        let (storage, _) = open_any_key(StorageConfig {
            path: copy,
            ..config(dir, mode)
        })
        .map_err(|e| format!("open: {e}"))?;
        match sample {
            None => {
                let report = storage.verify().map_err(|e| format!("verify: {e}"))?;
                if !report.is_clean() {
                    return Err(format!("verify found problems: {:?}", report.problems));
                }
            }
            Some(seqs) => {
                let txn = storage.read_txn().map_err(|e| e.to_string())?;
                let raw = storage.raw_reader();
                for &seq in seqs {
                    // A record the backup holds decodes (checksums, envelope, links); one it
                    // does not (the backup is older, or retention removed it) reads as None.
                    raw.get(&txn, seq).map_err(|e| format!("seq {seq}: {e}"))?;
                }
            }
        }
        let events = storage
            .last_seq(&storage.read_txn().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        if events > store_events {
            return Err(format!(
                "{events} events, more than the store's {store_events}"
            ));
        }
        Ok(())
    })();
    // Backups are checked once: keep the disk for the store.
    let _ = std::fs::remove_dir_all(&path);
    result
}

struct Checked {
    events: u64,
    projection: bool,
    removed: u64,
    /// The master key the store opened with.
    key: usize,
}

/// How much of a store a check reads.
enum Scope {
    /// Everything: `verify`, the whole log (gap-free, each stream's versions in order, each
    /// workload event once, the heads), every acknowledged event, and the projection.
    Full,
    /// The log after sequence `from` (its order, the heads of the streams it touches, each
    /// workload event once within it), and the acknowledged events at the sequences `acked`.
    Since { from: u64, acked: Vec<u64> },
}

/// Reopens the store and checks it against what was acknowledged, as far as `scope` says.
fn check(dir: &Path, mode: Mode, store: &Store, scope: &Scope) -> Result<Checked, String> {
    let (storage, key) = open_any_key(config(dir, mode)).map_err(|e| format!("reopen: {e}"))?;
    // An acknowledged rotation is never undone, and an unacknowledged one never half done
    // (the store would then open with neither key).
    if let Some(want) = store.key
        && key != want
    {
        return Err(format!(
            "the store opens with master key {key}; the last acknowledged rotation was to {want}"
        ));
    }
    let full = matches!(scope, Scope::Full);
    if full {
        let verify = storage.verify().map_err(|e| format!("verify: {e}"))?;
        if !verify.is_clean() {
            return Err(format!("verify found problems: {:?}", verify.problems));
        }
    }
    let from = match scope {
        Scope::Full => 0,
        Scope::Since { from, .. } => *from,
    };
    let txn = storage.read_txn().map_err(|e| e.to_string())?;
    let reader = Reader::<Entry>::new(storage.clone());
    let raw = storage.raw_reader();
    let last = storage.last_seq(&txn).map_err(|e| e.to_string())?;
    // The log: gap-free but for removed events (counted), each stream's versions in order from
    // its first kept one (1 but for a stream with a retention policy), each workload event
    // once.
    let mut versions: HashMap<u128, u32> = HashMap::new();
    let mut seen: HashSet<(u64, u64, u32)> = HashSet::new();
    if last < from {
        return Err(format!(
            "the log ends at {last}, but the previous check saw it reach {from}"
        ));
    }
    let mut expect = from + 1;
    let mut kept = 0u64;
    // Streams that may have lost events: a retention policy, a deletion.
    let removable = |s: &u128| {
        store.retained.contains(s)
            || store.deleted.contains_key(s)
            || store.maybe_deleted.contains(s)
    };
    let removals =
        !store.retained.is_empty() || !store.deleted.is_empty() || !store.maybe_deleted.is_empty();
    for e in raw.read_all(&txn, from + 1) {
        let e = e.map_err(|e| format!("raw read: {e}"))?;
        if e.seq() < expect || (e.seq() > expect && !removals) {
            return Err(format!("the log skips from {} to {}", expect - 1, e.seq()));
        }
        expect = e.seq() + 1;
        kept += 1;
        // A stream met first in the tail continues from where the log's earlier part left
        // it, which a full check reads.
        let first = (!full || removable(&e.stream_id())) && !versions.contains_key(&e.stream_id());
        let v = versions.entry(e.stream_id()).or_insert(0);
        if first && e.version() > 1 {
            *v = e.version() - 1;
        }
        if e.version() != *v + 1 {
            return Err(format!(
                "seq {}: stream {} version {} follows version {v}",
                e.seq(),
                e.stream_id(),
                e.version()
            ));
        }
        *v = e.version();
    }
    let deleted = storage.stats().map_err(|e| e.to_string())?.deleted_events;
    if (full && kept + deleted != last) || expect > last + 1 {
        return Err(format!(
            "the log holds {kept} events and {deleted} were removed, but last_seq says {last}"
        ));
    }
    for (s, v) in &versions {
        let head = storage
            .stream_version(&txn, *s)
            .map_err(|e| e.to_string())?;
        if head != *v {
            return Err(format!("stream {s}: head at version {head}, log at {v}"));
        }
    }
    for e in reader.read_all(&txn, from + 1) {
        match e {
            Ok(e) => {
                let id = (e.run.to_native(), e.op.to_native(), e.k.to_native());
                if !seen.insert(id) {
                    return Err(format!(
                        "seq {}: operation {id:?} is in the log twice",
                        e.seq()
                    ));
                }
            }
            Err(Error::Shredded { .. }) => {}
            Err(e) => return Err(format!("read_all: {e}")),
        }
    }
    // Every acknowledged event (or those of the scope), as it was appended.
    let scoped: Vec<u64> = match scope {
        Scope::Full => store.acked.keys().copied().collect(),
        Scope::Since { acked, .. } => acked.clone(),
    };
    for seq in scoped {
        let Some(&(s, v, r, o, k)) = store.acked.get(&seq) else {
            return Err(format!("seq {seq} to check was never acknowledged"));
        };
        let shredded = store.shredded.contains(&s);
        // An acknowledged deletion is never undone: what it removed stays removed.
        let deleted = store
            .deleted
            .get(&s)
            .is_some_and(|first_kept| v < *first_kept);
        match reader.get(&txn, seq) {
            Ok(None) if deleted || store.maybe_deleted.contains(&s) => {}
            Ok(Some(_)) | Err(Error::Shredded { .. }) if deleted => {
                return Err(format!(
                    "acknowledged seq {seq} (stream {s} v{v}) is readable after the stream's \
                     deletion was acknowledged"
                ));
            }
            Err(Error::Shredded { .. }) if shredded || store.maybe_shredded.contains(&s) => {}
            Ok(Some(e)) if !shredded => {
                let expected = match op(mode, r, o) {
                    Op::Append { parts, .. } => {
                        parts.into_iter().flat_map(|(_, es)| es).find(|e| e.k == k)
                    }
                    Op::Shred(_)
                    | Op::Backup
                    | Op::Import
                    | Op::Retain(_)
                    | Op::Rotate
                    | Op::Delete(_) => None,
                }
                .ok_or_else(|| format!("seq {seq}: no entry {r}/{o}/{k} in the workload"))?;
                let got = Entry {
                    run: e.run.to_native(),
                    op: e.op.to_native(),
                    k: e.k.to_native(),
                    body: e.body.to_vec(),
                };
                if (e.stream_id(), e.version()) != (s, v) || got != expected {
                    return Err(format!(
                        "acknowledged seq {seq} ({r}/{o}/{k}, stream {s} v{v}) reads back as \
                         stream {} v{} {}/{}/{}",
                        e.stream_id(),
                        e.version(),
                        got.run,
                        got.op,
                        got.k
                    ));
                }
            }
            // Retention may have taken an old event of a stream with a policy.
            Ok(None)
                if store.retained.contains(&s)
                    && u64::from(v) + RETAIN_COUNT
                        <= u64::from(storage.stream_version(&txn, s).unwrap_or(0)) => {}
            Ok(None) => return Err(format!("acknowledged seq {seq} is lost")),
            other => {
                return Err(format!(
                    "acknowledged seq {seq} (stream {s}, shredded: {shredded}): {:?}",
                    other.map(|e| e.map(|e| e.seq()))
                ));
            }
        }
    }
    // The consumer group's partition cursors never pass the log.
    if full && mode == Mode::Plain {
        for group in storage
            .consumer_groups()
            .map_err(|e| format!("groups: {e}"))?
        {
            for p in &group.partition_states {
                if p.position > last {
                    return Err(format!(
                        "group {} partition {}: cursor at {}, past the log's end {last}",
                        group.name, p.partition, p.position
                    ));
                }
            }
        }
    }
    // The projection's model equals a recount up to its cursor.
    let mut projection = false;
    if full
        && mode == Mode::Plain
        && let Some(position) = storage
            .consumer_position(PROJECTION)
            .map_err(|e| e.to_string())?
    {
        let mut counts: HashMap<u128, (u64, u64)> = HashMap::new();
        for e in reader.read_all(&txn, 1).take(position as usize) {
            let e = e.map_err(|e| format!("recount: {e}"))?;
            let c = counts.entry(e.stream_id()).or_default();
            c.0 += 1;
            c.1 += e.body.len() as u64;
        }
        for s in versions.keys() {
            let model = storage
                .projection_get(&txn, PROJECTION, &s.to_be_bytes())
                .map_err(|e| e.to_string())?
                .map(|v| {
                    (
                        u64::from_le_bytes(v[..8].try_into().unwrap_or_default()),
                        u64::from_le_bytes(v[8..16].try_into().unwrap_or_default()),
                    )
                });
            let recount = counts.get(s).copied();
            if model != recount {
                return Err(format!(
                    "projection at {position}: stream {s} modelled {model:?}, recounted {recount:?}"
                ));
            }
        }
        projection = true;
    }
    Ok(Checked {
        events: last,
        projection,
        removed: deleted,
        key,
    })
}

/// The power-cut simulation (`docs/reliability.md`). A child runs under an `LD_PRELOAD`
/// recorder (`powercut/interpose.c`) that logs every write to the data file, the start and the
/// end of every flush, and every acknowledgement the child prints, in order. From the log, the
/// parent builds the file states a power cut could leave at each acknowledgement:
/// - every write issued before the start of the last flush that returned is on disk;
/// - of the later writes, any subset of their 4 KiB pages is (a page is written whole or not).
///
/// Each state must open with every acknowledged event intact, a gap-free log, `verify` clean
/// and the projection consistent (the same checks as after a kill).
pub mod powercut {
    use super::*;

    /// What a simulation checked.
    #[derive(Debug, Default, Clone)]
    pub struct Figures {
        pub runs: u64,
        pub cut_points: u64,
        pub states: u64,
        pub acknowledged_events: u64,
        pub pending_pages_max: u64,
        /// Key rotations acknowledged by the recorded children.
        pub rotations: u64,
        /// Stream deletions acknowledged by the recorded children.
        pub deletions: u64,
        /// File states checked, per mode (`plain`, `encrypted`, `shared`).
        pub states_per_mode: std::collections::BTreeMap<&'static str, u64>,
    }

    const PAGE: u64 = 4096;

    /// Builds the recorder with the system's C compiler.
    pub fn build_recorder(out: &Path) -> Result<(), String> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("powercut/interpose.c");
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(out)
            .arg(&src)
            .arg("-ldl")
            .status()
            .map_err(|e| format!("cc: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("cc failed on {}", src.display()))
        }
    }

    /// A record of the log; flushes and output name their process.
    enum Rec {
        Write(u64, Vec<u8>),
        SyncStart(u64),
        SyncEnd(u64),
        Out(u64, Vec<u8>),
    }

    fn parse(log: &[u8]) -> Result<Vec<Rec>, String> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 13 <= log.len() {
            let kind = log[at];
            let off = u64::from_le_bytes(log[at + 1..at + 9].try_into().map_err(|_| "log")?);
            let len =
                u32::from_le_bytes(log[at + 9..at + 13].try_into().map_err(|_| "log")?) as usize;
            at += 13;
            // The child was killed while it logged this record, before the call it records.
            let Some(data) = log.get(at..at + len) else {
                break;
            };
            let data = data.to_vec();
            at += len;
            out.push(match kind {
                1 => Rec::Write(off, data),
                2 => Rec::SyncStart(off),
                3 => Rec::SyncEnd(off),
                4 => Rec::Out(off, data),
                k => return Err(format!("unknown log record {k}")),
            });
        }
        Ok(out)
    }

    fn apply(image: &mut Vec<u8>, off: u64, data: &[u8]) {
        let end = off as usize + data.len();
        if image.len() < end {
            image.resize(end, 0);
        }
        image[off as usize..end].copy_from_slice(data);
    }

    /// The writes of a log replayed in order, and which of them a flush has made durable: a
    /// flush makes durable what was written before it started, by any process; each process's
    /// flush ends are matched with its own starts.
    #[derive(Default)]
    struct Disk<'a> {
        writes: Vec<(u64, &'a [u8])>,
        sync_starts: HashMap<u64, std::collections::VecDeque<usize>>,
        /// The writes before this index are on disk.
        durable: usize,
    }

    impl<'a> Disk<'a> {
        /// Takes one record; hands back the output of a process (`Out`), which is not the
        /// disk's.
        fn take(&mut self, rec: &'a Rec) -> Option<(u64, &'a [u8])> {
            match rec {
                Rec::Write(off, data) => self.writes.push((*off, data)),
                Rec::SyncStart(pid) => self
                    .sync_starts
                    .entry(*pid)
                    .or_default()
                    .push_back(self.writes.len()),
                Rec::SyncEnd(pid) => {
                    if let Some(s) = self.sync_starts.get_mut(pid).and_then(|q| q.pop_front()) {
                        self.durable = self.durable.max(s);
                    }
                }
                Rec::Out(pid, bytes) => return Some((*pid, bytes)),
            }
            None
        }
    }

    /// The pending writes, cut into their 4 KiB pages: a page reaches the disk whole or not.
    fn pending_pages<'a>(writes: &[(u64, &'a [u8])]) -> Vec<(u64, &'a [u8])> {
        let mut pages = Vec::new();
        for (off, data) in writes {
            let mut at = 0usize;
            while at < data.len() {
                let page_end = ((off + at as u64) / PAGE + 1) * PAGE;
                let take = ((page_end - (off + at as u64)) as usize).min(data.len() - at);
                pages.push((off + at as u64, &data[at..at + take]));
                at += take;
            }
        }
        pages
    }

    /// The file a power cut leaves: the durable `image`, and the pending `pages` that `keep`
    /// says reached the disk.
    fn state_of(image: &[u8], pages: &[(u64, &[u8])], keep: &[bool]) -> Vec<u8> {
        let mut state = image.to_vec();
        for ((off, data), keep) in pages.iter().zip(keep) {
            if *keep {
                apply(&mut state, *off, data);
            }
        }
        state
    }

    /// Which of `n` pending pages reach the disk, in each state to check: every subset when
    /// there are at most 6, else none, all, and random subsets, `states` in all (at least 2).
    fn subsets(n: usize, states: u64, rng: &mut Rng) -> Vec<Vec<bool>> {
        let mut subsets: Vec<Vec<bool>> = Vec::new();
        if n <= 6 {
            for mask in 0..(1u64 << n) {
                subsets.push((0..n).map(|b| mask >> b & 1 == 1).collect());
            }
        } else {
            subsets.push(vec![false; n]);
            subsets.push(vec![true; n]);
            while (subsets.len() as u64) < states {
                let p = rng.below(100);
                subsets.push((0..n).map(|_| rng.below(100) < p).collect());
            }
        }
        subsets.truncate(states.max(2) as usize);
        subsets
    }

    /// Power cuts during a format upgrade: a recorded child opens (and so upgrades) a copy of
    /// the golden store of format 4; at every point of its log, every state a power cut could
    /// leave must open as the old store or the new one, whole, and as the new one once the
    /// child said the upgrade was done. Returns (cut points, states, old, new).
    pub fn upgrade(
        exe: &Path,
        recorder: &Path,
        dir: &Path,
        states_per_cut: u64,
        seed: u64,
    ) -> Result<(u64, u64, u64, u64), String> {
        let mut rng = Rng::new(seed);
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let dir = dir.canonicalize().map_err(|e| e.to_string())?;
        let store = dir.join("upgrading");
        std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
        let data_file = store.join("data.mdb");
        let start_image = std::fs::read(super::upgrade::source()).map_err(|e| e.to_string())?;
        std::fs::write(&data_file, &start_image).map_err(|e| e.to_string())?;
        let log = dir.join("recorder.log");
        let status = Command::new(exe)
            .arg("upgrade-child")
            .arg(&store)
            .env("LD_PRELOAD", recorder)
            .env("VARVEDB_POWERCUT_FILE", &data_file)
            .env("VARVEDB_POWERCUT_LOG", &log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot start the upgrade child: {e}"))?;
        if !status.success() {
            return Err(format!("the upgrade child failed: {status}"));
        }
        let recs = parse(&std::fs::read(&log).map_err(|e| e.to_string())?)?;
        let events = super::upgrade::golden_events(&dir)?;
        let (mut cuts, mut states, mut old, mut new) = (0, 0, 0, 0);
        let mut disk = Disk::default();
        let mut done = false;
        let (mut image, mut imaged) = (start_image, 0usize);
        for rec in &recs {
            if let Some((_, bytes)) = disk.take(rec) {
                done |= bytes.windows(8).any(|w| w == b"upgraded");
            }
            // Every record is a cut point: an upgrade's log is short. The durable image is
            // kept up to date as the log goes.
            for (off, data) in &disk.writes[imaged..disk.durable] {
                apply(&mut image, *off, data);
            }
            imaged = disk.durable;
            let pages = pending_pages(&disk.writes[disk.durable..]);
            for subset in subsets(pages.len(), states_per_cut, &mut rng) {
                let state = state_of(&image, &pages, &subset);
                let sdir = dir.join("state");
                let _ = std::fs::remove_dir_all(&sdir);
                std::fs::create_dir_all(&sdir).map_err(|e| e.to_string())?;
                std::fs::write(sdir.join("data.mdb"), &state).map_err(|e| e.to_string())?;
                let upgraded = super::upgrade::check_copy(&sdir, events)
                    .map_err(|e| format!("cut {cuts}: {e}"))?;
                if done && !upgraded {
                    return Err(format!(
                        "cut {cuts}: the upgrade was reported done, and the store is of the old \
                         format"
                    ));
                }
                if upgraded {
                    new += 1;
                } else {
                    old += 1;
                }
                states += 1;
            }
            cuts += 1;
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok((cuts, states, old, new))
    }

    /// What a simulation runs.
    #[derive(Debug, Clone, Copy)]
    pub struct Plan {
        /// Recorded children, each on a fresh store.
        pub runs: u64,
        /// Operations each child starts before it is killed.
        pub ops: u64,
        /// Acknowledgements checked per child (a sample), plus a quarter as many random moments.
        pub cuts_per_run: u64,
        /// File states checked per cut point.
        pub states_per_cut: u64,
        pub seed: u64,
    }

    /// Runs the plan's recorded children and checks the power-cut states at their cut points.
    pub fn run(exe: &Path, recorder: &Path, dir: &Path, plan: Plan) -> Result<Figures, String> {
        let Plan {
            runs,
            ops,
            cuts_per_run,
            states_per_cut,
            seed,
        } = plan;
        let mut figures = Figures::default();
        let mut rng = Rng::new(seed);
        for r in 0..runs {
            let base = dir.join(format!("run-{r}"));
            std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
            let base = base.canonicalize().map_err(|e| e.to_string())?;
            let log = base.join("recorder.log");
            // Plaintext (with its projection), encrypted (with shreds, backups, imports and key
            // rotations) and two writer processes at once (with retention) take turns.
            let mode = match r % 3 {
                0 => Mode::Plain,
                1 => Mode::Encrypted,
                _ => Mode::Shared,
            };
            let writers: u64 = if mode == Mode::Shared { 2 } else { 1 };
            let data_file = config(&base, mode).path.join("data.mdb");
            // An encrypted run shreds streams of the run before it: a first child (run 0, not
            // recorded) writes them, its file is flushed and becomes the starting image, and
            // its acknowledgements count.
            let mut first_heard = Heard::default();
            let mut start_image = Vec::new();
            if mode == Mode::Encrypted {
                let mut first = spawn(exe, &base, mode, 0, None)?;
                let mut started = 0;
                while started < ops {
                    match first.lines.recv() {
                        Ok(line) => {
                            started += u64::from(line.starts_with('S'));
                            first_heard.take(&line)?;
                        }
                        Err(_) => return Err("the first child ended by itself".into()),
                    }
                }
                let _ = first.child.kill();
                let _ = first.child.wait();
                for line in first.lines.iter() {
                    first_heard.take(&line)?;
                }
                // A rotation the kill interrupted leaves the starting image under either key.
                let first_rotating = matches!(first_heard.open, Some((r, o)) if matches!(op(mode, r, o), Op::Rotate));
                first_heard.key = match (first_heard.key, first_rotating) {
                    (_, true) => None,
                    (Some(k), false) => Some(k),
                    (None, false) => Some(0),
                };
                first_heard.open = None;
                std::fs::File::open(&data_file)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| e.to_string())?;
                start_image = std::fs::read(&data_file).map_err(|e| e.to_string())?;
            }
            // The recorded children (two at once in the shared mode), all logging to one log.
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let mut children = Vec::new();
            for w in 0..writers {
                let run = if mode == Mode::Encrypted { 1 } else { w };
                let mut child = Command::new(exe)
                    .arg("child")
                    .arg(&base)
                    .arg(mode.name())
                    .arg(run.to_string())
                    .env("LD_PRELOAD", recorder)
                    .env("VARVEDB_POWERCUT_FILE", &data_file)
                    .env("VARVEDB_POWERCUT_LOG", &log)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("cannot start the child: {e}"))?;
                let stdout = child.stdout.take().ok_or("no stdout")?;
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        if line.starts_with('S') && tx.send(()).is_err() {
                            return;
                        }
                    }
                });
                children.push(child);
            }
            drop(tx);
            let mut started = 0;
            while started < ops * writers && rx.recv().is_ok() {
                started += 1;
            }
            for child in &mut children {
                let _ = child.kill();
                let _ = child.wait();
            }
            let recs = parse(&std::fs::read(&log).map_err(|e| e.to_string())?)?;
            figures.runs += 1;
            // Where each acknowledgement completes in the log.
            let ack_points: Vec<usize> = {
                let mut texts: HashMap<u64, Vec<u8>> = HashMap::new();
                let mut points = Vec::new();
                for (i, rec) in recs.iter().enumerate() {
                    if let Rec::Out(pid, bytes) = rec {
                        let text = texts.entry(*pid).or_default();
                        text.extend_from_slice(bytes);
                        while let Some(nl) = text.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = text.drain(..=nl).collect();
                            // Acknowledged appends and acknowledged shreds.
                            if line.starts_with(b"A ") || line.starts_with(b"H ") {
                                points.push(i);
                            }
                        }
                    }
                }
                points
            };
            // The cut points: a sample of the acknowledgements, and the end of the log.
            let mut cuts: Vec<usize> = ack_points.clone();
            if cuts.len() as u64 > cuts_per_run {
                let step = cuts.len() as u64 / cuts_per_run;
                cuts = cuts.into_iter().step_by(step as usize).collect();
            }
            // And moments that are not acknowledgements: anywhere in the log.
            for _ in 0..(cuts_per_run / 4).max(1) {
                cuts.push(rng.below(recs.len().max(1) as u64) as usize);
            }
            cuts.push(recs.len().saturating_sub(1));
            cuts.sort_unstable();
            cuts.dedup();
            // Per process: its output so far, and what it told.
            let mut texts: HashMap<u64, Vec<u8>> = HashMap::new();
            let mut heards: HashMap<u64, Heard> = HashMap::new();
            let mut disk = Disk::default();
            let mut image: Vec<u8> = start_image;
            let mut imaged = 0usize;
            let mut cut_iter = cuts.iter().peekable();
            for (i, rec) in recs.iter().enumerate() {
                if let Some((pid, bytes)) = disk.take(rec) {
                    let text = texts.entry(pid).or_default();
                    text.extend_from_slice(bytes);
                    while let Some(nl) = text.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = text.drain(..=nl).collect();
                        let line = String::from_utf8_lossy(&line);
                        heards.entry(pid).or_default().take(line.trim_end())?;
                    }
                }
                if cut_iter.peek() != Some(&&i) {
                    continue;
                }
                while cut_iter.peek() == Some(&&i) {
                    cut_iter.next();
                }
                // The durable image, kept up to date incrementally.
                for (off, data) in &disk.writes[imaged..disk.durable] {
                    apply(&mut image, *off, data);
                }
                imaged = disk.durable;
                // The pending writes, as pages.
                let pages = pending_pages(&disk.writes[disk.durable..]);
                figures.pending_pages_max = figures.pending_pages_max.max(pages.len() as u64);
                let n = pages.len();
                let subsets = subsets(n, states_per_cut, &mut rng);
                let mut store = Store {
                    key: if mode == Mode::Encrypted {
                        first_heard.key
                    } else {
                        Some(0)
                    },
                    ..Store::default()
                };
                for heard in heards.values() {
                    if heard.key.is_some() {
                        store.key = heard.key;
                    }
                    if matches!(heard.open, Some((r, o)) if matches!(op(mode, r, o), Op::Rotate)) {
                        store.key = None;
                    }
                }
                for heard in std::iter::once(&first_heard).chain(heards.values()) {
                    for &(seq, s, v, r, o, k) in &heard.acked {
                        store.acked.insert(seq, (s, v, r, o, k));
                    }
                    for &(stream, first_kept) in &heard.deleted {
                        let kept = store.deleted.entry(stream).or_default();
                        *kept = (*kept).max(first_kept);
                    }
                    if let Some((r, o)) = heard.open
                        && let Op::Delete(s) = op(mode, r, o)
                    {
                        store.maybe_deleted.insert(s);
                    }
                    store.shredded.extend(heard.shredded.iter().copied());
                    store.retained.extend(heard.retained.iter().copied());
                    // A shred started and not reported done may or may not have happened.
                    if let Some((r, o)) = heard.open
                        && let Op::Shred(s) = op(mode, r, o)
                    {
                        store.maybe_shredded.insert(s);
                    }
                }
                for subset in subsets {
                    let state = state_of(&image, &pages, &subset);
                    let sdir = base.join("state");
                    let _ = std::fs::remove_dir_all(&sdir);
                    let store_dir = config(&sdir, mode).path;
                    std::fs::create_dir_all(&store_dir).map_err(|e| e.to_string())?;
                    std::fs::write(store_dir.join("data.mdb"), &state)
                        .map_err(|e| e.to_string())?;
                    figures.states += 1;
                    *figures.states_per_mode.entry(mode.name()).or_default() += 1;
                    if store.acked.is_empty() && state.is_empty() {
                        continue;
                    }
                    // Before anything was acknowledged, the store's creation itself may be
                    // torn: the open must then say so (nothing committed is at stake).
                    match check(&sdir, mode, &store, &Scope::Full) {
                        Err(e)
                            if store.acked.is_empty()
                                && e.contains("creation was cut short") =>
                        {
                            continue;
                        }
                        other => other,
                    }
                    .map_err(|e| {
                        format!(
                            "run {r}, cut at log record {i} ({} acknowledged, {} of {n} pending pages written): {e}",
                            store.acked.len(),
                            subset.iter().filter(|k| **k).count()
                        )
                    })?;
                }
                figures.cut_points += 1;
                figures.acknowledged_events =
                    figures.acknowledged_events.max(store.acked.len() as u64);
            }
            figures.rotations += heards.values().map(|h| h.rotations).sum::<u64>();
            figures.deletions += heards.values().map(|h| h.deleted.len() as u64).sum::<u64>();
            let _ = std::fs::remove_dir_all(&base);
        }
        Ok(figures)
    }
}

/// Kills during a format upgrade: a child opens (and so upgrades) a copy of a store of the
/// previous format, and is killed at a random moment; each time the store must be the old one
/// (refused as such with upgrades forbidden) or the new one, never a mix, and open, whole and
/// verified, afterwards.
pub mod upgrade {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use varvedb::{Error, Storage, StorageConfig};

    /// What the upgrade kills found.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct UpgradeReport {
        /// Kills.
        pub kills: u64,
        /// Kills that left the store of the previous format.
        pub old: u64,
        /// Kills that left it upgraded.
        pub new: u64,
    }

    /// The store the kills start from: the golden plaintext store of format 4 (0.5.0).
    pub fn source() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../varvedb/tests/fixtures/format4/plaintext/data.mdb")
    }

    /// In the child: opens the store at `dir` (upgrading it), says so on stdout (the power-cut
    /// simulation's acknowledgement), then returns.
    pub fn child(dir: &Path) -> Result<(), String> {
        let storage = Storage::open(StorageConfig {
            path: dir.into(),
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
        drop(storage);
        println!("upgraded");
        Ok(())
    }

    /// Checks a copy of the golden store that an upgrade may have touched: it is of the old
    /// format or the new (with upgrades forbidden, the open says which without writing), and
    /// opened with upgrades it holds the golden store's events and verifies. Returns whether
    /// it was already upgraded.
    pub fn check_copy(store: &Path, events: u64) -> Result<bool, String> {
        let upgraded = match Storage::open(config(store, false)) {
            Ok(storage) => {
                let format = storage.stats().map_err(|e| e.to_string())?.format;
                if format != Storage::FORMAT_VERSION {
                    return Err(format!("the store is of format {format}"));
                }
                true
            }
            Err(Error::UpgradeRequired { found: 4, .. }) => false,
            Err(e) => return Err(format!("the store does not open: {e}")),
        };
        let storage = Storage::open(config(store, true)).map_err(|e| e.to_string())?;
        let stats = storage.stats().map_err(|e| e.to_string())?;
        if stats.events != events || stats.format != Storage::FORMAT_VERSION {
            return Err(format!(
                "{} events of format {} after the upgrade, expected {events} of {}",
                stats.events,
                stats.format,
                Storage::FORMAT_VERSION
            ));
        }
        let verified = storage.verify().map_err(|e| e.to_string())?;
        if !verified.is_clean() {
            return Err(format!("{:?}", verified.problems));
        }
        Ok(upgraded)
    }

    fn config(dir: &Path, allow_upgrade: bool) -> StorageConfig {
        StorageConfig {
            path: dir.into(),
            allow_upgrade,
            ..Default::default()
        }
    }

    /// The events of the golden store, read from an upgraded copy made under `dir`.
    pub fn golden_events(dir: &Path) -> Result<u64, String> {
        let probe = dir.join("probe");
        std::fs::create_dir_all(&probe).map_err(|e| e.to_string())?;
        std::fs::copy(source(), probe.join("data.mdb")).map_err(|e| e.to_string())?;
        let storage = Storage::open(config(&probe, true)).map_err(|e| e.to_string())?;
        let events = storage.stats().map_err(|e| e.to_string())?.events;
        drop(storage);
        let _ = std::fs::remove_dir_all(&probe);
        Ok(events)
    }

    /// Runs `kills` kill points of the child `exe upgrade-child DIR`, each on a fresh copy in
    /// `dir`, the moment drawn from `seed`.
    pub fn run(exe: &Path, dir: &Path, kills: u64, seed: u64) -> Result<UpgradeReport, String> {
        let mut rng = super::Rng::new(seed);
        let mut report = UpgradeReport::default();
        let events = golden_events(dir)?;
        for k in 0..kills {
            let store = dir.join(format!("upgrade-{k}"));
            std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
            std::fs::copy(source(), store.join("data.mdb")).map_err(|e| e.to_string())?;
            let mut child = std::process::Command::new(exe)
                .arg("upgrade-child")
                .arg(&store)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            // Up to 20 ms: the child's start and its open both fall in it.
            std::thread::sleep(Duration::from_micros(rng.below(20_000)));
            let _ = child.kill();
            child.wait().map_err(|e| e.to_string())?;
            if check_copy(&store, events).map_err(|e| format!("kill {k}: {e}"))? {
                report.new += 1;
            } else {
                report.old += 1;
            }
            std::fs::remove_dir_all(&store).map_err(|e| e.to_string())?;
            report.kills += 1;
        }
        Ok(report)
    }
}
