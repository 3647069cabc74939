//! `GET /api/v1/cluster`: this node's view of the cluster, with every member's role, health and lag.
//!
//! This node's own row comes from its Raft state. Every other member is asked over its peer port
//! (`cluster::admin::status`, all in parallel, each bounded by [`ASK_TIMEOUT`]), so a member's role,
//! term and applied index are its own word; a member that does not answer is `unreachable`, with the
//! error. When this node leads, each row also carries what Raft's replication knows (the last index
//! the member holds and when it last acknowledged the leader), so lag is known even for a member that
//! is busy. `lag` is the member's distance, in log entries, behind the highest applied index seen.
//!
//! Left out: the members' admin addresses (not in the membership), history (see the events).

use super::ctx::ApiCtx;
use super::error::ApiResult;
use crate::cluster::{admin, status};
use crate::transport::wire::StatusInfo;
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// How long a member has to answer the status question.
pub const ASK_TIMEOUT: Duration = Duration::from_millis(1_500);

/// Entries behind the most advanced member from which a member counts as lagging.
pub const LAGGING: u64 = 1_000;

/// The cluster as this node sees it.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// The cluster id.
    pub cluster_id: String,
    /// The answering node.
    pub node_id: u64,
    /// Its Raft term.
    pub term: u64,
    /// The leader it knows of (none when it leads without a quorum).
    pub leader: Option<u64>,
    /// Whether it has a working leader now.
    pub has_leader: bool,
    /// How long it has been without evidence of a working leader, ms.
    pub leaderless_ms: i64,
    /// Whether it serves ZooKeeper clients now.
    pub serving: bool,
    /// Whether a membership change is under way.
    pub changing: bool,
    /// Its last applied and known committed log index, and its latest snapshot's index.
    pub applied: u64,
    /// The commit index it knows.
    pub committed: u64,
    /// The last index in its latest snapshot.
    pub snapshot: u64,
    /// Voters it aims for when nodes join.
    pub target_voters: usize,
    /// The newest format version this node's binary speaks (docs/operations.md, "Upgrading").
    pub format_version: u8,
    /// The cluster's format version, as this node applied it.
    pub cluster_format_version: u8,
    /// Every member, by id.
    pub members: Vec<Member>,
    /// When this view was taken, ms since the epoch.
    pub time_ms: i64,
}

/// One member.
#[derive(Debug, Serialize)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// Peer address (from the Raft membership).
    pub peer_addr: String,
    /// Client address, as the member reports it (unknown if it did not answer).
    pub client_addr: Option<String>,
    /// Whether it votes (a learner is ZooKeeper's observer).
    pub voter: bool,
    /// Whether this is the answering node.
    pub this_node: bool,
    /// `leader`, `follower`, `observer`, `candidate`, `leader_without_quorum`, or `unknown`.
    pub role: String,
    /// `ok`, `lagging`, `not_serving` or `unreachable`.
    pub health: String,
    /// Where the row's facts come from: `local` (this node), `asked` (the member answered over its
    /// peer port) or `raft` (it did not answer; what this node's Raft state says).
    pub source: String,
    /// The member's term, if known.
    pub term: Option<u64>,
    /// The leader the member knows of.
    pub leader: Option<u64>,
    /// Its last applied index, if known.
    pub applied: Option<u64>,
    /// Entries behind the highest applied index seen, if known.
    pub lag: Option<u64>,
    /// Whether it serves clients, if known.
    pub serving: Option<bool>,
    /// As known to this node's Raft when it leads: the last index the member holds.
    pub matched: Option<u64>,
    /// As known to this node's Raft when it leads: ms since the member last acknowledged it.
    pub last_ack_ms: Option<i64>,
    /// Why it is unreachable.
    pub error: Option<String>,
}

/// `GET /api/v1/cluster`.
pub async fn cluster(State(api): State<Arc<ApiCtx>>) -> ApiResult<ClusterView> {
    Ok(Json(view(&api).await))
}

