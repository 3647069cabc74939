//! A distributed mutex.
//!
//! **Layout** (compatible with Apache Curator's `InterProcessMutex`): each contender is an ephemeral
//! sequential node `PATH/_c_<uuid>-lock-<seq>`; the lowest sequence holds the lock. A Curator
//! `InterProcessMutex` on the same path excludes, and is excluded by, this one. (Curator's mutex is
//! re-entrant within one JVM; this one is not: acquiring twice from one process queues twice.)
//!
//! **Guarantees**: at most one holder at a time, as long as holders stop on suspension; each waiter
//! watches only its predecessor; the holder's fencing token ([`LockGuard::fencing_token`], the node's
//! czxid) strictly increases from one holder to the next.
//!
//! **What the caller must do**: while holding, follow [`LockGuard::lost`]: it resolves on
//! `Suspended` (stop touching the resource; the lock may come back, see [`LockGuard::check`]), on
//! expiry and if the node is deleted. Pass the token to outside resources. Release with
//! [`LockGuard::release`] (dropping the guard releases in the background). An acquisition that fails or
//! times out removes its node.

use std::time::Duration;

use roster_proto::ErrorCode;

use super::sequence::{create_protected, position};
use super::{next_state, Connector};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::session::SessionEvent;

/// The lock name of Curator's `InterProcessMutex`.
pub const LOCK_NAME: &str = "lock-";

/// A mutex on a path. See the module docs.
#[derive(Debug, Clone)]
pub struct Mutex {
    connector: Connector,
    path: String,
    data: Vec<u8>,
}

/// Why a held lock is (or may be) lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockLoss {
    /// The connection was lost; the lock may still be held (check after reconnection).
    Suspended,
    /// The session ended: the lock is gone.
    SessionEnded,
    /// The lock node was deleted.
    NodeDeleted,
}

impl Mutex {
    /// A mutex on `path`. The contender nodes hold `data` (e.g. who holds the lock).
    pub fn new(connector: impl Into<Connector>, path: &str) -> Mutex {
        Mutex {
            connector: connector.into(),
            path: path.trim_end_matches('/').to_string(),
            data: Vec::new(),
        }
    }

    /// The same mutex, with contender nodes holding `data`.
    pub fn with_data(mut self, data: &[u8]) -> Mutex {
        self.data = data.to_vec();
        self
    }

    /// Waits for the lock, however long it takes.
    pub async fn acquire(&self) -> Result<LockGuard> {
        match self.acquire_inner(None).await? {
            Some(g) => Ok(g),
            None => Err(Error::Timeout),
        }
    }

    /// Waits for the lock at most `timeout`; `Ok(None)` if it was not acquired in time.
    pub async fn try_acquire(&self, timeout: Duration) -> Result<Option<LockGuard>> {
        self.acquire_inner(Some(timeout)).await
    }

    async fn acquire_inner(&self, timeout: Option<Duration>) -> Result<Option<LockGuard>> {
        let client = self.connector.client();
        let (node, stat) = create_protected(&client, &self.path, LOCK_NAME, &self.data).await?;
        let wait = self.wait_first(&client, &node);
        let outcome = match timeout {
            Some(t) => tokio::time::timeout(t, wait).await.ok(),
            None => Some(wait.await),
        };
        match outcome {
            Some(Ok(())) => Ok(Some(LockGuard {
                client,
                node,
                token: stat.czxid,
                released: false,
            })),
            other => {
                // Timed out or failed: give our place up.
                let _ = client.delete(&node, None).await;
                match other {
                    Some(Err(e)) => Err(e),
                    _ => Ok(None),
                }
            }
        }
    }

    async fn wait_first(&self, client: &Client, node: &str) -> Result<()> {
        loop {
            let pred = match position(client, &self.path, node, LOCK_NAME).await {
                Ok((_, None)) => return Ok(()),
                Ok((_, Some(p))) => p,
                Err(e) if e.is_connection_problem() => {
                    super::wait_connected(client).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match client.exists_w(&pred).await {
                Ok((Some(_), w)) => {
                    let _ = w.await;
                }
                Ok((None, _)) => {}
                Err(e) if e.is_connection_problem() => super::wait_connected(client).await?,
                Err(e) => return Err(e),
            }
        }
    }
}

/// A held lock. Dropping it releases the lock in the background.
#[derive(Debug)]
pub struct LockGuard {
    client: Client,
    node: String,
    token: i64,
    released: bool,
}

impl LockGuard {
    /// The fencing token: the lock node's czxid.
    pub fn fencing_token(&self) -> i64 {
        self.token
    }

    /// The lock node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the lock is still held right now: connected, and the node exists in this session.
    pub async fn check(&self) -> bool {
        self.client.state() == crate::SessionState::Connected
            && matches!(self.client.exists(&self.node).await, Ok(Some(s)) if s.ephemeral_owner == self.client.session_id())
    }

    /// Resolves when the lock is, or may be, lost.
    pub async fn lost(&self) -> LockLoss {
        let mut states = self.client.state_events();
        loop {
            match self.client.state() {
                crate::SessionState::Connected => {}
                s if s.is_terminal() => return LockLoss::SessionEnded,
                _ => return LockLoss::Suspended,
            }
            let w = match self.client.exists_w(&self.node).await {
                Ok((Some(_), w)) => w,
                Ok((None, _)) => return LockLoss::NodeDeleted,
                Err(e) if e.is_terminal() => return LockLoss::SessionEnded,
                Err(_) => return LockLoss::Suspended,
            };
            tokio::select! {
                ev = w => if ev.is_session_event() { return LockLoss::SessionEnded },
                ev = next_state(&mut states, &self.client) => match ev {
                    SessionEvent::Suspended => return LockLoss::Suspended,
                    SessionEvent::Reconnected | SessionEvent::Connected => {}
                    _ => return LockLoss::SessionEnded,
                },
            }
        }
    }

    /// Releases the lock (deletes the node).
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        loop {
            match self.client.delete(&self.node, None).await {
                Ok(()) | Err(Error::Code(ErrorCode::NoNode)) => return Ok(()),
                Err(e) if e.is_terminal() => return Ok(()),
                Err(e) if e.is_connection_problem() => super::wait_connected(&self.client).await?,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let client = self.client.clone();
        let node = std::mem::take(&mut self.node);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.delete(&node, None).await;
            });
        }
    }
}
