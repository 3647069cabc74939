//! Coordination recipes on top of [`Client`]: group membership, leader election, service discovery,
//! a mutex and owned names (one owner per logical name), each as a small state machine driven by
//! watches and by the session-state events of the client.
//!
//! | recipe | module | node layout |
//! |---|---|---|
//! | group membership | [`membership`] | `GROUP/<member-id>`, ephemeral, JSON [`membership::MemberInfo`] (Curator `GroupMember`) |
//! | leader election | [`election`] | `PATH/_c_<uuid>-latch-<seq>`, ephemeral sequential (Curator `LeaderLatch`) |
//! | service discovery | [`discovery`] | `BASE/<service>/<instance-id>`, ephemeral, Curator `ServiceInstance` JSON |
//! | mutex | [`lock`] | `PATH/_c_<uuid>-lock-<seq>`, ephemeral sequential (Curator `InterProcessMutex`) |
//! | owned names | [`names`] | `ROOT/<name>/_c_<uuid>-latch-<seq>`: one leader election per name |
//!
//! ```no_run
//! # async fn demo() -> roster_client::Result<()> {
//! use roster_client::recipes::{election::LeaderElection, membership::{Group, MemberInfo}, Connector};
//! // A connector opens a new session after expiry; recipes then re-create their nodes.
//! let conn = Connector::connect("127.0.0.1:2181", Default::default()).await?;
//! let _me = Group::new(&conn, "/app/members").join("node-1", MemberInfo::new("10.0.0.1", 2552)).await?;
//! let candidate = LeaderElection::new(&conn, "/app/leader", "node-1").join().await?;
//! let token = candidate.wait_leader().await?; // leader: pass `token` to outside resources
//! # let _ = token; Ok(()) }
//! ```
//!
//! # Sessions, suspension and expiry
//!
//! Every recipe follows the client's session-state model (see the crate docs):
//!
//! - **Suspended** (connection lost, the session may be alive): anything that confers *exclusive*
//!   rights (leadership, a lock, ownership of a name) is counted as **lost at once**, because another
//!   process may be granted it if the session expires meanwhile. The recipe re-checks on
//!   **Reconnected**: if its node survived, the right is granted again with the *same* fencing token.
//!   Membership, registrations and watchers just report the suspension: their data may be stale.
//! - **Expired**: the session's ephemeral nodes are gone. A recipe built on a [`Connector`] made with
//!   [`Connector::connect`] opens a new session and re-creates its nodes (a member re-joins with its
//!   *current* metadata, a candidate re-enters the election at the back of the line), reporting it as an
//!   event. A recipe built on a plain [`Client`] cannot (a client never outlives its session): it
//!   reports the loss and ends.
//!
//! # Fencing tokens
//!
//! The leader (lock holder, owner) is the holder of the lowest sequential node; its token is that
//! node's `czxid`. A later holder's node was created after the earlier holder's (it was behind it in
//! line, or re-entered), so tokens of successive holders strictly increase. An outside resource that
//! remembers the largest token it has seen and refuses smaller ones is protected against a holder that
//! lost its rights without noticing (a long GC pause, a partition). Inside ZooKeeper itself, a write can
//! be made conditional on the holder's node with [`election::fenced_multi`].

pub mod discovery;
pub mod election;
pub mod lock;
pub mod membership;
pub mod names;

mod keeper;
mod sequence;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::client::{Client, ClientOptions};
use crate::error::{Error, Result};
use crate::ops::CreateOptions;
use crate::session::{SessionEvent, SessionState};
use roster_proto::ErrorCode;

/// Where recipes get their [`Client`] from, and a new one after the session expired.
///
/// Made from a plain [`Client`] (`Connector::from(client)`), recipes use that client and end when its
/// session does. Made with [`Connector::connect`], it remembers the connect string and options, and
/// [`Connector::renew`] opens a new session after expiry; every recipe sharing the connector then uses
/// the new session (one renewal, however many recipes notice the expiry).
#[derive(Clone)]
pub struct Connector {
    inner: Arc<ConnectorInner>,
}

struct ConnectorInner {
    target: Option<(String, ClientOptions)>,
    current: std::sync::Mutex<Client>,
    renewing: tokio::sync::Mutex<()>,
    closed: std::sync::atomic::AtomicBool,
    renewed: broadcast::Sender<i64>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("client", &self.client())
            .field("renews", &self.renews())
            .finish()
    }
}

impl From<Client> for Connector {
    fn from(client: Client) -> Connector {
        Connector::new(client, None)
    }
}

impl From<&Client> for Connector {
    fn from(client: &Client) -> Connector {
        Connector::new(client.clone(), None)
    }
}

impl From<&Connector> for Connector {
    fn from(c: &Connector) -> Connector {
        c.clone()
    }
}

impl Connector {
    fn new(client: Client, target: Option<(String, ClientOptions)>) -> Connector {
        Connector {
            inner: Arc::new(ConnectorInner {
                target,
                current: std::sync::Mutex::new(client),
                renewing: tokio::sync::Mutex::new(()),
                closed: Default::default(),
                renewed: broadcast::channel(16).0,
            }),
        }
    }

