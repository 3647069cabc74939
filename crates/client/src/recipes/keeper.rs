//! [`EphemeralNode`]: an ephemeral node kept in existence, with its current data, across reconnections,
//! deletions by others and (with a renewing [`Connector`]) session expiry. The common part of group
//! membership and service registration.

use bytes::Bytes;
use roster_proto::{CreateMode, ErrorCode, Stat};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::{ensure_path, next_state, Connector};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::ops::CreateOptions;
use crate::session::SessionEvent;

/// What happened to a kept ephemeral node (a group member, a service registration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// The node exists, created by session `session_id` at `czxid`.
    Created {
        /// The session holding the node.
        session_id: i64,
        /// The node's czxid.
        czxid: i64,
    },
    /// The connection is lost; the node lives as long as the session, which may come back.
    Suspended,
    /// The session was resumed; the node is intact.
    Reconnected,
    /// The node was created again, with the current data, after it was lost.
    Recreated {
        /// The session holding the node now.
        session_id: i64,
        /// The new node's czxid.
        czxid: i64,
        /// Why it had to be created again.
        cause: RecreateCause,
    },
    /// Another session holds the node's path (typically the expired previous session, not yet reaped
    /// by the server); waiting for it to go.
    Waiting {
        /// The holding session.
        owner: i64,
    },
    /// The node is gone for good: the session ended and could not be renewed, or it was deleted by
    /// [`EphemeralNode::delete`].
    Ended,
}

/// Why a kept node was created again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecreateCause {
    /// The session expired; the node was re-created on a new session.
    SessionExpired,
    /// Someone deleted the node while the session lived.
    Deleted,
}

/// A kept ephemeral node. Dropping the handle deletes the node (in the background).
#[derive(Debug)]
pub struct EphemeralNode {
    path: String,
    cmds: mpsc::UnboundedSender<Cmd>,
    events: broadcast::Sender<NodeEvent>,
    first_events: Option<broadcast::Receiver<NodeEvent>>,
    stat: watch::Receiver<Option<Stat>>,
}

#[derive(Debug)]
enum Cmd {
    Update(Bytes, oneshot::Sender<Result<Stat>>),
    Delete(oneshot::Sender<Result<()>>),
}

enum Created {
    Ours(Stat),
    Busy(i64, crate::Watch),
}

impl EphemeralNode {
    /// Creates the ephemeral node `path` (and persistent parents) with `data` and keeps it. Fails with
    /// `NodeExists` if another session holds the path.
    pub async fn create(
        connector: impl Into<Connector>,
        path: &str,
        data: &[u8],
    ) -> Result<EphemeralNode> {
        let connector = connector.into();
        let client = connector.client();
        let data = Bytes::copy_from_slice(data);
        let stat = match create_owned(&client, path, &data).await? {
            Created::Ours(s) => s,
            Created::Busy(..) => return Err(Error::Code(ErrorCode::NodeExists)),
        };
        let (events_tx, events_rx) = broadcast::channel(256);
        let _ = events_tx.send(NodeEvent::Created {
            session_id: client.session_id(),
            czxid: stat.czxid,
        });
        let (stat_tx, stat_rx) = watch::channel(Some(stat));
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let task = Task {
            connector,
            path: path.to_string(),
            data,
            events: events_tx.clone(),
            stat: stat_tx,
            cmds: cmd_rx,
        };
        tokio::spawn(task.run(client));
        Ok(EphemeralNode {
            path: path.to_string(),
            cmds: cmd_tx,
            events: events_tx,
            first_events: Some(events_rx),
            stat: stat_rx,
        })
    }

    /// The node's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The node's last known stat (`None` while it is being re-created).
    pub fn stat(&self) -> Option<Stat> {
        self.stat.borrow().clone()
    }

    /// The events; the first call gets every event since creation (starting with `Created`).
    pub fn events(&mut self) -> broadcast::Receiver<NodeEvent> {
        self.first_events
            .take()
            .unwrap_or_else(|| self.events.subscribe())
    }

    /// Replaces the data (kept for re-creation too).
    pub async fn update(&self, data: &[u8]) -> Result<Stat> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Update(Bytes::copy_from_slice(data), tx))
            .map_err(|_| Error::Closed)?;
        rx.await.unwrap_or(Err(Error::Closed))
    }

    /// Deletes the node and stops keeping it.
    pub async fn delete(self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Delete(tx)).is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }
}

/// Creates `path` as our ephemeral node, or finds it ours already (a retried create), or reports the
/// session holding it.
async fn create_owned(client: &Client, path: &str, data: &Bytes) -> Result<Created> {
    let options = CreateOptions::new(CreateMode::Ephemeral);
    let parent = match path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        match client.create2(path, data, &options).await {
            Ok((_, stat)) => return Ok(Created::Ours(stat)),
            Err(Error::Code(ErrorCode::NoNode)) if attempts < 10 => {
                ensure_path(client, &parent).await?
            }
            Err(Error::Code(ErrorCode::NodeExists)) => match client.exists_w(path).await? {
                (Some(stat), _) if stat.ephemeral_owner == client.session_id() => {
                    let stat = client.set_data(path, data, None).await?;
                    return Ok(Created::Ours(stat));
                }
                (Some(stat), w) => return Ok(Created::Busy(stat.ephemeral_owner, w)),
                (None, _) => {}
            },
            Err(e) if e.is_connection_problem() && attempts < 10 => {
                super::wait_connected(client).await?
            }
            Err(e) => return Err(e),
        }
    }
}

struct Task {
    connector: Connector,
    path: String,
    data: Bytes,
    events: broadcast::Sender<NodeEvent>,
    stat: watch::Sender<Option<Stat>>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
}

