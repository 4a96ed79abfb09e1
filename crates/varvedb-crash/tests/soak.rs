//! The soak (`varvedb-crash soak`) runs short here: once clean, where every series must level
//! off, and once with a planted leak, which it must report. The hour-long run and its plot are
//! in `docs/reliability.md`.

use std::process::Command;

fn soak(dir: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_varvedb-crash"))
        .args(["soak", "--minutes", "0.4", "--sample-seconds", "1.5"])
        .args(["--rate", "400", "--streams", "100", "--dir"])
        .arg(dir.join("store"))
        .arg("--csv")
        .arg(dir.join("soak.csv"))
        .arg("--svg")
        .arg(dir.join("soak.svg"))
        .args(extra)
        .output()
        .expect("run varvedb-crash");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn a_short_soak_levels_off_and_plots_its_series() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = soak(dir.path(), &[]);
    assert!(ok, "{text}");
    assert!(text.contains("soak passed"), "{text}");
    // Every series was sampled: 16 samples and a header.
    let csv = std::fs::read_to_string(dir.path().join("soak.csv")).unwrap();
    assert_eq!(csv.lines().count(), 17, "{csv}");
    // The workload ran: appends in every sample, events handled and removed by retention,
    // and the metrics server answered.
    for line in csv.lines().skip(1) {
        let appends: u64 = line.split(',').nth(6).unwrap().parse().unwrap();
        assert!(appends > 0, "a sample with no appends: {line}");
    }
    let summary = text.lines().find(|l| l.contains(" appends (")).unwrap();
    let n = |word: &str| -> u64 {
        let before = summary.split(word).next().unwrap();
        before
            .split_whitespace()
            .last()
            .unwrap()
            .trim_matches(',')
            .parse()
            .unwrap()
    };
    assert!(n(" handled by the processor") > 0, "{summary}");
    assert!(n(" removed by retention") > 0, "{summary}");
    assert!(n(" metrics scrapes") > 0, "{summary}");
    let svg = std::fs::read_to_string(dir.path().join("soak.svg")).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("reader-table slots"),
        "no plot"
    );
    // The store is removed at the end.
    assert!(!dir.path().join("store").exists());
}

#[test]
fn a_planted_leak_fails_the_soak() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = soak(dir.path(), &["--plant-leak-mib", "24"]);
    assert!(!ok, "a soak that leaked 24 MiB a sample passed:\n{text}");
    let anon = text.lines().find(|l| l.starts_with("anon_bytes")).unwrap();
    assert!(anon.ends_with("KEEPS GROWING"), "{text}");
}