fn role_name(state: &str) -> String {
    match state {
        "Leader" => "leader",
        "Follower" => "follower",
        "Learner" => "observer",
        "Candidate" => "candidate",
        "Leader (no quorum)" => "leader_without_quorum",
        _ => "unknown",
    }
    .to_string()
}

/// Builds the view: asks the other members in parallel.
pub async fn view(api: &ApiCtx) -> ClusterView {
    let node = &api.admin.node;
    let me = node.identity.node_id;
    let m = node.raft.status();
    let mine = status::status(node);
    let asks = m
        .nodes
        .iter()
        .filter(|(id, _)| **id != me)
        .map(|(id, addr)| {
            let (id, addr) = (*id, addr.clone());
            async move {
                let answer = match tokio::time::timeout(
                    ASK_TIMEOUT,
                    admin::status(&addr, node.peer_tls.as_deref()),
                )
                .await
                {
                    Ok(Ok(s)) if s.node_id == id => Ok(s),
                    Ok(Ok(s)) => Err(format!(
                        "node {} answered at {addr} (expected node {id})",
                        s.node_id
                    )),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {} ms", ASK_TIMEOUT.as_millis())),
                };
                (id, addr, answer)
            }
        });
    let answers = futures::future::join_all(asks).await;
    let now = crate::shared::now_ms();

    let mut members = vec![row(
        me,
        node.cluster.peer_addr.clone(),
        m.voters.contains(&me),
        Ok(mine.clone()),
        "local",
    )];
    for (id, addr, answer) in answers {
        let source = if answer.is_ok() { "asked" } else { "raft" };
        members.push(row(id, addr, m.voters.contains(&id), answer, source));
    }
    let top = members
        .iter()
        .filter_map(|r| r.applied)
        .chain([m.committed])
        .max()
        .unwrap_or(0);
    for r in &mut members {
        if let Some(rep) = m.replication.get(&r.id) {
            r.matched = rep.matched;
            r.last_ack_ms = rep.acked_at.map(|at| (now - at).max(0));
        }
        r.lag = r.applied.or(r.matched).map(|a| top.saturating_sub(a));
        r.health = if r.error.is_some() {
            "unreachable"
        } else if r.serving == Some(false) {
            "not_serving"
        } else if r.lag.is_some_and(|l| l >= LAGGING) {
            "lagging"
        } else {
            "ok"
        }
        .to_string();
    }
    members.sort_by_key(|r| r.id);
    let has_leader = status::has_leader(node);
    ClusterView {
        cluster_id: node.identity.cluster_id.clone(),
        node_id: me,
        term: m.term,
        leader: mine.leader,
        has_leader,
        leaderless_ms: status::leaderless_ms(node),
        serving: node.cluster.is_serving(),
        changing: m.changing,
        applied: m.applied,
        committed: m.committed,
        snapshot: m.snapshot,
        target_voters: node.cluster.target_voters,
        format_version: crate::format::CURRENT,
        cluster_format_version: node.shared.formats.cluster(),
        members,
        time_ms: now,
    }
}

fn row(
    id: u64,
    peer_addr: String,
    voter: bool,
    answer: Result<StatusInfo, String>,
    source: &str,
) -> Member {
    let mut r = Member {
        id,
        peer_addr,
        client_addr: None,
        voter,
        this_node: source == "local",
        role: "unknown".into(),
        health: String::new(),
        source: source.into(),
        term: None,
        leader: None,
        applied: None,
        lag: None,
        serving: None,
        matched: None,
        last_ack_ms: None,
        error: None,
    };
    match answer {
        Ok(s) => {
            r.client_addr = Some(s.client_addr).filter(|a| !a.is_empty());
            r.role = role_name(&s.state);
            r.term = Some(s.term);
            r.leader = s.leader;
            r.applied = Some(s.applied);
            r.serving = Some(s.serving);
        }
        Err(e) => r.error = Some(e),
    }
    r
}
