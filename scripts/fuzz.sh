#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS each (default 60), and prints the
# executions of each. Installs cargo-fuzz from crates.io if it is missing. Without a nightly
# toolchain it runs the corpora as plain tests instead (stable).
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 600        # the long run of docs/reliability.md
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
# `open_store` feeds arbitrary bytes as data.mdb, opened with the page check
# (StorageConfig::check_pages_on_open), which keeps LMDB from following a damaged page.
targets=(read_pack read_record open_sealed ops open_store import_lines)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "no nightly toolchain: running the fuzz corpora as plain tests instead"
    cargo test -p varvedb-cli --test import_lines_corpus
    exec cargo test -p varvedb --test fuzz_corpus
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
# Keep the fuzz build next to the project's other builds when CI points CARGO_TARGET_DIR at a
# cache; fuzz/target otherwise.
target_dir="${CARGO_TARGET_DIR:+${CARGO_TARGET_DIR}/fuzz}"
target_dir="${target_dir:-$PWD/fuzz/target}"
cd fuzz
for t in "${targets[@]}"; do
    # A long run of `ops` goes without AddressSanitizer: its cost is the real commit path (a
    # handoff to the committer thread per append), which ASan slows several times over, and its code under
    # test is safe Rust over LMDB, which the other targets run under ASan
    # (docs/reliability.md). A short run (CI's) keeps one build for every target.
    sanitizer=address
    build="$target_dir"
    if [ "$t" = ops ] && [ "$seconds" -ge 60 ]; then
        sanitizer=none
        build="$target_dir/none"
    fi
    # A scratch copy of the committed seeds, so that what a run finds stays out of the clone.
    work="$(mktemp -d)"
    cp corpus/"$t"/* "$work"/
    out="$(cargo +nightly fuzz run "$t" -O -s "$sanitizer" --target-dir "$build" "$work" -- \
        -max_total_time="$seconds" -print_final_stats=1 2>&1)" || {
        echo "$out" | tail -40
        echo "fuzz target $t FAILED (its input is in fuzz/artifacts/$t)"
        exit 1
    }
    runs="$(echo "$out" | sed -n 's/^stat::number_of_executed_units: *//p' | tail -1)"
    echo "$t: ${runs:-?} executions in ${seconds} s, no crash"
    rm -rf "$work"
done
