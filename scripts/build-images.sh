#!/usr/bin/env bash
# Builds the two container images from the Dockerfile and smoke-tests them.
#
#   bash scripts/build-images.sh            # docker if an engine answers, else buildah
#
# With a Docker engine this is two `docker build --target ...` calls. Without one (these
# build machines have only the docker client and no registry access), it uses buildah
# (from Debian's packages, chroot isolation, no daemon) and makes the two base images the
# Dockerfile names locally instead of pulling them: debian:bookworm-slim by debootstrap
# from Debian's mirror, and the Rust builder as that plus this machine's Rust toolchain.
# The Dockerfile itself is used unchanged; only its base-image build arguments point at
# the local images. Then each image is run: `--help`, the ingestor's `--migrate-only`
# against Postgres, and the query-service answering a gRPC health check.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TAG=${IMAGE_TAG:-dev}
INGESTOR_IMAGE=erc20-holders/ingestor:$TAG
QUERY_IMAGE=erc20-holders/query-service:$TAG
RUST_VERSION=$(rustc --version | awk '{print $2}')
# grpcurl for the health check, and a Postgres at DATABASE_URL for --migrate-only.
source scripts/tools.sh

say() { printf '\n== %s\n' "$*"; }

if docker info >/dev/null 2>&1; then
    say "building with docker"
    docker build --target ingestor -t "$INGESTOR_IMAGE" .
    docker build --target query-service -t "$QUERY_IMAGE" .
    run_image() { local image=$1; shift; docker run --rm --network host "$image" "$@"; }
    start_image() { docker run -d --rm --network host "$@"; }
    stop_image() { docker stop "$1" >/dev/null; }
