//! Client work a node cannot do alone, as the peer protocol carries it: writes (including session
//! creation and close) and `sync` barriers proposed to the local Raft or sent to the leader, and session
//! touches of a follower's connections sent to the leader in batches. Which way a proposal goes is
//! decided by [`crate::net::routing`]; in which order, by [`crate::net::pipeline`].
//!
//! On the leader a write is proposed to the local Raft. On a follower it is sent over one ordered link
//! to the leader (frames leave in call order and the leader proposes them in arrival order), and the
//! answer is handed to the client only once this node's state machine has applied the write's zxid,
//! so watch events still precede the reply and a read after the write sees it. The leader stamps its
//! own clock into forwarded transactions (`Txn::time`), as into its own clients'.
//!
//! `sync` is a read barrier: the leader's read index (`get_read_log_id(ReadIndex)`, which confirms
//! leadership with a quorum), then wait until this node applied up to it.
//!
//! Left out: resending a write that was in flight when the leader changed (its fate is unknown; the
//! connection is closed), read-only mode.

use super::link::{self, Link};
use super::wire::{PeerRequest, PeerResponse};
use crate::node::NodeCtx;
use crate::raft::types::{Command, Outcome, Raft, WriteReply};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::impls::ProgressResponder;
use roster_proto::{Response, SyncResponse};
use roster_state::Txn;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
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

/// The pending result of a proposal; resolves once this node applied it.
pub type WriteInFlight = Pin<Box<dyn Future<Output = Result<WriteReply, String>> + Send>>;

/// How long a write may wait for its result.
const WRITE_TTL: Duration = Duration::from_secs(60);

/// How long the leader keeps asking for a read index while no quorum has acknowledged it yet.
const READ_INDEX_PATIENCE: Duration = Duration::from_millis(1_000);

/// The leader's read index: the commit index, confirmed as still the leader's by a quorum
/// (openraft's `ReadIndex` policy). Right after an election or a membership change a quorum may not have
/// answered this leader yet (openraft then says `QuorumNotEnough` at once): ask again for up to
/// a second instead of failing the client's `sync`. Any other error (not the leader any
/// more, Raft stopped) is returned at once.
pub async fn read_index(raft: &Raft) -> Result<u64, String> {
    let give_up = tokio::time::Instant::now() + READ_INDEX_PATIENCE;
    loop {
        match raft
            .get_read_log_id(openraft::raft::ReadPolicy::ReadIndex)
            .await
        {
            Ok((read, _)) => return Ok(read.index()),
            Err(openraft::errors::RaftError::APIError(
                openraft::errors::LinearizableReadError::QuorumNotEnough(e),
            )) if tokio::time::Instant::now() < give_up => {
                tracing::debug!(error = %e, "read index: no quorum yet; asking again");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Waits until this node's state machine applied `index` (openraft's apply progress, which advances
/// once `apply` returned, hence after the watch events of the entry were handed to connections).
pub async fn wait_applied(raft: &Raft, index: u64) -> Result<(), String> {
    let mut progress = raft.watch_apply_progress();
    let reached =
        |v: &Option<crate::raft::types::LogId>| v.as_ref().is_some_and(|l| l.index >= index);
    if reached(&progress.get()) {
        return Ok(());
    }
    match tokio::time::timeout(WRITE_TTL, progress.wait_until(reached)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err("raft shut down".to_string()),
        Err(_) => Err(format!("zxid {index:#x} not applied within {WRITE_TTL:?}")),
    }
}

fn sync_reply(index: u64, path: String) -> WriteReply {
    WriteReply::new(
        index as i64,
        Outcome::Response(Ok(Response::Sync(SyncResponse { path }))),
    )
}

/// Proposes on this node, the leader.
pub async fn propose_local(raft: Raft, p: Proposal) -> Result<WriteInFlight, String> {
    match p {
        Proposal::Txn(txn) => {
            let (responder, rx) = ProgressResponder::complete_only();
            raft.write(Command(txn))
                .responder(responder)
                .await
                .map_err(|e| format!("raft stopped: {e}"))?;
            Ok(Box::pin(async move {
                match rx.await {
                    Ok(Ok(resp)) => Ok(resp.data),
                    Ok(Err(e)) => Err(format!("write refused: {e}")),
                    Err(_) => Err("raft shut down".to_string()),
                }
            }))
        }
        Proposal::Sync(path) => Ok(Box::pin(async move {
            let index = read_index(&raft).await.map_err(|e| format!("sync: {e}"))?;
            wait_applied(&raft, index).await?;
            Ok(sync_reply(index, path))
        })),
    }
}

/// Sends a proposal over the ordered link to the leader.
pub fn send_to_leader(
    raft: Raft,
    link: Link,
    leader: u64,
    p: Proposal,
) -> Result<WriteInFlight, String> {
    let (req, path) = match p {
        Proposal::Txn(txn) => (PeerRequest::Write(txn), None),
        Proposal::Sync(path) => (PeerRequest::ReadIndex, Some(path)),
    };
    let rx = link.send(req).map_err(|e| e.to_string())?;
    Ok(Box::pin(async move {
        let addr = format!("leader {leader}");
        match link::wait(rx, WRITE_TTL, &addr)
            .await
            .map_err(|e| e.to_string())?
        {
            PeerResponse::Written(reply) => {
                wait_applied(&raft, reply.zxid.max(0) as u64).await?;
                Ok(reply)
            }
            PeerResponse::ReadIndex(index) => {
                wait_applied(&raft, index).await?;
                Ok(sync_reply(index, path.unwrap_or_default()))
            }
            PeerResponse::Err(e) => Err(format!("{addr}: {e}")),
            other => Err(format!("{addr}: unexpected answer {other:?}")),
        }
    }))
}

/// On a follower, sends the leader the sessions its connections touched, every third of the smallest
/// session timeout.
pub async fn touch_loop(ctx: Arc<NodeCtx>, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_millis(
        (ctx.shared.config.min_session_timeout_ms as u64 / 3).clamp(50, 2_000),
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: HashMap<i64, i64> = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Some(leader) = ctx.raft.metrics().borrow_watched().current_leader else {
            continue;
        };
        if leader == ctx.identity.node_id {
            sent.clear();
            continue;
        }
        let batch: Vec<(i64, i32)> = {
            let conns = ctx.shared.conns.lock();
            let tracker = ctx.shared.tracker.lock();
            let mut batch = Vec::new();
            let mut seen = HashMap::new();
            for (session, conn) in &conns.by_session {
                let Some(info) = conns.by_id.get(conn) else {
                    continue;
                };
                let deadline = tracker.deadline(*session).unwrap_or(0);
                if sent.get(session).is_none_or(|d| deadline > *d) {
                    batch.push((*session, info.timeout_ms));
                }
                seen.insert(*session, deadline);
            }
            sent = seen;
            batch
        };
        if batch.is_empty() {
            continue;
        }
        let link = ctx.routes.borrow().link.clone();
        match link.filter(|l| l.remote_node() == leader) {
            Some(link) => {
                if let Err(e) = link.call(PeerRequest::Touch(batch), every).await {
                    tracing::debug!(error = %e, "session touches not delivered");
                    sent.clear();
                }
            }
            None => {
                tracing::debug!(
                    leader,
                    "session touches not delivered: no link to the leader yet"
                );
                sent.clear();
            }
        }
    }
}
