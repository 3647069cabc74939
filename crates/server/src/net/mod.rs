//! The client ports: accepts TCP connections on the plain port and, when configured, on the TLS port
//! (ZooKeeper's secureClientPort), enforces the per-address connection limit (counted across both),
//! and runs one [`connection`] task per client. Four-letter words arrive on the same ports (see
//! `fourlw`; on the TLS port after the handshake, as ZooKeeper's Netty server answers them).
//! [`InProcess`] opens connections without a port: an in-memory byte pipe whose server end is served
//! by the same connection task (an embedded node's own clients; no per-address limit applies).
//!
//! - [`pipeline`]: the ordering rules of one connection's requests, as a state machine without I/O.
//! - [`connection`]: the task that drives it: decoding, executing reads, encoding replies.
//! - [`routing`]: where proposals go (local Raft, the link to the leader, or wait for a leader).
//! - [`forward`]: the write path: proposing locally, forwarding to the leader, session touches.
//! - [`fourlw`]: the four-letter words (`ruok`, `srvr`, `mntr`, ...).
//! - [`ctx`]: what the client side's tasks share.
//! - [`tls`]: the TLS port's configuration, reloaded when its files change; client certificate subjects.
//! - [`sasl`]: SASL DIGEST-MD5 logins and the users file.
//!
//! The client side is the top layer of the server: it uses cluster management (`crate::cluster`),
//! the Raft handle (`crate::raft::handle`) and the transport's links, and nothing uses it but the
//! node's wiring.
//!
//! Descriptors: a connection accepted while this process's open descriptors are within `fd-reserve`
//! of its limit is closed at once (counted with reason `descriptors`), so storage and peers always
//! find a free descriptor; an `accept` that fails (EMFILE) is retried after 100 ms, not in a spin.
//!
//! Left out: read-only mode, port unification (TLS and plain on one port).

pub mod connection;
pub mod ctx;
pub mod forward;
pub mod fourlw;
pub mod pipeline;
pub mod routing;
pub mod sasl;
pub mod tls;

use crate::shared::ClientAddr;
use ctx::ClientCtx;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Whether this process's open file descriptors reached `limit - reserve`. `fd` is the descriptor just
/// accepted: the kernel hands out the lowest free number, so at least `fd` descriptors are open; near
/// the line the open ones are counted.
fn descriptors_short(fd: u64, limit: u64, reserve: u64) -> bool {
    if limit == 0 {
        return false;
    }
    let line = limit.saturating_sub(reserve);
    fd >= line || (fd + reserve >= line && fourlw::open_files() >= line)
}

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections on the plain port until `shutdown` turns true.
pub async fn serve(listener: TcpListener, ctx: Arc<ClientCtx>, shutdown: watch::Receiver<bool>) {
    serve_on(listener, None, ctx, shutdown).await
}

/// Accepts connections on the TLS port until `shutdown` turns true; each does a TLS handshake first.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<tls::Reloading>,
    ctx: Arc<ClientCtx>,
    shutdown: watch::Receiver<bool>,
) {
    serve_on(listener, Some(tls), ctx, shutdown).await
}

