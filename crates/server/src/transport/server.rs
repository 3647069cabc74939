//! The listening side of the peer port: accepts connections, checks each hello (same cluster id, and
//! the node id the dialer expects is ours), then hands the connection to the layer above as a
//! [`PeerConn`]: a stream of requests in arrival order and a way to answer them by id, in any order.
//!
//! One writer task per connection sends the answers, batching what is queued before each flush.
//!
//! A hello without a cluster id is accepted only for administration (a joining node asking for the
//! cluster id, or the `roster cluster` tool): on such a connection every request that is not
//! [`PeerRequest::is_admin`] is refused here, before the layer above sees it.
//!
//! With TLS (`super::tls`) the handshake comes first and gives the dialer's [`PeerRole`]: an
//! administrator's certificate may send only what `roster cluster` needs ([`tool_request`]);
//! anything else is refused here. (Which address a node certificate may join with is the cluster
//! layer's check: it needs the membership.)
//!
//! A dialer gets 10 s to send its hello, of at most 64 KiB; frame buffers grow as bytes arrive.
//!
//! Left out: what a request means (the cluster layer's `cluster::service`), per-peer rate limits.

use super::tls::{PeerRead, PeerRole, PeerTls, PeerWrite};
use super::wire::{
    read_frame, read_msg, write_msg, Hello, LinkKind, PeerError, PeerMsg, PeerRequest, PeerResponse,
};
use crate::format::Formats;
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// How long a dialer has to send its hello.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The largest hello accepted, bytes (a hello is a few hundred).
const HELLO_MAX: usize = 64 << 10;

/// Who this node is, for the hello check.
#[derive(Clone, Debug)]
pub struct LocalIdentity {
    /// The cluster id.
    pub cluster_id: String,
    /// This node's id.
    pub node_id: u64,
    /// The cluster's format version (a dialer that cannot speak it is refused) and where to note
    /// what each dialer announced.
    pub formats: Arc<Formats>,
}

/// Sends answers on one connection, by request id (cheap to clone; answers to a closed connection are
/// dropped).
#[derive(Clone)]
pub struct Responder(mpsc::UnboundedSender<PeerMsg>);

impl Responder {
    /// Answers request `id`.
    pub fn send(&self, id: u64, body: PeerResponse) {
        let _ = self.0.send(PeerMsg::Response { id, body });
    }
}

/// One accepted peer connection, past its hello.
pub struct PeerConn {
    /// The dialer's hello.
    pub hello: Hello,
    /// The format version spoken on this connection (`crate::format::negotiate`).
    pub version: u8,
    /// Who the dialer is, by its certificate ([`PeerRole::Plain`] without TLS).
    pub role: PeerRole,
    reader: BufReader<PeerRead>,
    out: Responder,
    writer: tokio::task::JoinHandle<()>,
}

/// What ended a connection's stream of requests.
#[derive(Debug)]
pub enum Ended {
    /// The dialer closed it between frames.
    Closed,
    /// It broke (reset, garbage, a frame of another version).
    Broken(std::io::Error),
}

impl PeerConn {
    /// The answer channel of this connection.
    pub fn responder(&self) -> Responder {
        self.out.clone()
    }

    /// Whether the dialer named no cluster id (administration only).
    pub fn admin_only(&self) -> bool {
        self.hello.cluster_id.is_none()
    }

    /// The next request, in arrival order; `Err` once the connection ended. Requests an admin-only
    /// connection may not send are answered here and skipped.
    pub async fn next(&mut self) -> Result<(u64, PeerRequest), Ended> {
        loop {
            match read_msg(&mut self.reader).await {
                Ok(Some(PeerMsg::Request { id, body })) => {
                    if let Err(reason) = allowed(&self.role, self.admin_only(), &body) {
                        tracing::warn!(from = self.hello.from, request = request_name(&body), %reason, "peer request refused");
                        self.out
                            .send(id, PeerResponse::Err(PeerError::Refused(reason)));
                        continue;
                    }
                    return Ok((id, body));
                }
                Ok(_) => return Err(Ended::Closed),
                Err(e) => return Err(Ended::Broken(e)),
            }
        }
    }

