//! [`RaftHandle`]: the one door to openraft for the layers above. They ask it for this node's Raft
//! [`Status`] (role, term, leader, membership, progress), propose transactions, ask for a read index,
//! change the membership and start a leadership transfer, in Roster's own types, so that no file
//! outside `raft/` names openraft.
//!
//! It also keeps one fact openraft does not: when a leader last reached this node
//! ([`RaftHandle::last_leader_contact`]), which the cluster layer uses to tell a working leader from a
//! silent one.
//!
//! Left out: what the requests mean (the cluster and client layers decide), the RPCs between nodes
//! (`super::rpc`, `super::network`).

use super::state_machine::StateMachine;
use super::types::{Command, LogId, TypeConfig};
use crate::error::Error;
use crate::reply::WriteReply;
use crate::shared::now_ms;
use openraft::alias::VoteOf;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::impls::ProgressResponder;
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState};
use roster_state::Txn;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// openraft's Raft handle with Roster's types (for the node's wiring and the simulation tests).
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// How long the leader keeps asking for a read index while no quorum has acknowledged it yet.
const READ_INDEX_PATIENCE: Duration = Duration::from_millis(1_000);

/// A node's Raft role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Leads.
    Leader,
    /// Campaigns.
    Candidate,
    /// Follows a leader (or waits for one).
    Follower,
    /// Replicates without voting (ZooKeeper's observer).
    Learner,
    /// Raft stopped.
    Shutdown,
}

impl Role {
    fn of(s: ServerState) -> Role {
        match s {
            ServerState::Leader => Role::Leader,
            ServerState::Candidate => Role::Candidate,
            ServerState::Follower => Role::Follower,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        }
    }
}

/// A vote (term, candidate, whether a quorum granted it), comparable and printable, opaque otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote(pub(crate) VoteOf<TypeConfig>);

impl Vote {
    /// The vote's term.
    pub fn term(&self) -> u64 {
        self.0.leader_id.term
    }
    /// The node voted for.
    pub fn voted_for(&self) -> u64 {
        self.0.leader_id.voted_for
    }
    /// Whether a quorum granted it (a leader was elected with it).
    pub fn is_committed(&self) -> bool {
        self.0.is_committed()
    }
}

impl std::fmt::Display for Vote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// This node's Raft state at one moment.
#[derive(Debug, Clone)]
pub struct Status {
    /// This node's id.
    pub id: u64,
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: u64,
    /// Its vote.
    pub vote: Vote,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// The voters of the effective membership (of both configs while a change is under way).
    pub voters: BTreeSet<u64>,
    /// Every member (voters and learners) and its announced peer address.
    pub nodes: BTreeMap<u64, String>,
    /// Whether a membership change is under way (a joint config).
    pub changing: bool,
    /// The log index of the effective membership entry.
    pub membership_index: u64,
    /// The last applied log index (0: none).
    pub applied: u64,
    /// The cluster's commit index as this node knows it (0: none).
    pub committed: u64,
    /// As the leader: when a quorum last acknowledged it, ms since the epoch.
    pub quorum_acked_at: Option<i64>,
    /// As the leader: for each other member, the last log index it is known to hold (`None`: not
    /// known yet) and when it last acknowledged a heartbeat or an append, ms since the epoch. Empty on
    /// other nodes.
    pub replication: BTreeMap<u64, Replication>,
    /// The last log index included in this node's latest snapshot (0: none).
    pub snapshot: u64,
}

/// What the leader knows of one member's replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replication {
    /// The last log index the member holds, if known.
    pub matched: Option<u64>,
    /// When it last acknowledged the leader, ms since the epoch, if ever.
    pub acked_at: Option<i64>,
}

impl Status {
    fn of(m: &RaftMetrics<TypeConfig>) -> Status {
        let mc = &m.membership_config;
        let now = now_ms();
        Status {
            id: m.id,
            role: Role::of(m.state),
            term: m.current_term,
            vote: Vote(m.vote),
            leader: m.current_leader,
            voters: mc.voter_ids().collect(),
            nodes: mc.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
            changing: mc.membership().get_joint_config().len() > 1,
            membership_index: mc.log_id().as_ref().map(|l| l.index).unwrap_or(0),
            applied: m.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
            committed: m.cluster_committed.as_ref().map(|l| l.index).unwrap_or(0),
            quorum_acked_at: m
                .last_quorum_acked
                .as_ref()
                .map(|t| now - openraft::Instant::elapsed(&**t).as_millis() as i64),
            replication: Self::replication(m, now),
            snapshot: m.snapshot.as_ref().map(|l| l.index).unwrap_or(0),
        }
    }