async fn serve_on(
    listener: TcpListener,
    tls: Option<Arc<tls::Reloading>>,
    ctx: Arc<ClientCtx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let fd_limit = fourlw::max_open_files();
    let fd_reserve = ctx.node.shared.config.fd_reserve;
    let mut last_short_log: Option<std::time::Instant> = None;
    let mut last_accept_log: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Running out of file descriptors must not kill the listener: wait and retry.
                if last_accept_log.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10))
                {
                    last_accept_log = Some(std::time::Instant::now());
                    tracing::warn!(error = %e, "accept failed; retrying every 100 ms (logged at most every 10 s)");
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        {
            use std::os::fd::AsRawFd;
            if descriptors_short(stream.as_raw_fd() as u64, fd_limit, fd_reserve) {
                drop(stream);
                ctx.node
                    .shared
                    .stats
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                ctx.node
                    .shared
                    .metrics
                    .rejected(crate::metrics::Rejection::descriptors);
                if last_short_log.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10))
                {
                    last_short_log = Some(std::time::Instant::now());
                    tracing::warn!(
                        %peer,
                        limit = fd_limit,
                        reserve = fd_reserve,
                        "connection refused: open file descriptors near the limit; the rest are kept for storage and peers (raise `ulimit -n` or close idle clients; logged at most every 10 s)"
                    );
                }
                continue;
            }
        }
        let limit = ctx.node.shared.config.max_connections_per_ip;
        {
            let mut conns = ctx.node.shared.conns.lock();
            let n = conns.per_ip.entry(peer.ip()).or_insert(0);
            if limit > 0 && *n >= limit {
                ctx.node
                    .shared
                    .stats
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                ctx.node
                    .shared
                    .metrics
                    .rejected(crate::metrics::Rejection::per_ip_limit);
                tracing::warn!(
                    %peer,
                    limit,
                    "connection refused: too many connections from this address (setting max-connections-per-ip)"
                );
                continue;
            }
            *n += 1;
        }
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let tls = tls.as_ref().map(|t| t.current());
        tokio::spawn(async move {
            match tls {
                None => {
                    connection::run(
                        Box::new(stream),
                        ClientAddr::Tcp(peer),
                        ctx.clone(),
                        shutdown,
                    )
                    .await
                }
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => {
                            let mut auth = Vec::new();
                            if let Some(cert) =
                                s.get_ref().1.peer_certificates().and_then(|c| c.first())
                            {
                                match tls::subject_dn(cert) {
                                    Some(dn) => auth.push(roster_proto::Id::new("x509", &dn)),
                                    None => {
                                        tracing::warn!(%peer, "client certificate verified but its subject does not parse: no x509 identity")
                                    }
                                }
                            }
                            connection::run_with(
                                Box::new(s),
                                ClientAddr::Tcp(peer),
                                auth,
                                ctx.clone(),
                                shutdown,
                            )
                            .await
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "TLS handshake failed (client does not trust the certificate, speaks plain ZooKeeper to the TLS port, or has no valid client certificate)")
                        }
                        Err(_) => {
                            tracing::info!(%peer, "TLS handshake timed out after 10 s; closing")
                        }
                    }
                }
            }
            let mut conns = ctx.node.shared.conns.lock();
            if let Some(n) = conns.per_ip.get_mut(&peer.ip()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    conns.per_ip.remove(&peer.ip());
                }
            }
        });
    }
}

/// The bytes an in-process connection buffers in each direction before a writer waits for its reader.
const IN_PROCESS_BUFFER: usize = 256 * 1024;

/// Opens in-process client connections to this node: each is a `tokio::io::duplex` pipe whose server
/// end runs the connection task a TCP client gets (same handshake, sessions, ordering, limits on frames
/// and watches), shown as `in-process` by `cons` and the admin API. Cheap to clone.
#[derive(Clone)]
pub struct InProcess {
    ctx: Arc<ClientCtx>,
    shutdown: watch::Receiver<bool>,
    runtime: tokio::runtime::Handle,
}

impl InProcess {
    /// A connector for the node behind `ctx`; connection tasks run on `runtime` (the node's), whatever
    /// runtime the client lives on.
    pub fn new(
        ctx: Arc<ClientCtx>,
        shutdown: watch::Receiver<bool>,
        runtime: tokio::runtime::Handle,
    ) -> InProcess {
        InProcess {
            ctx,
            shutdown,
            runtime,
        }
    }

    /// Opens a connection; the returned stream is the client's end. Fails once the node is shutting
    /// down (a client then tries its other servers, or waits).
    pub fn connect(&self) -> std::io::Result<tokio::io::DuplexStream> {
        if *self.shutdown.borrow() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "the embedded Roster node is shut down",
            ));
        }
        let (client, server) = tokio::io::duplex(IN_PROCESS_BUFFER);
        let ctx = self.ctx.clone();
        let shutdown = self.shutdown.clone();
        self.runtime.spawn(connection::run(
            Box::new(server),
            ClientAddr::InProcess,
            ctx,
            shutdown,
        ));
        Ok(client)
    }
}
