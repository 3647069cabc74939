//! How this node sees its cluster: whether it has a working leader ([`leaderless_ms`], [`has_leader`]),
//! its view for `roster cluster status` ([`status`]), and its role as ZooKeeper's `srvr`/`mntr` name it
//! ([`zk_mode`]).
//!
//! Left out: acting on it (the node's cluster monitor stops serving clients without a leader).

use super::ctx::NodeCtx;
use crate::raft::handle::Role;
use crate::raft::ELECTION_MAX;
use crate::transport::wire::{MemberInfo, StatusInfo};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Without a leader for this long a node stops serving clients (closes their connections, refuses new
/// ones, and `srvr` answers "not currently serving"): for a follower, this long since the leader's
/// last AppendEntries; for a leader, since the send time of the last message a quorum acknowledged.
/// 1 s = twice the latest moment a majority starts electing (openraft's leader lease, `ELECTION_MAX`,
/// plus the longest election timeout). The majority cannot elect before lease + `ELECTION_MIN` =
/// 400 ms after the old leader's last acknowledged heartbeat, so a cut-off leader answers (stale) reads
/// at most about 650 ms (this bound plus one `HEARTBEAT` check, minus 400 ms) after a new leader
/// could first commit. Half of it (500 ms) closed every client of a healthy leader whose heartbeat
/// acknowledgements were merely late on a busy 2-core machine (600 ms gaps seen in the test suite).
/// `docs/operations.md` ("Partitions") states the same value.
pub const LEADERLESS: Duration = Duration::from_millis(2 * (ELECTION_MAX.as_millis() as u64 * 2));

/// How long this node has been without evidence of a working leader, ms. Evidence: as a leader, a
/// message a quorum acknowledged (counted from its send time; always, as the only voter); as a
/// follower or learner, its leader's AppendEntries reaching it. Without evidence of its own (a
/// candidate, a leader no quorum acknowledged yet) it counts from the latest evidence it had in any
/// role, so a short campaign or a new leader's first round trip does not count as leaderless.
pub fn leaderless_ms(ctx: &NodeCtx) -> i64 {
    let m = ctx.raft.status();
    let now = crate::shared::now_ms();
    let evidence = match m.role {
        Role::Leader if m.voters.len() == 1 => Some(now),
        Role::Leader => m.quorum_acked_at,
        Role::Follower | Role::Learner => Some(ctx.raft.last_leader_contact()),
        _ => None,
    };
    let latest = &ctx.cluster.last_evidence;
    match evidence {
        Some(at) => {
            latest.fetch_max(at, Ordering::Relaxed);
            now - at
        }
        None => now - latest.load(Ordering::Relaxed),
    }
}

/// Whether this node has a working leader: [`leaderless_ms`] below [`LEADERLESS`].
pub fn has_leader(ctx: &NodeCtx) -> bool {
    leaderless_ms(ctx) < LEADERLESS.as_millis() as i64
}

/// This node's view of the cluster, for `roster cluster status`. A leader that has lost its quorum
/// reports the state `Leader (no quorum)` and no leader: it can commit nothing and serves no client.
pub fn status(ctx: &NodeCtx) -> StatusInfo {
    let m = ctx.raft.status();
    let members = m
        .nodes
        .iter()
        .map(|(id, addr)| MemberInfo {
            node_id: *id,
            peer_addr: addr.clone(),
            voter: m.voters.contains(id),
        })
        .collect();
    let lost_quorum = m.role == Role::Leader && !has_leader(ctx);
    StatusInfo {
        cluster_id: ctx.identity.cluster_id.clone(),
        node_id: ctx.identity.node_id,
        client_addr: ctx.cluster.client_addr.lock().clone(),
        state: if lost_quorum {
            "Leader (no quorum)".to_string()
        } else {
            format!("{:?}", m.role)
        },
        term: m.term,
        leader: if lost_quorum { None } else { m.leader },
        applied: m.applied,
        serving: ctx.cluster.is_serving(),
        members,
    }
}

/// This node's role as ZooKeeper's `srvr`/`mntr` name it: `standalone` (the only member), `leader`,
/// `follower`, `observer` (a learner), or `None` when it serves no client: it has had no working
/// leader for [`LEADERLESS`] (a leader: no quorum acknowledged it for that long), or it has not
/// recovered yet.
pub fn zk_mode(ctx: &NodeCtx) -> Option<&'static str> {
    let m = ctx.raft.status();
    if m.nodes.len() == 1 && m.voters.iter().eq([&ctx.identity.node_id]) {
        return Some("standalone");
    }
    if !ctx.cluster.is_serving() || !has_leader(ctx) {
        return None;
    }
    match m.role {
        Role::Leader => Some("leader"),
        Role::Follower => Some("follower"),
        Role::Learner => Some("observer"),
        _ => None,
    }
}