    fn replication(m: &RaftMetrics<TypeConfig>, now: i64) -> BTreeMap<u64, Replication> {
        let mut out: BTreeMap<u64, Replication> = BTreeMap::new();
        for (id, matched) in m.replication.iter().flatten() {
            out.entry(*id).or_default().matched = matched.as_ref().map(|l| l.index);
        }
        for (id, at) in m.heartbeat.iter().flatten() {
            out.entry(*id).or_default().acked_at = at
                .as_ref()
                .map(|t| now - openraft::Instant::elapsed(&**t).as_millis() as i64);
        }
        out.remove(&m.id);
        out
    }

    /// The learners (members that do not vote).
    pub fn learners(&self) -> impl Iterator<Item = u64> + '_ {
        self.nodes
            .keys()
            .copied()
            .filter(|id| !self.voters.contains(id))
    }

    /// Whether this node is the only member and votes.
    pub fn alone(&self) -> bool {
        self.nodes.len() == 1 && self.voters.iter().eq([&self.id])
    }
}

/// A change of the membership.
#[derive(Debug, Clone)]
pub enum MembershipChange {
    /// Make these learners voters.
    AddVoters(BTreeSet<u64>),
    /// Make these voters learners.
    DemoteVoters(BTreeSet<u64>),
    /// The voters are exactly these (the others stay learners).
    ReplaceVoters(BTreeSet<u64>),
    /// Remove these learners.
    RemoveNodes(BTreeSet<u64>),
    /// Set these members' announced addresses.
    SetAddresses(BTreeMap<u64, String>),
}

/// Follows this node's Raft leader, role and vote (openraft's server metrics).
pub struct StatusWatch(
    openraft::alias::WatchReceiverOf<TypeConfig, openraft::metrics::RaftServerMetrics<TypeConfig>>,
);

impl StatusWatch {
    /// The leader now.
    pub fn leader(&self) -> Option<u64> {
        self.0.borrow_watched().current_leader
    }

    /// Role, term, vote, leader and membership as this watch sees them now (its source is updated
    /// before the full metrics [`RaftHandle::status`] reads, so a watcher must read these here);
    /// progress (applied, committed, quorum acknowledgement, replication, snapshot) is left at zero.
    pub fn current(&self) -> Status {
        let m = self.0.borrow_watched();
        let mc = &m.membership_config;
        Status {
            id: m.id,
            role: Role::of(m.state),
            term: m.vote.leader_id.term,
            vote: Vote(m.vote),
            leader: m.current_leader,
            voters: mc.voter_ids().collect(),
            nodes: mc.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
            changing: mc.membership().get_joint_config().len() > 1,
            membership_index: mc.log_id().as_ref().map(|l| l.index).unwrap_or(0),
            applied: 0,
            committed: 0,
            quorum_acked_at: None,
            replication: BTreeMap::new(),
            snapshot: 0,
        }
    }

    /// Waits for the next change; `Err` once Raft stopped.
    pub async fn changed(&mut self) -> Result<(), Error> {
        self.0.changed().await.map_err(|_| Error::ShuttingDown)
    }
}

/// The Raft node (cheap to clone).
#[derive(Clone)]
pub struct RaftHandle {
    raft: Raft,
    last_leader_contact: Arc<AtomicI64>,
    /// Leadership transfers to this node started (fast failover), for the elections' causes.
    transfers: Arc<AtomicU64>,
}

/// One follower's replication, as the leader sees it.
#[derive(Debug, Clone)]
pub struct FollowerProgress {
    /// Its node id.
    pub id: u64,
    /// The last log index known replicated to it (0: none).
    pub matched: u64,
    /// Time since it last acknowledged a heartbeat or an append (`None`: never).
    pub last_ack: Option<Duration>,
}

