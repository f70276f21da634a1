# Both binaries from one build; choose the image with --target:
#   docker build --target ingestor -t erc20-holders/ingestor .
#   docker build --target query-service -t erc20-holders/query-service .
# Multi-stage: a full Rust toolchain builds release binaries; the runtime images are
# debian-slim with only the C libraries the binaries link (OpenSSL for https/wss RPC
# URLs) and run as an unprivileged user. protoc comes vendored with the build.

FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ingestor --bin query-service

FROM debian:bookworm-slim AS runtime
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
