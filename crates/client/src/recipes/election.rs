//! Leader election: among the candidates of an election path, the one with the lowest sequence number
//! leads.
//!
//! **Layout** (compatible with Apache Curator's `LeaderLatch`): each candidate is an ephemeral
//! sequential node `PATH/_c_<uuid>-latch-<seq>` whose data is the participant id. A Curator
//! `LeaderLatch` on the same path takes part in the same election, and Curator's
//! `LeaderLatch.getLeader()`/`getParticipants()` read ours.
//!
//! **Guarantees**
//!
//! - At most one candidate *counts itself* leader at a time, provided each stops when it sees
//!   [`Leadership::Suspended`]: leadership is counted as lost the moment the connection is lost, and
//!   granted again on reconnection only if the candidate's node survived (same token).
//! - Each candidate watches only its predecessor (no herd effect): a departure wakes one candidate.
//! - The fencing token ([`Candidate::fencing_token`]) is the leader node's `czxid`; tokens of
//!   successive leaders strictly increase.
//! - [`Candidate::resign`] hands leadership to the next candidate in line and re-enters at the back;
//!   [`Candidate::close`] leaves the election.
//! - After session expiry, a candidate built on a renewing [`Connector`] re-enters the election on a new
//!   session (reported as [`LeadershipEvent::Rejoined`]); otherwise it ends ([`Leadership::Closed`]).
//!
//! **What the caller must do**: stop acting as leader on `Suspended` (and on `Closed`); pass the token
//! to every outside resource the leader writes to, and let the resource refuse smaller tokens.

use crate::session::SessionEvent;
use bytes::Bytes;
use roster_proto::ErrorCode;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::sequence::{create_protected, position, sorted_candidates};
use super::{join, next_state, Connector};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::ops::{Op, OpResult};
use crate::watch::Watch;

/// The lock name of Curator's `LeaderLatch`.
pub const LATCH_NAME: &str = "latch-";

/// Where a candidate stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// Entering the election (creating the node).
    Joining,
    /// In line, `position` candidates ahead (1: next).
    Follower {
        /// How many candidates are ahead.
        position: usize,
    },
    /// The leader, with its fencing token (the node's czxid) and node path.
    Leader {
        /// The fencing token.
        token: i64,
        /// The leader node.
        node: String,
    },
    /// The connection is lost: not leader until reconnected (the session may still be alive).
    Suspended,
    /// Out of the election: closed, or the session ended and could not be renewed.
    Closed,
}

impl Leadership {
    /// Whether this is [`Leadership::Leader`].
    pub fn is_leader(&self) -> bool {
        matches!(self, Leadership::Leader { .. })
    }
}

/// Why leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// The connection was lost (the session may come back, and leadership with it).
    Suspended,
    /// The session expired.
    Expired,
    /// [`Candidate::resign`].
    Resigned,
    /// [`Candidate::close`], or the candidate handle was dropped.
    Closed,
    /// The leader node was deleted by someone else.
    NodeDeleted,
}

/// A change of leadership, as seen by one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadershipEvent {
    /// This candidate became leader.
    Elected {
        /// The fencing token.
        token: i64,
        /// The leader node.
        node: String,
    },
    /// This candidate stopped being leader.
    Lost {
        /// Why.
        reason: LossReason,
    },
    /// The session expired and the candidate entered the election again on a new session.
    Rejoined {
        /// The new session.
        session_id: i64,
    },
    /// The candidate is out of the election for good.
    Closed,
}

/// A participant of an election, as read from its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// The participant id (the node's data).
    pub id: String,
    /// The node's path.
    pub node: String,
    /// The node's czxid: the fencing token it has, or will have, as leader.
    pub token: i64,
    /// The session holding the node.
    pub session_id: i64,
    /// Whether it is the leader (first in line).
    pub is_leader: bool,
}

/// An election to take part in. See the module docs.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    connector: Connector,
    path: String,
    id: String,
    lock_name: String,
}

impl LeaderElection {
    /// An election on `path` for participant `id` (stored as the node's data).
    pub fn new(connector: impl Into<Connector>, path: &str, id: &str) -> LeaderElection {
        LeaderElection {
            connector: connector.into(),
            path: path.trim_end_matches('/').to_string(),
            id: id.to_string(),
            lock_name: LATCH_NAME.to_string(),
        }
    }

    /// Uses another lock name (Curator's `LeaderSelector` uses `lock-`).
    pub fn with_lock_name(mut self, lock_name: &str) -> LeaderElection {
        self.lock_name = lock_name.to_string();
        self
    }

