//! The `varvedb` command-line tool.

mod admin;
mod append;
mod demo;
mod dump;
mod lifecycle;
mod migrate;
mod read;
mod replication;
use varvedb_cli::stream_id;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use varvedb::{Storage, StorageConfig};

/// VarveDB: an embedded, append-only event store.
///
/// Exit codes: 0 success; 1 the command ran and found a problem (verify found damage, an event
/// could not be read, no such event or consumer); 2 it could not run (no store there, a wrong
/// key, bad arguments, a failed operation). Errors are one line on stderr.
#[derive(Parser)]
#[command(name = "varvedb", version, about, long_about = None, after_help = "Exit codes: 0 success, 1 a problem found, 2 could not run.")]
struct Cli {
    /// The store's directory [default: ./varvedb-data; the demo's: ./varvedb-demo].
    #[arg(long, global = true)]
    path: Option<PathBuf>,
    /// A file holding the store's master key: 32 bytes, or 64 hex digits. Without it, an
    /// encrypted store's envelopes read and its payloads do not. A key file that other users
    /// may read is warned about.
    #[arg(long, global = true)]
    key_file: Option<PathBuf>,
    /// Refuse a key file that its group or other users may read or write (mode other than
    /// 0600 or 0400), instead of warning.
    #[arg(long, global = true)]
    strict_permissions: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A short walk-through: open an account stream, append with a conflict and a retry, read
    /// it back, project it with a processor, and print the run's metrics. It runs on a store of
    /// its own (./varvedb-demo, or a new --path), encrypted under a built-in key, and refuses
    /// any store it did not create.
    Demo,
    /// Event, stream and byte counts of a store, and its consumers. --json for one JSON object.
    Stats {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Brings a store of the published varvedb 0.4.2 into a new store at --path: every event
    /// in its order, with its stream and version, the payload bytes as they are (both use rkyv
    /// 0.8, so a reader of the same struct reads them). 0.4.2 stores no type names: give them.
    Migrate(migrate::MigrateArgs),
    /// Upgrades a store of an older format to the one this build writes, in place, in one
    /// transaction (a kill leaves the old store or the new one). With --dry-run, says what it
    /// would do and changes nothing. Every other command (and `Storage::open`) upgrades too,
    /// unless `StorageConfig::allow_upgrade` is off.
    Upgrade {
        /// Say what the upgrade does; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Checks the whole store: record checksums, the stream chains and heads, every blob's
    /// BLAKE3 hash, reference counts and orphans. Exits 1 if it finds a problem, 2 if it cannot
    /// check. --json for one JSON object with every problem.
    ///
    /// The walk runs in a child process (this tool, started again): LMDB follows the pages of
    /// its trees without bounds checks, so a damaged page that the page check before it does
    /// not recognise could crash the process that walks them. A crash of the child is reported
    /// as damage (exit 1), with where the walk was, and leaves this process standing.
    Verify {
        /// One JSON object instead of text (the progress bar still goes to a terminal's stderr).
        #[arg(long)]
        json: bool,
        /// Walk in this process (what the child does).
        #[arg(long, hide = true)]
        in_process: bool,
    },
    /// Prints events with their envelope (type, version, ids, metadata, payload length): one by
    /// --seq, a stream by --stream [--from-version], or the log from --from-seq. --json for one
    /// JSON object a line. Exits 1 if an event could not be read, 2 if the store cannot be
    /// opened.
    ///
    /// Example: varvedb read --stream 7 --json
    Read(read::ReadArgs),
    /// Crypto-shreds an encrypted stream: deletes its key, so its events are unreadable for
    /// good, and releases its blobs. Needs no master key.
    ///
    /// A shred alone is undone by whoever holds the master key and an old copy of the wrapped
    /// key (LMDB's free pages, an earlier backup, export or replica). --finalize makes the
    /// shreds so far final: it rotates the master key (--key-file, the current one, and
    /// --new-key-file) and writes a compacted copy to --to. Once the copy replaces the store
    /// and the old master key is destroyed, every old copy of a shredded key is useless.
    ///
    /// Example: varvedb shred --stream 66
    /// Example: varvedb --key-file old.key shred --finalize --new-key-file new.key --to ./store.final
    Shred {
        /// The stream (decimal, 0x hex, 32 hex digits or a UUID). Optional with --finalize.
        #[arg(long, value_parser = stream_id::parse, required_unless_present = "finalize")]
        stream: Option<u128>,
        /// Rotate the master key and write a compacted copy, so that the shreds are final.
        #[arg(long, requires_all = ["new_key_file", "to"])]
        finalize: bool,
        /// With --finalize: the new master key (32 bytes, or 64 hex digits).
        #[arg(long, requires = "finalize")]
        new_key_file: Option<PathBuf>,
        /// With --finalize: the new directory of the compacted copy.
        #[arg(long, requires = "finalize")]
        to: Option<PathBuf>,
    },
    /// Writes a consistent copy of the store to a new directory. With --compact, only the
    /// pages in use: no freed page (a shredded key, a deleted blob) is carried over. The copy
    /// is then verified: a copy of a damaged store is removed, with the problems found (exit
    /// 1), unless given --force, which keeps it (and still exits 1).
    ///
    /// Example: varvedb backup --compact /backups/store-2026-11-26
    Backup {
        /// The new directory.
        dest: PathBuf,
        /// Copy only the pages in use (the only kind of copy offered: LMDB's compacting copy).
        #[arg(long, default_value_t = true)]
        compact: bool,
        /// Keep a copy of a damaged store (its damage is in the copy too).
        #[arg(long)]
        force: bool,
    },
    /// Appends one event given as JSON, for scripts and non-Rust tooling: stored as the tool's
    /// JSON event type (container `varvedb.json`), which `read` and `tail` print as JSON.
    /// Creates the store if there is none. A wrong --expect exits 2 with the conflict.
    ///
    /// Example: varvedb append --stream 7 --expect none --type Opened --json '{"owner":"ada"}'
    Append(append::AppendArgs),
    /// Prints the last events (-n, default 10) and with -f follows the log, printing events as
    /// other processes append them, with their envelope. --stream and --type filter, --json for
    /// one JSON object a line.
    ///
    /// Example: varvedb tail -f --type OrderPlaced --json
    Tail(read::TailArgs),
    /// Rewraps every stream key of an encrypted store under a new master key, in one
    /// transaction; the events are not rewritten. Needs the current key (--key-file).
    ///
    /// Example: varvedb --key-file old.key rotate-key --new-key-file new.key
    RotateKey {
        /// A file holding the new master key: 32 bytes, or 64 hex digits.
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Writes the whole store as JSON lines: a header (event types, wrapped stream keys,
    /// consumers), then one line per event with its envelope and its stored payload in base64.
    /// Nothing is decrypted, so it needs no key. To a new FILE, or standard output.
    ///
    /// Example: varvedb export store.jsonl
    Export(dump::ExportArgs),
    /// Rebuilds a store from an export into --path (created if missing): the same events,
    /// byte for byte, and `verify` passes. An interrupted import continues when run again;
    /// a store holding other events is refused. FILE `-` reads standard input.
    ///
    /// Example: varvedb --path ./restored import store.jsonl
    Import(dump::ImportArgs),
    /// Publishes every event to a NATS JetStream stream, exactly once and in order (the
    /// stream's sequence is the store's), from the durable cursor `nats:STREAM`; follows the
    /// store until Ctrl-C, or with --once exits when the server has everything. Encrypted
    /// events stay encrypted. A lost server is waited for and resumed.
    ///
    /// Example: varvedb replicate --to nats://127.0.0.1:4222 --stream ORDERS --once
    Replicate(replication::ReplicateArgs),
    /// Rebuilds a store at DEST from a JetStream stream `replicate` wrote, byte for byte,
    /// whole commit groups at a time; run again, it continues. With --follow it keeps the
    /// replica up to date (new events, shreds) until Ctrl-C.
    ///
    /// Example: varvedb restore --from nats://127.0.0.1:4222 --stream ORDERS ./replica --follow
    Restore(replication::RestoreArgs),
    /// Lists the streams with their version, last sequence, last event time (UTC) and type.
    ///
    /// Example: varvedb streams --limit 20 --type OrderPlaced
    Streams(admin::StreamsArgs),
    /// Lists consumers (processors' cursors) with their lag; resets or deletes one; lists the
    /// events one parked, or asks its processor to replay them. Exits 1 when the consumer
    /// named does not exist. A reset past the log's last event is refused (exit 2) unless
    /// given --force.
    ///
    /// Example: varvedb consumers reset billing --to 0
    Consumers {
        /// With no subcommand (the list): one JSON object a line instead of text.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<admin::ConsumersCommand>,
    },
    /// Removes a stream's events (a soft delete: the stream goes on at its next version), or
    /// with --hard for good (a tombstone: every later append is refused). The space is given
    /// back. Exits 2 for a stream with no events (a hard delete of one is allowed: it is never
    /// created).
    ///
    /// Example: varvedb delete --stream 7 --hard
    Delete {
        /// The stream (decimal, 0x hex, 32 hex digits or a UUID).
        #[arg(long, value_parser = stream_id::parse)]
        stream: u128,
        /// Tombstone it: no append is taken after, ever.
        #[arg(long)]
        hard: bool,
    },
    /// Removes a stream's events before a version (KurrentDB's $tb): reads start at that
    /// version, the stream keeps its version and goes on after it.
    ///
    /// Example: varvedb truncate --stream 7 --before 100
    Truncate {
        /// The stream (decimal, 0x hex, 32 hex digits or a UUID).
        #[arg(long, value_parser = stream_id::parse)]
        stream: u128,
        /// The first version to keep.
        #[arg(long)]
        before: u32,
    },
    /// Shows, sets or enforces the retention policies kept in the store: per stream, or a
    /// default for every stream without one (max count, max age). A store that holds a policy
    /// enforces it in the background too.
    ///
    /// Example: varvedb retention set --default --max-age 7d
    /// Example: varvedb retention set --stream 7 --max-count 1000
    /// Example: varvedb retention show --json
    Retention {
        #[command(subcommand)]
        command: lifecycle::RetentionCommand,
    },
    /// Prints the store's Prometheus metrics once, or with --listen serves them at
    /// http://ADDR/metrics until stopped (Ctrl-C). The file's gauges (events, map use, blobs)
    /// and every consumer's position and lag are read at each scrape; the counters are this
    /// process's, so an application exports its own with `Storage::serve_metrics`.
    ///
    /// Example: varvedb metrics --listen 127.0.0.1:9477
    Metrics {
        /// The address to serve on (127.0.0.1 keeps it on this machine; 0.0.0.0 opens it to
        /// the network). Port 0 lets the system choose; the address is printed on stderr.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
}

fn main() -> ExitCode {
    // Like every Unix tool: output into a closed pipe (`varvedb read | head`) ends the process
    // quietly, instead of `println!` panicking on EPIPE. Rust starts programs with SIGPIPE
    // ignored; this restores the default.
    // SAFETY: called first thing in `main`, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let strict = cli.strict_permissions;
    let key = match cli
        .key_file
        .as_deref()
        .map(|path| read_key_file(path, strict))
        .transpose()
    {
        Ok(key) => key,
        Err(e) => {
            eprintln!("varvedb: {e}");
            return ExitCode::from(2);
        }
    };
    let path = cli
        .path
        .clone()
        .unwrap_or_else(|| varvedb::DEFAULT_PATH.into());
    // The key's bytes live in `key` (wiped on drop); each open gets a copy that the store
    // wipes once it has taken the key.
    let raw_key = || key.as_deref().copied();
    let open = || open_existing(&path, raw_key());
    let result = match cli.command {
        Command::Demo => demo::run(
            cli.path
                .as_deref()
                .unwrap_or(Path::new(demo::DEFAULT_DEMO_PATH)),
        )
        .map_err(Into::into),
        Command::Stats { json } => stats(open, json),
        Command::Upgrade { dry_run } => upgrade(&path, raw_key(), dry_run),
        Command::Migrate(args) => migrate::run(&path, raw_key(), &args),
        Command::Shred {
            stream,
            finalize,
            new_key_file,
            to,
        } => shred(
            open,
            stream,
            key.is_some(),
            finalize.then(|| new_key_file.zip(to)).flatten(),
        ),
        Command::Backup { dest, force, .. } => backup(open, &dest, force),
        Command::Metrics { listen } => metrics(open, listen),
        Command::Streams(args) => admin::streams(open, &args).map_err(Into::into),
        Command::Tail(args) => read::tail(open, &args),
        Command::Append(args) => append::run(&path, raw_key(), args),
        Command::Export(args) => dump::export(open, &args),
        Command::Import(args) => dump::import(&path, raw_key(), &args),
        Command::RotateKey { new_key_file } => rotate_key(open, &new_key_file),
        Command::Replicate(args) => replication::replicate(open, &args),
        Command::Delete { stream, hard } => lifecycle::remove(open, stream, None, hard),
        Command::Truncate { stream, before } => {
            lifecycle::remove(open, stream, Some(before), false)
        }
        Command::Retention { command } => lifecycle::retention(open, &command),
        Command::Restore(args) => replication::restore(raw_key(), &args),
        Command::Consumers { json, command } => {
            let list = admin::ConsumersCommand::List { json };
            return match admin::consumers(open, command.as_ref().unwrap_or(&list)) {
                Ok(admin::Outcome::Done) => ExitCode::SUCCESS,
                Ok(admin::Outcome::Missing) => ExitCode::from(1),
                Ok(admin::Outcome::Refused) => ExitCode::from(2),
                Err(e) => failed(&e),
            };
        }
        Command::Read(args) => {
            return match read::run(open, &args) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => failed(&e),
            };
        }
        Command::Verify {
            json,
            in_process: false,
        } => return verify_in_child(json),
        Command::Verify {
            json,
            in_process: true,
        } => {
            return match verify(open, json) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => failed(&e),
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(e.as_ref()),
    }
}

/// What a command found damaged and did not stop at: exit 1, with one line saying so.
#[derive(Debug)]
pub(crate) struct FoundDamage(pub(crate) String);

impl std::fmt::Display for FoundDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FoundDamage {}

/// The damaged events a command passed over (`--skip-damaged`): their count and the first
/// sequences, for its closing line.
#[derive(Default)]
pub(crate) struct Skipped {
    count: u64,
    first: Vec<u64>,
    last_error: Option<String>,
}

impl Skipped {
    /// Counts the event at `next` (or the later one `e` names) as skipped; returns the
    /// sequence to read from next, always past `next`.
    pub(crate) fn pass(&mut self, next: u64, e: &varvedb::Error) -> u64 {
        let seq = match e {
            varvedb::Error::Corrupt { seq, .. } if *seq >= next => *seq,
            _ => next,
        };
        self.count += 1;
        if self.first.len() < 10 {
            self.first.push(seq);
        }
        self.last_error = Some(e.to_string());
        seq + 1
    }

    /// `Ok` when nothing was skipped; else [`FoundDamage`] saying how many were.
    pub(crate) fn into_result(self) -> Result<(), Box<dyn std::error::Error>> {
        if self.count == 0 {
            return Ok(());
        }
        let seqs: Vec<String> = self.first.iter().map(u64::to_string).collect();
        Err(Box::new(FoundDamage(format!(
            "skipped {} damaged events (sequences {}{}); the last: {}",
            self.count,
            seqs.join(", "),
            if self.count > self.first.len() as u64 {
                ", …"
            } else {
                ""
            },
            self.last_error.unwrap_or_default()
        ))))
    }
}

/// Prints a failed command's error, and gives its exit code: 1 when the command found damage
/// (a corrupt record, blob or index, or LMDB's own pages), 2 when it could not run.
fn failed(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    let store_error = e.downcast_ref::<varvedb::Error>().or_else(|| {
        match e.downcast_ref::<varvedb_nats::Error>() {
            Some(varvedb_nats::Error::Store(inner)) => Some(inner),
            _ => None,
        }
    });
    if let Some(found) = e.downcast_ref::<FoundDamage>() {
        eprintln!("varvedb: damage found: {found}");
        return ExitCode::from(1);
    }
    if let Some(e) = store_error
        && e.kind() == varvedb::ErrorKind::Corruption
    {
        eprintln!("varvedb: damage found: {e} (`varvedb verify` checks the whole store)");
        return ExitCode::from(1);
    }
    eprintln!("varvedb: {e}");
    ExitCode::from(2)
}

/// `varvedb upgrade [--dry-run]`: the store's format, and what upgrading it does.
fn upgrade(
    path: &Path,
    master_key: Option<[u8; 32]>,
    dry_run: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = |allow_upgrade| StorageConfig {
        path: path.into(),
        check_pages_on_open: true,
        master_key,
        allow_upgrade,
        ..Default::default()
    };
    match Storage::open_existing(config(false)) {
        Ok(storage) => {
            println!(
                "the store at {} is of format {}, the one this build writes: nothing to do",
                path.display(),
                storage.stats()?.format
            );
            Ok(())
        }
        Err(varvedb::Error::UpgradeRequired {
            found,
            current,
            steps,
            ..
        }) => {
            println!(
                "the store at {} is of format {found}; this build writes format {current}",
                path.display()
            );
            println!("the upgrade: {steps}");
            if dry_run {
                println!("dry run: nothing changed");
                return Ok(());
            }
            let started = std::time::Instant::now();
            let storage = Storage::open_existing(config(true))?;
            print_warnings(&storage);
            println!(
                "upgraded to format {} in {:.1?}",
                storage.stats()?.format,
                started.elapsed()
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens an existing store: a missing directory, or one that holds no store, is an error and
/// nothing is created. Prints what the store warns about.
fn open_existing(path: &Path, master_key: Option<[u8; 32]>) -> Result<Storage, varvedb::Error> {
    let storage = Storage::open_existing(StorageConfig {
        path: path.into(),
        check_pages_on_open: true,
        master_key,
        ..Default::default()
    })?;
    print_warnings(&storage);
    Ok(storage)
}

/// Prints what the store warns about (files others can read), one line each on stderr.
fn print_warnings(storage: &Storage) {
    for warning in storage.warnings() {
        eprintln!("varvedb: warning: {warning}");
    }
}

/// Reads a master key file (see [`parse_key`]), warning about (or, with `strict`, refusing) a
/// file that its group or other users may read or write.
fn read_key_file(path: &Path, strict: bool) -> Result<MasterKey, String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        let what = format!(
            "{}: the key file's mode is {:o}, so other users may read or change it; make it 0600 (chmod 600)",
            path.display(),
            mode & 0o777
        );
        if strict {
            return Err(format!("{what} (refused: --strict-permissions)"));
        }
        eprintln!("varvedb: warning: {what}");
    }
    read_key(path)
}

/// A master key held by the tool: wiped from memory when dropped.
type MasterKey = zeroize::Zeroizing<[u8; 32]>;

/// Reads a master key file: 32 raw bytes, or 64 hex digits (whitespace around them ignored).
/// The bytes read are wiped once parsed.
fn read_key(path: &Path) -> Result<MasterKey, String> {
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    parse_key(&bytes).map_err(|reason| format!("{}: {reason}", path.display()))
}

/// A master key from a key file's bytes: 32 raw bytes, or 64 hex digits with optional
/// whitespace around them. Anything else is an error, never a panic.
fn parse_key(bytes: &[u8]) -> Result<MasterKey, &'static str> {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    if bytes.len() == 32 {
        key.copy_from_slice(bytes);
        return Ok(key);
    }
    let hex = bytes.trim_ascii();
    if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err("a master key is 32 bytes or 64 hex digits");
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    };
    for (byte, pair) in key.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = digit(pair[0]) << 4 | digit(pair[1]);
    }
    Ok(key)
}

/// Shreds `stream`, then with `finalize` (the new key file and the copy's directory) makes the
/// shreds final: a rotation of the master key and a compacted copy.
fn shred(
    open: impl FnOnce() -> Result<Storage, varvedb::Error>,
    stream: Option<u128>,
    has_key: bool,
    finalize: Option<(PathBuf, PathBuf)>,
) -> Result<(), Box<dyn std::error::Error>> {
    // Checked before anything changes: a finalize that cannot rotate shreds nothing either.
    if finalize.is_some() && !has_key {
        return Err("--finalize needs the current master key (--key-file)".into());
    }
    let new_key = finalize
        .as_ref()
        .map(|(file, _)| read_key(file))
        .transpose()?;
    let storage = open()?;
    if let Some(stream) = stream {
        let report = storage.shred_stream(stream)?;
        if report.already {
            println!("stream {} was already shredded", stream_id::show(stream));
        } else {
            println!(
                "stream {} shredded: {} events unreadable for good, {} blobs released",
                stream_id::show(stream),
                report.events,
                report.blobs_released
            );
        }
    }
    let (Some(new_key), Some((new_key_file, to))) = (new_key, finalize) else {
        return Ok(());
    };
    if !storage.is_encrypted() {
        return Err(
            "--finalize: the store is not encrypted, so it has no shreds to finalize".into(),
        );
    }
    let keys = storage.rotate_master_key(*new_key).map_err(|e| match e {
        varvedb::Error::InvalidConfig { .. } => {
            "--finalize needs the current master key (--key-file)".to_string()
        }
        e => e.to_string(),
    })?;
    storage.compact_to(&to)?;
    println!(
        "{keys} stream keys rewrapped under the key in {}, and a compacted copy written to {}",
        new_key_file.display(),
        to.display()
    );
    println!(
        "to make the shreds final: stop every process that uses the store, replace it with the \
         copy, open it with the new key only, then destroy the old key and every backup, export \
         and replica taken before (they hold the shredded keys, wrapped under the old key)"
    );
    Ok(())
}

fn rotate_key(
    open: impl FnOnce() -> Result<Storage, varvedb::Error>,
    new_key_file: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let new_key = read_key(new_key_file)?;
    let storage = open()?;
    let keys = storage.rotate_master_key(*new_key)?;
    println!(
        "{keys} stream keys rewrapped under the key in {}; open the store with it from now on",
        new_key_file.display()
    );
    Ok(())
}

fn backup(
    open: impl FnOnce() -> Result<Storage, varvedb::Error>,
    dest: &Path,
    force: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let storage = open()?;
    let existed = dest.exists();
    // One LMDB call with no progress to report: a spinner, on a terminal only.
    let spinner = indicatif::ProgressBar::new_spinner()
        .with_message(format!("backup: writing {}", dest.display()));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let copied = storage.compact_to(dest);
    spinner.finish_and_clear();
    copied?;
    // The copy holds the same records: verifying it finds the store's damage, and proves the
    // copy itself sound.
    let checked = Storage::open_existing(StorageConfig {
        path: dest.into(),
        check_pages_on_open: true,
        ..Default::default()
    })
    .and_then(|copy| copy.verify());
    let problems = match checked {
        Ok(report) if report.is_clean() => {
            println!("compacted copy written to {} and verified", dest.display());
            return Ok(());
        }
        Ok(report) => {
            let first = report.problems.first().map(ToString::to_string);
            format!(
                "{} problems, the first: {}",
                report.problem_count(),
                first.unwrap_or_default()
            )
        }
        Err(e) => e.to_string(),
    };
    if force {
        return Err(Box::new(FoundDamage(format!(
            "the store is damaged ({problems}); the copy at {} was kept (--force), with that \
             damage",
            dest.display()
        ))));
    }
    // No copy of a damaged store is left to be taken for a sound backup.
    for file in ["data.mdb", "lock.mdb"] {
        drop(std::fs::remove_file(dest.join(file)));
    }
    if !existed {
        drop(std::fs::remove_dir(dest));
    }
    Err(Box::new(FoundDamage(format!(
        "the store is damaged ({problems}); the copy was removed (give --force to keep a copy \
         of a damaged store; `varvedb verify` lists the problems)"
    ))))
}

/// Where a verify child writes how far its walk got (a line per step: phase, done, total), for
/// its parent to report if it crashes.
const VERIFY_PROGRESS_ENV: &str = "VARVEDB_VERIFY_PROGRESS";
/// The tool's own test of the crash report: a verify child that finds this set kills itself
/// with SIGSEGV at its first step, as a page LMDB cannot read would.
const VERIFY_CRASH_TEST_ENV: &str = "VARVEDB_TEST_VERIFY_CRASH";

/// `varvedb verify`: runs the walk in a child (this tool, with the same arguments and
/// `--in-process`), passes its output and exit code on, and reports a crash of it as damage.
fn verify_in_child(json: bool) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("varvedb: cannot find this tool to start the verify child: {e}");
            return ExitCode::from(2);
        }
    };
    // Created here, new and private (never through a planted file or link); the child only
    // appends to it.
    let progress =
        std::env::temp_dir().join(format!("varvedb-verify-{}.progress", std::process::id()));
    let created = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&progress)
            .is_ok()
    };
    let mut child = std::process::Command::new(exe);
    child.args(std::env::args_os().skip(1)).arg("--in-process");
    if created {
        child.env(VERIFY_PROGRESS_ENV, &progress);
    }
    let status = child.status();
    let last_step = created
        .then(|| std::fs::read_to_string(&progress).ok())
        .flatten()
        .and_then(|t| t.lines().last().map(str::to_owned));
    if created {
        let _ = std::fs::remove_file(&progress);
    }
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            eprintln!("varvedb: cannot start the verify child: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(code) = status.code() {
        return ExitCode::from(u8::try_from(code).unwrap_or(2));
    }
    use std::os::unix::process::ExitStatusExt;
    let signal = status.signal().unwrap_or(0);
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        _ => "a signal",
    };
    let at = match last_step
        .as_deref()
        .map(|l| l.split(' ').collect::<Vec<_>>())
    {
        Some(f) if f.len() == 3 => format!(" while walking {} (step {} of {})", f[0], f[1], f[2]),
        _ => " before its first step".to_string(),
    };
    let what = format!(
        "the walk of the store crashed ({name}, signal {signal}){at}: a page of the file is \
         damaged in a way the page check does not recognise; restore a backup, or export what \
         can be read with `varvedb export --skip-damaged`"
    );
    if json {
        println!(
            "{}",
            serde_json::json!({"clean": false, "crashed": true, "signal": signal, "problems": [what]})
        );
    }
    eprintln!("varvedb: damage found: {what}");
    ExitCode::from(1)
}

