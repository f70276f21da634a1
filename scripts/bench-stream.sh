#!/usr/bin/env bash
# StreamTransfers fan-out benchmark: commit-to-client latency (p50/p99) with 1000
# concurrent subscribers and the query-service's memory, on release builds of the real
# binaries, Anvil and the PostgreSQL at DATABASE_URL. Options: --subscribers N --blocks N
# --transfers-per-block N.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
cargo build --release --bins
exec target/release/bench-stream "$@"