    /// Flushes what was answered and closes the connection. Every [`Responder`] of it must be dropped
    /// first, or this waits for them.
    pub async fn close(self) {
        drop(self.out);
        let _ = self.writer.await;
    }
}

/// Whether `req` is one the `roster cluster` tool sends (all an administrator certificate may do).
pub fn tool_request(req: &PeerRequest) -> bool {
    matches!(
        req,
        PeerRequest::ClusterInfo
            | PeerRequest::Status
            | PeerRequest::Remove { .. }
            | PeerRequest::Leave
            | PeerRequest::Reconfig { .. }
    )
}

/// A request's name for the log (never its contents: a forwarded write carries client data).
fn request_name(req: &PeerRequest) -> &'static str {
    match req {
        PeerRequest::Raft(_) => "raft",
        PeerRequest::Write(_) => "write",
        PeerRequest::ReadIndex => "read-index",
        PeerRequest::Touch(_) => "touch",
        PeerRequest::ClusterInfo => "cluster-info",
        PeerRequest::Join { .. } => "join",
        PeerRequest::Remove { .. } => "remove",
        PeerRequest::Leave => "leave",
        PeerRequest::Status => "status",
        PeerRequest::Reconfig { .. } => "reconfig",
        PeerRequest::AllocateId => "allocate-id",
    }
}

/// Whether a connection of `role` (that named no cluster id: `admin_only`) may send `req`.
fn allowed(role: &PeerRole, admin_only: bool, req: &PeerRequest) -> Result<(), String> {
    if matches!(role, PeerRole::Admin) && !tool_request(req) {
        return Err("an administrator certificate may only run `roster cluster` commands".into());
    }
    if admin_only && !req.is_admin() {
        return Err("this connection did not name a cluster id".into());
    }
    Ok(())
}

