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
    /// The soak: the mixed workload (writers, retention, a processor, a consumer group, a
    /// subscription, a reader, the metrics server) on one store for MINUTES, sampled every
    /// SAMPLE_SECONDS; fails if memory, descriptors, the file, the reader slots, the lag or the
    /// latency keep growing.
    Soak {
        /// How long it runs (fractions allowed).
        #[arg(long, default_value_t = 60.0)]
        minutes: f64,
        /// Seconds between samples.
        #[arg(long, default_value_t = 60.0)]
        sample_seconds: f64,
        /// Appends a second, over all writers.
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        /// Writer threads.
        #[arg(long, default_value_t = 4)]
        writers: u64,
        /// The streams the writers spread over (each keeps its newest 8 events).
        #[arg(long, default_value_t = 2_000)]
        streams: u64,
        /// Where the store goes (must not exist; a fresh temporary directory by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Writes the samples as CSV here.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Writes the plot (SVG) here.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// The self-test: leaks this many MiB at each sample, which must fail the soak.
        #[arg(long, default_value_t = 0, hide = true)]
        plant_leak_mib: u64,
    },
    /// The history checker: PROCESSES children at once, each with THREADS threads making OPS
    /// concurrent `Exact` and `Auto` appends and reads on 3 shared streams; KILLS times one
    /// child is killed with SIGKILL and a new one started; then the history is checked for
    /// per-stream linearizability against the final store.
    History {
        #[arg(long, default_value_t = 3)]
        processes: u64,
        #[arg(long, default_value_t = 3)]
        threads: u64,
        #[arg(long, default_value_t = 300)]
        ops: u64,
        #[arg(long, default_value_t = 20)]
        kills: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The child of `history`.
    #[command(hide = true)]
    HistoryChild {
        process: u64,
        threads: u64,
        ops: u64,
        dir: PathBuf,
    },
    /// Judges and plots the samples a soak wrote with `--csv`, again.
    SoakReport {
        csv: PathBuf,
        #[arg(long)]
        svg: Option<PathBuf>,
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

fn print_judgements(judgements: &[varvedb_crash::soak::Judgement]) {
    for j in judgements {
        println!(
            "{:<13} slope after warm-up {:+.1}/h, highest {:.0} then {:.0}: {}",
            j.series,
            j.slope_per_hour,
            j.first_max,
            j.second_max,
            if j.ok { "levels off" } else { "KEEPS GROWING" }
        );
    }
}

fn soak_report(csv: PathBuf, svg: Option<PathBuf>) -> ExitCode {
    let text = match std::fs::read_to_string(&csv) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("FAILED: cannot read {}: {e}", csv.display());
            return ExitCode::FAILURE;
        }
    };
    let samples: Vec<_> = text
        .lines()
        .skip(1)
        .filter_map(varvedb_crash::soak::Sample::parse)
        .collect();
    let judgements = varvedb_crash::soak::judge(&samples);
    print_judgements(&judgements);
    if let Some(path) = &svg
        && let Err(e) = varvedb_crash::soak::plot(&samples, &judgements, path)
    {
        eprintln!("FAILED: cannot plot {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if judgements.iter().all(|j| j.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn soak(
    options: varvedb_crash::soak::Options,
    csv: Option<PathBuf>,
    svg: Option<PathBuf>,
) -> ExitCode {
    use varvedb_crash::soak::Sample;
    println!("{}", Sample::CSV_HEADER);
    let mut lines = vec![Sample::CSV_HEADER.to_string()];
    let report = varvedb_crash::soak::run(&options, |s| {
        println!("{}", s.csv());
        lines.push(s.csv());
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("FAILED: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &csv
        && let Err(e) = std::fs::write(path, lines.join("\n") + "\n")
    {
        eprintln!("FAILED: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if let Some(path) = &svg
        && let Err(e) = varvedb_crash::soak::plot(&report.samples, &report.judgements, path)
    {
        eprintln!("FAILED: cannot plot {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!(
        "{} appends ({} expected conflicts), {} handled by the processor, {} removed by retention, {} metrics scrapes",
        report.appends, report.conflicts, report.handled, report.retained_away, report.scrapes
    );
    print_judgements(&report.judgements);
    for f in &report.failures {
        println!("failure: {f}");
    }
    if report.passed() {
        println!("soak passed");
        ExitCode::SUCCESS
    } else {
        println!("FAILED: the soak found growth that does not level off, or errors");
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::SoakReport { csv, svg } => soak_report(csv, svg),
        Cmd::HistoryChild {
            process,
            threads,
            ops,
            dir,
        } => match varvedb_crash::history::child(&dir, process, threads, ops) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("history child {process}: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::History {
            processes,
            threads,
            ops,
            kills,
            dir,
            seed,
        } => {
            let dir = dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("varvedb-history-{}", std::process::id()))
            });
            let exe = match std::env::current_exe() {
                Ok(exe) => exe,
                Err(e) => {
                    eprintln!("FAILED: cannot find the harness binary to start children: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let started = std::time::Instant::now();
            let result =
                varvedb_crash::history::run(&exe, &dir, processes, threads, ops, kills, seed);
            let _ = std::fs::remove_dir_all(&dir);
            match result {
                Ok(r) => {
                    println!(
                        "{} operations from {} processes ({} killed): {} appends acknowledged, {} conflicts, {} reads, {} unanswered ({} of them took effect), checked in {:.1} s",
                        r.operations,
                        r.processes,
                        r.kills,
                        r.acknowledged,
                        r.conflicts,
                        r.reads,
                        r.unknown,
                        r.unknown_applied,
                        started.elapsed().as_secs_f64()
                    );
                    for v in r.violations.iter().take(50) {
                        println!("violation: {v}");
                    }
                    if r.violations.is_empty() {
                        println!("the history is linearizable per stream");
                        ExitCode::SUCCESS
                    } else {
                        println!("FAILED: {} violations", r.violations.len());
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Soak {
            minutes,
            sample_seconds,
            rate,
            writers,
            streams,
            dir,
            csv,
            svg,
            plant_leak_mib,
        } => {
            let dir = dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("varvedb-soak-{}", std::process::id()))
            });
            let options = varvedb_crash::soak::Options {
                duration: std::time::Duration::from_secs_f64(minutes.max(0.0) * 60.0),
                sample_every: std::time::Duration::from_secs_f64(sample_seconds.max(0.1)),
                rate,
                writers: writers.max(1),
                streams,
                dir: dir.clone(),
                plant_leak_mib,
            };
            let code = soak(options, csv, svg);
            let _ = std::fs::remove_dir_all(&dir);
            code
        }
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
                        "recorded children: {}\ncut points: {}\nmaster-key rotations recorded: {}\nstream deletions recorded: {}\npower-cut states checked: {}\nlargest acknowledged set at a cut: {}\nmost pending pages at a cut: {}\nlost, torn or reordered: 0\ntime: {:.1?}",
                        f.runs,
                        f.cut_points,
                        f.rotations,
                        f.deletions,
                        f.states,
                        f.acknowledged_events,
                        f.pending_pages_max,
                        started.elapsed()
                    );
                    for (mode, states) in &f.states_per_mode {
                        println!("states of the {mode} store: {states}");
                    }
                    // Power cuts during a format upgrade, at every point of its log.
                    match varvedb_crash::powercut::upgrade(
                        &exe,
                        &recorder,
                        &dir.join("upgrade"),
                        states,
                        seed,
                    ) {
                        Ok((cuts, states, old, new)) => {
                            println!(
                                "states of a format upgrade: {states} at {cuts} cut points, {old} of the old store and {new} of the new, none mixed or damaged"
                            );
                            ExitCode::SUCCESS
                        }
                        Err(e) => {
                            eprintln!("FAILED: the upgrade under power cuts: {e}");
                            ExitCode::FAILURE
                        }
                    }
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
                        "kill points: {} ({} with two writer processes)\nacknowledgements: {}\nacknowledged events, each found intact at the kill after it was acknowledged and at every later full check: {}\nfull checks (every acknowledged event, verify, the whole log): {}\nolder acknowledged events sampled at the other checks: {}\nevents in the larger store: {}\nretries of an append a kill interrupted: {}\nshreds: {}\nmaster-key rotations: {}\nstream deletions: {}\nfresh encrypted stores (one every {} of its kill points): {}\nbackups checked: {}\nimports checked: {}\nprojection checks: {}\nlost, torn or reordered: 0\ntime: {:.1?}\neach thousand kill points: {:.0?}\nstores: {}",
                        r.kill_points,
                        r.two_writer_kills,
                        r.acknowledgements,
                        r.acknowledged_events,
                        r.full_checks,
                        r.sampled_checks,
                        r.events_in_stores,
                        r.retries_after_a_kill,
                        r.shreds,
                        r.rotations,
                        r.deletions,
                        varvedb_crash::ENCRYPTED_GENERATION,
                        r.generations,
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
