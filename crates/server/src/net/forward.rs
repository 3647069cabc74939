//! The write path of client requests: writes (including session creation and close) and `sync`
//! barriers proposed to the local Raft or sent to the leader, and session touches of a follower's
//! connections sent to the leader in batches. Which way a proposal goes is decided by
//! [`super::routing`]; in which order, by [`super::pipeline`].
//!
//! On the leader a write is proposed to the local Raft. On a follower it is sent over one ordered link
//! to the leader (frames leave in call order and the leader proposes them in arrival order), and the
//! answer is handed to the client only once this node's state machine has applied the write's zxid,
//! so watch events still precede the reply and a read after the write sees it. The leader stamps its
//! own clock into forwarded transactions (`Txn::time`), as into its own clients'.
//!
//! `sync` is a read barrier: the leader's read index (`RaftHandle::read_index`, which confirms
//! leadership with a quorum), then wait until this node applied up to it.
//!
//! Left out: resending a write that was in flight when the leader changed (its fate is unknown; the
//! connection is closed), read-only mode.

use super::ctx::ClientCtx;
use crate::error::Error;
use crate::raft::handle::RaftHandle;
pub use crate::reply::WriteInFlight;
use crate::reply::{Outcome, WriteReply};
use crate::transport::link::{self, Link};
use crate::transport::wire::{PeerError, PeerRequest, PeerResponse};
use roster_proto::{Response, SyncResponse};
use roster_state::Txn;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What a connection asks the cluster to do.
pub enum Proposal {
    /// A replicated write.
    Txn(Txn),
    /// A `sync` of this path: a read barrier.
    Sync(String),
}

/// How long a write may wait for its result.
const WRITE_TTL: Duration = Duration::from_secs(60);

fn sync_reply(index: u64, path: String) -> WriteReply {
    WriteReply::new(
        index as i64,
        Outcome::Response(Ok(Response::Sync(SyncResponse { path }))),
    )
}

/// Proposes on this node, the leader.
pub async fn propose_local(raft: RaftHandle, p: Proposal) -> Result<WriteInFlight, Error> {
    match p {
        Proposal::Txn(txn) => Ok(Box::pin(raft.propose(txn).await?)),
        Proposal::Sync(path) => Ok(Box::pin(async move {
            let index = raft.read_index().await?;
            raft.wait_applied(index, WRITE_TTL).await?;
            Ok(sync_reply(index, path))
        })),
    }
}

/// Sends a proposal over the ordered link to the leader.
pub fn send_to_leader(
    raft: RaftHandle,
    link: Link,
    leader: u64,
    p: Proposal,
) -> Result<WriteInFlight, Error> {
    let (req, path) = match p {
        Proposal::Txn(txn) => (PeerRequest::Write(txn), None),
        Proposal::Sync(path) => (PeerRequest::ReadIndex, Some(path)),
    };
    let rx = link.send(req).map_err(|e| Error::Peer(e.to_string()))?;
    Ok(Box::pin(async move {
        let addr = format!("leader {leader}");
        match link::wait(rx, WRITE_TTL, &addr)
            .await
            .map_err(|e| Error::Peer(e.to_string()))?
        {
            PeerResponse::Written(reply) => {
                raft.wait_applied(reply.zxid.max(0) as u64, WRITE_TTL)
                    .await?;
                Ok(reply)
            }
            PeerResponse::ReadIndex(index) => {
                raft.wait_applied(index, WRITE_TTL).await?;
                Ok(sync_reply(index, path.unwrap_or_default()))
            }
            PeerResponse::Err(PeerError::NotLeader(l)) => Err(Error::NotLeader(l)),
            PeerResponse::Err(e) => Err(Error::Peer(format!("{addr}: {e}"))),
            other => Err(Error::Peer(format!("{addr}: unexpected answer {other:?}"))),
        }
    }))
}

/// On a follower, sends the leader the sessions its connections touched, every third of the smallest
/// session timeout, each with the time it has left on this node (so the wait for the batch does not
/// make its expiry late).
pub async fn touch_loop(ctx: Arc<ClientCtx>, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_millis(
        (ctx.node.shared.config.min_session_timeout_ms as u64 / 3).clamp(50, 2_000),
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: HashMap<i64, i64> = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Some(leader) = ctx.node.raft.leader() else {
            continue;
        };
        if leader == ctx.node.identity.node_id {
            sent.clear();
            ctx.node.shared.conns.lock().departed.clear();
            continue;
        }
        // Sessions whose connection closed since the last batch: put back if the batch is not delivered.
        let departed: HashMap<i64, i32>;
        // (session, deadline here, timeout): turned into time left just before sending.
        let due: Vec<(i64, i64, i32)> = {
            let mut conns = ctx.node.shared.conns.lock();
            let tracker = ctx.node.shared.tracker.lock();
            let mut batch = Vec::new();
            let mut seen = HashMap::new();
            // The sessions of open connections, and those whose connection closed since the last
            // batch (their last packets, after that batch, would otherwise never reach the leader,
            // which would then expire them up to a batch interval early).
            departed = std::mem::take(&mut conns.departed);
            let open = conns.by_session.iter().filter_map(|(session, conn)| {
                conns
                    .by_id
                    .get(conn)
                    .map(|info| (*session, info.timeout_ms))
            });
            for (session, timeout_ms) in open.chain(departed.iter().map(|(s, t)| (*s, *t))) {
                if seen.contains_key(&session) {
                    continue;
                }
                let deadline = tracker.deadline(session).unwrap_or(0);
                if sent.get(&session).is_none_or(|d| deadline > *d) {
                    batch.push((session, deadline, timeout_ms));
                }
                seen.insert(session, deadline);
            }
            sent = seen;
            batch
        };
        // The time left here, not the whole timeout: the leader's deadline is then this node's (last
        // packet + timeout) plus the batch's transit, not plus the wait for the next batch (up to a
        // third of the minimum timeout). Counted from now, after the tables were read and their locks
        // released, so the time spent gathering thousands of sessions is not added to their expiry.
        let now = crate::shared::now_ms();
        let batch: Vec<(i64, i32)> = due
            .into_iter()
            .map(|(session, deadline, timeout_ms)| {
                let remaining = (deadline - now).clamp(0, timeout_ms.max(0) as i64);
                (session, remaining as i32)
            })
            .collect();
        if batch.is_empty() {
            continue;
        }
        let link = ctx.routes.borrow().link.clone();
        match link.filter(|l| l.remote_node() == leader) {
            Some(link) => {
                if let Err(e) = link.call(PeerRequest::Touch(batch), every).await {
                    tracing::debug!(error = %e, "session touches not delivered");
                    sent.clear();
                    ctx.node.shared.conns.lock().departed.extend(departed);
                }
            }
            None => {
                tracing::debug!(
                    leader,
                    "session touches not delivered: no link to the leader yet"
                );
                sent.clear();
                ctx.node.shared.conns.lock().departed.extend(departed);
            }
        }
    }
}
