//! The listening side of the peer protocol: accepts connections on the peer port, checks the hello
//! (same cluster id, and the node id the dialer expects is ours) and answers requests.
//!
//! Requests are answered concurrently (each in its own task) except those whose order matters, which
//! run inline in arrival order: forwarded writes and read barriers (proposed in the order a follower
//! sent them), snapshot pieces (assembled per connection, installed at `SnapshotEnd`), and pipelined
//! AppendEntries (fed to `Raft::stream_append` in arrival order, see `AppendPipeline`).
//!
//! Installing a snapshot closes this node's client connections: no watch fired for what the snapshot
//! changed, and reconnecting clients re-register their watches with the zxid they last saw.
//!
//! A hello without a cluster id is accepted only for administration (a joining node asking for the
//! cluster id, or the `roster cluster` tool); such a connection can do nothing else.
//!
//! When a Raft or heartbeat connection from the current leader ends, [`super::failover`] checks whether
//! the leader's process is gone.
//!
//! Left out: per-peer rate limits, TLS.

use super::wire::{
    read_msg, write_msg, Hello, LinkKind, PeerError, PeerMsg, PeerRequest, PeerResponse,
};
use crate::node::NodeCtx;
use crate::raft::types::{Command, SnapshotMeta, TypeConfig};
use crate::shared::now_ms;
use futures::StreamExt;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::impls::ProgressResponder;
use openraft::raft::AppendEntriesRequest;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Accepts peer connections until `shutdown` turns true.
pub async fn serve(listener: TcpListener, ctx: Arc<NodeCtx>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_conn(stream, ctx, shutdown).await {
                        tracing::debug!(%addr, error = %e, "peer connection ended");
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

struct Incoming {
    vote: VoteOf<TypeConfig>,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

async fn serve_conn(
    stream: TcpStream,
    ctx: Arc<NodeCtx>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let hello = match read_msg(&mut rd).await? {
        Some(PeerMsg::Hello(h)) => h,
        _ => return Ok(()),
    };
    let me = ctx.identity.node_id;
    if let Err(reason) = check_hello(&hello, &ctx.identity.cluster_id, me) {
        tracing::warn!(from = hello.from, kind = ?hello.kind, %reason, "peer hello refused");
        write_msg(&mut wr, &PeerMsg::HelloErr(reason)).await?;
        let _ = wr.shutdown().await;
        return Ok(());
    }
    let admin_only = hello.cluster_id.is_none();
    write_msg(
        &mut wr,
        &PeerMsg::HelloOk {
            cluster_id: ctx.identity.cluster_id.clone(),
            node_id: me,
        },
    )
    .await?;
    tracing::debug!(from = hello.from, kind = ?hello.kind, "peer connected");

    let (tx, mut rx) = mpsc::unbounded_channel::<PeerMsg>();
    let writer = tokio::spawn(async move {
        let mut wr = tokio::io::BufWriter::with_capacity(64 * 1024, wr);
        while let Some(msg) = rx.recv().await {
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
    let mut snapshot: Option<Incoming> = None;
    let mut appends: Option<AppendPipeline> = None;
    let mut ended = Ok(());
    loop {
        let msg = tokio::select! {
            m = read_msg(&mut rd) => m,
            _ = shutdown.changed() => break,
        };
        let (id, body) = match msg {
            Ok(Some(PeerMsg::Request { id, body })) => (id, body),
            other => {
                // The dialer went away (EOF, reset or garbage). If it was our leader's replication or
                // heartbeat connection, check whether its process is gone (`failover`).
                if matches!(hello.kind, LinkKind::Raft | LinkKind::Heartbeat) && !admin_only {
                    super::failover::link_lost(&ctx, hello.from);
                }
                if let Err(e) = other {
                    ended = Err(e);
                }
                break;
            }
        };
        let respond = {
            let tx = tx.clone();
            move |body: PeerResponse| {
                let _ = tx.send(PeerMsg::Response { id, body });
            }
        };
        let is_admin = matches!(
            body,
            PeerRequest::ClusterInfo
                | PeerRequest::Join { .. }
                | PeerRequest::Remove { .. }
                | PeerRequest::Leave
                | PeerRequest::Status
                | PeerRequest::Reconfig { .. }
        );
        if admin_only && !is_admin {
            respond(PeerResponse::Err(PeerError::Refused(
                "this connection did not name a cluster id".into(),
            )));
            continue;
        }
        match body {
            // Ordered: fed to this connection's stream_append pipeline in arrival order.
            PeerRequest::StreamAppend(rpc) => {
                let rpc = match &appends {
                    Some(p) => match p.push(id, rpc) {
                        Ok(()) => continue,
                        Err(rpc) => rpc,
                    },
                    None => rpc,
                };
                // No pipeline yet, or the last one ended (after a refusal): start another.
                let p = AppendPipeline::start(&ctx, tx.clone());
                if let Err(_rpc) = p.push(id, rpc) {
                    respond(PeerResponse::Err(PeerError::Raft("raft shut down".into())));
                }
                appends = Some(p);
            }
            // Ordered: proposed here, in arrival order; the answer comes when applied.
            PeerRequest::Write(mut txn) => {
                // Time is the leader's: ctime/mtime and session times never depend on which node the
                // client happened to use.
                txn.time = now_ms();
                if !ctx.raft.is_leader() {
                    respond(PeerResponse::Err(PeerError::NotLeader(
                        ctx.raft.metrics().borrow_watched().current_leader,
                    )));
                    continue;
                }
                let (responder, result) = ProgressResponder::complete_only();
                if let Err(e) = ctx.raft.write(Command(txn)).responder(responder).await {
                    respond(PeerResponse::Err(PeerError::Raft(e.to_string())));
                    continue;
                }
                tokio::spawn(async move {
                    respond(match result.await {
                        Ok(Ok(r)) => PeerResponse::Written(r.data),
                        Ok(Err(e)) => PeerResponse::Err(PeerError::Raft(e.to_string())),
                        Err(_) => PeerResponse::Err(PeerError::Raft("raft shut down".into())),
                    })
                });
            }
            PeerRequest::ReadIndex => {
                let raft = ctx.raft.clone();
                tokio::spawn(async move {
                    respond(match super::forward::read_index(&raft).await {
                        Ok(index) => PeerResponse::ReadIndex(index),
                        Err(e) => PeerResponse::Err(PeerError::Raft(e)),
                    })
                });
            }
            PeerRequest::SnapshotBegin { vote, meta, len } => {
                tracing::info!(from = hello.from, bytes = len, meta = ?meta.signature(), "receiving snapshot");
                snapshot = Some(Incoming {
                    vote,
                    meta,
                    data: Vec::with_capacity(len.min(1 << 30) as usize),
                });
                respond(PeerResponse::Ack);
            }
            PeerRequest::SnapshotChunk { offset, data } => match &mut snapshot {
                Some(s) if s.data.len() as u64 == offset => {
                    s.data.extend_from_slice(&data);
                    respond(PeerResponse::Ack);
                }
                _ => respond(PeerResponse::Err(PeerError::Refused(format!(
                    "snapshot chunk at {offset} out of order"
                )))),
            },
            PeerRequest::SnapshotEnd => match snapshot.take() {
                Some(s) => {
                    let applied = ctx
                        .raft
                        .metrics()
                        .borrow_watched()
                        .last_applied
                        .map(|l| l.index);
                    let replaces = s.meta.last_log_id.map(|l| l.index) > applied;
                    let snap = SnapshotOf::<TypeConfig, Vec<u8>> {
                        meta: s.meta,
                        snapshot: s.data,
                    };
                    respond(match ctx.raft.install_full_snapshot(s.vote, snap).await {
                        Ok(r) => {
                            ctx.cluster
                                .last_leader_contact
                                .store(now_ms(), Ordering::Relaxed);
                            // The state was replaced wholesale, so no watch fired for what changed.
                            // Clients reconnect (keeping their sessions) and re-register their watches
                            // with the zxid they last saw, which fires what they missed.
                            let conns = ctx.shared.conns.lock();
                            if replaces {
                                tracing::info!(
                                    connections = conns.by_id.len(),
                                    "snapshot installed: closing client connections so they re-register their watches"
                                );
                            }
                            for c in conns.by_id.values().filter(|_| replaces) {
                                let _ = c.tx.send(crate::shared::ConnMsg::Close(
                                    "state replaced by a snapshot from the leader",
                                ));
                            }
                            PeerResponse::Snapshot(r)
                        }
                        Err(e) => PeerResponse::Err(PeerError::Raft(e.to_string())),
                    });
                }
                None => respond(PeerResponse::Err(PeerError::Refused(
                    "snapshot end without a beginning".into(),
                ))),
            },
            other => {
                let ctx = ctx.clone();
                tokio::spawn(async move { respond(handle(&ctx, other).await) });
            }
        }
    }
    // The append pipeline's task holds a sender of `tx`: end its input so it finishes, or the writer
    // would wait for it forever.
    drop(appends);
    drop(tx);
    let _ = writer.await;
    ended
}

/// The follower's end of one connection's pipelined AppendEntries stream: requests go to
/// `Raft::stream_append` in arrival order, and its results, which come in the same order, answer the
/// request ids queued beside them. After a result that ends openraft's stream (a conflict, a higher
/// vote, a stopped Raft) the pipeline is over; requests queued behind it are answered with an error
/// and the next request starts a new pipeline (the leader restarts its stream from what was
/// acknowledged, so a stale request that still reaches Raft is harmless: AppendEntries from the
/// same leader is idempotent).
struct AppendPipeline {
    requests: mpsc::UnboundedSender<AppendEntriesRequest<TypeConfig>>,
    ids: mpsc::UnboundedSender<u64>,
}

impl AppendPipeline {
    fn start(ctx: &Arc<NodeCtx>, out: mpsc::UnboundedSender<PeerMsg>) -> AppendPipeline {
        let (requests, req_rx) = mpsc::unbounded_channel();
        let (ids, mut id_rx) = mpsc::unbounded_channel::<u64>();
        let input =
            futures::stream::unfold(
                req_rx,
                |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
            );
        let results = ctx.raft.stream_append(input);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut results = std::pin::pin!(results);
            while let Some(r) = results.next().await {
                let Some(id) = id_rx.recv().await else { break };
                let go_on = matches!(r, Ok(Ok(_)));
                if go_on {
                    ctx.cluster
                        .last_leader_contact
                        .store(now_ms(), Ordering::Relaxed);
                }
                let body = PeerResponse::StreamAppend(r.map_err(|fatal| fatal.to_string()));
                if out.send(PeerMsg::Response { id, body }).is_err() || !go_on {
                    break;
                }
            }
            // Over: answer whatever is still queued so the leader does not wait for it.
            id_rx.close();
            while let Some(id) = id_rx.recv().await {
                let body = PeerResponse::Err(PeerError::Refused(
                    "the append stream ended before this request".into(),
                ));
                let _ = out.send(PeerMsg::Response { id, body });
            }
        });
        AppendPipeline { requests, ids }
    }

    /// Queues request `id`; gives it back if this pipeline is over.
    fn push(
        &self,
        id: u64,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> Result<(), AppendEntriesRequest<TypeConfig>> {
        if self.ids.is_closed() || self.requests.is_closed() || self.ids.send(id).is_err() {
            return Err(rpc);
        }
        self.requests.send(rpc).map_err(|e| e.0)
    }
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

async fn handle(ctx: &Arc<NodeCtx>, req: PeerRequest) -> PeerResponse {
    let err = |e: String| PeerResponse::Err(PeerError::Raft(e));
    match req {
        PeerRequest::StreamAppend(_) => PeerResponse::Err(PeerError::Refused(
            "stream appends are answered by the connection's pipeline".into(),
        )),
        PeerRequest::AppendEntries(rpc) => match ctx.raft.append_entries(rpc).await {
            Ok(r) => {
                if r.is_success() {
                    ctx.cluster
                        .last_leader_contact
                        .store(now_ms(), Ordering::Relaxed);
                }
                PeerResponse::AppendEntries(r)
            }
            Err(e) => err(e.to_string()),
        },
        PeerRequest::Vote(rpc) => match ctx.raft.vote(rpc.clone()).await {
            Ok(resp) => {
                super::failover::vote_answered(ctx, &rpc, &resp);
                PeerResponse::Vote(resp)
            }
            Err(e) => err(e.to_string()),
        },
        PeerRequest::PreVote(rpc) => ctx
            .raft
            .pre_vote(rpc)
            .await
            .map(PeerResponse::Vote)
            .unwrap_or_else(|e| err(e.to_string())),
        PeerRequest::Touch(list) => {
            if ctx.raft.is_leader() {
                let live: Vec<(i64, i32)> = {
                    let db = ctx.shared.db.lock();
                    list.into_iter()
                        .filter(|(id, _)| db.state.session(*id).is_some())
                        .collect()
                };
                for (id, timeout) in live {
                    ctx.shared.touch(id, timeout);
                }
                PeerResponse::Ack
            } else {
                PeerResponse::Err(PeerError::NotLeader(
                    ctx.raft.metrics().borrow_watched().current_leader,
                ))
            }
        }
        PeerRequest::ClusterInfo => PeerResponse::ClusterInfo {
            cluster_id: ctx.identity.cluster_id.clone(),
        },
        PeerRequest::Status => PeerResponse::Status(super::status(ctx)),
        PeerRequest::Join { node_id, peer_addr } => {
            super::membership::join(ctx, node_id, peer_addr).await
        }
        PeerRequest::Remove { node_id } => super::membership::remove(ctx, node_id).await,
        PeerRequest::Leave => super::membership::remove(ctx, ctx.identity.node_id).await,
        PeerRequest::Reconfig { joining, leaving } => {
            super::reconfig::handle_peer(ctx, joining, leaving).await
        }
        PeerRequest::Write(_)
        | PeerRequest::ReadIndex
        | PeerRequest::SnapshotBegin { .. }
        | PeerRequest::SnapshotChunk { .. }
        | PeerRequest::SnapshotEnd => {
            PeerResponse::Err(PeerError::Refused("handled inline".into()))
        }
    }
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