    /// Enters the election: creates this candidate's node and returns once it exists; leadership is then
    /// followed in the background.
    pub async fn join(&self) -> Result<Candidate> {
        let (state_tx, state_rx) = watch::channel(Leadership::Joining);
        let (events_tx, events_rx) = broadcast::channel(256);
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let client = self.connector.client();
        let (node, _) =
            create_protected(&client, &self.path, &self.lock_name, self.id.as_bytes()).await?;
        let task = Task {
            connector: self.connector.clone(),
            dir: self.path.clone(),
            id: self.id.clone(),
            lock_name: self.lock_name.clone(),
            state: state_tx,
            events: events_tx.clone(),
            cmds: cmd_rx,
        };
        tokio::spawn(task.run(client, node));
        Ok(Candidate {
            state: state_rx,
            events: events_tx,
            first_events: Some(events_rx),
            cmds: cmd_tx,
            path: self.path.clone(),
            id: self.id.clone(),
            connector: self.connector.clone(),
        })
    }
}

/// One candidate in an election: its leadership state and stream, resign and close.
#[derive(Debug)]
pub struct Candidate {
    state: watch::Receiver<Leadership>,
    events: broadcast::Sender<LeadershipEvent>,
    first_events: Option<broadcast::Receiver<LeadershipEvent>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    path: String,
    id: String,
    connector: Connector,
}

#[derive(Debug)]
enum Cmd {
    Resign(oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<()>>),
}

impl Candidate {
    /// The current leadership.
    pub fn leadership(&self) -> Leadership {
        self.state.borrow().clone()
    }

    /// Whether this candidate is the leader now.
    pub fn is_leader(&self) -> bool {
        self.state.borrow().is_leader()
    }

    /// The fencing token while leader.
    pub fn fencing_token(&self) -> Option<i64> {
        match &*self.state.borrow() {
            Leadership::Leader { token, .. } => Some(*token),
            _ => None,
        }
    }

    /// The participant id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The election path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The leadership as a watch channel: the latest state, and a wake-up on every change.
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.state.clone()
    }

    /// The stream of leadership events. The first call gets every event since [`LeaderElection::join`];
    /// later calls get the events from then on.
    pub fn events(&mut self) -> broadcast::Receiver<LeadershipEvent> {
        self.first_events
            .take()
            .unwrap_or_else(|| self.events.subscribe())
    }

    /// Waits until this candidate is leader and returns its fencing token; fails with
    /// [`Error::Closed`] if the candidate leaves the election first.
    pub async fn wait_leader(&self) -> Result<i64> {
        let mut rx = self.state.clone();
        let state = rx
            .wait_for(|s| s.is_leader() || *s == Leadership::Closed)
            .await
            .map_err(|_| Error::Closed)?;
        match &*state {
            Leadership::Leader { token, .. } => Ok(*token),
            _ => Err(Error::Closed),
        }
    }

    /// Waits until this candidate is not leader any more (suspended, resigned, expired, closed).
    pub async fn wait_not_leader(&self) {
        let mut rx = self.state.clone();
        let _ = rx.wait_for(|s| !s.is_leader()).await;
    }

    /// Gives up leadership (or its place in line) to the next candidate, and re-enters the election at
    /// the back. Returns once the node is deleted.
    pub async fn resign(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(Cmd::Resign(tx)).map_err(|_| Error::Closed)?;
        rx.await.unwrap_or(Err(Error::Closed))
    }

    /// Leaves the election (deleting this candidate's node).
    pub async fn close(self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Close(tx)).is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }

    /// Runs `ops` as one transaction only if this candidate's node still exists, i.e. it is still the
    /// leader as far as ZooKeeper knows (see [`fenced_multi`]).
    pub async fn fenced_multi(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let node = match &*self.state.borrow() {
            Leadership::Leader { node, .. } => node.clone(),
            _ => return Err(Error::Code(ErrorCode::NoNode)),
        };
        fenced_multi(&self.connector.client(), &node, ops).await
    }
}

/// Runs `ops` as one transaction prefixed by a check that `leader_node` exists: the writes happen only
/// while its holder still holds it. Fails with `NoNode` otherwise. Returns the results of `ops`.
pub async fn fenced_multi(
    client: &Client,
    leader_node: &str,
    ops: Vec<Op>,
) -> Result<Vec<OpResult>> {
    let mut all = Vec::with_capacity(ops.len() + 1);
    all.push(Op::check(leader_node, None));
    all.extend(ops);
    let mut results = client.multi(all).await?;
    results.remove(0);
    Ok(results)
}

/// The participants of the election on `path`, first in line first (empty if there is none).
pub async fn participants(client: &Client, path: &str) -> Result<Vec<Participant>> {
    participants_with(client, path, LATCH_NAME).await
}

