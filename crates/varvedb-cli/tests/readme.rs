//! Every command the README shows keeps working: a documented command never breaks silently.
//!
//! - Each command of the README's shell blocks is either run here (the tool's commands, on a
//!   scratch store), or named below with where it is exercised instead (the test suite itself,
//!   the examples `.ci/run` runs, the long benchmarks and harnesses, the NATS commands that the
//!   replication tests run against a real server). A new command that is neither fails this test.
//! - Each row of the README's table of the tool's commands names a subcommand and flags: every
//!   one of them must be in that subcommand's `--help`.
//! - Each `cargo run -p PACKAGE --example NAME` the README mentions must name an example that
//!   exists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

/// The commands of the README's shell blocks, without their trailing comments.
fn shell_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        let fence = line.trim_start().starts_with("```");
        if fence {
            let lang = line.trim_start().trim_start_matches('`');
            in_block = !in_block && matches!(lang, "sh" | "bash" | "shell" | "console");
            continue;
        }
        if in_block {
            let command = match line.find(" #") {
                Some(at) => &line[..at],
                None => line,
            }
            .trim();
            if !command.is_empty() {
                out.push(command.to_string());
            }
        }
    }
    out
}

/// Where each README command that this test does not run is exercised instead.
const RUN_ELSEWHERE: &[(&str, &str)] = &[
    ("cargo test --workspace", "the test suite itself (.ci/run)"),
    (
        "cargo run --release -p varvedb-bench",
        "a benchmark of minutes: run by hand (docs/performance.md)",
    ),
    (
        "cargo run --release -p varvedb-crash --",
        "the crash and power-cut harnesses: their short runs are in cargo test",
    ),
    ("scripts/fuzz.sh", "run by .ci/run (scripts/fuzz.sh 10)"),
    (
        "VARVEDB_STRESS_SECS=",
        "the stress test, which cargo test runs for its default time",
    ),
    (
        "varvedb replicate --to nats://",
        "needs a NATS server: crates/varvedb-cli/tests/replication.rs runs it against one",
    ),
    (
        "varvedb restore --from nats://",
        "needs a NATS server: crates/varvedb-cli/tests/replication.rs runs it against one",
    ),
];

#[test]
fn every_shell_command_of_the_readme_runs_here_or_is_exercised_elsewhere() {
    let commands = shell_commands(&readme());
    assert!(commands.len() >= 5, "found only {commands:?} in the README");
    let mut ran = 0;
    for command in &commands {
        if command == "cargo run --release -- demo" {
            // The README's first command, as the built binary, on the default path of a
            // fresh directory: twice, as a newcomer may.
            let dir = tempfile::tempdir().unwrap();
            for _ in 0..2 {
                let out = Command::new(env!("CARGO_BIN_EXE_varvedb"))
                    .arg("demo")
                    .current_dir(dir.path())
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "`{command}` failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(dir.path().join("varvedb-demo/varvedb-demo.txt").exists());
            ran += 1;
            continue;
        }
        let elsewhere = RUN_ELSEWHERE
            .iter()
            .find(|(prefix, _)| command.starts_with(prefix));
        assert!(
            elsewhere.is_some(),
            "the README shows `{command}`, which this test neither runs nor knows to be run \
             elsewhere: run it here, or name where it is exercised in RUN_ELSEWHERE"
        );
    }
    assert_eq!(ran, 1, "the README's first command is no longer the demo");
}

/// The rows of the README's table of the tool's commands: each row's subcommand and the
/// `--flags` it names.
fn tool_table(text: &str) -> Vec<(String, Vec<String>)> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("| `varvedb ") else {
            continue;
        };
        let Some(end) = rest.find('`') else { continue };
        let usage = &rest[..end];
        let Some(sub) = usage.split_whitespace().next() else {
            continue;
        };
        // Metric names share the table syntax; they have no subcommand of letters only.
        if !sub.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            continue;
        }
        let flags = usage
            .split(|c: char| c.is_whitespace() || "[]|".contains(c))
            .filter(|w| w.starts_with("--"))
            .map(|w| {
                w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                    .to_string()
            })
            .collect();
        rows.push((sub.to_string(), flags));
    }
    rows
}

