#!/usr/bin/env bash
# Every check a change must pass, as CI runs it: formatting, lints, then the unit tests and
# the end-to-end tests (real Anvil, real PostgreSQL, a real compiled ERC-20). Installs what
# it needs into .tools/ and starts PostgreSQL if none answers at DATABASE_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