/// This node's log and, as leader, its followers' replication.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The last log index (0: none).
    pub last_log: u64,
    /// The last snapshot's index (0: none).
    pub snapshot: u64,
    /// As leader: every other member's replication; empty otherwise.
    pub followers: Vec<FollowerProgress>,
}

fn raft_err(e: impl std::fmt::Display) -> Error {
    Error::Raft(e.to_string())
}

impl RaftHandle {
    /// Wraps a started Raft node.
    pub fn new(raft: Raft) -> RaftHandle {
        RaftHandle {
            raft,
            last_leader_contact: Arc::new(AtomicI64::new(0)),
            transfers: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The log's progress and, as leader, each follower's replication (for metrics).
    pub fn progress(&self) -> Progress {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let heartbeat = m.heartbeat.as_ref();
        let followers = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != m.id)
                    .map(|(id, matched)| FollowerProgress {
                        id: *id,
                        matched: matched.as_ref().map(|l| l.index).unwrap_or(0),
                        last_ack: heartbeat
                            .and_then(|h| h.get(id))
                            .and_then(|t| t.as_ref())
                            .map(|t| openraft::Instant::elapsed(&**t)),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Progress {
            last_log: m.last_log_index.unwrap_or(0),
            snapshot: m.snapshot.as_ref().map(|l| l.index).unwrap_or(0),
            followers,
        }
    }

    /// Leadership transfers to this node started so far (see [`RaftHandle::transfer_to_me`]).
    pub fn transfers_started(&self) -> u64 {
        self.transfers.load(Ordering::Relaxed)
    }

    /// openraft's handle, for the RPC server of this layer.
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The state now.
    pub fn status(&self) -> Status {
        Status::of(&self.raft.metrics().borrow_watched())
    }

    /// Why Raft stopped on a storage error or a panic, or `None` while it runs (or after a normal stop).
    pub fn fatal(&self) -> Option<String> {
        match &self.raft.metrics().borrow_watched().running_state {
            Ok(()) | Err(openraft::error::Fatal::Stopped) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// The leader and its announced peer address, if both are known.
    pub fn leader_addr(&self) -> Option<(u64, Option<String>)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .get_node(&leader)
            .map(|n| n.addr.clone());
        Some((leader, addr))
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    /// Follows leader, role and vote changes.
    pub fn watch(&self) -> StatusWatch {
        StatusWatch(self.raft.server_metrics())
    }

    /// When a leader last reached this node (an AppendEntries or snapshot accepted), ms since the
    /// epoch; 0 if never.
    pub fn last_leader_contact(&self) -> i64 {
        self.last_leader_contact.load(Ordering::Relaxed)
    }

    pub(crate) fn leader_contact(&self) {
        self.last_leader_contact.store(now_ms(), Ordering::Relaxed);
    }

    /// Proposes a transaction without waiting for its result (the leader's own housekeeping: session
    /// expiry, TTL deletions, `/zookeeper/config`).
    pub async fn submit(&self, txn: Txn) -> Result<(), Error> {
        self.raft
            .write(Command(Arc::new(txn)))
            .await
            .map_err(raft_err)
    }

    /// Proposes a transaction now (so proposals keep the order of the calls) and returns its pending
    /// result, which resolves once it is applied here.
    pub async fn propose(
        &self,
        txn: Txn,
    ) -> Result<impl Future<Output = Result<WriteReply, Error>> + Send + 'static, Error> {
        let (responder, rx) = ProgressResponder::complete_only();
        self.raft
            .write(Command(Arc::new(txn)))
            .responder(responder)
            .await
            .map_err(|e| Error::Raft(format!("raft stopped: {e}")))?;
        Ok(async move {
            match rx.await {
                Ok(Ok(resp)) => Ok(resp.data),
                Ok(Err(openraft::errors::ClientWriteError::ForwardToLeader(f))) => {
                    Err(Error::NotLeader(f.leader_id))
                }
                Ok(Err(e)) => Err(Error::Raft(format!("write refused: {e}"))),
                Err(_) => Err(Error::ShuttingDown),
            }
        })
    }

    /// The leader's read index: the commit index, confirmed as still the leader's by a quorum
    /// (openraft's `ReadIndex` policy). Right after an election or a membership change a quorum may not
    /// have answered this leader yet (openraft then says `QuorumNotEnough` at once): ask again for up
    /// to a second instead of failing the client's `sync`. Any other error (not the leader any more,
    /// Raft stopped) is returned at once.
    pub async fn read_index(&self) -> Result<u64, Error> {
        let give_up = tokio::time::Instant::now() + READ_INDEX_PATIENCE;
        loop {
            match self
                .raft
                .get_read_log_id(openraft::raft::ReadPolicy::ReadIndex)
                .await
            {
                Ok((read, _)) => return Ok(read.index()),
                Err(openraft::errors::RaftError::APIError(
                    openraft::errors::LinearizableReadError::QuorumNotEnough(e),
                )) => {
                    if tokio::time::Instant::now() >= give_up {
                        return Err(Error::NoQuorum(e.to_string()));
                    }
                    tracing::debug!(error = %e, "read index: no quorum yet; asking again");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(openraft::errors::RaftError::APIError(
                    openraft::errors::LinearizableReadError::ForwardToLeader(f),
                )) => return Err(Error::NotLeader(f.leader_id)),
                Err(e) => return Err(raft_err(e)),
            }
        }
    }

    /// Waits up to `ttl` until this node's state machine applied `index` (openraft's apply progress,
    /// which advances once `apply` returned, hence after the watch events of the entry were handed to
    /// connections).
    pub async fn wait_applied(&self, index: u64, ttl: Duration) -> Result<(), Error> {
        let mut progress = self.raft.watch_apply_progress();
        let reached = |v: &Option<LogId>| v.as_ref().is_some_and(|l| l.index >= index);
        if reached(&progress.get()) {
            return Ok(());
        }
        match tokio::time::timeout(ttl, progress.wait_until(reached)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::Timeout(format!(
                "zxid {index:#x} not applied within {ttl:?}"
            ))),
        }
    }

    /// A read barrier for this node's start: commits an entry of this term, which applies everything
    /// acknowledged before a crash.
    pub async fn barrier(&self) -> Result<(), Error> {
        self.raft
            .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
            .await
            .map(|_| ())
            .map_err(raft_err)
    }

    /// Adds a learner and waits until it caught up.
    pub async fn add_learner(&self, id: u64, peer_addr: String) -> Result<(), Error> {
        self.raft
            .add_learner(id, BasicNode::new(peer_addr), true)
            .await
            .map(|_| ())
            .map_err(raft_err)
    }

    /// Changes the membership; `retain`: removed voters stay learners.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
        retain: bool,
    ) -> Result<(), Error> {
        let change = match change {
            MembershipChange::AddVoters(ids) => ChangeMembers::AddVoterIds(ids),
            MembershipChange::DemoteVoters(ids) => ChangeMembers::RemoveVoters(ids),
            MembershipChange::ReplaceVoters(ids) => ChangeMembers::ReplaceAllVoters(ids),
            MembershipChange::RemoveNodes(ids) => ChangeMembers::RemoveNodes(ids),
            MembershipChange::SetAddresses(nodes) => ChangeMembers::SetNodes(
                nodes
                    .into_iter()
                    .map(|(id, a)| (id, BasicNode::new(a)))
                    .collect(),
            ),
        };
        self.raft
            .change_membership(change, retain)
            .await
            .map(|_| ())
            .map_err(raft_err)
    }

    /// Starts an election of this node in place of the leader of `from` (the vote this node holds), as
    /// a leadership transfer: voters grant it although their leader lease has not expired. `Ok(false)`
    /// if openraft declined (the vote changed meanwhile).
    pub async fn transfer_to_me(&self, from: &Vote) -> Result<bool, Error> {
        let me = self.raft.metrics().borrow_watched().id;
        match self
            .raft
            .handle_transfer_leader(openraft::raft::TransferLeaderRequest::new(from.0, me, None))
            .await
        {
            Ok(Ok(())) => {
                self.transfers.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Ok(Err(e)) => {
                tracing::info!(error = %e, "leadership transfer not started");
                Ok(false)
            }
            Err(e) => Err(raft_err(e)),
        }
    }

    /// Waits up to `timeout` until the vote differs from `vote`; the status then.
    pub async fn wait_vote_change(&self, vote: &Vote, timeout: Duration) -> Option<Status> {
        let v = vote.0;
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.vote != v, "vote changed")
            .await
            .ok()
            .map(|m| Status::of(&m))
    }

    /// The last applied log index and the last snapshot's index (0: none).
    pub fn applied_and_snapshot(&self) -> (u64, u64) {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let index = |l: &Option<LogId>| l.as_ref().map(|l| l.index).unwrap_or(0);
        (index(&m.last_applied), index(&m.snapshot))
    }

    /// Asks Raft to build a snapshot of the applied state now (and purge the log it covers); returns
    /// without waiting for it. Its progress shows in [`Status::snapshot`].
    pub async fn snapshot_now(&self) -> Result<(), Error> {
        self.raft.trigger().snapshot().await.map_err(raft_err)
    }

    /// Waits until Raft stops by itself (a storage failure, a bug) and says why; never returns while
    /// Raft runs. After [`RaftHandle::shutdown`] it returns "shut down".
    pub async fn stopped(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_watched().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "raft stopped".to_string();
            }
        }
    }

    /// Stops Raft.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.raft.shutdown().await.map_err(raft_err)
    }
}