/// [`participants`] for candidates made with another lock name.
pub async fn participants_with(
    client: &Client,
    path: &str,
    lock_name: &str,
) -> Result<Vec<Participant>> {
    let path = path.trim_end_matches('/');
    let children = match client.get_children(path).await {
        Ok(c) => c,
        Err(Error::Code(ErrorCode::NoNode)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in sorted_candidates(children, lock_name) {
        let node = join(path, &name);
        match client.get_data(&node).await {
            Ok((data, stat)) => out.push(Participant {
                id: String::from_utf8_lossy(&data).into_owned(),
                node,
                token: stat.czxid,
                session_id: stat.ephemeral_owner,
                is_leader: out.is_empty(),
            }),
            Err(Error::Code(ErrorCode::NoNode)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The current leader of the election on `path`, if any.
pub async fn leader(client: &Client, path: &str) -> Result<Option<Participant>> {
    Ok(participants(client, path).await?.into_iter().next())
}

struct Task {
    connector: Connector,
    dir: String,
    id: String,
    lock_name: String,
    state: watch::Sender<Leadership>,
    events: broadcast::Sender<LeadershipEvent>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
}

/// Why `hold` returned.
enum Exit {
    Resign(oneshot::Sender<Result<()>>),
    Close(Option<oneshot::Sender<Result<()>>>),
    /// The session ended.
    SessionEnded(Error),
    /// Our node is gone (deleted by someone) while the session lives.
    NodeGone,
}

enum Wake {
    Node,
    State(SessionEvent),
    Cmd(Option<Cmd>),
}

impl Task {
    fn set(&self, new: Leadership, reason: LossReason) {
        let old = self.state.borrow().clone();
        if old == new {
            return;
        }
        if old.is_leader() {
            let _ = self.events.send(LeadershipEvent::Lost { reason });
        }
        if let Leadership::Leader { token, node } = &new {
            let _ = self.events.send(LeadershipEvent::Elected {
                token: *token,
                node: node.clone(),
            });
        }
        if new == Leadership::Closed {
            let _ = self.events.send(LeadershipEvent::Closed);
        }
        self.state.send_replace(new);
    }

    async fn run(mut self, mut client: Client, first_node: String) {
        let mut node = Some(first_node);
        loop {
            let current = match node.take() {
                Some(n) => n,
                None => {
                    self.set(Leadership::Joining, LossReason::Resigned);
                    match create_protected(&client, &self.dir, &self.lock_name, self.id.as_bytes())
                        .await
                    {
                        Ok((n, _)) => n,
                        Err(e) if e.is_terminal() => match self.renew(&client, e).await {
                            Some(c) => {
                                client = c;
                                continue;
                            }
                            None => return,
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, dir = %self.dir, "election: cannot create candidate; retrying");
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
            };
            match self.hold(&client, &current).await {
                Exit::Resign(reply) => {
                    // Not leader any more *before* the next candidate can be.
                    self.set(Leadership::Joining, LossReason::Resigned);
                    let r = delete_node(&client, &current).await;
                    let failed = r.as_ref().is_err_and(|e| e.is_terminal());
                    let _ = reply.send(r);
                    if failed {
                        match self.renew(&client, Error::SessionExpired).await {
                            Some(c) => client = c,
                            None => return,
                        }
                    }
                }
                Exit::Close(reply) => {
                    self.set(Leadership::Closed, LossReason::Closed);
                    let r = delete_node(&client, &current).await;
                    if let Some(reply) = reply {
                        let _ = reply.send(match r {
                            Err(e) if e.is_terminal() => Ok(()),
                            r => r,
                        });
                    }
                    return;
                }
                Exit::NodeGone => {
                    self.set(Leadership::Joining, LossReason::NodeDeleted);
                }
                Exit::SessionEnded(e) => match self.renew(&client, e).await {
                    Some(c) => client = c,
                    None => return,
                },
            }
        }
    }

    /// After the session ended: a new client, or `None` (state Closed) if there is none to be had.
    async fn renew(&self, old: &Client, e: Error) -> Option<Client> {
        let reason = if e == Error::Closed {
            LossReason::Closed
        } else {
            LossReason::Expired
        };
        self.set(Leadership::Suspended, reason);
        if e == Error::Closed || !self.connector.renews() {
            self.set(Leadership::Closed, reason);
            return None;
        }
        match self.connector.renew(old.session_id()).await {
            Ok(c) => {
                let _ = self.events.send(LeadershipEvent::Rejoined {
                    session_id: c.session_id(),
                });
                Some(c)
            }
            Err(_) => {
                self.set(Leadership::Closed, reason);
                None
            }
        }
    }

    async fn wake(
        &mut self,
        client: &Client,
        states: &mut broadcast::Receiver<SessionEvent>,
        watch: Option<Watch>,
    ) -> Wake {
        let node = async move {
            match watch {
                Some(w) => {
                    w.await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = node => Wake::Node,
            ev = next_state(states, client) => Wake::State(ev),
            c = self.cmds.recv() => Wake::Cmd(c),
        }
    }

    /// Follows leadership for one node of one session.
    async fn hold(&mut self, client: &Client, node: &str) -> Exit {
        let mut states = client.state_events();
        loop {
            // While disconnected, wait: no calls, no leadership.
            if client.state() != crate::SessionState::Connected {
                if client.state().is_terminal() {
                    return Exit::SessionEnded(client.state().error());
                }
                self.set(Leadership::Suspended, LossReason::Suspended);
                match self.wake(client, &mut states, None).await {
                    Wake::State(SessionEvent::Expired | SessionEvent::AuthFailed) => {
                        return Exit::SessionEnded(Error::SessionExpired)
                    }
                    Wake::State(SessionEvent::Closed) => return Exit::SessionEnded(Error::Closed),
                    Wake::Cmd(Some(Cmd::Resign(r))) => return Exit::Resign(r),
                    Wake::Cmd(Some(Cmd::Close(r))) => return Exit::Close(Some(r)),
                    Wake::Cmd(None) => return Exit::Close(None),
                    _ => continue,
                }
            }
            let step = async {
                let (pos, pred) = position(client, &self.dir, node, &self.lock_name).await?;
                match pred {
                    None => {
                        let (stat, w) = client.exists_w(node).await?;
                        let stat = stat.ok_or(Error::Code(ErrorCode::NoNode))?;
                        Ok::<_, Error>((pos, Some(stat.czxid), w))
                    }
                    Some(p) => {
                        let (stat, w) = client.exists_w(&p).await?;
                        Ok((pos, stat.map(|_| -1), w))
                    }
                }
            }
            .await;
            let watch = match step {
                Ok((_, Some(token), w)) if token >= 0 => {
                    // Leader, unless the connection dropped meanwhile (the event is queued in `states`).
                    if client.state() == crate::SessionState::Connected {
                        self.set(
                            Leadership::Leader {
                                token,
                                node: node.to_string(),
                            },
                            LossReason::Suspended,
                        );
                    }
                    w
                }
                Ok((pos, Some(_), w)) => {
                    self.set(
                        Leadership::Follower { position: pos },
                        LossReason::NodeDeleted,
                    );
                    w
                }
                // The predecessor is already gone: look again.
                Ok((_, None, _)) => continue,
                Err(Error::Code(ErrorCode::NoNode)) => return Exit::NodeGone,
                Err(e) if e.is_terminal() => return Exit::SessionEnded(e),
                Err(e) => {
                    tracing::debug!(error = %e, "election: retrying after error");
                    if e.is_connection_problem() {
                        // Not leader while the connection is down, even before the event arrives.
                        self.set(Leadership::Suspended, LossReason::Suspended);
                        let _ = super::wait_connected(client).await;
                    } else {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    continue;
                }
            };
            match self.wake(client, &mut states, Some(watch)).await {
                Wake::Node => {}
                // (A Suspended already over is stale: the loop re-checks.)
                Wake::State(SessionEvent::Suspended)
                    if client.state() != crate::SessionState::Connected =>
                {
                    self.set(Leadership::Suspended, LossReason::Suspended)
                }
                Wake::State(SessionEvent::Expired | SessionEvent::AuthFailed) => {
                    return Exit::SessionEnded(Error::SessionExpired)
                }
                Wake::State(SessionEvent::Closed) => return Exit::SessionEnded(Error::Closed),
                Wake::State(_) => {}
                Wake::Cmd(Some(Cmd::Resign(r))) => return Exit::Resign(r),
                Wake::Cmd(Some(Cmd::Close(r))) => return Exit::Close(Some(r)),
                Wake::Cmd(None) => return Exit::Close(None),
            }
        }
    }
}

async fn delete_node(client: &Client, node: &str) -> Result<()> {
    loop {
        match client.delete(node, None).await {
            Ok(()) | Err(Error::Code(ErrorCode::NoNode)) => return Ok(()),
            Err(e) if e.is_connection_problem() => super::wait_connected(client).await?,
            Err(e) => return Err(e),
        }
    }
}

/// The data of a participant node, for callers that read nodes themselves.
pub fn participant_id(data: &Bytes) -> String {
    String::from_utf8_lossy(data).into_owned()
}
