//! The peer protocol: how Roster nodes talk to each other on the peer port (`--peer-addr`).
//!
//! - [`wire`]: frames (length, format version, postcard) and the messages.
//! - [`link`]: the dialing side, one TCP connection multiplexed by request id.
//! - [`server`]: the listening side, hello checks and request handling.
//! - [`membership`]: join, remove and leave, carried out by the leader (other nodes forward to it).
//! - [`failover`]: a follower whose leader's process vanished campaigns at once.
//! - [`forward`]: client writes, `sync` barriers and session touches of a follower, sent to the leader.
//! - [`reconfig`]: ZooKeeper's `reconfig` and `/zookeeper/config`, mapped onto the Raft membership.
//! - [`admin`]: the calls a tool or a joining node makes (cluster id, join, status, remove, leave).
//!
//! The outbound Raft network built on [`link`] is `crate::raft::network`.
//!
//! [`Cluster`] is the per-node state of all of this: addresses, whether the node serves clients
//! (it stops when it has had no leader for a while). The link to the leader is kept by
//! `crate::net::routing`.
//!
//! Left out: TLS/authentication between peers, automatic replacement of dead voters, leader transfer
//! on request (only [`failover`] uses openraft's transfer, for a leader that is gone).

pub mod admin;
pub mod failover;
pub mod forward;
pub mod link;
pub mod membership;
pub mod reconfig;
pub mod server;
pub mod wire;

use crate::node::NodeCtx;
use openraft::async_runtime::watch::WatchReceiver;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use wire::{MemberInfo, StatusInfo};

/// A node's cluster-facing state.
pub struct Cluster {
    /// The peer address this node announces (in the Raft membership).
    pub peer_addr: String,
    /// The client address, known once the client port is bound.
    pub client_addr: parking_lot::Mutex<String>,
    /// Voters the leader aims for when nodes join.
    pub target_voters: usize,
    /// Whether client connections are accepted (false while the node has had no leader for too long).
    pub serving: AtomicBool,
    /// Whether the state committed before the last stop has been applied (until then, no clients).
    pub recovered: AtomicBool,
    /// When an AppendEntries or snapshot from a leader last succeeded here, ms since the epoch.
    pub last_leader_contact: AtomicI64,
    /// The latest evidence of a working leader this node saw ([`leaderless_ms`]), ms since the epoch.
    pub last_evidence: AtomicI64,
    /// Serializes membership changes on the leader.
    pub membership_lock: tokio::sync::Mutex<()>,
    /// Fast-failover state (see [`failover`]).
    pub failover: failover::Failover,
}

impl Cluster {
    /// The state of a node announcing `peer_addr`.
    pub fn new(peer_addr: String, target_voters: usize, serving: bool) -> Cluster {
        Cluster {
            peer_addr,
            client_addr: parking_lot::Mutex::new(String::new()),
            target_voters,
            serving: AtomicBool::new(serving),
            recovered: AtomicBool::new(false),
            last_leader_contact: AtomicI64::new(0),
            last_evidence: AtomicI64::new(0),
            membership_lock: tokio::sync::Mutex::new(()),
            failover: failover::Failover::default(),
        }
    }

    /// Whether the node serves clients now.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }
}

/// How long this node has been without evidence of a working leader, ms. Evidence: as a leader, a
/// message a quorum acknowledged (counted from its send time; always, as the only voter); as a
/// follower or learner, its leader's AppendEntries reaching it. Without evidence of its own (a
/// candidate, a leader no quorum acknowledged yet) it counts from the latest evidence it had in any
/// role, so a short campaign or a new leader's first round trip does not count as leaderless.
pub fn leaderless_ms(ctx: &NodeCtx) -> i64 {
    let m = ctx.raft.metrics().borrow_watched().clone();
    let now = crate::shared::now_ms();
    let evidence = match m.state {
        openraft::ServerState::Leader if m.membership_config.voter_ids().count() == 1 => Some(now),
        openraft::ServerState::Leader => m
            .last_quorum_acked
            .as_ref()
            .map(|t| now - openraft::Instant::elapsed(&**t).as_millis() as i64),
        openraft::ServerState::Follower | openraft::ServerState::Learner => {
            Some(ctx.cluster.last_leader_contact.load(Ordering::Relaxed))
        }
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

/// Whether this node has a working leader: [`leaderless_ms`] below
/// [`LEADERLESS_MS`](crate::node::LEADERLESS_MS).
pub fn has_leader(ctx: &NodeCtx) -> bool {
    leaderless_ms(ctx) < crate::node::LEADERLESS_MS
}

/// This node's view of the cluster, for `roster cluster status`. A leader that has lost its quorum
/// reports the state `Leader (no quorum)` and no leader: it can commit nothing and serves no client.
pub fn status(ctx: &NodeCtx) -> StatusInfo {
    let m = ctx.raft.metrics().borrow_watched().clone();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| MemberInfo {
            node_id: *id,
            peer_addr: node.addr.clone(),
            voter: voters.contains(id),
        })
        .collect();
    let lost_quorum = m.state == openraft::ServerState::Leader && !has_leader(ctx);
    StatusInfo {
        cluster_id: ctx.identity.cluster_id.clone(),
        node_id: ctx.identity.node_id,
        client_addr: ctx.cluster.client_addr.lock().clone(),
        state: if lost_quorum {
            "Leader (no quorum)".to_string()
        } else {
            format!("{:?}", m.state)
        },
        term: m.current_term,
        leader: if lost_quorum { None } else { m.current_leader },
        applied: m.last_applied.map(|l| l.index).unwrap_or(0),
        serving: ctx.cluster.is_serving(),
        members,
    }
}

/// This node's role as ZooKeeper's `srvr`/`mntr` name it: `standalone` (the only member), `leader`,
/// `follower`, `observer` (a learner), or `None` when it serves no client: it has had no working
/// leader for [`LEADERLESS_MS`](crate::node::LEADERLESS_MS) (a leader: no quorum acknowledged it for
/// that long), or it has not recovered yet.
pub fn zk_mode(ctx: &NodeCtx) -> Option<&'static str> {
    let m = ctx.raft.metrics().borrow_watched().clone();
    let membership = m.membership_config.membership();
    if membership.nodes().count() == 1 && membership.voter_ids().eq([ctx.identity.node_id]) {
        return Some("standalone");
    }
    if !ctx.cluster.is_serving() || !has_leader(ctx) {
        return None;
    }
    match m.state {
        openraft::ServerState::Leader => Some("leader"),
        openraft::ServerState::Follower => Some("follower"),
        openraft::ServerState::Learner => Some("observer"),
        _ => None,
    }
}
