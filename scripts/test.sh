#!/usr/bin/env bash
# Every check a change must pass, as CI runs it: formatting, lints, the contract (buf
# lint and breaking), the Kubernetes
# manifests, then the unit tests and the end-to-end tests (real Anvil, real PostgreSQL, a
# real compiled ERC-20), the Python client's pytest against the real query-service, then
# 30 s of fuzzing (scripts/fuzz.sh). Installs what it needs into .tools/ and starts
# PostgreSQL if none answers at DATABASE_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The gRPC contract: buf lint, and buf breaking against the released descriptor.
bash scripts/proto-check.sh
# The binaries the end-to-end tests run (the demo and the benchmarks are built by their
# own scripts; `cargo test` builds neither).
cargo build --workspace --bins --exclude bench --exclude demo
# deploy/: renders, validates against the Kubernetes schemas, probes on the real ports.
PYTHONPATH="$PWD/.tools/py" python3 deploy/check.py target/debug
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo's last line is the doc-tests' own count).
sum() { grep -oE "test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed" "$log" | awk -v f="$1" '{s += $f} END {print s + 0}'; }
# The Python client against the real query-service (clients/python/tests).
pylog=$(mktemp)
trap 'rm -f "$log" "$pylog"' EXIT
(cd clients/python && HOLDERS_BIN_DIR="$OLDPWD/target/debug" ../../.tools/venv/bin/python -m pytest -q -p no:cacheprovider) 2>&1 | tee "$pylog" || status=1
py() { grep -oE "[0-9]+ $1" "$pylog" | tail -1 | grep -oE "^[0-9]+" || echo 0; }
echo "all tests: $(( $(sum 4) + $(py passed) )) passed, $(( $(sum 6) + $(py failed) + $(py error) )) failed"
# Page tokens, cursors and addresses under libFuzzer, for a bounded time.
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}" || status=1
exit "$status"
