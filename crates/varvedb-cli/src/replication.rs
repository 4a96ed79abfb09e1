//! `varvedb replicate` and `varvedb restore`: the store to NATS JetStream and back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use varvedb::{Storage, StorageConfig};
use varvedb_nats::{Replicator, ReplicatorConfig, RestoreConfig};

#[derive(Args)]
pub struct ReplicateArgs {
    /// The NATS server: nats://HOST:PORT.
    #[arg(long)]
    to: String,
    /// The JetStream stream (letters, digits, '-', '_'); created if missing.
    #[arg(long)]
    stream: String,
    /// Exit once the server has every event the store holds.
    #[arg(long)]
    once: bool,
    /// Events go to the subject PREFIX.<stream id>.
    #[arg(long, default_value = "varve")]
    subject_prefix: String,
    /// Seconds to try the first connection before giving up (exit 2). Once connected, a lost
    /// server is waited for.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    connect_timeout: u64,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The NATS server: nats://HOST:PORT.
    #[arg(long)]
    from: String,
    /// The JetStream stream the replicator wrote.
    #[arg(long)]
    stream: String,
    /// The store to rebuild or bring up to date (created if missing).
    dest: PathBuf,
    /// Keep following the stream (Ctrl-C stops), printing the replica's lag.
    #[arg(long)]
    follow: bool,
    /// Seconds to try the first connection before giving up (exit 2). Once connected, a
    /// follower waits for a lost server.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    connect_timeout: u64,
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub fn replicate(
    open: impl FnOnce() -> Result<Storage, varvedb::Error>,
    args: &ReplicateArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let storage = open()?;
    let config = ReplicatorConfig::new(&args.to, &args.stream)
        .subject_prefix(&args.subject_prefix)
        .connect_timeout(Duration::from_secs(args.connect_timeout));
    let replicator = Replicator::new(storage, config)?;
    let started = Instant::now();
    let rt = runtime()?;
    let report = if args.once {
        rt.block_on(async {
            tokio::select! {
                r = replicator.run_once() => r,
                () = ctrl_c() => Ok(Default::default()),
            }
        })?
    } else {
        eprintln!(
            "varvedb: replicating {} to {} stream {} (Ctrl-C stops)",
            replicator.storage().path().display(),
            args.to,
            args.stream
        );
        // Every 5 s, where the cursor is and how far behind the store it is.
        let status = rt.spawn({
            let replicator = replicator.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                every.tick().await;
                loop {
                    every.tick().await;
                    let consumer = replicator.config().consumer.clone();
                    let position = replicator.storage().consumer_position(&consumer);
                    if let (Ok(Some(position)), Ok(lag)) = (position, replicator.lag()) {
                        eprintln!("varvedb: replicated up to {position}, {lag} behind");
                    }
                }
            }
        });
        let report = rt.block_on(replicator.run_until(ctrl_c()));
        status.abort();
        report?
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "replicated to {} stream {}: {} events published ({:.0}/s), {} deduplicated, {} \
         adopted, {} retries; the server holds events up to {}",
        args.to,
        args.stream,
        report.published,
        report.published as f64 / secs.max(1e-9),
        report.duplicates,
        report.adopted,
        report.retries,
        report.position
    );
    Ok(())
}

pub fn restore(
    key: Option<[u8; 32]>,
    args: &RestoreArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = RestoreConfig::new(&args.from, &args.stream)
        .follow(args.follow)
        .connect_timeout(Duration::from_secs(args.connect_timeout));
    // A new replica is created only once the source is known to be there: a wrong server or
    // stream name leaves nothing at DEST.
    if !args.dest.join("data.mdb").exists() {
        runtime()?.block_on(varvedb_nats::check_source(&config))?;
    }
    let storage = open_or_create(&args.dest, key)?;
    let started = Instant::now();
    let mut last_print = Instant::now();
    let follow = args.follow;
    let report = runtime()?.block_on(varvedb_nats::restore_with_progress(
        &storage,
        &config,
        ctrl_c(),
        |r| {
            if follow && last_print.elapsed() >= Duration::from_secs(5) {
                last_print = Instant::now();
                eprintln!(
                    "varvedb: replica at {} of {} ({} behind)",
                    r.last_seq,
                    r.source_last_seq,
                    r.source_last_seq.saturating_sub(r.last_seq)
                );
            }
        },
    ))?;
    println!(
        "restored {} events into {} in {:.1?}: it holds events up to {}{}",
        report.applied,
        args.dest.display(),
        started.elapsed(),
        report.last_seq,
        if report.shredded > 0 {
            format!(", {} streams shredded", report.shredded)
        } else {
            String::new()
        } + &if report.removed > 0 {
            format!(", {} events removed at the source", report.removed)
        } else {
            String::new()
        }
    );
    Ok(())
}

fn open_or_create(path: &Path, master_key: Option<[u8; 32]>) -> Result<Storage, varvedb::Error> {
    let storage = Storage::open(StorageConfig {
        path: path.into(),
        check_pages_on_open: true,
        master_key,
        ..Default::default()
    })?;
    crate::print_warnings(&storage);
    Ok(storage)
}
