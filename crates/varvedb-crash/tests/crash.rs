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
    // The workload did what it is for: events, retries across a kill, shreds, projections.
    assert!(report.acknowledged_events > 500, "{report:?}");
    assert!(report.retries_after_a_kill > 0, "{report:?}");
    assert!(report.shreds > 0, "{report:?}");
    assert!(report.projection_checks > 0, "{report:?}");
    assert!(report.two_writer_kills > 0, "{report:?}");
    assert!(report.backups_checked > 0, "{report:?}");
}