/// Starting a node's Raft.
impl RaftHandle {
    /// Whether this node has a stored membership (it was initialized or has joined).
    pub async fn is_initialized(&self) -> Result<bool, Error> {
        self.raft.is_initialized().await.map_err(raft_err)
    }

    /// Makes this node a one-voter cluster announcing `peer_addr`.
    pub async fn initialize_alone(&self, id: u64, peer_addr: String) -> Result<(), Error> {
        self.raft
            .initialize(BTreeMap::from([(id, BasicNode::new(peer_addr))]))
            .await
            .map_err(raft_err)
    }

    /// Waits up to `timeout` for the stored membership to show in the status.
    pub async fn wait_membership_loaded(&self, timeout: Duration) {
        let _ = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| m.membership_config.nodes().count() > 0,
                "membership loaded",
            )
            .await;
    }

    /// Waits (up to `timeout`, or for good) until the state committed before the last stop is applied.
    pub async fn wait_for_recovery(&self, timeout: Option<Duration>) -> Result<(), Error> {
        self.raft
            .wait_for_recovery(timeout)
            .await
            .map(|_| ())
            .map_err(raft_err)
    }

    /// Waits up to `timeout` until this node leads.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<(), Error> {
        self.raft
            .wait(Some(timeout))
            .state(ServerState::Leader, "leader")
            .await
            .map(|_| ())
            .map_err(raft_err)
    }
}

