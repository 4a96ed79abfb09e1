//! `varvedb-crash`: runs the crash harness (`docs/reliability.md`).
//!
//! ```sh
//! cargo run --release -p varvedb-crash -- run --kills 1000
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use varvedb_crash::Mode;

#[derive(Parser)]
#[command(about = "Kills a writing child process at random moments and checks the store each time")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the harness: KILLS kill points, rotating over a plaintext store, an encrypted one and
    /// one that two processes write at once.
    Run {
        /// How many times to kill the child.
        #[arg(long, default_value_t = 1000)]
        kills: u64,
        /// Where the two stores go (a fresh temporary directory by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The seed of the kill points.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The child (started by `run`): appends until it is killed.
    #[command(hide = true)]
    Child {
        dir: PathBuf,
        mode: String,
        run: u64,
        retry_run: Option<u64>,
        retry_op: Option<u64>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Child {
            dir,
            mode,
            run,
            retry_run,
            retry_op,
        } => {
            let Some(mode) = Mode::parse(&mode) else {
                eprintln!("unknown mode {mode}");
                return ExitCode::from(2);
            };
            let retry = retry_run.zip(retry_op);
            match varvedb_crash::child(&dir, mode, run, retry) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("child: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Run { kills, dir, seed } => {
            let temp;
            let dir = match dir {
                Some(d) => d,
                None => {
                    temp =
                        std::env::temp_dir().join(format!("varvedb-crash-{}", std::process::id()));
                    temp
                }
            };
            let exe = std::env::current_exe().expect("the harness binary");
            let every = (kills / 20).max(1);
            let result = varvedb_crash::run(&exe, &dir, kills, seed, |r| {
                if r.kill_points % every == 0 {
                    eprintln!(
                        "{} kill points, {} events acknowledged and found, {:.0?}",
                        r.kill_points, r.acknowledged_events, r.elapsed
                    );
                }
            });
            match result {
                Ok(r) => {
                    println!(
                        "kill points: {} ({} with two writer processes)\nacknowledgements: {}\nacknowledged events, all found intact after every later kill: {}\nevents in the larger store: {}\nretries of an append a kill interrupted: {}\nshreds: {}\nbackups checked: {}\nprojection checks: {}\nlost, torn or reordered: 0\ntime: {:.1?}\nstores: {}",
                        r.kill_points,
                        r.two_writer_kills,
                        r.acknowledgements,
                        r.acknowledged_events,
                        r.events_in_stores,
                        r.retries_after_a_kill,
                        r.shreds,
                        r.backups_checked,
                        r.projection_checks,
                        r.elapsed,
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("FAILED: {e}\nstores kept at {}", dir.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}
