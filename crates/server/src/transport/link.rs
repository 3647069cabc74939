//! The dialing side of a peer connection: connect, say hello, then multiplex requests by id.
//!
//! A [`Link`] is one TCP connection (TLS inside it when the node has peer certificates: `super::tls`). Frames leave in the order [`Link::send`] is called (one writer
//! task behind a channel), which is what the follower's ordered write stream relies on. Answers are
//! matched to waiting callers by request id. When the connection breaks, every waiting caller gets
//! [`LinkError::Closed`] and the link reports [`Link::is_closed`]; the owner dials a new one.
//!
//! Left out: reconnection and retries (the owners decide), keep-alives (Raft heartbeats are enough).

use super::tls::PeerTls;
use super::wire::{
    read_frame, read_msg, write_msg, Hello, PeerMsg, PeerRequest, PeerResponse, FORMAT_VERSION,
    MAX_FRAME,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::BufReader;
use tokio::sync::{mpsc, oneshot};

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// Could not connect or the hello failed for a transport reason.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The remote refused the hello (wrong cluster or node).
    #[error("refused: {0}")]
    Refused(String),
    /// The TLS handshake failed on a certificate: the remote's is not from this node's CA (or not
    /// for its address), or the remote refused this node's. Retrying with the same files does not help.
    #[error("certificate refused: {0}")]
    Certificate(String),
    /// No answer within the deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection broke before the answer came.
    #[error("connection closed: {0}")]
    Closed(String),
}

/// Milliseconds on a monotonic clock that starts with the first link of the process.
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

struct Inner {
    tx: mpsc::UnboundedSender<PeerMsg>,
    pending: Mutex<HashMap<u64, oneshot::Sender<PeerResponse>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    remote_node: u64,
    /// When a frame last arrived (the hello answer, then any answer), in [`clock_ms`].
    heard_ms: AtomicU64,
    remote_cluster: String,
    addr: String,
    version: u8,
}

/// One connection to a peer. Cheap to clone; the connection closes when the last clone is dropped.
#[derive(Clone)]
pub struct Link(Arc<Inner>);

impl Link {
    /// Dials `addr` (over TLS with `tls`), sends `hello` and waits for the answer, all within
    /// `timeout`.
    pub async fn connect(
        addr: &str,
        hello: Hello,
        timeout: Duration,
        tls: Option<&PeerTls>,
    ) -> Result<Link, LinkError> {
        match tokio::time::timeout(timeout, Self::connect_inner(addr, hello, tls)).await {
            Ok(r) => r,
            Err(_) => Err(LinkError::Unreachable(format!(
                "{addr}: no hello answer within {timeout:?}"
            ))),
        }
    }

