//! Answers what other nodes and tools ask on the peer port, once the transport accepted the connection
//! (`crate::transport::server`): Raft RPCs go to the Raft layer's receiving end (`raft::rpc::Inbound`)
//! in arrival order; forwarded writes and read barriers are proposed in arrival order (the follower's
//! order); session touches, status, joins, removals and reconfigs are answered concurrently.
//!
//! A join must come from a certificate that names the address it announces (the joining node's own),
//! or, forwarded, from the member that forwards it (`join_allowed`); without peer TLS every join is
//! allowed.
//!
//! When a Raft or heartbeat connection from the current leader ends, [`super::failover`] checks whether
//! the leader's process is gone.
//!
//! Left out: framing and hello checks (the transport's), what a Raft RPC does (the Raft layer's).

use super::ctx::NodeCtx;
use crate::error::Error;
use crate::raft::rpc::{Inbound, OnVote, VoteSeen};
use crate::reply::{WriteInFlight, WriteReply};
use crate::shared::now_ms;
use crate::transport::server::{Ended, PeerConn, Responder};
use crate::transport::tls::PeerRole;
use crate::transport::wire::{LinkKind, PeerError, PeerRequest, PeerResponse};
use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Serves one accepted peer connection until it ends.
pub async fn serve(ctx: Arc<NodeCtx>, mut conn: PeerConn) {
    let hello = conn.hello.clone();
    let role = conn.role.clone();
    let out = conn.responder();
    let on_vote: OnVote = {
        let ctx = ctx.clone();
        Arc::new(move |seen: VoteSeen| super::failover::vote_answered(&ctx, seen))
    };
    let mut raft = Inbound::new(
        ctx.raft.clone(),
        ctx.shared.clone(),
        on_vote,
        out.clone(),
        hello.from,
    );
    // Forwarded writes in flight, answered by one task for this connection (started by the first).
    let mut written: Option<mpsc::UnboundedSender<(u64, WriteInFlight)>> = None;
    let ended = loop {
        let (id, body) = match conn.next().await {
            Ok(r) => r,
            Err(e) => break e,
        };
        // A node that cannot speak the cluster's format version could never receive its log.
        if matches!(body, PeerRequest::Join { .. } | PeerRequest::AllocateId) {
            let cluster = ctx.shared.formats.cluster();
            if conn.version < cluster {
                let reason = format!(
                    "the cluster runs format version {cluster} and the joining node only speaks \
                     up to {}: run a Roster that supports format {cluster} on it \
                     (docs/operations.md, \"Upgrading\")",
                    conn.version
                );
                tracing::warn!(from = hello.from, %reason, "join refused");
                out.send(id, PeerResponse::Err(PeerError::Refused(reason)));
                continue;
            }
        }
        match body {
            // Ordered by the Raft layer (stream appends, snapshot pieces).
            PeerRequest::Raft(blob) => raft.handle(id, &blob).await,
            // Ordered: proposed here, in arrival order; the answer comes when applied.
            PeerRequest::Write(mut txn) => {
                // Time is the leader's: ctime/mtime and session times never depend on which node the
                // client happened to use.
                txn.time = now_ms();
                if !ctx.raft.is_leader() {
                    out.send(
                        id,
                        PeerResponse::Err(PeerError::NotLeader(ctx.raft.leader())),
                    );
                    continue;
                }
                match ctx.raft.propose(txn).await {
                    Ok(result) => {
                        let written = written.get_or_insert_with(|| {
                            let (tx, rx) = mpsc::unbounded_channel();
                            tokio::spawn(answer_writes(rx, out.clone()));
                            tx
                        });
                        let _ = written.send((id, Box::pin(result)));
                    }
                    Err(e) => out.send(id, PeerResponse::Err(peer_error(e))),
                }
            }
            PeerRequest::Join { node_id, peer_addr } => {
                if let Err(reason) = join_allowed(&ctx, &role, hello.from, node_id, &peer_addr) {
                    tracing::warn!(from = hello.from, node = node_id, %peer_addr, %reason, "join refused");
                    out.send(id, PeerResponse::Err(PeerError::Refused(reason)));
                    continue;
                }
                let ctx = ctx.clone();
                let out: Responder = out.clone();
                let req = PeerRequest::Join { node_id, peer_addr };
                tokio::spawn(async move { out.send(id, handle(&ctx, req).await) });
            }
            PeerRequest::Touch(list) => {
                // Answered here: the sender's node id names where its sessions were last heard from.
                out.send(id, touch(&ctx, hello.from, list));
            }
            other => {
                let ctx = ctx.clone();
                let out: Responder = out.clone();
                tokio::spawn(async move { out.send(id, handle(&ctx, other).await) });
            }
        }
    };
    // The dialer went away (EOF, reset or garbage). If it was our leader's replication or heartbeat
    // connection, check whether its process is gone (`failover`).
    if matches!(hello.kind, LinkKind::Raft | LinkKind::Heartbeat) && !conn.admin_only() {
        super::failover::link_lost(&ctx, hello.from);
    }
    if let Ended::Broken(e) = ended {
        tracing::debug!(from = hello.from, error = %e, "peer connection ended");
    }
    raft.close();
    drop(written);
    drop(out);
    conn.close().await;
}

