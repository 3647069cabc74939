//! Fast failover: a follower that sees its leader's process vanish campaigns at once instead of waiting
//! for the leader lease and the election timeout.
//!
//! The trigger: a Raft or heartbeat connection dialed by the current leader ends (EOF or reset). The
//! follower then dials the leader's announced peer address, a few times ([`PROBES`], [`PROBE_EVERY`]
//! apart: a killed process's listening socket may outlive its connections by a moment). Only a refused
//! connection (`ECONNREFUSED`: nothing listens there, as right after a `kill -9`, whose sockets the
//! kernel closes at once) counts as "the leader is gone". Connections that are accepted, time out or
//! fail otherwise (a slow, paused or partitioned leader, or one behind a proxy that still listens)
//! change nothing: openraft's lease and election timers handle it as before.
//!
//! Only a node that reaches a majority of the voters (their peer ports accept a connection) campaigns:
//! a node cut off behind a firewall that rejects connections also sees "refused", and a campaign would
//! raise its term past Pre-Vote, deposing the healthy leader when it returns.
//!
//! Who campaigns: the surviving voters in ascending node id order; the first at once, each next one
//! [`STAGGER`] later and only if by then it has still not voted for anyone newer (a candidate's vote
//! request changes its vote). One candidate at a time avoids a split vote at the same term. A learner
//! never campaigns. A survivor that refuses the candidate because its own log is longer (the dead
//! leader had replicated more to it) campaigns at once instead, one term above the candidate's (which
//! then grants it): otherwise neither could win before the election timers.
//!
//! How: a transfer-leader request from the dead leader's vote to this node, synthesized locally
//! (`RaftHandle::transfer_to_me`, openraft's `handle_transfer_leader`). openraft then starts an election whose vote requests carry
//! `leadership_transfer`, which voters grant although their leader lease has not expired (Raft
//! dissertation §4.2.3). Everything else about voting is unchanged: a voter still refuses a candidate
//! whose log is behind its own or whose term is not newer than its vote, so at most one leader per term
//! is elected and it holds every committed entry.
//!
//! Why skipping the lease is safe here: the lease only keeps a live leader from being disturbed, and
//! backs lease-based reads. Roster never reads by lease (`sync` and forwarded reads use the read index,
//! which asks a quorum), so an early election cannot make a read stale; and a leader whose port refuses
//! connections cannot take part anyway. If the probe were wrong (say, a leader that closed its peer port
//! but still runs), it would step down on seeing the newer term: a disturbance, never two leaders of one
//! term.
//!
//! Left out: probing across hosts where a dead machine drops packets instead of refusing (then the probe
//! times out and the timers apply).

use super::ctx::NodeCtx;
use crate::raft::handle::{Role, Vote};
use crate::raft::rpc::VoteSeen;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long the next surviving voter waits for the previous one's campaign to reach it.
pub const STAGGER: Duration = Duration::from_millis(150);
/// How long an outbidding survivor waits for its own first campaign to start.
const OUTBID_WAIT: Duration = Duration::from_millis(500);
/// How long one probe of the leader's peer port may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// How many probes before a leader whose port still accepts connections is taken as alive.
pub const PROBES: usize = 4;
/// How far apart the probes are.
pub const PROBE_EVERY: Duration = Duration::from_millis(25);

/// What the probe of a peer address found.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// Something accepted the connection.
    Listening,
    /// The connection was refused: no process listens there.
    Refused,
    /// Anything else (timeout, unreachable, address not resolvable).
    Unknown,
}

/// Dials `addr` once and reports what happened; the connection, if any, is closed at once.
pub async fn probe(addr: &str) -> Probe {
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Probe::Listening,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Refused,
        _ => Probe::Unknown,
    }
}