/// Runs `Storage::verify` with progress on stderr; prints every problem and a summary. Returns
/// whether the store is clean.
fn verify(
    open: impl FnOnce() -> Result<Storage, varvedb::Error>,
    json: bool,
) -> Result<bool, varvedb::Error> {
    let storage = open()?;
    let started = Instant::now();
    let bar = dump::bar(
        0,
        "verify {msg:<12} [{bar:30}] {pos}/{len} ({percent}%) {elapsed}",
    );
    // For the parent: how far the walk got, should it crash.
    let mut steps = std::env::var_os(VERIFY_PROGRESS_ENV)
        .and_then(|path| std::fs::OpenOptions::new().append(true).open(path).ok());
    let crash_test = std::env::var_os(VERIFY_CRASH_TEST_ENV).is_some();
    let report = storage.verify_with_progress(|p| {
        bar.set_message(p.phase.database());
        bar.set_length(p.total);
        bar.set_position(p.done);
        if let Some(file) = steps.as_mut() {
            use std::io::Write;
            let _ = writeln!(file, "{} {} {}", p.phase.database(), p.done, p.total);
        }
        if crash_test {
            // SAFETY: raising a signal is always sound; SIGSEGV's default action ends the
            // process, which is what this test hook is for.
            unsafe {
                libc::raise(libc::SIGSEGV);
            }
        }
    })?;
    bar.finish_and_clear();
    if json {
        let problems: Vec<serde_json::Value> = report
            .problems
            .iter()
            .map(|p| serde_json::json!({"database": p.database, "key": p.key, "what": p.what}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "clean": report.is_clean(),
                "problem_count": report.problem_count(),
                "problems": problems,
                "problems_omitted": report.problems_omitted,
                "events": report.events,
                "streams": report.streams,
                "blobs": report.blobs,
                "blob_references": report.blob_references,
                "event_ids": report.event_ids,
                "tags": report.tags,
                "bytes_checked": report.bytes_checked,
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
        return Ok(report.is_clean());
    }
    for problem in &report.problems {
        println!("{problem}");
    }
    if report.problems_omitted > 0 {
        println!("… and {} more problems", report.problems_omitted);
    }
    let summary = format!(
        "{} events in {} streams, {} blobs ({} references), {} bytes checked in {:.1?}",
        report.events,
        report.streams,
        report.blobs,
        report.blob_references,
        report.bytes_checked,
        started.elapsed()
    );
    if report.is_clean() {
        println!("clean: {summary}");
    } else {
        println!("{} problems: {summary}", report.problem_count());
    }
    Ok(report.is_clean())
}

fn metrics(
    open: impl FnOnce() -> Result<Storage, varvedb::Error>,
    listen: Option<std::net::SocketAddr>,
) -> Result<(), Box<dyn std::error::Error>> {
    let storage = open()?;
    let Some(addr) = listen else {
        print!("{}", storage.metrics_text());
        return Ok(());
    };
    let server = storage.serve_metrics(Some(addr))?;
    eprintln!(
        "varvedb: serving the metrics of {} at http://{}/metrics (Ctrl-C stops)",
        storage.path().display(),
        server.local_addr()
    );
    loop {
        std::thread::park();
    }
}

fn stats(
    open: impl FnOnce() -> Result<Storage, varvedb::Error>,
    json: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let storage = open()?;
    let s = storage.stats()?;
    if json {
        let consumers: Vec<serde_json::Value> = storage
            .consumers()?
            .iter()
            .map(admin::consumer_json)
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "store": storage.path().display().to_string(),
                "events": s.events,
                "deleted_events": s.deleted_events,
                "packs": s.packs,
                "streams": s.streams,
                "last_seq": s.last_seq,
                "log_bytes": s.log_bytes,
                "index_bytes": s.index_bytes,
                "blobs": s.blobs,
                "blob_references": s.blob_references,
                "blob_bytes": s.blob_bytes,
                "file_bytes": s.file_bytes,
                "map_bytes": s.map_bytes,
                "encrypted": storage.is_encrypted(),
                "consumers": consumers,
            })
        );
        return Ok(());
    }
    println!("store       {}", storage.path().display());
    println!("events      {}", s.events);
    println!("deleted     {}", s.deleted_events);
    println!("packs       {}", s.packs);
    println!("streams     {}", s.streams);
    println!("last seq    {}", s.last_seq);
    println!("log bytes   {}", s.log_bytes);
    println!("index bytes {}", s.index_bytes);
    println!("blobs       {}", s.blobs);
    println!("blob refs   {}", s.blob_references);
    println!("blob bytes  {}", s.blob_bytes);
    println!("file bytes  {}", s.file_bytes);
    println!("map bytes   {}", s.map_bytes);
    for c in storage.consumers()? {
        println!(
            "consumer    {} at {} of {}: {} behind ({:.1} s), {} parked",
            c.name, c.position, c.head, c.lag_events, c.lag_seconds, c.parked
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_key;

    #[test]
    fn key_files_parse_or_are_refused_without_a_panic() {
        assert_eq!(*parse_key(&[7u8; 32]).unwrap(), [7u8; 32]);
        let hex = format!("  {}\n", "0a".repeat(32));
        assert_eq!(*parse_key(hex.as_bytes()).unwrap(), [10u8; 32]);
        assert_eq!(*parse_key("AB".repeat(32).as_bytes()).unwrap(), [0xab; 32]);
        // 64 bytes of non-ASCII (the panic of issue 26), odd lengths, bad digits.
        for bad in [
            vec![0xc3u8; 64],
            "é".repeat(32).into_bytes(),
            "0g".repeat(32).into_bytes(),
            vec![b'a'; 63],
            vec![],
            vec![0u8; 33],
        ] {
            assert!(parse_key(&bad).is_err(), "{bad:?}");
        }
    }
}
