# Roster in a container: a single node serving ZooKeeper clients on port 2181.
#   docker build -t roster .
#   docker run -d --name roster -p 2181:2181 -p 8080:8080 -v roster-data:/var/lib/roster roster
# A cluster needs peer TLS off loopback (docs/security.md): mount the files of `roster tls init` and set
# ROSTER_PEER_ADDR, ROSTER_PEER_TLS_CERT/_KEY/_CA and ROSTER_JOIN. Settings: `roster serve --help`
# (every flag has a ROSTER_* variable). Checked by tests/package/test_dockerfile.py (hadolint and
# the paths named here); no image is built by the tests.

# ---- build: the release binary, from the locked dependency versions
# (the full image, not -slim: jemalloc (tikv-jemallocator) and ring compile C and need gcc and make)
FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY examples ./examples
RUN cargo build --release --locked -p roster --bin roster \
    && cp target/release/roster /usr/local/bin/roster

# ---- run: Debian slim, an unprivileged user, data in a volume
FROM debian:bookworm-slim
COPY --from=build /usr/local/bin/roster /usr/bin/roster
RUN groupadd --system --gid 999 roster \
    && useradd --system --uid 999 --gid roster --home-dir /var/lib/roster --no-create-home \
       --shell /usr/sbin/nologin roster \
    && mkdir -p /var/lib/roster \
    && chown roster:roster /var/lib/roster \
    && chmod 0750 /var/lib/roster
# Clients and the admin port on every interface of the container; the peer port stays on loopback
# (a single node) unless a cluster is configured with peer TLS.
ENV ROSTER_DATA_DIR=/var/lib/roster \
    ROSTER_CLIENT_ADDR=0.0.0.0:2181 \
    ROSTER_ADMIN_ADDR=0.0.0.0:8080 \
    ROSTER_PEER_ADDR=127.0.0.1:2888
USER 999:999
WORKDIR /var/lib/roster
VOLUME ["/var/lib/roster"]
EXPOSE 2181 2888 8080
# ruok through the roster CLI's own connection: `roster status` exits non-zero when the node does not serve
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/bin/roster", "--server", "127.0.0.1:2181", "--timeout", "3s", "status"]
# SIGTERM (docker stop) is a graceful shutdown; the node stays a member (leave_on_shutdown off)
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/roster"]
CMD ["serve"]