    /// Connects, and will connect again (a new session) whenever a recipe finds the session expired.
    pub async fn connect(connect_string: &str, options: ClientOptions) -> Result<Connector> {
        let mut options = options;
        options.session = None;
        let client = Client::connect(connect_string, options.clone()).await?;
        Ok(Connector::new(
            client,
            Some((connect_string.to_string(), options)),
        ))
    }

    /// The current client.
    pub fn client(&self) -> Client {
        self.inner.current.lock().unwrap().clone()
    }

    /// Whether a new session is opened after expiry.
    pub fn renews(&self) -> bool {
        self.inner.target.is_some()
    }

    /// Receives the id of every new session opened by [`Connector::renew`].
    pub fn renewals(&self) -> broadcast::Receiver<i64> {
        self.inner.renewed.subscribe()
    }

    /// A client whose session is not `expired_session` (and not terminal): the current one if someone
    /// already renewed, else a new session, retried with backoff until a server answers. Fails with
    /// [`Error::SessionExpired`] for a connector made from a plain client, [`Error::Closed`] once
    /// [`Connector::close`] was called.
    pub async fn renew(&self, expired_session: i64) -> Result<Client> {
        let _guard = self.inner.renewing.lock().await;
        let current = self.client();
        if current.session_id() != expired_session && !current.state().is_terminal() {
            return Ok(current);
        }
        let Some((cs, options)) = &self.inner.target else {
            return Err(match current.state() {
                SessionState::Closed => Error::Closed,
                SessionState::AuthFailed => Error::AuthFailed,
                _ => Error::SessionExpired,
            });
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.is_closed() {
                return Err(Error::Closed);
            }
            match Client::connect(cs, options.clone()).await {
                Ok(client) => {
                    if self.is_closed() {
                        let _ = client.close().await;
                        return Err(Error::Closed);
                    }
                    *self.inner.current.lock().unwrap() = client.clone();
                    tracing::info!(
                        session = format_args!("{:#x}", client.session_id()),
                        "recipes: new session after expiry"
                    );
                    let _ = self.inner.renewed.send(client.session_id());
                    return Ok(client);
                }
                Err(e @ (Error::AuthFailed | Error::BadArguments(_))) => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "recipes: reconnecting after expiry");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.inner.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Closes the current session (deleting its ephemerals) and stops renewing.
    pub async fn close(&self) -> Result<()> {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.client().close().await
    }
}

/// The next session event, with a lagging or closed channel turned into the present state.
pub(crate) async fn next_state(
    rx: &mut broadcast::Receiver<SessionEvent>,
    client: &Client,
) -> SessionEvent {
    match rx.recv().await {
        Ok(ev) => ev,
        Err(broadcast::error::RecvError::Lagged(_)) => state_as_event(client.state()),
        Err(broadcast::error::RecvError::Closed) => match state_as_event(client.state()) {
            SessionEvent::Suspended | SessionEvent::Reconnected | SessionEvent::Connected => {
                SessionEvent::Closed
            }
            ev => ev,
        },
    }
}

fn state_as_event(state: SessionState) -> SessionEvent {
    match state {
        SessionState::Connecting | SessionState::Suspended => SessionEvent::Suspended,
        SessionState::Connected => SessionEvent::Reconnected,
        SessionState::Expired => SessionEvent::Expired,
        SessionState::AuthFailed => SessionEvent::AuthFailed,
        SessionState::Closed => SessionEvent::Closed,
    }
}

/// Waits until the client is connected again (`Ok`) or its session ended (`Err`).
pub(crate) async fn wait_connected(client: &Client) -> Result<()> {
    let mut rx = client.state_events();
    loop {
        match client.state() {
            SessionState::Connected => return Ok(()),
            s if s.is_terminal() => return Err(s.error()),
            _ => {}
        }
        match next_state(&mut rx, client).await {
            SessionEvent::Reconnected | SessionEvent::Connected => return Ok(()),
            SessionEvent::Suspended => {}
            SessionEvent::Expired => return Err(Error::SessionExpired),
            SessionEvent::AuthFailed => return Err(Error::AuthFailed),
            SessionEvent::Closed => return Err(Error::Closed),
        }
    }
}

/// Creates `path` and its missing ancestors as persistent nodes; existing ones are fine.
pub async fn ensure_path(client: &Client, path: &str) -> Result<()> {
    if path == "/" {
        return Ok(());
    }
    // Fast path: it usually exists.
    if client.exists(path).await?.is_some() {
        return Ok(());
    }
    let mut prefix = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        prefix.push('/');
        prefix.push_str(part);
        match client.create(&prefix, b"", &CreateOptions::default()).await {
            Ok(_) | Err(Error::Code(ErrorCode::NodeExists)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `parent/child`, without doubling the slash under the root.
pub(crate) fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{}/{child}", parent.trim_end_matches('/'))
    }
}

/// The last component of a path.
pub(crate) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A random (version 4) UUID in its usual text form, as Curator's protected names use.
pub(crate) fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_look_like_uuids() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert_ne!(u, uuid_v4());
    }

    #[test]
    fn joins() {
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a/", "b"), "/a/b");
        assert_eq!(basename("/a/b"), "b");
    }
}
