#!/usr/bin/env bash
# The figures of docs/reliability.md: runs the fault, crash,
# restart, shutdown and hostile-input tests (all also part of scripts/test.sh) and prints
# what each injected and that nothing was lost or stored twice.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test -p tests --test it -- --nocapture --test-threads 2 \
  faults:: kills:: restart:: shutdown:: privilege:: grpc:: ops::health 2>&1 | tee "$log" >/dev/null || status=$?
grep -E '^test .* \.\.\. ' "$log" | sed 's/^test /  /'
grep -oE 'figures: .*' "$log" | sed 's/^figures: /  /'
grep -E '^test result' "$log"
exit "$status"
