#!/usr/bin/env bash
# The local demo: installs Anvil and grpcurl into .tools/, uses the PostgreSQL at
# DATABASE_URL (or starts a throwaway one), builds the pair, then indexes a real ERC-20's
# 14-day history on a local Anvil chain and prints the top holders through grpcurl.
# Pass --keep-running to keep the query-service up on 127.0.0.1:50051 afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
cargo build --workspace --bins
exec target/debug/demo "$@"
