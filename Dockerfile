# Builds fd-aggregator and fd-node in release mode, then copies only the two binaries into a slim
# runtime image that runs them as an unprivileged user. Build from the repository root:
#   docker build -t fedistil .
# Not built on the project's CI (it has no container engine); see docs/operating.md, "Docker".

# ---- build ----------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The workspace: manifests, lock file and every member (cargo reads all members' manifests).
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY protocol protocol
COPY learning learning
COPY net net
COPY node node
COPY aggregator aggregator
COPY scenarios scenarios
RUN cargo build --release --locked --bin fd-aggregator --bin fd-node \
    && strip target/release/fd-aggregator target/release/fd-node

# ---- runtime --------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN useradd --system --user-group --home-dir /var/lib/fedistil --create-home --shell /usr/sbin/nologin fedistil
COPY --from=build /src/target/release/fd-aggregator /src/target/release/fd-node /usr/local/bin/
USER fedistil
WORKDIR /var/lib/fedistil
# libp2p (TCP and QUIC on the port federation.toml listens on) and the metrics endpoint.
EXPOSE 4001/tcp 4001/udp 9464/tcp
CMD ["fd-aggregator", "--help"]
