//! Membership changes, carried out by the leader: join (add as learner, wait until it caught up, then
//! make it a voter while the cluster has fewer voters than `--target-voters`; otherwise it stays a
//! learner, an observer), remove and leave (then promote learners while voters are short of the
//! target). A node that is not the leader forwards the request to the leader it knows.
//!
//! Dead voters (only with `replace_dead_voters_ms` set, see [`replace_dead_voters`]): the leader demotes
//! a voter that acknowledged nothing for that long to a learner and promotes a caught-up learner in the
//! same change, so the voters stay at the target while an instance is dead.
//!
//! One change at a time (openraft refuses overlapping ones): changes are serialized by a lock.
//! Left out: removing dead nodes from the membership (they stay learners, and rejoin as such),
//! leader transfer before a leader removes itself.

use super::ctx::NodeCtx;
use crate::raft::handle::MembershipChange;
use crate::transport::wire::{PeerError, PeerRequest, PeerResponse};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How long a joining node may take to catch up before its join is answered with an error.
const CATCH_UP: Duration = Duration::from_secs(240);

fn leader_addr(ctx: &NodeCtx) -> Result<(u64, String), PeerError> {
    match ctx.raft.leader_addr() {
        None => Err(PeerError::NotLeader(None)),
        Some((leader, Some(addr))) => Ok((leader, addr)),
        Some((leader, None)) => Err(PeerError::NotLeader(Some(leader))),
    }
}

async fn forward(ctx: &NodeCtx, req: PeerRequest) -> PeerResponse {
    let (leader, addr) = match leader_addr(ctx) {
        Ok(l) => l,
        Err(e) => return PeerResponse::Err(e),
    };
    if leader == ctx.identity.node_id {
        return PeerResponse::Err(PeerError::Raft("leadership changed; retry".into()));
    }
    let cluster = Some(ctx.identity.cluster_id.clone());
    match super::admin::call(
        &addr,
        cluster,
        ctx.identity.node_id,
        req,
        Duration::from_secs(300),
        ctx.peer_tls.as_deref(),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => PeerResponse::Err(PeerError::Raft(format!(
            "forwarding to leader {leader}: {e}"
        ))),
    }
}

fn raft_err(e: impl std::fmt::Display) -> PeerResponse {
    PeerResponse::Err(PeerError::Raft(e.to_string()))
}

/// How long an id given to a joining node stays reserved for it.
const ID_RESERVED_MS: i64 = 10 * 60 * 1000;

/// Gives a joining node its id: on the leader, one above the highest small id (below 2^32) of the
/// members and of the ids given in the last `ID_RESERVED_MS` (10 minutes), and at least 2 (1 is the node that
/// bootstrapped the cluster; random 64-bit ids of older data directories are ignored); elsewhere, asks
/// the leader. Ids are not reused while a higher one is a member, so a removed node coming back with
/// its old data cannot meet a newcomer with its id, unless it held the highest id.
pub async fn allocate_id(ctx: &Arc<NodeCtx>) -> PeerResponse {
    if !ctx.raft.is_leader() {
        return forward(ctx, PeerRequest::AllocateId).await;
    }
    let members = ctx.raft.status().nodes;
    let now = crate::shared::now_ms();
    let mut given = ctx.cluster.given_ids.lock();
    given.retain(|_, at| now - *at < ID_RESERVED_MS);
    let small = |id: &u64| *id < 1 << 32;
    let id = members
        .keys()
        .chain(given.keys())
        .copied()
        .filter(small)
        .max()
        .unwrap_or(1)
        .max(1)
        + 1;
    given.insert(id, now);
    tracing::info!(node = id, "node id given to a joining node");
    PeerResponse::Allocated(id)
}

/// Adds a node (see the module doc).
pub async fn join(ctx: &Arc<NodeCtx>, node_id: u64, peer_addr: String) -> PeerResponse {
    if !ctx.raft.is_leader() {
        return forward(ctx, PeerRequest::Join { node_id, peer_addr }).await;
    }
    add(ctx, node_id, peer_addr, None).await
}

