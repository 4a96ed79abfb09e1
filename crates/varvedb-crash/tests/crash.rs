//! The crash harness in CI: 50 kill points (a documented command runs 1,000 and more:
//! `cargo run --release -p varvedb-crash -- run --kills 1000`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn fifty_kill_points_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_varvedb-crash"));
    let report =
        varvedb_crash::run(exe, dir.path(), 50, 0x5EED, |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.kill_points, 50);
    // The first kill at each store and the last three check everything; the others check the
    // log since the last check, the new acknowledgements and a sample of the older ones.
    assert!(report.full_checks >= 4, "{report:?}");
    assert!(report.sampled_checks > 1_000, "{report:?}");
    // The workload did what it is for: events, retries across a kill, shreds, projections.
    assert!(report.acknowledged_events > 500, "{report:?}");
    assert!(report.retries_after_a_kill > 0, "{report:?}");
    assert!(report.shreds > 0, "{report:?}");
    assert!(report.projection_checks > 0, "{report:?}");
    assert!(report.two_writer_kills > 0, "{report:?}");
    // Retention ran in the two-writer store, some of it cut short by a kill.
    assert!(report.removed_events > 0, "{report:?}");
    assert!(report.backups_checked > 0, "{report:?}");
    assert!(report.imports_checked > 0, "{report:?}");
}

/// The power-cut simulation's recorder, built in `dir`; `None` (a skip) without a C compiler,
/// but under CI a missing prerequisite fails the test: a skip there would pass as proof.
fn recorder(dir: &Path) -> Option<std::path::PathBuf> {
    let recorder = dir.join("recorder.so");
    match varvedb_crash::powercut::build_recorder(&recorder) {
        Ok(()) => Some(recorder),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "no C compiler for the recorder under CI: {e}"
            );
            eprintln!("skipped: no C compiler for the recorder ({e})");
            None
        }
    }
}

/// The power-cut simulation, briefly: a few recorded children, the file states a power cut could
/// leave at their acknowledgements and at random moments. Needs a C compiler for the recorder.
#[test]
fn power_cut_states_keep_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let Some(recorder) = recorder(dir.path()) else {
        return;
    };
    let exe = Path::new(env!("CARGO_BIN_EXE_varvedb-crash"));
    // Three runs: plaintext with its projection, encrypted (shreds, a backup, an import and a
    // master-key rotation at op 36), and two writer processes at once (retention).
    let plan = varvedb_crash::powercut::Plan {
        runs: 3,
        ops: 45,
        cuts_per_run: 15,
        states_per_cut: 8,
        seed: 0xC0DE,
    };
    let f = varvedb_crash::powercut::run(exe, &recorder, dir.path(), plan)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.runs, 3);
    assert!(f.cut_points >= 20, "{f:?}");
    assert!(f.states >= 40, "{f:?}");
    assert!(f.acknowledged_events > 10, "{f:?}");
    assert!(
        f.pending_pages_max > 0,
        "no state had a pending write: {f:?}"
    );
    for mode in ["plain", "encrypted", "shared"] {
        assert!(
            f.states_per_mode.get(mode).copied().unwrap_or(0) > 0,
            "no state of the {mode} store: {f:?}"
        );
    }
    assert!(f.rotations >= 1, "no rotation was recorded: {f:?}");
    assert!(f.deletions >= 1, "no stream deletion was recorded: {f:?}");
    // Power cuts at every point of a format upgrade: the old store or the new one, and the
    // new one once the open returned (it failed before the upgrade was flushed at the open).
    let (cuts, states, old, new) =
        varvedb_crash::powercut::upgrade(exe, &recorder, &dir.path().join("upgrade"), 8, 3)
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cuts > 0 && states >= cuts,
        "{cuts} cut points, {states} states"
    );
    assert!(
        old > 0 && new > 0,
        "{old} states of the old store, {new} of the new"
    );
}

/// Kills during an upgrade from format 4: the old store or the new one each time, both seen.
#[test]
fn an_upgrade_killed_at_forty_points_leaves_the_old_store_or_the_new() {
    let dir = tempfile::tempdir().unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_varvedb-crash"));
    let r =
        varvedb_crash::upgrade::run(exe, dir.path(), 40, 0xF0F0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.kills, 40);
    assert_eq!(r.old + r.new, 40);
    assert!(r.old > 0 && r.new > 0, "{r:?}");
}

/// The power-cut simulation's self-test: with stores that commit without flushing
/// (`VARVEDB_CRASH_NO_FLUSH=1`), some power-cut state must lose an acknowledged append, and the
/// simulation must say so. A simulation that found nothing here would prove nothing above.
#[test]
fn the_power_cut_simulation_reports_the_loss_of_a_store_that_never_flushes() {
    let dir = tempfile::tempdir().unwrap();
    // The child builds its own recorder; this one says whether a C compiler is here.
    if recorder(dir.path()).is_none() {
        return;
    }
    // A process of its own, so that the variable reaches no other test's children.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_varvedb-crash"))
        .env("VARVEDB_CRASH_NO_FLUSH", "1")
        .args([
            "powercut", "--runs", "4", "--ops", "40", "--cuts", "20", "--states", "8",
        ])
        .arg("--dir")
        .arg(dir.path().join("sim"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "no loss reported: {stderr}");
    assert!(
        stderr.contains("FAILED") && (stderr.contains("lost") || stderr.contains("acknowledged")),
        "{stderr}"
    );
}
