//! The history checker end to end: three processes of three threads append and read three
//! shared streams with `Exact` and `Auto` expectations while one is killed with SIGKILL now and
//! then; the history must be linearizable per stream, and the run must have reached the cases
//! that make it worth checking (conflicts, acknowledgements, answers lost to a kill). The
//! checker's own test, against planted violations, is in `src/history.rs`.

use std::process::Command;

#[test]
fn concurrent_appends_and_reads_from_killed_processes_are_linearizable_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_varvedb-crash"))
        .args([
            "history",
            "--processes",
            "3",
            "--threads",
            "3",
            "--ops",
            "200",
        ])
        .args(["--kills", "10", "--dir"])
        .arg(dir.path().join("run"))
        .output()
        .expect("run varvedb-crash");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("the history is linearizable per stream"),
        "{text}"
    );
    let summary = text
        .lines()
        .find(|l| l.contains(" operations from "))
        .unwrap();
    let n = |word: &str| -> u64 {
        let before = summary.split(word).next().unwrap();
        before
            .split_whitespace()
            .last()
            .unwrap()
            .trim_matches(|c| c == '(' || c == ',')
            .parse()
            .unwrap()
    };
    assert_eq!(n(" killed)"), 10, "{summary}");
    assert!(n(" appends acknowledged") > 100, "{summary}");
    assert!(n(" conflicts") > 0, "no conflict happened: {summary}");
    assert!(n(" reads") > 100, "{summary}");
    // Ten kills of processes making an operation every few hundred microseconds: some answer
    // was lost.
    assert!(
        n(" unanswered") > 0,
        "no kill landed mid-operation: {summary}"
    );
}
