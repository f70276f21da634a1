# Both binaries from one build; choose the image with --target:
#   docker build --target ingestor -t erc20-holders/ingestor .
#   docker build --target query-service -t erc20-holders/query-service .
# Multi-stage: a full Rust toolchain builds release binaries; the runtime images are
# debian-slim with only the C libraries the binaries link (OpenSSL for https/wss RPC
# URLs) and run as an unprivileged user. protoc comes vendored with the build.
# The base images are build arguments so that a build without registry access can point
# them at local copies (scripts/build-images.sh does that with buildah).
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The workspace's release profile keeps debug info for profiling; images ship stripped.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked --bin ingestor --bin query-service

FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/*
# The same numeric user the Kubernetes securityContext asks for.
USER 65532:65532

FROM runtime AS ingestor
COPY --from=build /src/target/release/ingestor /usr/local/bin/ingestor
EXPOSE 50052 9090
ENTRYPOINT ["/usr/local/bin/ingestor"]

FROM runtime AS query-service
COPY --from=build /src/target/release/query-service /usr/local/bin/query-service
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/query-service"]
