//! Request routing: where this node's client proposals go now, and proposing along that route.
//!
//! One task per node ([`run`]) follows the Raft leader (`RaftHandle::watch`) and publishes a
//! [`Route`] on a watch channel that every connection follows: [`Target::Local`] while this node leads,
//! [`Target::Forward`] with the ordered link to the leader once it is dialed, [`Target::Unreachable`]
//! while no leader is known or it cannot be dialed (dialing is retried every 50 ms while the same
//! leader stands). A connection's pipeline ([`super::pipeline`]) turns a change of target into its
//! decisions (propose held writes, or close when writes were in flight on the old route), so a write
//! sent to a leader that was then replaced is answered or its connection closed as soon as this node
//! learns of the new leader, not when the old one comes back.
//!
//! [`propose`] carries one proposal along a route: the local Raft, the link (the mechanics of forwarding
//! are in [`super::forward`]), or the reconfiguration path (`crate::cluster::reconfig`).
//!
//! Left out: choosing among several links, resending writes whose fate is unknown.

use super::ctx::{ClientCtx, Route};
use super::forward::{self, Proposal, WriteInFlight};
use super::pipeline::Target;
use crate::cluster::ctx::NodeCtx;
use crate::error::Error;
use crate::reply::WriteReply;
use crate::transport::link::Link;
use crate::transport::wire::{Hello, LinkKind};
use roster_proto::Request;
use roster_state::{Txn, TxnOp};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long one dial of the leader may take.
const DIAL_TIMEOUT: Duration = Duration::from_millis(1_000);
/// While the leader cannot be dialed, how often to try again.
const REDIAL: Duration = Duration::from_millis(50);
/// How often an open link is checked for having broken.
const LINK_CHECK: Duration = Duration::from_millis(25);

/// Follows the leader and keeps the route current until `shutdown`.
pub async fn run(ctx: Arc<NodeCtx>, tx: watch::Sender<Route>, mut shutdown: watch::Receiver<bool>) {
    let me = ctx.identity.node_id;
    let mut metrics = ctx.raft.watch();
    let mut generation = 0u64;
    // The last link dialed, kept across a moment without a known leader: if the same leader wins the
    // election again, writes in flight on it stay on their route.
    let mut kept: Option<(Link, u64)> = None;
    loop {
        let leader = metrics.leader();
        let current = tx.borrow().clone();
        let next = match leader {
            Some(l) if l == me => Some(Route {
                target: Target::Local,
                leader,
                link: None,
            }),
            Some(l) => match &kept {
                Some((link, g)) if link.remote_node() == l && !link.is_closed() => Some(Route {
                    target: Target::Forward {
                        leader: l,
                        link: *g,
                    },
                    leader,
                    link: Some(link.clone()),
                }),
                _ => {
                    // Dial, but give up at once if the leader changes meanwhile.
                    let dialed = tokio::select! {
                        r = dial(&ctx, l) => Some(r),
                        _ = metrics.changed() => None,
                        _ = shutdown.changed() => return,
                    };
                    match dialed {
                        None => continue,
                        Some(Ok(link)) => {
                            generation += 1;
                            kept = Some((link.clone(), generation));
                            tracing::debug!(leader = l, "route: forwarding to the leader");
                            Some(Route {
                                target: Target::Forward {
                                    leader: l,
                                    link: generation,
                                },
                                leader,
                                link: Some(link),
                            })
                        }
                        Some(Err(e)) => {
                            if current.target != Target::Unreachable || current.leader != leader {
                                tracing::info!(leader = l, error = %e, "route: the leader cannot be dialed; writes wait");
                            }
                            Some(Route::unreachable(leader))
                        }
                    }
                }
            },
            None => Some(Route::unreachable(None)),
        };
        if let Some(next) = next {
            tx.send_if_modified(|cur| {
                let changed = cur.target != next.target || cur.leader != next.leader;
                if changed {
                    *cur = next;
                }
                changed
            });
        }
        let wait = match &tx.borrow().target {
            Target::Unreachable if leader.is_some() => REDIAL,
            Target::Forward { .. } => LINK_CHECK,
            _ => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = metrics.changed() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn dial(ctx: &NodeCtx, leader: u64) -> Result<Link, String> {
    let addr = ctx
        .raft
        .status()
        .nodes
        .get(&leader)
        .cloned()
        .ok_or_else(|| format!("leader {leader} is not in the membership this node knows"))?;
    let hello = Hello {
        cluster_id: Some(ctx.identity.cluster_id.clone()),
        from: ctx.identity.node_id,
        to: Some(leader),
        kind: LinkKind::Forward,
    };
    Link::connect(&addr, hello, DIAL_TIMEOUT, ctx.peer_tls.as_deref())
        .await
        .map_err(|e| format!("leader {leader} at {addr}: {e}"))
}

/// Proposes now along `route` (so proposals of one connection keep their order) and returns the
/// pending result, which resolves once this node applied it.
///
/// A client's `reconfig` arrives as a write (`TxnOp::Request` with `Request::Reconfig`) and is carried
/// out by [`crate::cluster::reconfig`] rather than proposed: it changes the Raft membership, and its answer
/// comes once `/zookeeper/config` shows the change.
pub async fn propose(ctx: &ClientCtx, route: &Route, p: Proposal) -> Result<WriteInFlight, Error> {
    if let Proposal::Txn(Txn {
        op: TxnOp::Request {
            request: Request::Reconfig(r),
            auth,
        },
        ..
    }) = &p
    {
        return Ok(crate::cluster::reconfig::pending(
            ctx.node.clone(),
            r.clone(),
            auth.clone(),
        ));
    }
    match (&route.target, &route.link, route.leader) {
        (Target::Local, _, _) => forward::propose_local(ctx.node.raft.clone(), p).await,
        (Target::Forward { .. }, Some(link), Some(leader)) => {
            forward::send_to_leader(ctx.node.raft.clone(), link.clone(), leader, p)
        }
        _ => Err(Error::NoLeader("no leader this node can reach".into())),
    }
}

/// Proposes one write outside a pipeline (session creation in the handshake): waits up to `hold` for
/// a route, then for the result.
pub async fn propose_and_wait(
    ctx: &ClientCtx,
    p: Proposal,
    hold: Duration,
) -> Result<WriteReply, Error> {
    let mut routes = ctx.routes.clone();
    let route = tokio::time::timeout(hold, routes.wait_for(|r| r.target != Target::Unreachable))
        .await
        .map_err(|_| Error::NoLeader(format!("none within {} ms", hold.as_millis())))?
        .map_err(|_| Error::ShuttingDown)?
        .clone();
    propose(ctx, &route, p).await?.await
}