/// Answers a connection's forwarded writes as their results come (each once applied here), until
/// the connection's requests ended and every write in flight was answered. One task for all of them,
/// woken once for all the writes an applied batch answers: a task per write cost a spawn and a
/// wake-up each.
async fn answer_writes(mut rx: mpsc::UnboundedReceiver<(u64, WriteInFlight)>, out: Responder) {
    let mut pending = FuturesUnordered::new();
    let answer = |(id, result): (u64, Result<WriteReply, Error>)| {
        let body = match result {
            Ok(r) => PeerResponse::Written(r),
            Err(e) => PeerResponse::Err(peer_error(e)),
        };
        (id, body)
    };
    loop {
        tokio::select! {
            next = rx.recv() => match next {
                Some((id, result)) => pending.push(async move { (id, result.await) }),
                None => break,
            },
            Some(done) = pending.next(), if !pending.is_empty() => {
                let (id, body) = answer(done);
                out.send(id, body);
            }
        }
    }
    while let Some(done) = pending.next().await {
        let (id, body) = answer(done);
        out.send(id, body);
    }
}

/// Whether a connection of `role` from node `from` may ask to add node `node_id` at `peer_addr`: the
/// joining node itself must hold a certificate naming that address; a join forwarded by member
/// `from` must come with the certificate of that member's address.
fn join_allowed(
    ctx: &NodeCtx,
    role: &PeerRole,
    from: u64,
    node_id: u64,
    peer_addr: &str,
) -> Result<(), String> {
    if from == node_id {
        return role.may_announce(peer_addr);
    }
    if matches!(role, PeerRole::Plain) {
        return Ok(());
    }
    match ctx.raft.status().nodes.get(&from) {
        Some(addr) => role.may_announce(addr).map_err(|e| {
            format!("a join forwarded as node {from} must come from that member's certificate: {e}")
        }),
        None => Err(format!(
            "a join forwarded as node {from}, which is not a member this node knows"
        )),
    }
}

/// Session touches a follower (`from`) sends for its connections: on the leader, each live session's
/// deadline moves on, and the follower is noted as where it was last heard from.
fn touch(ctx: &NodeCtx, from: u64, list: Vec<(i64, i32)>) -> PeerResponse {
    // The time left is counted from the report's arrival, not from when each entry is reached.
    let received = now_ms();
    if !ctx.raft.is_leader() {
        return PeerResponse::Err(PeerError::NotLeader(ctx.raft.leader()));
    }
    let live: Vec<(i64, i32)> = {
        let db = ctx.shared.db.lock();
        list.into_iter()
            .filter(|(id, _)| db.state.session(*id).is_some())
            .collect()
    };
    {
        let mut seen = ctx.shared.last_seen_on.lock();
        for (id, _) in &live {
            seen.insert(*id, from);
        }
    }
    // Each entry is the time the session had left on the follower when it sent the batch (older
    // followers sent the full timeout instead: both only ever move the deadline later).
    ctx.shared.touch_from_peer(&live, received);
    PeerResponse::Ack
}

/// A failed request as the peer protocol answers it.
fn peer_error(e: Error) -> PeerError {
    match e {
        Error::NotLeader(l) => PeerError::NotLeader(l),
        e => PeerError::Raft(e.to_string()),
    }
}

async fn handle(ctx: &Arc<NodeCtx>, req: PeerRequest) -> PeerResponse {
    match req {
        PeerRequest::ReadIndex => match ctx.raft.read_index().await {
            Ok(index) => PeerResponse::ReadIndex(index),
            Err(e) => PeerResponse::Err(peer_error(e)),
        },
        PeerRequest::ClusterInfo => PeerResponse::ClusterInfo {
            cluster_id: ctx.identity.cluster_id.clone(),
        },
        PeerRequest::Status => PeerResponse::Status(super::status::status(ctx)),
        PeerRequest::Join { node_id, peer_addr } => {
            super::membership::join(ctx, node_id, peer_addr).await
        }
        PeerRequest::Remove { node_id } => super::membership::remove(ctx, node_id).await,
        PeerRequest::Leave => super::membership::remove(ctx, ctx.identity.node_id).await,
        PeerRequest::AllocateId => super::membership::allocate_id(ctx).await,
        PeerRequest::Reconfig { joining, leaving } => {
            super::reconfig::handle_peer(ctx, joining, leaving).await
        }
        PeerRequest::Raft(_) | PeerRequest::Write(_) | PeerRequest::Touch(_) => {
            PeerResponse::Err(PeerError::Refused("handled in order".into()))
        }
    }
}