/// On the leader, adds a node as a learner, waits until it caught up, then makes it a voter: always
/// for `voter: Some(true)`, never for `Some(false)`, while voters are short of `--target-voters` for
/// `None` (a join). A member named again keeps its role.
pub async fn add(
    ctx: &Arc<NodeCtx>,
    node_id: u64,
    peer_addr: String,
    want_voter: Option<bool>,
) -> PeerResponse {
    if !ctx.raft.is_leader() {
        return PeerResponse::Err(PeerError::NotLeader(ctx.raft.leader()));
    }
    if node_id == 0 {
        return PeerResponse::Err(PeerError::Refused("node id 0 is reserved".into()));
    }
    let _g = ctx.cluster.membership_lock.lock().await;
    let m = ctx.raft.status();
    if let Some(addr) = m.nodes.get(&node_id) {
        if *addr != peer_addr {
            return PeerResponse::Err(PeerError::Refused(format!(
                "node {node_id} is already a member at {addr}; a node keeps its identity, so this is another node with the same id"
            )));
        }
    }
    let mut voter = m.voters.contains(&node_id);
    if !voter {
        tracing::info!(node = node_id, %peer_addr, "adding node as learner; waiting until it caught up");
        ctx.cluster
            .note_change(format!("join request from node {node_id} at {peer_addr}"));
        // Blocking: returns once the learner caught up. Bounded, or a node announcing an address the
        // leader cannot reach would hold the membership lock for good; it stays a learner and may retry.
        match tokio::time::timeout(CATCH_UP, ctx.raft.add_learner(node_id, peer_addr.clone())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return raft_err(e),
            Err(_) => {
                return PeerResponse::Err(PeerError::Refused(format!(
                    "node {node_id} at {peer_addr} did not catch up within {CATCH_UP:?}: is that address reachable from the leader?"
                )))
            }
        }
        let voters = ctx.raft.status().voters.len();
        if want_voter.unwrap_or(voters < ctx.cluster.target_voters) {
            tracing::info!(
                node = node_id,
                voters,
                target = ctx.cluster.target_voters,
                "promoting node to voter"
            );
            ctx.cluster.note_change(format!(
                "node {node_id} caught up and the cluster has {voters} of {} target voters",
                ctx.cluster.target_voters
            ));
            if let Err(e) = ctx
                .raft
                .change_membership(
                    MembershipChange::AddVoters(BTreeSet::from([node_id])),
                    false,
                )
                .await
            {
                return raft_err(e);
            }
            voter = true;
        } else {
            tracing::info!(
                node = node_id,
                voters,
                "node stays a learner (observer): the cluster has its target voters"
            );
        }
    }
    let committed = ctx.raft.status().committed;
    PeerResponse::Joined { voter, committed }
}

/// Removes a node, then promotes learners while voters are short of the target.
pub async fn remove(ctx: &Arc<NodeCtx>, node_id: u64) -> PeerResponse {
    if !ctx.raft.is_leader() {
        return forward(ctx, PeerRequest::Remove { node_id }).await;
    }
    let _g = ctx.cluster.membership_lock.lock().await;
    let m = ctx.raft.status();
    if !m.nodes.contains_key(&node_id) {
        return PeerResponse::Ack;
    }
    let voters = m.voters.clone();
    let change = if voters.contains(&node_id) {
        if voters.len() == 1 {
            return PeerResponse::Err(PeerError::Refused("cannot remove the last voter".into()));
        }
        // One change that removes the voter and promotes learners while voters are short of the
        // target. Two changes in a row break when the removed node is this leader: it steps down after
        // the first, and openraft refuses (panics on) a second change proposed meanwhile.
        let mut next: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != node_id).collect();
        let short = ctx.cluster.target_voters.saturating_sub(next.len());
        let promote: Vec<u64> = m.learners().filter(|l| *l != node_id).take(short).collect();
        if !promote.is_empty() {
            tracing::info!(nodes = ?promote, "promoting learners to keep the target voters");
        }
        next.extend(promote);
        MembershipChange::ReplaceVoters(next)
    } else {
        MembershipChange::RemoveNodes(BTreeSet::from([node_id]))
    };
    tracing::info!(node = node_id, "removing node from the cluster");
    ctx.cluster
        .note_change(format!("remove request for node {node_id}"));
    if let Err(e) = ctx.raft.change_membership(change, false).await {
        return raft_err(e);
    }
    PeerResponse::Ack
}