#[test]
fn every_subcommand_and_flag_of_the_readme_table_is_in_the_tools_help() {
    let rows = tool_table(&readme());
    assert!(rows.len() >= 15, "the README's table of commands: {rows:?}");
    for (sub, flags) in rows {
        let out = Command::new(env!("CARGO_BIN_EXE_varvedb"))
            .args([sub.as_str(), "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "`varvedb {sub} --help` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for flag in flags {
            assert!(
                help.contains(&flag),
                "the README gives `varvedb {sub}` the flag {flag}, which its help does not have"
            );
        }
    }
}

#[test]
fn every_example_the_readme_names_exists() {
    let text = readme();
    let mut checked = 0;
    for piece in text.split('`') {
        let words: Vec<&str> = piece.split_whitespace().collect();
        if words.first() != Some(&"cargo") || words.get(1) != Some(&"run") {
            continue;
        }
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        let (Some(package), Some(example)) = (after("-p"), after("--example")) else {
            continue;
        };
        let path = root()
            .join("crates")
            .join(package)
            .join("examples")
            .join(format!("{example}.rs"));
        assert!(
            path.exists(),
            "the README runs the example {example} of {package}, and {} does not exist",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 3, "the README names {checked} examples");
}

/// One Rust block of the README: the `[dependencies]` of the TOML block before it, its code,
/// whether it is to be run (`no_run` blocks are built only), and its line.
struct RustBlock {
    dependencies: String,
    code: String,
    run: bool,
    line: usize,
}

/// The README's Rust blocks, each with the dependencies of the last `[dependencies]` block
/// above it, as a reader copying them would take them.
fn rust_blocks(text: &str) -> Vec<RustBlock> {
    let mut blocks = Vec::new();
    let mut dependencies = String::new();
    let mut open: Option<(String, usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(lang)) => open = Some((lang.trim().to_string(), n + 1, String::new())),
            (Some(_), Some(_)) => {
                let (lang, start, body) = open.take().unwrap();
                if lang == "toml" && body.contains("[dependencies]") {
                    dependencies = body;
                } else if lang.split(',').next() == Some("rust") {
                    blocks.push(RustBlock {
                        dependencies: dependencies.clone(),
                        code: body,
                        run: !lang.contains("no_run"),
                        line: start,
                    });
                }
            }
            (Some((_, _, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The manifest of a scratch crate with the README's `dependencies`, each of this repository's
/// crates (given by git, as a newcomer would) taken from this checkout instead: the only change.
fn scratch_manifest(name: &str, dependencies: &str) -> String {
    let git = "{ git = \"https://github.com/varvesys/varvedb\" }";
    let mut manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
         # Its own workspace, not this repository's.\n[workspace]\n\n[profile.dev]\ndebug = false\n\n"
    );
    for line in dependencies.lines() {
        match line
            .split_once(" = ")
            .filter(|(_, spec)| spec.starts_with(git))
        {
            Some((krate, _)) => {
                let path = root().join("crates").join(krate.trim());
                assert!(
                    path.exists(),
                    "the README depends on {krate}, not in crates/"
                );
                manifest.push_str(&format!("{krate} = {{ path = {:?} }}\n", path));
            }
            None => {
                manifest.push_str(line);
                manifest.push('\n');
            }
        }
    }
    manifest
}

/// Every Rust block of the README is a whole program: it builds in a scratch crate with the
/// README's own `[dependencies]` (no hidden lines, no other crate), and runs to success
/// without leaving anything in the directory it runs in.
#[test]
fn every_rust_block_of_the_readme_builds_and_runs_as_copied() {
    let blocks = rust_blocks(&readme());
    assert!(blocks.len() >= 8, "found {} Rust blocks", blocks.len());
    for block in &blocks {
        assert!(
            block.dependencies.contains("[dependencies]"),
            "README line {}: no [dependencies] block above it",
            block.line
        );
        for line in block.code.lines() {
            assert!(
                !(line == "#" || line.starts_with("# ")),
                "README line {}: a hidden line, which GitHub shows and a reader copies: {line}",
                block.line
            );
        }
        assert!(
            block.code.contains("fn main("),
            "README line {}: not a whole program (no main)",
            block.line
        );
    }
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-blocks");
    let target = scratch.join("target");
    let mut manifests: Vec<String> = Vec::new();
    for block in &blocks {
        if !manifests.contains(&block.dependencies) {
            manifests.push(block.dependencies.clone());
        }
    }
    for (k, dependencies) in manifests.iter().enumerate() {
        let name = format!("readme-blocks-{k}");
        let krate = scratch.join(&name);
        drop(std::fs::remove_dir_all(krate.join("src")));
        std::fs::create_dir_all(krate.join("src/bin")).unwrap();
        std::fs::write(
            krate.join("Cargo.toml"),
            scratch_manifest(&name, dependencies),
        )
        .unwrap();
        // The versions this repository is tested with.
        std::fs::copy(root().join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
        let ours: Vec<&RustBlock> = blocks
            .iter()
            .filter(|b| &b.dependencies == dependencies)
            .collect();
        for block in &ours {
            std::fs::write(
                krate.join(format!("src/bin/line_{}.rs", block.line)),
                &block.code,
            )
            .unwrap();
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(&cargo)
            .args(["build", "--bins", "--offline", "--quiet"])
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the README's Rust blocks at lines {:?} do not build as copied:\n{}",
            ours.iter().map(|b| b.line).collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr)
        );
        for block in ours.iter().filter(|b| b.run) {
            let cwd = tempfile::tempdir().unwrap();
            let out = Command::new(target.join(format!("debug/line_{}", block.line)))
                .current_dir(cwd.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "the README's Rust block at line {} fails when run:\n{}",
                block.line,
                String::from_utf8_lossy(&out.stderr)
            );
            let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
            assert!(
                left.is_empty(),
                "the README's Rust block at line {} leaves files where it runs: {left:?}",
                block.line
            );
        }
    }
}
