//! Watches this node's view of the cluster and publishes what changes, with its cause, to the event
//! journal (`crate::events`): the leader (elected, stepped down, lost, with why: silent for how
//! long, or its process gone), and the membership (nodes joining, leaving, changing role, with the
//! request that did it when this node is the leader that carried it out).
//!
//! One task per node follows `RaftHandle::watch` (leader, role, vote and membership changes).
//!
//! Left out: serving changes (published by the node's cluster monitor), session expiries (published
//! by the leader's session ticker).

use super::ctx::NodeCtx;
use crate::events::EventKind;
use crate::raft::handle::Status;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;

/// Follows the cluster until `shutdown`.
pub async fn run(ctx: Arc<NodeCtx>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = ctx.raft.watch();
    let mut before: Option<Status> = None;
    // The last leader known, across a moment without one (an election), and its term.
    let mut last_leader: Option<(u64, u64)> = None;
    loop {
        let now = changes.current();
        if let Some(prev) = &before {
            publish_changes(&ctx, prev, &now, last_leader);
        } else if let Some(l) = now.leader {
            ctx.shared.events.publish(
                EventKind::LeaderChanged {
                    leader: Some(l),
                    previous: None,
                    term: now.term,
                },
                format!("leader of term {} when this node started", now.term),
            );
        }
        if let Some(l) = now.leader {
            last_leader = Some((l, now.term));
        }
        before = Some(now);
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// Publishes what differs between two views of this node.
fn publish_changes(ctx: &NodeCtx, prev: &Status, now: &Status, last_leader: Option<(u64, u64)>) {
    let events = &ctx.shared.events;
    if prev.leader != now.leader {
        let cause = leader_cause(
            ctx,
            prev.leader.map(|l| (l, prev.term)).or(last_leader),
            now,
        );
        events.publish(
            EventKind::LeaderChanged {
                leader: now.leader,
                previous: prev.leader,
                term: now.term,
            },
            cause,
        );
    }
    if prev.nodes == now.nodes && prev.voters == now.voters {
        return;
    }
    let why = ctx
        .cluster
        .change_reason
        .lock()
        .take()
        .unwrap_or_else(|| match now.leader {
            Some(l) if l != ctx.identity.node_id => {
                format!(
                    "membership entry {} replicated from leader node {l}",
                    now.membership_index
                )
            }
            _ => format!("membership entry {}", now.membership_index),
        });
    for (id, addr) in &now.nodes {
        match prev.nodes.get(id) {
            None => {
                events.publish(
                    EventKind::MemberJoined {
                        node: *id,
                        peer_addr: addr.clone(),
                        voter: now.voters.contains(id),
                    },
                    why.clone(),
                );
            }
            Some(_) if prev.voters.contains(id) != now.voters.contains(id) => {
                events.publish(
                    EventKind::MemberRoleChanged {
                        node: *id,
                        voter: now.voters.contains(id),
                    },
                    why.clone(),
                );
            }
            Some(_) => {}
        }
    }
    for id in prev.nodes.keys().filter(|id| !now.nodes.contains_key(id)) {
        events.publish(EventKind::MemberLeft { node: *id }, why.clone());
    }
}

/// Why the leader changed, as far as this node can tell; `old` is the last leader this node knew and
/// its term.
fn leader_cause(ctx: &NodeCtx, old: Option<(u64, u64)>, now: &Status) -> String {
    let me = ctx.identity.node_id;
    let term = now.term;
    let elected = match now.leader {
        Some(l) if l == me => format!("this node won the election for term {term}"),
        Some(l) => format!("node {l} leads term {term}"),
        None => format!("an election is under way (term {term})"),
    };
    let Some((old, old_term)) = old else {
        return elected;
    };
    if now.leader == Some(old) {
        return format!("{elected} again");
    }
    if old == me {
        return format!("{elected}; this node stepped down (it saw term {term})");
    }
    // Fast failover found the old leader's process gone at its term.
    if ctx.cluster.failover.gone.load(Ordering::Acquire) >= old_term && old_term > 0 {
        return format!(
            "node {old}'s process is gone (its peer port refuses connections); {elected}"
        );
    }
    let contact = ctx.raft.last_leader_contact();
    if contact > 0 {
        let silent = crate::shared::now_ms() - contact;
        return format!("no AppendEntries from node {old} for {silent} ms; {elected}");
    }
    elected
}
