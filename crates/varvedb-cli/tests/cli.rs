//! The `varvedb` binary: the demo runs (and runs again on the same store), `stats` counts it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn varvedb(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_varvedb"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_runs_twice_and_stats_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    for run in 1..=2 {
        let (ok, stdout, stderr) = varvedb(&["--path", store, "demo"]);
        assert!(ok, "demo run {run} failed: {stderr}");
        assert!(
            stdout.contains("was refused"),
            "the demo shows a conflict:\n{stdout}"
        );
        assert!(
            stdout.contains("on retry"),
            "the demo shows the retry:\n{stdout}"
        );
        assert!(stdout.contains("balance 20.75 at version 7"), "{stdout}");
        assert!(
            stdout.contains(&format!(
                "store now holds {} events in {run} streams",
                7 * run
            )),
            "{stdout}"
        );
    }
    let (ok, stdout, stderr) = varvedb(&["--path", store, "stats"]);
    assert!(ok, "{stderr}");
    let field = |name: &str| -> u64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
    };
    assert_eq!(field("events"), 14);
    assert_eq!(field("streams"), 2);
    assert_eq!(field("last seq"), 14);
    assert!(field("log bytes") > 0 && field("file bytes") > 0);
}

#[test]
fn stats_on_a_missing_store_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let (ok, _, stderr) = varvedb(&["--path", missing.to_str().unwrap(), "stats"]);
    assert!(!ok);
    assert!(
        stderr.starts_with("varvedb: ") && stderr.contains("no such directory"),
        "{stderr}"
    );
    assert!(!missing.exists(), "stats must not create a store");
}