enum Step {
    /// Look again.
    Again,
    /// Create it again for this reason.
    Recreate(RecreateCause),
    /// The session is over.
    SessionEnded(Error),
    /// Stop.
    Stop,
}

impl Task {
    async fn run(mut self, mut client: Client) {
        let mut recreate: Option<RecreateCause> = None;
        loop {
            if let Some(cause) = recreate.take() {
                self.stat.send_replace(None);
                match self.recreate(&client, cause).await {
                    Step::Again => {}
                    Step::Stop => return,
                    Step::Recreate(c) => {
                        recreate = Some(c);
                        continue;
                    }
                    Step::SessionEnded(e) => match self.renew(&client, e).await {
                        Some(c) => {
                            client = c;
                            recreate = Some(RecreateCause::SessionExpired);
                            continue;
                        }
                        None => return,
                    },
                }
            }
            match self.watch_once(&client).await {
                Step::Again => {}
                Step::Stop => return,
                Step::Recreate(c) => recreate = Some(c),
                Step::SessionEnded(e) => match self.renew(&client, e).await {
                    Some(c) => {
                        client = c;
                        recreate = Some(RecreateCause::SessionExpired);
                    }
                    None => return,
                },
            }
        }
    }

    async fn renew(&self, old: &Client, e: Error) -> Option<Client> {
        self.stat.send_replace(None);
        if e != Error::Closed && self.connector.renews() {
            if let Ok(c) = self.connector.renew(old.session_id()).await {
                return Some(c);
            }
        }
        let _ = self.events.send(NodeEvent::Ended);
        None
    }

    async fn recreate(&mut self, client: &Client, cause: RecreateCause) -> Step {
        loop {
            match create_owned(client, &self.path, &self.data).await {
                Ok(Created::Ours(stat)) => {
                    let _ = self.events.send(NodeEvent::Recreated {
                        session_id: client.session_id(),
                        czxid: stat.czxid,
                        cause,
                    });
                    self.stat.send_replace(Some(stat));
                    return Step::Again;
                }
                Ok(Created::Busy(owner, w)) => {
                    let _ = self.events.send(NodeEvent::Waiting { owner });
                    let mut states = client.state_events();
                    tokio::select! {
                        _ = w => {}
                        ev = next_state(&mut states, client) => match ev {
                            SessionEvent::Expired | SessionEvent::AuthFailed => return Step::SessionEnded(Error::SessionExpired),
                            SessionEvent::Closed => return Step::SessionEnded(Error::Closed),
                            _ => {}
                        },
                        cmd = self.cmds.recv() => if let Some(step) = self.command(client, cmd).await { return step },
                    }
                }
                Err(e) if e.is_terminal() => return Step::SessionEnded(e),
                Err(e) => {
                    tracing::warn!(error = %e, path = %self.path, "cannot re-create ephemeral node; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Handles a command; `Some` if the task should leave its current step.
    async fn command(&mut self, client: &Client, cmd: Option<Cmd>) -> Option<Step> {
        match cmd {
            Some(Cmd::Update(data, reply)) => {
                self.data = data;
                let r = client.set_data(&self.path, &self.data, None).await;
                match &r {
                    Ok(stat) => {
                        self.stat.send_replace(Some(stat.clone()));
                    }
                    // Kept for the re-creation, which will use the new data.
                    Err(Error::Code(ErrorCode::NoNode)) => {}
                    Err(_) => {}
                }
                let _ = reply.send(r);
                None
            }
            Some(Cmd::Delete(reply)) => {
                let r = match client.delete(&self.path, None).await {
                    Ok(()) | Err(Error::Code(ErrorCode::NoNode)) => Ok(()),
                    Err(e) if e.is_terminal() => Ok(()),
                    Err(e) => Err(e),
                };
                self.stat.send_replace(None);
                let _ = self.events.send(NodeEvent::Ended);
                let _ = reply.send(r);
                Some(Step::Stop)
            }
            None => {
                // Handle dropped: delete in the background (best effort).
                let _ = client.delete(&self.path, None).await;
                let _ = self.events.send(NodeEvent::Ended);
                Some(Step::Stop)
            }
        }
    }

    async fn watch_once(&mut self, client: &Client) -> Step {
        let mut states = client.state_events();
        let (stat, mut w) = match client.exists_w(&self.path).await {
            Ok(r) => r,
            Err(e) if e.is_terminal() => return Step::SessionEnded(e),
            Err(_) => {
                return match super::wait_connected(client).await {
                    Ok(()) => Step::Again,
                    Err(e) => Step::SessionEnded(e),
                }
            }
        };
        match stat {
            None => return Step::Recreate(RecreateCause::Deleted),
            Some(s) if s.ephemeral_owner != client.session_id() => {
                return Step::Recreate(RecreateCause::Deleted)
            }
            Some(s) => {
                self.stat.send_replace(Some(s));
            }
        }
        loop {
            tokio::select! {
                ev = next_state(&mut states, client) => match ev {
                    SessionEvent::Suspended => { let _ = self.events.send(NodeEvent::Suspended); }
                    SessionEvent::Reconnected | SessionEvent::Connected => {
                        let _ = self.events.send(NodeEvent::Reconnected);
                        return Step::Again;
                    }
                    SessionEvent::Expired | SessionEvent::AuthFailed => return Step::SessionEnded(Error::SessionExpired),
                    SessionEvent::Closed => return Step::SessionEnded(Error::Closed),
                },
                cmd = self.cmds.recv() => {
                    if let Some(step) = self.command(client, cmd).await {
                        return step;
                    }
                }
                _ = &mut w => return Step::Again,
            }
        }
    }
}