    async fn connect_inner(
        addr: &str,
        hello: Hello,
        tls: Option<&PeerTls>,
    ) -> Result<Link, LinkError> {
        let unreachable = |e: std::io::Error| {
            if super::tls::is_certificate_failure(&e) {
                LinkError::Certificate(format!("{addr}: {e}"))
            } else {
                LinkError::Unreachable(format!("{addr}: {e}"))
            }
        };
        let (rd, mut wr) = super::tls::dial(addr, tls).await.map_err(unreachable)?;
        let mut rd = BufReader::with_capacity(64 * 1024, rd);
        let expected = hello.to;
        write_msg(&mut wr, &PeerMsg::Hello(hello), FORMAT_VERSION)
            .await
            .map_err(unreachable)?;
        tokio::io::AsyncWriteExt::flush(&mut wr)
            .await
            .map_err(unreachable)?;
        let answer = read_frame(&mut rd, MAX_FRAME).await.map_err(unreachable)?;
        let (remote_cluster, remote_node, version) = match answer {
            Some((
                version,
                PeerMsg::HelloOk {
                    cluster_id,
                    node_id,
                },
            )) if crate::format::readable(version) => (cluster_id, node_id, version),
            Some((version, PeerMsg::HelloOk { .. })) => {
                return Err(LinkError::Refused(format!(
                    "{addr} answered in format version {version}, this node speaks {} to \
                     {FORMAT_VERSION}",
                    crate::format::BASE
                )))
            }
            Some((_, PeerMsg::HelloErr(reason))) => {
                return Err(LinkError::Refused(format!("{addr}: {reason}")))
            }
            Some((_, other)) => {
                return Err(LinkError::Unreachable(format!(
                    "{addr}: unexpected answer to hello: {other:?}"
                )))
            }
            None => {
                return Err(LinkError::Unreachable(format!(
                    "{addr}: closed during hello"
                )))
            }
        };
        if expected.is_some_and(|e| e != remote_node) {
            return Err(LinkError::Refused(format!(
                "{addr} is node {remote_node}, expected {expected:?}"
            )));
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<PeerMsg>();
        let inner = Arc::new(Inner {
            tx,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            remote_node,
            heard_ms: AtomicU64::new(clock_ms()),
            remote_cluster,
            addr: addr.to_string(),
            version,
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut wr = tokio::io::BufWriter::with_capacity(64 * 1024, wr);
            use tokio::io::AsyncWriteExt;
            while let Some(msg) = rx.recv().await {
                if write_msg(&mut wr, &msg, version).await.is_err() {
                    break;
                }
                // Write out whatever is queued behind this frame in one go, then flush.
                let mut ok = true;
                while let Ok(msg) = rx.try_recv() {
                    if write_msg(&mut wr, &msg, version).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                if !ok || wr.flush().await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let weak_r = weak.clone();
        tokio::spawn(async move {
            let reason = loop {
                match read_msg(&mut rd).await {
                    Ok(Some(PeerMsg::Response { id, body })) => {
                        let Some(inner) = weak_r.upgrade() else {
                            return;
                        };
                        inner.heard_ms.store(clock_ms(), Ordering::Relaxed);
                        let waiter = inner.pending.lock().remove(&id);
                        if let Some(tx) = waiter {
                            let _ = tx.send(body);
                        }
                    }
                    Ok(Some(other)) => break format!("unexpected frame {other:?}"),
                    Ok(None) => break "closed by peer".to_string(),
                    Err(e) => break e.to_string(),
                }
            };
            if let Some(inner) = weak_r.upgrade() {
                tracing::debug!(addr = %inner.addr, node = inner.remote_node, %reason, "peer link closed");
                inner.closed.store(true, Ordering::Release);
                inner.pending.lock().clear();
            }
        });
        Ok(Link(inner))
    }

    /// Whether the connection broke.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire) || self.0.tx.is_closed()
    }

    /// Whether `other` is a clone of this very link (the same connection).
    pub fn same(&self, other: &Link) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// How long since a frame last came from the other end (an answer, or the hello answer): late
    /// answers still count as hearing from it, a dead connection hears nothing.
    pub fn silent_for(&self) -> Duration {
        Duration::from_millis(clock_ms().saturating_sub(self.0.heard_ms.load(Ordering::Relaxed)))
    }

    /// The node at the other end, as its hello answer said.
    pub fn remote_node(&self) -> u64 {
        self.0.remote_node
    }

    /// The format version spoken on this connection: the lower of this build's and the other end's
    /// (`crate::format::negotiate`).
    pub fn version(&self) -> u8 {
        self.0.version
    }

    /// The cluster id the other end announced.
    pub fn remote_cluster(&self) -> &str {
        &self.0.remote_cluster
    }

    /// Queues a request now (frames leave in call order) and returns the receiver of its answer.
    pub fn send(&self, body: PeerRequest) -> Result<oneshot::Receiver<PeerResponse>, LinkError> {
        self.send_with_id(body).map(|(_, rx)| rx)
    }

    /// Forgets a request's answer (it is no longer awaited; a late answer is dropped).
    pub fn forget(&self, id: u64) {
        self.0.pending.lock().remove(&id);
    }

    /// Like [`Link::send`], also returning the request's id (for [`Link::forget`]).
    pub fn send_with_id(
        &self,
        body: PeerRequest,
    ) -> Result<(u64, oneshot::Receiver<PeerResponse>), LinkError> {
        if self.is_closed() {
            return Err(LinkError::Closed(format!(
                "link to {} is closed",
                self.0.addr
            )));
        }
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.0.pending.lock().insert(id, tx);
        if self.0.tx.send(PeerMsg::Request { id, body }).is_err() {
            self.0.pending.lock().remove(&id);
            return Err(LinkError::Closed(format!(
                "link to {} is closed",
                self.0.addr
            )));
        }
        Ok((id, rx))
    }

    /// Sends a request and waits for its answer at most `ttl` (then forgets it: a late answer is dropped).
    pub async fn call(&self, body: PeerRequest, ttl: Duration) -> Result<PeerResponse, LinkError> {
        let (id, rx) = self.send_with_id(body)?;
        let r = wait(rx, ttl, &self.0.addr).await;
        if matches!(r, Err(LinkError::Timeout(_))) {
            self.0.pending.lock().remove(&id);
        }
        r
    }
}

/// Waits for an answer at most `ttl`.
pub async fn wait(
    rx: oneshot::Receiver<PeerResponse>,
    ttl: Duration,
    addr: &str,
) -> Result<PeerResponse, LinkError> {
    match tokio::time::timeout(ttl, rx).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => Err(LinkError::Closed(format!(
            "connection to {addr} broke before the answer"
        ))),
        Err(_) => Err(LinkError::Timeout(ttl)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::wire::LinkKind;
    use tokio::net::TcpListener;

    /// A peer that accepts one link, answers its hello and then only its first request.
    async fn answers_once() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (rd, mut wr) = s.into_split();
            let mut rd = BufReader::new(rd);
            let hello = read_frame(&mut rd, MAX_FRAME).await.unwrap();
            assert!(matches!(hello, Some((_, PeerMsg::Hello(_)))));
            let ok = PeerMsg::HelloOk {
                cluster_id: "c".into(),
                node_id: 2,
            };
            write_msg(&mut wr, &ok, FORMAT_VERSION).await.unwrap();
            let mut answered = false;
            while let Ok(Some(PeerMsg::Request { id, .. })) = read_msg(&mut rd).await {
                if !answered {
                    let answer = PeerMsg::Response {
                        id,
                        body: PeerResponse::Ack,
                    };
                    write_msg(&mut wr, &answer, FORMAT_VERSION).await.unwrap();
                    answered = true;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_link_counts_silence_from_the_last_answer_not_from_its_calls() {
        let addr = answers_once().await;
        let hello = Hello {
            cluster_id: Some("c".into()),
            from: 1,
            to: Some(2),
            kind: LinkKind::Raft,
        };
        let link = Link::connect(&addr, hello, Duration::from_secs(5), None)
            .await
            .unwrap();
        let ttl = Duration::from_secs(5);
        assert!(matches!(
            link.call(PeerRequest::Touch(vec![]), ttl).await,
            Ok(PeerResponse::Ack)
        ));
        assert!(link.silent_for() < Duration::from_secs(2), "just answered");
        // Calls that get no answer do not count as hearing from the peer.
        let pause = Duration::from_millis(300);
        let r = link.call(PeerRequest::Touch(vec![]), pause).await;
        assert!(matches!(r, Err(LinkError::Timeout(_))), "{r:?}");
        let r = link.call(PeerRequest::Touch(vec![]), pause).await;
        assert!(matches!(r, Err(LinkError::Timeout(_))), "{r:?}");
        assert!(link.silent_for() >= 2 * pause, "{:?}", link.silent_for());
        assert!(!link.is_closed(), "a silent link is still open");
    }
}