/// Counts this node's elections (with their cause), the time without a leader until one is elected,
/// and when this node became leader, into the node's metrics; runs until Raft stops.
pub async fn record_elections(raft: RaftHandle, shared: Arc<crate::shared::Shared>) {
    let metrics = &shared.metrics;
    if !metrics.enabled() {
        return;
    }
    let mut watch = raft.watch();
    let first = raft.status();
    let mut term = first.term;
    let mut leader = first.leader;
    let mut leaderless_since = leader.is_none().then(std::time::Instant::now);
    let mut transfers = raft.transfers_started();
    metrics.set_leader(first.role == Role::Leader);
    while watch.changed().await.is_ok() {
        let s = raft.status();
        if s.term > term
            && s.vote.voted_for() == s.id
            && matches!(s.role, Role::Candidate | Role::Leader)
        {
            let t = raft.transfers_started();
            metrics.election(if t != transfers {
                crate::metrics::ElectionCause::leader_gone
            } else {
                crate::metrics::ElectionCause::timeout
            });
            transfers = t;
        }
        term = s.term;
        match (s.leader, leaderless_since) {
            (None, None) => leaderless_since = Some(std::time::Instant::now()),
            (Some(_), Some(since)) => {
                metrics.leader_elected(since.elapsed());
                leaderless_since = None;
            }
            (Some(l), None) if Some(l) != leader => metrics.leader_elected(Duration::ZERO),
            _ => {}
        }
        leader = s.leader;
        metrics.set_leader(s.role == Role::Leader);
    }
}
