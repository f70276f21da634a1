#!/usr/bin/env bash
# The contract's checks: `buf lint` (proto/buf.yaml says which rules and why), and `buf
# breaking` against proto/released/holders-v1.binpb, the descriptor of the contract
# clients have. Then proves the breaking check bites: a copy of the contract with a
# method renamed must fail it. `--release` rewrites the descriptor from the current
# proto/ (run it when a release goes out, and commit the file).
set -euo pipefail
cd "$(dirname "$0")/../proto"
buf=${BUF:-buf}
released=released/holders-v1.binpb
if [ "${1:-}" = "--release" ]; then
  "$buf" lint
  "$buf" build -o "$released"
  echo "wrote proto/$released: commit it"
  exit 0
fi
"$buf" lint
"$buf" breaking --against "$released"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r buf.yaml holders "$tmp/"
sed -i 's/rpc GetTopHolders(/rpc GetTopHoldersRenamed(/' "$tmp/holders/v1/holders.proto"
if (cd "$tmp" && "$buf" breaking --against "$OLDPWD/$released" >/dev/null 2>&1); then
  echo "proto-check: buf breaking let a renamed method through" >&2
  exit 1
fi
echo "proto-check: lint clean, nothing breaks the released contract"