/// Accepts peer connections until `shutdown` turns true; every connection whose TLS handshake (with
/// `tls`) and hello pass is given to `serve` (which should spawn its own task).
pub async fn serve(
    listener: TcpListener,
    me: LocalIdentity,
    tls: Option<Arc<PeerTls>>,
    serve: Arc<dyn Fn(PeerConn) + Send + Sync>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                let me = me.clone();
                let serve = serve.clone();
                let tls = tls.clone();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let (rd, wr, role) = match super::tls::accept(stream, tls.as_deref()).await {
                        Ok(s) => s,
                        // Closed before saying anything: a port probe (`cluster::failover`), not an attempt.
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                            tracing::debug!(%addr, error = %e, "peer connection closed before the TLS handshake");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(%addr, error = %e, "peer connection refused: it did not authenticate with a certificate of this cluster's CA");
                            return;
                        }
                    };
                    match handshake(rd, wr, role, &me, stop).await {
                        Ok(Some(conn)) => serve(conn),
                        Ok(None) => {}
                        Err(e) => tracing::debug!(%addr, error = %e, "peer connection ended"),
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "peer accept failed; retrying in 100 ms");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads and checks the hello, answers it, and starts the writer. `None` if the hello was refused.
/// The writer also ends when `shutdown` turns true: a node stopped inside a process that goes on (an
/// embedded node) must not leave its accepted connections open, or peers would keep talking to it.
async fn handshake(
    rd: PeerRead,
    mut wr: PeerWrite,
    role: PeerRole,
    me: &LocalIdentity,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<Option<PeerConn>> {
    let mut reader = BufReader::with_capacity(64 * 1024, rd);
    // A dialer that sends no hello, or a huge one, does not hold the connection or its memory.
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut reader, HELLO_MAX)).await
    {
        Ok(Ok(Some((v, PeerMsg::Hello(h))))) => (v, h),
        Ok(Ok(_)) => return Ok(None),
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            tracing::debug!("peer connection closed: no hello within {HELLO_TIMEOUT:?}");
            return Ok(None);
        }
    };
    let (theirs, hello) = hello;
    // Members must speak the cluster's version; tools and joining nodes (no cluster id) only need
    // a version in common (a join is checked against the cluster's version by the layer above).
    let floor = match hello.cluster_id {
        Some(_) => me.formats.cluster(),
        None => crate::format::BASE,
    };
    let checked = check_hello(&hello, &me.cluster_id, me.node_id)
        .and_then(|()| crate::format::negotiate(theirs, floor));
    let version = match checked {
        Ok(v) => v,
        Err(reason) => {
            tracing::warn!(from = hello.from, kind = ?hello.kind, %reason, "peer hello refused");
            // Answered in a version the dialer reads: its own when this build speaks it.
            let answer = theirs.clamp(crate::format::BASE, crate::format::CURRENT);
            write_msg(&mut wr, &PeerMsg::HelloErr(reason), answer).await?;
            let _ = wr.shutdown().await;
            return Ok(None);
        }
    };
    write_msg(
        &mut wr,
        &PeerMsg::HelloOk {
            cluster_id: me.cluster_id.clone(),
            node_id: me.node_id,
        },
        version,
    )
    .await?;
    wr.flush().await?;
    if hello.cluster_id.is_some() {
        me.formats.note_peer(hello.from, version);
    }
    tracing::debug!(from = hello.from, kind = ?hello.kind, version, "peer connected");
    let (tx, mut rx) = mpsc::unbounded_channel::<PeerMsg>();
    let writer = tokio::spawn(async move {
        let mut wr = tokio::io::BufWriter::with_capacity(64 * 1024, wr);
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = shutdown.wait_for(|s| *s) => None,
            };
            let Some(msg) = msg else { break };
            if write_msg(&mut wr, &msg, version).await.is_err() {
                return;
            }
            while let Ok(msg) = rx.try_recv() {
                if write_msg(&mut wr, &msg, version).await.is_err() {
                    return;
                }
            }
            if wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    Ok(Some(PeerConn {
        hello,
        version,
        role,
        reader,
        out: Responder(tx),
        writer,
    }))
}