/// Called when a Raft or heartbeat connection dialed by node `from` ended. Does nothing unless `from`
/// is this follower's current leader; otherwise checks in the background whether its process is gone
/// and, if so, campaigns (see the module documentation).
pub fn link_lost(ctx: &Arc<NodeCtx>, from: u64) {
    let me = ctx.identity.node_id;
    let m = ctx.raft.status();
    if from == me || m.leader != Some(from) || m.role != Role::Follower || !m.vote.is_committed() {
        return;
    }
    let Some(addr) = m.nodes.get(&from).cloned() else {
        return;
    };
    let voters: Vec<u64> = m.voters.iter().copied().filter(|id| *id != from).collect();
    let all_voters = voters.len() + 1;
    let others: Vec<String> = voters
        .iter()
        .filter(|id| **id != me)
        .filter_map(|id| m.nodes.get(id).cloned())
        .collect();
    let Some(rank) = voters.iter().position(|id| *id == me) else {
        return; // a learner
    };
    let vote = m.vote;
    let term = m.term;
    let ctx = ctx.clone();
    tokio::spawn(async move {
        // Every connection of the dead leader ends at once: one check per term is enough.
        let mut acted = ctx.cluster.failover.checked.lock().await;
        if *acted >= term {
            return;
        }
        // The kernel closes a killed process's descriptors one by one: its peer port may still accept
        // for a moment after its connections ended. Ask a few times before concluding it is alive.
        let mut found = probe(&addr).await;
        for _ in 1..PROBES {
            if found == Probe::Refused {
                break;
            }
            tokio::time::sleep(PROBE_EVERY).await;
            found = probe(&addr).await;
        }
        if found != Probe::Refused {
            tracing::info!(leader = from, %addr, ?found, "connection from the leader ended but its peer port does not refuse connections: leaving it to the election timers");
            return;
        }
        // A node cut off behind a firewall that rejects connections sees "refused" too. It must not
        // campaign: with Pre-Vote its term never moves while it is cut off, and a transfer election
        // would raise it, so that on its return the healthy leader would step down. Campaign only if
        // this node reaches a majority of the voters.
        let reached = futures::future::join_all(others.iter().map(|a| probe(a)))
            .await
            .into_iter()
            .filter(|p| *p == Probe::Listening)
            .count()
            + 1;
        if reached <= all_voters / 2 {
            tracing::info!(leader = from, reached, voters = all_voters, "the leader's peer port refuses connections, but this node reaches no majority of the voters: leaving it to the election timers");
            return;
        }
        *acted = term;
        drop(acted);
        ctx.cluster.failover.gone.fetch_max(term, Ordering::AcqRel);
        tracing::info!(leader = from, %addr, term, "the leader's process is gone (its peer port refuses connections)");
        // A survivor with a longer log than a candidate already refused it: it goes at once.
        if rank > 0 && ctx.cluster.failover.outbid.load(Ordering::Acquire) <= term {
            tokio::time::sleep(STAGGER * rank as u32).await;
        }
        campaign(&ctx, &vote, rank).await;
    });
}

/// Called after this node answered a vote request. If it refused a fast-failover candidate (a
/// leadership-transfer election) because its own log is longer, while its vote is still that of a
/// leader found gone, it campaigns itself at once, outbidding that candidate's term: the candidate
/// cannot win without it, and waiting would leave both to the election timers.
pub fn vote_answered(ctx: &Arc<NodeCtx>, seen: VoteSeen) {
    if !seen.transfer || seen.granted || !seen.our_log_longer {
        return;
    }
    let term = seen.term;
    ctx.cluster
        .failover
        .outbid
        .fetch_max(term, Ordering::AcqRel);
    let m = ctx.raft.status();
    let gone = ctx.cluster.failover.gone.load(Ordering::Acquire);
    if m.role != Role::Follower || !m.vote.is_committed() || gone != m.term || term <= gone {
        // Not (yet) known to be leaderless: `link_lost` sees `outbid` once it is.
        return;
    }
    let ctx = ctx.clone();
    let vote = m.vote;
    tokio::spawn(async move { campaign(&ctx, &vote, 0).await });
}

/// Campaigns in place of the leader of `vote` (the vote this node held when the leader was found
/// gone), once per term; if a candidate with a shorter log took the next term already, it campaigns
/// once more, one term higher.
async fn campaign(ctx: &Arc<NodeCtx>, vote: &Vote, rank: usize) {
    let me = ctx.identity.node_id;
    let term = vote.term();
    let now = ctx.raft.status();
    if now.vote != *vote || now.role != Role::Follower {
        tracing::info!(
            vote = %now.vote,
            "another survivor is already campaigning; not campaigning"
        );
        return;
    }
    if ctx
        .cluster
        .failover
        .campaigned
        .fetch_max(term, Ordering::AcqRel)
        >= term
    {
        return;
    }
    tracing::info!(
        leader = ?now.leader,
        rank,
        "fast failover: campaigning at once in place of the dead leader"
    );
    if !transfer_to_me(ctx, vote).await {
        return;
    }
    if ctx.cluster.failover.outbid.load(Ordering::Acquire) <= term {
        return;
    }
    // A candidate of term + 1 exists whose log is behind ours: it refuses our term + 1 (it voted for
    // itself), so go one term higher once our own term + 1 campaign has started.
    if let Some(m) = ctx.raft.wait_vote_change(vote, OUTBID_WAIT).await {
        if m.vote.voted_for() == me && !m.vote.is_committed() && m.leader.is_none() {
            tracing::info!(
                term = m.term,
                "fast failover: outbidding a candidate whose log is behind"
            );
            transfer_to_me(ctx, &m.vote).await;
        }
    }
}

/// A leadership transfer from `from` (the vote this node holds) to this node, synthesized locally:
/// openraft elects this node with vote requests voters grant despite their leader lease.
async fn transfer_to_me(ctx: &Arc<NodeCtx>, from: &Vote) -> bool {
    match ctx.raft.transfer_to_me(from).await {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(error = %e, "fast failover: raft stopped");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probe_tells_a_listening_port_from_a_closed_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        assert_eq!(probe(&addr).await, Probe::Listening);
        drop(listener);
        assert_eq!(probe(&addr).await, Probe::Refused);
        assert_eq!(probe("not an address").await, Probe::Unknown);
    }
}
