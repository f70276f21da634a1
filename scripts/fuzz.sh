#!/usr/bin/env bash
# Fuzzes the parsing of what gRPC clients send back to us (page tokens, cursors,
# addresses; fuzz/fuzz_targets/tokens.rs) with cargo fuzz (libFuzzer) for a bounded time:
# `bash scripts/fuzz.sh [SECONDS]` (default 60). Installs cargo-fuzz into .tools/. The
# machine's stable toolchain is enough: RUSTC_BOOTSTRAP lets it take cargo fuzz's -Z
# flags, and without a sanitizer (-s none) a panic or failed assertion is what it finds.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
CARGO_FUZZ_VERSION=0.13.2
if [ ! -x .tools/bin/cargo-fuzz ]; then
  printf '\033[1m==> installing cargo-fuzz %s from crates.io\033[0m\n' "$CARGO_FUZZ_VERSION" >&2
  cargo install --quiet --locked --root .tools "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
cd fuzz
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
RUSTC_BOOTSTRAP=1 ../.tools/bin/cargo-fuzz run tokens -s none -- \
  -max_total_time="$seconds" -print_final_stats=1 >"$out" 2>&1 || status=$?
runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$out" | grep -oE '[0-9]+$' || echo 0)
if [ "$status" -ne 0 ]; then
  tail -40 "$out"
  echo "fuzz: tokens FAILED after $runs runs (the input is in fuzz/artifacts/tokens/)"
  exit "$status"
fi
echo "fuzz: tokens, $runs runs in ${seconds}s, 0 crashes"