else
    if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
        say "no Docker engine: installing buildah and debootstrap from Debian's packages"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah debootstrap >/dev/null
    fi
    export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
    WORK=${IMAGE_WORK:-/var/tmp/erc20-holders-images}
    mkdir -p "$WORK"

    # A local base image from a root filesystem made by debootstrap.
    base_image() {
        local name=$1 include=$2 rootfs="$WORK/rootfs-${1//[:\/]/_}"
        if buildah inspect --type image "$name" >/dev/null 2>&1; then return; fi
        say "making base image $name (debootstrap bookworm)"
        rm -rf "$rootfs"
        debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$rootfs" \
            http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
            || { tail -20 "$WORK/debootstrap.log"; exit 1; }
        # What Docker's official debian images do: no package cache, no docs.
        cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
        printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
            >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim"
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb \
            "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
            "$rootfs"/usr/share/locale/*
        local ctr mnt
        ctr=$(buildah from scratch)
        mnt=$(buildah mount "$ctr")
        cp -a "$rootfs"/. "$mnt"/
        buildah umount "$ctr" >/dev/null
        buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --cmd bash "$ctr"
        buildah commit -q "$ctr" "$name" >/dev/null
        buildah rm "$ctr" >/dev/null
    }
    base_image localhost/debian:bookworm-slim ""
    base_image "localhost/debian-gcc:bookworm" "gcc,libc6-dev,ca-certificates"

    RUST_IMAGE=localhost/rust:$RUST_VERSION-slim-bookworm
    if ! buildah inspect --type image "$RUST_IMAGE" >/dev/null 2>&1; then
        say "making base image $RUST_IMAGE (this machine's toolchain)"
        toolchain=$(rustc --print sysroot)
        ctr=$(buildah from localhost/debian-gcc:bookworm)
        mnt=$(buildah mount "$ctr")
        mkdir -p "$mnt/usr/local/rust" "$mnt/usr/local/cargo/bin"
        cp -a "$toolchain"/bin "$toolchain"/lib "$mnt/usr/local/rust/"
        ln -s /usr/local/rust/bin/cargo /usr/local/rust/bin/rustc "$mnt/usr/local/cargo/bin/"
        # Trust what this machine trusts: cargo in the build stage fetches crates through
        # the same egress as the host, which may present a local certificate authority.
        cp -a /usr/local/share/ca-certificates/. "$mnt/usr/local/share/ca-certificates/" 2>/dev/null || true
        buildah umount "$ctr" >/dev/null
        buildah run "$ctr" -- update-ca-certificates >/dev/null
        buildah config --env CARGO_HOME=/usr/local/cargo \
            --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            "$ctr"
        buildah commit -q "$ctr" "$RUST_IMAGE" >/dev/null
        buildah rm "$ctr" >/dev/null
    fi

    say "building with buildah (Dockerfile unchanged, local base images)"
    args=(--layers --build-arg "RUST_IMAGE=$RUST_IMAGE"
        --build-arg "RUNTIME_IMAGE=localhost/debian:bookworm-slim")
    buildah bud "${args[@]}" --target ingestor -t "$INGESTOR_IMAGE" .
    buildah bud "${args[@]}" --target query-service -t "$QUERY_IMAGE" .

    # chroot isolation shares the host's network, like `docker run --network host`.
    run_image() {
        local image=$1 ctr rc=0; shift
        ctr=$(buildah from -q "$image")
        buildah run "$ctr" -- "$(buildah inspect -f '{{index .OCIv1.Config.Entrypoint 0}}' "$ctr")" "$@" || rc=$?
        buildah rm "$ctr" >/dev/null
        return $rc
    }
fi

say "images"
if docker info >/dev/null 2>&1; then docker images 'erc20-holders/*'; else buildah images; fi

say "the images run as user 65532"
for image in "$INGESTOR_IMAGE" "$QUERY_IMAGE"; do
    if docker info >/dev/null 2>&1; then
        user=$(docker inspect -f '{{.Config.User}}' "$image")
    else
        user=$(buildah inspect -f '{{.OCIv1.Config.User}}' --type image "$image")
    fi
    [ "$user" = "65532:65532" ] || { echo "$image runs as '$user', not 65532:65532"; exit 1; }
    echo "$image: user $user"
done

say "processes in the images run as uid 65532"
for image in "$INGESTOR_IMAGE" "$QUERY_IMAGE"; do
    if docker info >/dev/null 2>&1; then
        uid=$(docker run --rm --entrypoint id "$image" -u)
    else
        ctr=$(buildah from -q "$image"); uid=$(buildah run "$ctr" -- id -u); buildah rm "$ctr" >/dev/null
    fi
    [ "$uid" = 65532 ] || { echo "a process in $image runs as uid $uid"; exit 1; }
    echo "$image: id -u = $uid"
done

say "ingestor --help and query-service --help inside the images"
out=$(run_image "$INGESTOR_IMAGE" --help) && head -3 <<<"$out"
out=$(run_image "$QUERY_IMAGE" --help) && head -3 <<<"$out"

say "ingestor --migrate-only from the image, against Postgres"
db=holders_image_check
psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
image_db=${DATABASE_URL%/*}/$db
run_image "$INGESTOR_IMAGE" --migrate-only --database-url "$image_db"
psql "$image_db" -Atc "SELECT 'schema versions: ' || string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"

say "query-service from the image answers a gRPC health check"
port=${IMAGE_CHECK_PORT:-50061}
if docker info >/dev/null 2>&1; then
    cid=$(start_image "$QUERY_IMAGE" --database-url "$image_db" --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0)
    trap 'set +e; stop_image "$cid"' EXIT
else
    ctr=$(buildah from -q "$QUERY_IMAGE")
    buildah run "$ctr" -- /usr/local/bin/query-service --database-url "$image_db" \
        --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 >"$WORK/query-service.log" 2>&1 &
    qs=$!
    trap 'set +e; kill $qs 2>/dev/null; wait $qs 2>/dev/null; buildah rm "$ctr" >/dev/null' EXIT
fi
for _ in $(seq 50); do
    if out=$(grpcurl -plaintext "127.0.0.1:$port" grpc.health.v1.Health/Check 2>/dev/null); then break; fi
    sleep 0.2
done
echo "$out"
grep -q SERVING <<<"$out" || { echo "query-service in the image did not answer"; exit 1; }
grpcurl -plaintext "127.0.0.1:$port" list
say "images built and checked: $INGESTOR_IMAGE $QUERY_IMAGE"
