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
    /// The power-cut simulation: runs recorded children and checks the file states a power
    /// cut could leave at their acknowledgements.
    Powercut {
        /// Recorded children, each a fresh store.
        #[arg(long, default_value_t = 10)]
        runs: u64,
        /// Operations each child starts before it is killed.
        #[arg(long, default_value_t = 40)]
        ops: u64,
        /// Acknowledgements checked per child (a sample, and the end of the log).
        #[arg(long, default_value_t = 40)]
        cuts: u64,
        /// File states checked per cut point.
        #[arg(long, default_value_t = 16)]
        states: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Kills a child in the middle of upgrading a copy of a store of the previous format,
    /// KILLS times, and checks each copy: the old store or the new one, never a mix.
    Upgrade {
        #[arg(long, default_value_t = 100)]
        kills: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The child of `upgrade`: opens (and so upgrades) the store at DIR.
    #[command(hide = true)]
    UpgradeChild { dir: PathBuf },
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
        Cmd::UpgradeChild { dir } => match varvedb_crash::upgrade::child(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("upgrade child: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Upgrade { kills, dir, seed } => {
            let dir = dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("varvedb-upgrade-{}", std::process::id()))
            });
            let exe = match std::env::current_exe() {
                Ok(exe) => exe,
                Err(e) => {
                    eprintln!("FAILED: cannot find the harness binary to start children: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match varvedb_crash::upgrade::run(&exe, &dir, kills, seed) {
                Ok(r) => {
                    println!(
                        "upgrade kill points: {}
left of the previous format: {}
left upgraded: {}
mixed or damaged: 0",
                        r.kills, r.old, r.new
                    );
                    let _ = std::fs::remove_dir_all(&dir);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "FAILED: {e}
kept at {}",
                        dir.display()
                    );
                    ExitCode::FAILURE
                }
            }
        }
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
        Cmd::Powercut {
            runs,
            ops,
            cuts,
            states,
            dir,
            seed,
        } => {
            let dir = dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("varvedb-powercut-{}", std::process::id()))
            });
            let exe = match std::env::current_exe() {
                Ok(exe) => exe,
                Err(e) => {
                    eprintln!("FAILED: cannot find the harness binary to start children: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let recorder = dir.join("recorder.so");
            if let Err(e) = std::fs::create_dir_all(&dir)
                .map_err(|e| e.to_string())
                .and_then(|()| varvedb_crash::powercut::build_recorder(&recorder))
            {
                eprintln!("FAILED: {e}");
                return ExitCode::FAILURE;
            }
            let started = std::time::Instant::now();
            let plan = varvedb_crash::powercut::Plan {
                runs,
                ops,
                cuts_per_run: cuts,
                states_per_cut: states,
                seed,
            };
            match varvedb_crash::powercut::run(&exe, &recorder, &dir, plan) {
                Ok(f) => {
                    println!(
                        "recorded children: {}\ncut points: {}\npower-cut states checked: {}\nlargest acknowledged set at a cut: {}\nmost pending pages at a cut: {}\nlost, torn or reordered: 0\ntime: {:.1?}",
                        f.runs,
                        f.cut_points,
                        f.states,
                        f.acknowledged_events,
                        f.pending_pages_max,
                        started.elapsed()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("FAILED: {e}\nkept at {}", dir.display());
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
            let exe = match std::env::current_exe() {
                Ok(exe) => exe,
                Err(e) => {
                    eprintln!("FAILED: cannot find the harness binary to start children: {e}");
                    return ExitCode::FAILURE;
                }
            };
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
                        "kill points: {} ({} with two writer processes)\nacknowledgements: {}\nacknowledged events, each found intact at the kill after it was acknowledged and at every later full check: {}\nfull checks (every acknowledged event, verify, the whole log): {}\nolder acknowledged events sampled at the other checks: {}\nevents in the larger store: {}\nretries of an append a kill interrupted: {}\nshreds: {}\nbackups checked: {}\nimports checked: {}\nprojection checks: {}\nlost, torn or reordered: 0\ntime: {:.1?}\neach thousand kill points: {:.0?}\nstores: {}",
                        r.kill_points,
                        r.two_writer_kills,
                        r.acknowledgements,
                        r.acknowledged_events,
                        r.full_checks,
                        r.sampled_checks,
                        r.events_in_stores,
                        r.retries_after_a_kill,
                        r.shreds,
                        r.backups_checked,
                        r.imports_checked,
                        r.projection_checks,
                        r.elapsed,
                        r.per_thousand,
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
