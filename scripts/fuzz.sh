#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each (the CI
# step), or one target for as long as asked (a campaign):
#
#   scripts/fuzz.sh                 every target, 30 s each
#   scripts/fuzz.sh --time 3600 stack_frames
#
# Needs rustup: installs the nightly toolchain and cargo-fuzz (from
# crates.io) when they are missing. nat_frames needs root: it makes a
# network namespace of its own for the gateway's host sockets. Corpora
# grow in fuzz/corpus/TARGET (not committed); a crash stops the run,
# leaves its input in fuzz/artifacts/TARGET and fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECS=30
TARGETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --time) SECS=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) TARGETS+=("$1"); shift ;;
    esac
done

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "==> installing the nightly toolchain (cargo-fuzz's sanitizers need it)"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

cd fuzz
if [ ${#TARGETS[@]} -eq 0 ]; then
    mapfile -t TARGETS < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build -O
for t in "${TARGETS[@]}"; do
    echo "==> fuzz $t for ${SECS} s"
    # -rss_limit_mb: the stack target builds two stacks per input.
    cargo +nightly fuzz run -O "$t" -- -max_total_time="$SECS" -rss_limit_mb=4096 \
        -print_final_stats=1 2>&1 | grep -E '^(Done|stat::number_of_executed_units|INFO: seed)|SUMMARY|panicked|ERROR' || true
    if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
        echo "fuzz.sh: $t found a crash: fuzz/artifacts/$t" >&2
        exit 1
    fi
done
