//! The `varvedb` command-line tool.

mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => demo::run(&cli.path),
        Command::Stats => stats(&cli.path),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("varvedb: {e}");
            ExitCode::FAILURE
        }
    }
}

fn stats(path: &std::path::Path) -> varvedb::Result<()> {
    if !path.exists() {
        return Err(varvedb::Error::InvalidStore {
            path: path.into(),
            reason: "no such directory".into(),
        });
    }
    let storage = Storage::open(StorageConfig {
        path: path.into(),
        ..Default::default()
    })?;
    let s = storage.stats()?;
    println!("store       {}", storage.path().display());
    println!("events      {}", s.events);
    println!("streams     {}", s.streams);
    println!("last seq    {}", s.last_seq);
    println!("log bytes   {}", s.log_bytes);
    println!("index bytes {}", s.index_bytes);
    println!("file bytes  {}", s.file_bytes);
    println!("map bytes   {}", s.map_bytes);
    Ok(())
}
