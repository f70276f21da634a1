#!/usr/bin/env bash
# The backfill and query benchmark: release builds of the real binaries, Anvil and the
# PostgreSQL at DATABASE_URL on this machine. Defaults: 1,000,000 transfers among 100,000
# holders; the query-service at 1M and 10M holders. `--results docs/performance.md`
# writes the results into that page; `--help` lists the options.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
cargo build --release --bins
exec target/release/bench "$@"
