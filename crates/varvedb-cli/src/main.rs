//! The `varvedb` command-line tool.

mod demo;
mod read;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use varvedb::{Storage, StorageConfig};

/// VarveDB: an embedded, append-only event store.
#[derive(Parser)]
#[command(name = "varvedb", version, about)]
struct Cli {
    /// The store's directory.
    #[arg(long, global = true, default_value = varvedb::DEFAULT_PATH)]
    path: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A short walk-through: open an account stream, append with a conflict and a retry, read.
    Demo,
    /// Event, stream and byte counts of a store.
    Stats,
    /// Checks the whole store: record checksums, the stream chains and heads, every blob's
    /// BLAKE3 hash, reference counts and orphans. Exits 1 if it finds a problem, 2 if it cannot
    /// check.
    Verify,
    /// Prints events with their envelope (type, version, ids, metadata, payload length): one by
    /// --seq, a stream by --stream [--from-version], or the log from --from-seq. --json for one
    /// JSON object a line. Exits 1 if an event could not be read, 2 if the store cannot be
    /// opened.
    ///
    /// Example: varvedb read --stream 7 --json
    Read(read::ReadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => demo::run(&cli.path).map_err(Into::into),
        Command::Stats => stats(&cli.path),
        Command::Read(args) => {
            return match read::run(&cli.path, &args) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("varvedb: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Verify => {
            return match verify(&cli.path) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("varvedb: {e}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("varvedb: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens an existing store: a missing directory, or one that holds no store, is an error and
/// nothing is created.
fn open_existing(path: &Path) -> Result<Storage, varvedb::Error> {
    Storage::open_existing(StorageConfig {
        path: path.into(),
        ..Default::default()
    })
}

/// Runs `Storage::verify` with progress on stderr; prints every problem and a summary. Returns
/// whether the store is clean.
fn verify(path: &Path) -> Result<bool, varvedb::Error> {
    let storage = open_existing(path)?;
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = Instant::now();
    let report = storage.verify_with_progress(|p| {
        let finished = p.done == p.total;
        if !finished && last.elapsed() < Duration::from_millis(500) {
            return;
        }
        last = Instant::now();
        let percent = (p.done * 100).checked_div(p.total).unwrap_or(100);
        let line = format!(
            "verify: {:<12} {}/{} ({percent}%), {} problems",
            p.phase.database(),
            p.done,
            p.total,
            p.problems
        );
        if terminal {
            eprint!("\r{line}\x1b[K");
            if finished {
                eprintln!();
            }
        } else if !finished || p.total > 0 {
            eprintln!("{line}");
        }
    })?;
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

fn stats(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let storage = open_existing(path)?;
    let s = storage.stats()?;
    println!("store       {}", storage.path().display());
    println!("events      {}", s.events);
    println!("streams     {}", s.streams);
    println!("last seq    {}", s.last_seq);
    println!("log bytes   {}", s.log_bytes);
    println!("index bytes {}", s.index_bytes);
    println!("blobs       {}", s.blobs);
    println!("blob refs   {}", s.blob_references);
    println!("blob bytes  {}", s.blob_bytes);
    println!("file bytes  {}", s.file_bytes);
    println!("map bytes   {}", s.map_bytes);
    Ok(())
}
