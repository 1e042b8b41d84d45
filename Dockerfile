# syntax=docker/dockerfile:1
# lotbridge container image: a release build on Debian bookworm, run as an unprivileged
# user on bookworm-slim. Build from the repository root:
#   docker build -t lotbridge:local --build-arg GIT_SHA="$(git rev-parse --short HEAD)" .
# Run with the configuration (and any secret files it references) mounted at /etc/lotbridge:
#   docker run -v "$PWD/deploy:/etc/lotbridge:ro" lotbridge:local run --config /etc/lotbridge/lotbridge.toml
# The config must listen on 0.0.0.0:9898 ([metrics] listen) for the health check and scrapes.

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# Shown by the lotbridge_build_info metric.
ARG GIT_SHA=unknown
WORKDIR /src
# librdkafka is compiled from source by rdkafka-sys (make, gcc, zlib headers: all in the
# rust image). Cache mounts keep the registry and the target folder between builds.
# Every target folder the manifest may name is copied, so explicit [[bench]] or [[test]]
# entries resolve; only the binary is built.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
COPY examples ./examples
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    LOTBRIDGE_GIT_SHA="${GIT_SHA}" cargo build --release --locked --bin lotbridge \
    && install -D -m 0755 target/release/lotbridge /out/lotbridge

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# The binary needs glibc, libgcc and zlib (all in slim) and no OpenSSL (rustls); CA
# certificates are for vendors behind HTTPS. Not pinned: a rebuild should pick up
# bookworm's security updates of ca-certificates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 lotbridge \
    && useradd --system --uid 10001 --gid lotbridge --home-dir /nonexistent --shell /usr/sbin/nologin lotbridge \
    && mkdir -p /etc/lotbridge
COPY --from=builder /out/lotbridge /usr/local/bin/lotbridge
# Configuration, binding CSVs and secret files are mounted here (read-only); relative
# secret paths in the config resolve against the config file's folder.
WORKDIR /etc/lotbridge
USER 10001:10001
EXPOSE 9898
# /healthz answers while the process runs; readiness (/readyz) is for orchestrators.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/lotbridge", "healthcheck", "--url", "http://127.0.0.1:9898/healthz"]
# SIGTERM makes lotbridge drain (up to kafka.drain_timeout_ms) and commit before it exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/lotbridge"]
CMD ["run", "--config", "/etc/lotbridge/lotbridge.toml"]