/// How far behind the leader's log (entries) a learner may be to be promoted in place of a dead voter.
const PROMOTE_LAG: u64 = 1_000;
/// A learner is promoted only if it acknowledged the leader this recently (ms).
const PROMOTE_FRESH_MS: i64 = 2_000;

/// While this node leads, replaces voters silent for `after` by caught-up learners (see the module
/// doc), checking once a second until `shutdown`.
///
/// Safety: the replacement is one joint-consensus change (old and new voter sets must both reach a
/// majority to commit it), the same path as `roster cluster remove`, so no acknowledged write can be
/// lost and no two leaders can be elected. What it costs: a voter that was only slow or partitioned
/// for `after` comes back a learner, and replacing voters shrinks nothing a quorum needs only if a
/// learner is there to promote (with none, nothing changes).
pub async fn replace_dead_voters(
    ctx: Arc<NodeCtx>,
    after: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading_since: Option<i64> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !ctx.raft.is_leader() || !super::status::has_leader(&ctx) {
            leading_since = None;
            continue;
        }
        let now = crate::shared::now_ms();
        let since = *leading_since.get_or_insert(now);
        let after_ms = after.as_millis() as i64;
        if now - since < after_ms {
            continue; // a new leader has not heard from everyone for long enough to judge
        }
        let m = ctx.raft.status();
        if m.changing {
            continue;
        }
        let me = ctx.identity.node_id;
        let silent = |id: &u64| match m.replication.get(id).and_then(|r| r.acked_at) {
            Some(at) => now - at >= after_ms,
            None => true,
        };
        let Some(dead) = m.voters.iter().copied().find(|v| *v != me && silent(v)) else {
            continue;
        };
        let caught_up = |id: &u64| {
            m.replication.get(id).is_some_and(|r| {
                r.acked_at.is_some_and(|at| now - at < PROMOTE_FRESH_MS)
                    && r.matched.unwrap_or(0) + PROMOTE_LAG >= m.committed
            })
        };
        let Some(learner) = m.learners().find(|l| caught_up(l)) else {
            tracing::debug!(
                node = dead,
                "voter silent, but no caught-up learner to promote in its place"
            );
            continue;
        };
        let _g = ctx.cluster.membership_lock.lock().await;
        let mut next: BTreeSet<u64> = m.voters.iter().copied().filter(|v| *v != dead).collect();
        next.insert(learner);
        tracing::warn!(
            dead,
            learner,
            silent_ms = after_ms,
            "voter acknowledged nothing for replace-dead-voters-ms: demoting it to learner and promoting a caught-up learner"
        );
        ctx.cluster.note_change(format!(
            "voter {dead} silent for {after_ms} ms (replace-dead-voters-ms): replaced by learner {learner}"
        ));
        // `retain`: the dead voter stays a member (a learner) and catches up when it comes back.
        match tokio::time::timeout(
            Duration::from_secs(30),
            ctx.raft
                .change_membership(MembershipChange::ReplaceVoters(next), true),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "replacing a dead voter failed; will retry"),
            Err(_) => {
                tracing::warn!("replacing a dead voter did not commit within 30 s; will retry")
            }
        }
    }
}
