//! `varvedb-bench`: the side-by-side benchmark of VarveDB against SQLite, varvedb 0.4.2, raw
//! heed and UmaDB, in one run. Its own binary, so that the `varvedb` tool users install does
//! not compile the peers.
//!
//! ```sh
//! cargo run --release -p varvedb-bench            # the full run
//! cargo run --release -p varvedb-bench -- --quick # the same workloads, smaller
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The side-by-side benchmark: VarveDB, SQLite, varvedb 0.4.2, raw heed and UmaDB in one run,
/// including 10 KiB and 1 MiB events. The table goes to stdout, progress to stderr.
#[derive(Parser)]
#[command(name = "varvedb-bench", version, about)]
struct Args {
    /// Smaller sizes: the same workloads in well under two minutes.
    #[arg(long)]
    quick: bool,
    /// Runs per figure (the table shows the median).
    #[arg(long)]
    runs: Option<usize>,
    /// Peers to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    peers: Option<Vec<String>>,
    /// Events in the store the read workloads read.
    #[arg(long)]
    read_events: Option<u64>,
    /// Run only these rows, by id, comma-separated (a_hot, a_random, b_hot, b_random, async,
    /// c100_hot, c1000_hot, c100_random, c1000_random, c1000_10k, i_dcb_1, i_dcb_n, i_query,
    /// h10k_append, h1m_append, h_dedup, h10k_scan, h1m_scan, d_scan, e_point, f_stream).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Where the stores go: on a real disk, as flushes are part of the result.
    #[arg(long, default_value = "varvedb-bench-stores")]
    dir: PathBuf,
    /// Where the JSON report goes.
    #[arg(long, default_value = "varvedb-bench.json")]
    json: PathBuf,
    /// Also draw the table as an SVG chart (one group per workload, one bar per peer, log
    /// scale) to this file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Instead of the table: grow one store to 100M events (batches of 1,000 over 10K
    /// streams), report the append throughput of every tenth, file size and memory as it
    /// grows, and a full scan at the end. Needs about 25 GB of disk under --dir.
    #[arg(long)]
    scale: bool,
    /// Events of a --scale run (default 100M).
    #[arg(long, requires = "scale")]
    scale_events: Option<u64>,
    /// Instead of the table: an IoT gateway at steady state. 1,000 streams, one durable
    /// append of a reading each, for 120 s, under a store-wide max_age retention of 20 s that
    /// the store enforces every second; samples file size, throughput and p99 latency every
    /// 5 s (with --svg, the chart of file size and throughput over time).
    #[arg(long, conflicts_with = "scale")]
    steady: bool,
    /// Seconds of a --steady run (default 120).
    #[arg(long, requires = "steady")]
    steady_seconds: Option<u64>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("varvedb-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.steady {
        return steady(&args);
    }
    if args.scale {
        return scale(&args);
    }
    let mut options = if args.quick {
        varvedb_bench::Options::quick(args.dir)
    } else {
        varvedb_bench::Options::full(args.dir)
    };
    if let Some(runs) = args.runs {
        options.runs = runs.max(1);
    }
    if let Some(peers) = args.peers {
        options.peers = peers;
    }
    if let Some(only) = args.only {
        options.only = only;
    }
    if let Some(n) = args.read_events {
        options.read_events = n.max(1);
    }
    let report = varvedb_bench::run(&options)?;
    std::fs::write(&args.json, report.json())?;
    if let Some(svg) = &args.svg {
        varvedb_bench::chart::write_svg(&report, svg)?;
        eprintln!("varvedb-bench: chart written to {}", svg.display());
    }
    print!("{}", report.markdown());
    eprintln!("varvedb-bench: JSON written to {}", args.json.display());
    // The stores were removed as each workload finished; remove the emptied directory too.
    drop(std::fs::remove_dir_all(&options.dir));
    Ok(())
}

fn steady(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut options = varvedb_bench::steady::SteadyOptions::full(args.dir.join("steady"));
    if let Some(s) = args.steady_seconds {
        options.duration = std::time::Duration::from_secs(s.max(1));
    }
    let report = varvedb_bench::steady::run(&options, |s| eprintln!("steady: {s:.0} s"))?;
    std::fs::write(&args.json, report.json())?;
    if let Some(svg) = &args.svg {
        report.write_svg(svg)?;
        eprintln!("varvedb-bench: chart written to {}", svg.display());
    }
    print!("{}", report.markdown());
    eprintln!("varvedb-bench: JSON written to {}", args.json.display());
    drop(std::fs::remove_dir_all(&args.dir));
    Ok(())
}

fn scale(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut options = varvedb_bench::scale::ScaleOptions::full(args.dir.join("scale"));
    if let Some(n) = args.scale_events {
        options.events = n.max(1);
    }
    if let Some(peer) = args.peers.as_ref().and_then(|p| p.first()) {
        options.peer = peer.clone();
    }
    // indicatif draws on a terminal only.
    let bar = indicatif::ProgressBar::new(options.events);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "scale [{bar:30}] {human_pos}/{human_len} events {per_sec} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let report = varvedb_bench::scale::run(&options, |n| bar.set_position(n));
    bar.finish_and_clear();
    let report = report?;
    std::fs::write(&args.json, report.json())?;
    print!("{}", report.markdown());
    eprintln!("varvedb-bench: JSON written to {}", args.json.display());
    drop(std::fs::remove_dir_all(&args.dir));
    Ok(())
}
