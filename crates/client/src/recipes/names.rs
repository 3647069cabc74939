//! Owned names, for a logical actor tree: each logical name (`victorops/broadcaster`) has exactly one
//! owner at a time among the hosts that claim it; the owner runs the actor, the others stand by.
//!
//! **Layout**: one leader election per name, `ROOT/<name>/_c_<uuid>-latch-<seq>` (the Curator
//! `LeaderLatch` layout of [`super::election`]); a candidate's data is its host id (typically its
//! service instance id, so that [`super::discovery`] can route `cluster://service/<name>` to the owner).
//! Names may have several segments; a name's node can hold both candidates and child names.
//!
//! **Guarantees**: at most one owner per name at a time among hosts that stop on
//! [`NameEvent::Released`]; when the owner's session dies the next candidate takes over (failover);
//! [`NameRegistry::hand_off`] makes the owner give the name to the next candidate; every change of
//! ownership seen by a host is delivered as a [`NameEvent`], with the owner's fencing token.
//!
//! **What the caller must do**: start the actor on `Acquired`, stop it on `Released` (which includes
//! connection loss: the name may be given to another host if the session expires), and pass the token
//! to anything the actor writes outside.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};

use super::election::{self, Candidate, LeaderElection, LeadershipEvent, LossReason, Participant};
use super::{join, Connector};
use crate::error::{Error, Result};

/// A change of ownership of a name, as seen by this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameEvent {
    /// This host owns `name` now: start its actor.
    Acquired {
        /// The name.
        name: String,
        /// The fencing token of this ownership.
        token: i64,
    },
    /// This host does not own `name` any more: stop its actor.
    Released {
        /// The name.
        name: String,
        /// Why.
        reason: LossReason,
    },
}

/// The names claimed by one host. See the module docs.
#[derive(Debug, Clone)]
pub struct NameRegistry {
    connector: Connector,
    root: String,
    host: String,
    claims: Arc<Mutex<HashMap<String, Candidate>>>,
    events_tx: mpsc::UnboundedSender<NameEvent>,
    events_rx: Arc<Mutex<Option<mpsc::UnboundedReceiver<NameEvent>>>>,
}

/// The owner of a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owning host's id.
    pub host: String,
    /// Its fencing token.
    pub token: i64,
    /// Its session.
    pub session_id: i64,
}

impl NameRegistry {
    /// The registry under `root`, for the host `host` (its id, stored in its candidate nodes).
    pub fn new(connector: impl Into<Connector>, root: &str, host: &str) -> NameRegistry {
        let (tx, rx) = mpsc::unbounded_channel();
        NameRegistry {
            connector: connector.into(),
            root: root.trim_end_matches('/').to_string(),
            host: host.to_string(),
            claims: Default::default(),
            events_tx: tx,
            events_rx: Arc::new(Mutex::new(Some(rx))),
        }
    }

    /// This host's id.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The receiver of every [`NameEvent`] of this host (only one receiver: later calls get `None`).
    pub async fn events(&self) -> Option<mpsc::UnboundedReceiver<NameEvent>> {
        self.events_rx.lock().await.take()
    }

    /// The election path of a name.
    pub fn name_path(&self, name: &str) -> String {
        name_path(&self.root, name)
    }

    /// Becomes a candidate for `name` (a no-op if already one).
    pub async fn claim(&self, name: &str) -> Result<()> {
        let name = normalize(name)?;
        let mut claims = self.claims.lock().await;
        if claims.contains_key(&name) {
            return Ok(());
        }
        let mut candidate =
            LeaderElection::new(&self.connector, &self.name_path(&name), &self.host)
                .join()
                .await?;
        let mut events = candidate.events();
        let tx = self.events_tx.clone();
        let n = name.clone();
        tokio::spawn(async move {
            loop {
                let ev = match events.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let out = match ev {
                    LeadershipEvent::Elected { token, .. } => NameEvent::Acquired {
                        name: n.clone(),
                        token,
                    },
                    LeadershipEvent::Lost { reason } => NameEvent::Released {
                        name: n.clone(),
                        reason,
                    },
                    LeadershipEvent::Rejoined { .. } => continue,
                    LeadershipEvent::Closed => return,
                };
                let _ = tx.send(out);
            }
        });
        claims.insert(name, candidate);
        Ok(())
    }

    /// Whether this host owns `name` now.
    pub async fn owns(&self, name: &str) -> bool {
        let Ok(name) = normalize(name) else {
            return false;
        };
        self.claims
            .lock()
            .await
            .get(&name)
            .is_some_and(|c| c.is_leader())
    }

    /// The names this host owns now, with their tokens.
    pub async fn owned(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = self
            .claims
            .lock()
            .await
            .iter()
            .filter_map(|(n, c)| c.fencing_token().map(|t| (n.clone(), t)))
            .collect();
        out.sort();
        out
    }

    /// Gives `name` to the next candidate (this host stays a candidate, at the back of the line).
    pub async fn hand_off(&self, name: &str) -> Result<()> {
        let name = normalize(name)?;
        let claims = self.claims.lock().await;
        let c = claims
            .get(&name)
            .ok_or_else(|| Error::BadArguments(format!("{name:?} is not claimed by this host")))?;
        c.resign().await
    }

    /// Stops being a candidate for `name` (handing it off if owned).
    pub async fn release(&self, name: &str) -> Result<()> {
        let name = normalize(name)?;
        let c = self.claims.lock().await.remove(&name);
        match c {
            Some(c) => c.close().await,
            None => Ok(()),
        }
    }

    /// Releases every name.
    pub async fn release_all(&self) -> Result<()> {
        let all: Vec<Candidate> = self.claims.lock().await.drain().map(|(_, c)| c).collect();
        for c in all {
            c.close().await?;
        }
        Ok(())
    }

    /// The current owner of `name`, if any (as any client can read it).
    pub async fn owner(&self, name: &str) -> Result<Option<Owner>> {
        owner(&self.connector.client(), &self.root, name).await
    }
}

/// The owner of `name` under `root`, read by any client.
pub async fn owner(client: &crate::Client, root: &str, name: &str) -> Result<Option<Owner>> {
    let name = normalize(name)?;
    Ok(election::leader(client, &name_path(root, &name))
        .await?
        .map(|p: Participant| Owner {
            host: p.id,
            token: p.token,
            session_id: p.session_id,
        }))
}

fn name_path(root: &str, name: &str) -> String {
    join(if root.is_empty() { "/" } else { root }, name)
}

fn normalize(name: &str) -> Result<String> {
    let n = name.trim_matches('/');
    if n.is_empty() || n.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(Error::BadArguments(format!("invalid name {name:?}")));
    }
    Ok(n.to_string())
}
