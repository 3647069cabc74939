//! Client work a node cannot do alone: writes (including session creation and close) and `sync`
//! barriers go to the leader; session touches of a follower's connections go to the leader in batches.
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
//! During a failover a proposal that has not left this node yet waits for the new leader instead of
//! failing: while the known leader cannot be dialed (or no leader is known), it retries as soon as the
//! leader changes, for at most the `hold` its connection allows. Only when nothing else of that
//! connection is in flight (so no earlier write's fate is unknown) may a proposal wait; and a proposal
//! is refused when earlier writes of its connection are in flight on another route (another link or
//! leader): a write must never commit after an earlier write of its session was lost. Refused or timed
//! out, the client connection is closed and the client retries, as with ZooKeeper on leader loss.
//!
//! Left out: resending a write that was in flight when the leader died (its fate is unknown; the
//! connection is closed), read-only mode.

use super::link::{self, Link};
use super::wire::{Hello, LinkKind, PeerRequest, PeerResponse};
use crate::node::NodeCtx;
use crate::raft::types::{Command, Outcome, Raft, WriteReply};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::impls::ProgressResponder;
use roster_proto::{Request, Response, SyncResponse};
use roster_state::{Txn, TxnOp};
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
pub type Pending = Pin<Box<dyn Future<Output = Result<WriteReply, String>> + Send>>;

/// How long a write may wait for its result.
const WRITE_TTL: Duration = Duration::from_secs(60);
/// How long a proposal waits for a leader to be known.
const LEADER_WAIT: Duration = Duration::from_secs(3);
/// While the known leader cannot be dialed, how often a held proposal tries again (sooner when the
/// leader changes).
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// The way a proposal went: proposed to the local Raft (this node led), or sent on a link to the leader.
/// Proposals of one connection may pipeline only along the same route.
#[derive(Clone)]
pub enum Route {
    /// Proposed locally.
    Local,
    /// Sent over this link.
    Link(Link),
    /// Not ordered with other proposals (a `reconfig`, carried out by [`super::reconfig`]).
    Unordered,
}

impl Route {
    fn same(&self, other: &Route) -> bool {
        match (self, other) {
            (Route::Unordered, _) | (_, Route::Unordered) => true,
            (Route::Local, Route::Local) => true,
            (Route::Link(a), Route::Link(b)) => a.same(b),
            _ => false,
        }
    }
}

/// The leader, waiting a little for one to be known.
pub async fn leader(raft: &Raft, wait: Duration) -> Option<u64> {
    if let Some(l) = raft.metrics().borrow_watched().current_leader {
        return Some(l);
    }
    raft.wait(Some(wait))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .ok()
        .and_then(|m| m.current_leader)
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

/// The ordered link to the leader `leader` (dialed if needed).
async fn leader_link(ctx: &NodeCtx, leader: u64) -> Result<Link, String> {
    let mut slot = ctx.cluster.forward.lock().await;
    if let Some(l) = slot.as_ref() {
        if !l.is_closed() && l.remote_node() == leader {
            return Ok(l.clone());
        }
    }
    *slot = None;
    let addr = ctx
        .raft
        .metrics()
        .borrow_watched()
        .membership_config
        .get_node(&leader)
        .map(|n| n.addr.clone())
        .ok_or_else(|| format!("leader {leader} is not in the membership this node knows"))?;
    let hello = Hello {
        cluster_id: Some(ctx.identity.cluster_id.clone()),
        from: ctx.identity.node_id,
        to: Some(leader),
        kind: LinkKind::Forward,
    };
    let l = Link::connect(&addr, hello, Duration::from_secs(2))
        .await
        .map_err(|e| format!("leader {leader}: {e}"))?;
    *slot = Some(l.clone());
    Ok(l)
}

fn sync_reply(index: u64, path: String) -> WriteReply {
    WriteReply::new(
        index as i64,
        Outcome::Response(Ok(Response::Sync(SyncResponse { path }))),
    )
}

/// Proposes now (so proposals of one connection keep their order) and returns the pending result.
///
/// A client's `reconfig` arrives here as a write (`TxnOp::Request` with `Request::Reconfig`) and is
/// carried out by [`super::reconfig`] rather than proposed: it changes the Raft membership, and its
/// answer comes once `/zookeeper/config` shows the change.
///
/// `prior` is the route of this connection's proposals still in flight (`None` when none are): the
/// proposal is refused if it would take another route. With nothing in flight it may wait up to
/// `hold` for a leader it can reach (see the module documentation).
pub async fn propose(
    ctx: &Arc<NodeCtx>,
    p: Proposal,
    prior: Option<&Route>,
    hold: Duration,
) -> Result<(Pending, Route), String> {
    if let Proposal::Txn(Txn {
        op: TxnOp::Request {
            request: Request::Reconfig(r),
            auth,
        },
        ..
    }) = &p
    {
        let pending = super::reconfig::pending(ctx.clone(), r.clone(), auth.clone());
        return Ok((pending, Route::Unordered));
    }
    let me = ctx.identity.node_id;
    let hold_until = tokio::time::Instant::now()
        + if prior.is_none() {
            hold
        } else {
            Duration::ZERO
        };
    let (leader, route) = loop {
        let leader = leader(&ctx.raft, LEADER_WAIT)
            .await
            .ok_or_else(|| "no leader: the cluster has no quorum".to_string())?;
        if leader == me {
            break (leader, Route::Local);
        }
        let err = match leader_link(ctx, leader).await {
            Ok(l) if !l.is_closed() => break (leader, Route::Link(l)),
            Ok(_) => format!("leader {leader}: connection closed"),
            Err(e) => e,
        };
        let left = hold_until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(err);
        }
        // The leader may be gone: try again once another leader is known, or after a short while.
        let _ = ctx
            .raft
            .wait(Some(left.min(RETRY_EVERY)))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != leader),
                "another leader",
            )
            .await;
    };
    if let Some(prior) = prior {
        if !prior.same(&route) {
            return Err(format!(
                "the leader changed (now {leader}) while earlier writes of this connection were in flight"
            ));
        }
    }
    let raft = ctx.raft.clone();
    let pending = match &route {
        Route::Link(link) => send_to_leader(raft, link.clone(), leader, p)?,
        Route::Local | Route::Unordered => propose_local(raft, p).await?,
    };
    Ok((pending, route))
}

/// Proposes on this node, the leader.
async fn propose_local(raft: Raft, p: Proposal) -> Result<Pending, String> {
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
            let read = raft
                .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
                .await
                .map_err(|e| format!("sync: {e}"))?;
            wait_applied(&raft, read.index()).await?;
            Ok(sync_reply(read.index(), path))
        })),
    }
}

/// Sends a proposal over the ordered link to the leader.
fn send_to_leader(raft: Raft, link: Link, leader: u64, p: Proposal) -> Result<Pending, String> {
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
        match leader_link(&ctx, leader).await {
            Ok(link) => {
                if let Err(e) = link.call(PeerRequest::Touch(batch), every).await {
                    tracing::debug!(error = %e, "session touches not delivered");
                    sent.clear();
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "session touches not delivered");
                sent.clear();
            }
        }
    }
}