fn check_hello(hello: &Hello, cluster_id: &str, me: u64) -> Result<(), String> {
    match &hello.cluster_id {
        Some(c) if c != cluster_id => {
            return Err(format!(
                "wrong cluster: this node belongs to cluster {cluster_id}, the dialer to {c}"
            ))
        }
        None if hello.kind != LinkKind::Admin => {
            return Err("a cluster id is required on this connection".into())
        }
        _ => {}
    }
    if let Some(to) = hello.to {
        if to != me {
            return Err(format!(
                "wrong node: this is node {me}, the dialer expected node {to}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(cluster_id: Option<&str>, to: Option<u64>, kind: LinkKind) -> Hello {
        Hello {
            cluster_id: cluster_id.map(str::to_string),
            from: 5,
            to,
            kind,
        }
    }

    #[test]
    fn hello_checks_cluster_and_node() {
        assert!(check_hello(&hello(Some("c"), Some(1), LinkKind::Raft), "c", 1).is_ok());
        assert!(check_hello(&hello(Some("c"), None, LinkKind::Forward), "c", 1).is_ok());
        assert!(check_hello(&hello(None, None, LinkKind::Admin), "c", 1).is_ok());
        let e = check_hello(&hello(Some("other"), Some(1), LinkKind::Raft), "c", 1).unwrap_err();
        assert!(e.contains("wrong cluster"), "{e}");
        let e = check_hello(&hello(Some("c"), Some(2), LinkKind::Raft), "c", 1).unwrap_err();
        assert!(e.contains("wrong node"), "{e}");
        assert!(check_hello(&hello(None, Some(1), LinkKind::Raft), "c", 1).is_err());
    }

    /// Sends a member's hello (or a tool's, `admin`) in a frame of `version` to a listener whose
    /// cluster runs `cluster`; its answer and the version of the answer's frame.
    async fn hello_at(version: u8, cluster: u8, admin: bool) -> (u8, PeerMsg) {
        use super::super::wire::{encode_v, read_frame, MAX_FRAME};
        use tokio::io::AsyncWriteExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = LocalIdentity {
            cluster_id: "c".into(),
            node_id: 1,
            formats: Arc::new(Formats::new(cluster)),
        };
        let (stop_tx, stop) = watch::channel(false);
        let formats = me.formats.clone();
        let task = tokio::spawn(serve(listener, me, None, Arc::new(|_conn| {}), stop));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let h = match admin {
            true => hello(None, None, LinkKind::Admin),
            false => hello(Some("c"), Some(1), LinkKind::Raft),
        };
        let frame = encode_v(&PeerMsg::Hello(h), version).unwrap();
        s.write_all(&frame).await.unwrap();
        let answer = read_frame(&mut s, MAX_FRAME).await.unwrap().unwrap();
        if !admin && matches!(answer.1, PeerMsg::HelloOk { .. }) {
            assert_eq!(
                formats.peer(5),
                Some(answer.0),
                "the dialer's version is noted"
            );
        }
        let _ = stop_tx.send(true);
        let _ = task.await;
        answer
    }

    #[tokio::test]
    async fn hellos_negotiate_the_lower_version() {
        use crate::format::{BASE, CURRENT};
        // A newer dialer is answered in this node's version, an older one in its own.
        let (v, msg) = hello_at(CURRENT + 1, BASE, false).await;
        assert!(
            matches!(msg, PeerMsg::HelloOk { node_id: 1, .. }),
            "{msg:?}"
        );
        assert_eq!(v, CURRENT);
        let (v, msg) = hello_at(BASE, BASE, false).await;
        assert!(matches!(msg, PeerMsg::HelloOk { .. }), "{msg:?}");
        assert_eq!(v, BASE);
        // Once the cluster runs a newer version than the dialer speaks, a member is refused, in a
        // frame of the dialer's version, with what to do.
        let (v, msg) = hello_at(BASE, BASE + 1, false).await;
        assert_eq!(v, BASE);
        match msg {
            PeerMsg::HelloErr(e) => assert!(e.contains("run a Roster that supports"), "{e}"),
            other => panic!("{other:?}"),
        }
        // A tool (or a joining node asking for the cluster id) is answered: it is no member.
        let (v, msg) = hello_at(BASE, BASE + 1, true).await;
        assert!(matches!(msg, PeerMsg::HelloOk { .. }), "{msg:?}");
        assert_eq!(v, BASE);
    }

    #[test]
    fn roles_limit_requests() {
        use super::super::wire::Blob;
        let vote = PeerRequest::Raft(Blob(vec![1, 2, 3]));
        // Plain (no TLS) and node certificates: everything, once a cluster id was named.
        assert!(allowed(&PeerRole::Plain, false, &vote).is_ok());
        assert!(allowed(&PeerRole::Plain, true, &vote).is_err());
        assert!(allowed(&PeerRole::Plain, true, &PeerRequest::Status).is_ok());
        // An administrator: `roster cluster` requests only, whatever its hello said.
        let e = allowed(&PeerRole::Admin, false, &vote).unwrap_err();
        assert!(e.contains("administrator"), "{e}");
        assert!(allowed(&PeerRole::Admin, false, &PeerRequest::AllocateId).is_err());
        let join = PeerRequest::Join {
            node_id: 9,
            peer_addr: "10.0.0.9:2888".into(),
        };
        assert!(allowed(&PeerRole::Admin, false, &join).is_err());
        for ok in [
            PeerRequest::Status,
            PeerRequest::Remove { node_id: 2 },
            PeerRequest::Leave,
            PeerRequest::ClusterInfo,
        ] {
            assert!(allowed(&PeerRole::Admin, true, &ok).is_ok(), "{ok:?}");
        }
        assert_eq!(request_name(&vote), "raft");
    }
}
