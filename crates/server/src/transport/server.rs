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
//! Left out: what a request means (the cluster layer's `cluster::service`), per-peer rate limits, TLS.

use super::wire::{
    read_msg, write_msg, Hello, LinkKind, PeerError, PeerMsg, PeerRequest, PeerResponse,
};
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Who this node is, for the hello check.
#[derive(Clone, Debug)]
pub struct LocalIdentity {
    /// The cluster id.
    pub cluster_id: String,
    /// This node's id.
    pub node_id: u64,
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
    reader: BufReader<OwnedReadHalf>,
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
                    if self.admin_only() && !body.is_admin() {
                        self.out.send(
                            id,
                            PeerResponse::Err(PeerError::Refused(
                                "this connection did not name a cluster id".into(),
                            )),
                        );
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

/// Accepts peer connections until `shutdown` turns true; every connection whose hello passes is given
/// to `serve` (which should spawn its own task).
pub async fn serve(
    listener: TcpListener,
    me: LocalIdentity,
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
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    match handshake(stream, &me, stop).await {
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
    stream: TcpStream,
    me: &LocalIdentity,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<Option<PeerConn>> {
    let (rd, mut wr) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, rd);
    let hello = match read_msg(&mut reader).await? {
        Some(PeerMsg::Hello(h)) => h,
        _ => return Ok(None),
    };
    if let Err(reason) = check_hello(&hello, &me.cluster_id, me.node_id) {
        tracing::warn!(from = hello.from, kind = ?hello.kind, %reason, "peer hello refused");
        write_msg(&mut wr, &PeerMsg::HelloErr(reason)).await?;
        let _ = wr.shutdown().await;
        return Ok(None);
    }
    write_msg(
        &mut wr,
        &PeerMsg::HelloOk {
            cluster_id: me.cluster_id.clone(),
            node_id: me.node_id,
        },
    )
    .await?;
    tracing::debug!(from = hello.from, kind = ?hello.kind, "peer connected");
    let (tx, mut rx) = mpsc::unbounded_channel::<PeerMsg>();
    let writer = tokio::spawn(async move {
        let mut wr = tokio::io::BufWriter::with_capacity(64 * 1024, wr);
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = shutdown.wait_for(|s| *s) => None,
            };
            let Some(msg) = msg else { break };
            if write_msg(&mut wr, &msg).await.is_err() {
                return;
            }
            while let Ok(msg) = rx.try_recv() {
                if write_msg(&mut wr, &msg).await.is_err() {
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
}
