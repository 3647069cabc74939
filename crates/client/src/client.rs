//! The public API: [`Client`], one async method per ZooKeeper operation.
//!
//! A call validates its arguments, turns client paths into server paths (the chroot), builds the
//! protocol [`Request`], and hands it to the connection task with a oneshot channel for the reply. The
//! answer comes back as a typed value, or as an [`Error`] carrying ZooKeeper's code; server paths in it
//! (created paths, ephemerals, multi results) are turned back into client paths.
//!
//! Calls made while the connection is down wait for the reconnection (they are sent right after the
//! session is resumed), until the session expires or the call's timeout runs out. A call in flight when
//! the connection drops fails with [`Error::ConnectionLoss`]: it may or may not have been applied, which
//! only the caller can sort out (read back, or use a version check).
//!
//! Per-call timeouts: [`ClientOptions::request_timeout`] sets one for every call, and
//! [`Client::with_timeout`] returns a handle with another one. A call that times out returns
//! [`Error::Timeout`] and its reply, if it ever comes, is dropped; the connection is left alone.
//!
//! `Client` is a handle: cloning it is cheap and every clone drives the same session. The session is
//! closed by [`Client::close`], or when the last handle is dropped.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roster_proto::{
    Acl, AddWatchMode, AddWatchRequest, AuthPacket, CheckVersionRequest, CheckWatchesRequest,
    ClientInfo, CreateMode, CreateRequest, CreateTtlRequest, DeleteRequest, ErrorCode,
    ExistsRequest, GetAclRequest, GetAllChildrenNumberRequest, GetChildren2Request,
    GetChildrenRequest, GetDataRequest, GetEphemeralsRequest, MultiResult, ReconfigRequest,
    RemoveWatchesRequest, Request, Response, SetAclRequest, SetDataRequest, Stat, SyncRequest,
    WatcherType,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::connection::{Command, Driver, Status};
use crate::error::{Error, Result};
use crate::hosts::{ConnectString, HostAddr, HostList};
use crate::ops::{version, CreateOptions, Op, OpResult, ReadOp, ReadResult};
use crate::path::{validate_path, Chroot};
use crate::session::{Effect, Session, SessionConfig, SessionEvent, SessionState};
use crate::watch::{OneShotKind, Watch, WatchStream};

/// How many session events a slow [`Client::state_events`] receiver may lag behind before it misses some.
pub const STATE_EVENT_CAPACITY: usize = 64;

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The session timeout to ask for; the server clamps it to its `[minSessionTimeout,
    /// maxSessionTimeout]` (by default 2 to 20 ticks) and [`Client::negotiated_timeout`] tells the result.
    pub session_timeout: Duration,
    /// How long [`Client::connect`] waits for the first session; `None` means the session timeout.
    pub connect_timeout: Option<Duration>,
    /// The timeout of every call (see [`Client::with_timeout`]); `None` means calls wait for as long as
    /// the session lives.
    pub request_timeout: Option<Duration>,
    /// An existing session to resume, by id and password, instead of creating one.
    pub session: Option<(i64, Bytes)>,
    /// The largest reply frame accepted.
    pub max_frame_bytes: usize,
    /// Connect with TLS (to a secure client port), with this configuration; see [`crate::tls_config`].
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            session_timeout: Duration::from_secs(10),
            connect_timeout: None,
            request_timeout: None,
            session: None,
            max_frame_bytes: 4 * 1024 * 1024,
            tls: None,
        }
    }
}

/// A ZooKeeper client: one session, over any number of reconnections. See the crate docs.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    timeout: Option<Duration>,
}

struct Inner {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Status>,
    events: broadcast::Sender<SessionEvent>,
    chroot: Chroot,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.inner.status.borrow();
        f.debug_struct("Client")
            .field("session_id", &format_args!("{:#x}", s.session_id))
            .field("state", &s.state)
            .field("server", &s.server)
            .field("chroot", &self.inner.chroot.root())
            .finish()
    }
}

impl Client {
    /// Connects to one of the servers of `connect_string` (`host:port,host:port/chroot`, tried in a
    /// random order) and waits until the session is established.
    ///
    /// Fails with [`Error::ConnectionLoss`] if no server answered within the connect timeout,
    /// [`Error::SessionExpired`] if [`ClientOptions::session`] named a session that no longer exists, and
    /// [`Error::BadArguments`] for a malformed connect string.
    pub async fn connect(connect_string: &str, options: ClientOptions) -> Result<Client> {
        let cs: ConnectString = connect_string.parse()?;
        if options.session_timeout.is_zero() {
            return Err(Error::BadArguments(
                "the session timeout must be positive".into(),
            ));
        }
        let (session_id, password) = options.session.clone().unwrap_or((0, Bytes::new()));
        let config = SessionConfig {
            timeout: options.session_timeout,
            session_id,
            password,
            chroot: cs.chroot.clone(),
        };
        let session = Session::new(config, Instant::now());
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(Status {
            state: SessionState::Connecting,
            session_id,
            password: Bytes::new(),
            timeout: options.session_timeout,
            last_zxid: 0,
            server: None,
        });
        let (events_tx, _) = broadcast::channel(STATE_EVENT_CAPACITY);
        let driver = Driver {
            session,
            hosts: HostList::new(cs.hosts),
            commands: cmd_rx,
            status: status_tx,
            events: events_tx.clone(),
            max_frame: options.max_frame_bytes,
            tls: options.tls.clone(),
            commands_open: true,
            offline_until: None,
            drop_requested: false,
            failures: None,
            server: None,
        };
        tokio::spawn(driver.run());
        let client = Client {
            inner: Arc::new(Inner {
                commands: cmd_tx,
                status: status_rx.clone(),
                events: events_tx,
                chroot: cs.chroot,
            }),
            timeout: options.request_timeout,
        };
        let limit = options.connect_timeout.unwrap_or(options.session_timeout);
        let mut rx = status_rx;
        let state =
            match tokio::time::timeout(limit, rx.wait_for(|s| s.state != SessionState::Connecting))
                .await
            {
                Ok(Ok(s)) => s.state,
                // Dropping `client` ends the connection task.
                Ok(Err(_)) | Err(_) => return Err(Error::ConnectionLoss),
            };
        match state {
            SessionState::Connected | SessionState::Suspended => Ok(client),
            s => Err(s.error()),
        }
    }

    /// A handle to the same session whose calls time out after `timeout`.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: self.inner.clone(),
            timeout: Some(timeout),
        }
    }

    /// The session id (as the server assigned it).
    pub fn session_id(&self) -> i64 {
        self.inner.status.borrow().session_id
    }

    /// The session password: with [`Client::session_id`], what another client needs to resume the
    /// session ([`ClientOptions::session`]).
    pub fn session_password(&self) -> Bytes {
        self.inner.status.borrow().password.clone()
    }

    /// The session timeout the server granted.
    pub fn negotiated_timeout(&self) -> Duration {
        self.inner.status.borrow().timeout
    }

    /// The largest zxid this client has seen in a reply (`lastZxidSeen`).
    pub fn last_zxid(&self) -> i64 {
        self.inner.status.borrow().last_zxid
    }

    /// The current session state.
    pub fn state(&self) -> SessionState {
        self.inner.status.borrow().state
    }

    /// The server the client is connected to, if it is.
    pub fn server(&self) -> Option<String> {
        self.inner
            .status
            .borrow()
            .server
            .as_ref()
            .map(HostAddr::to_string)
    }

    /// The chroot, if the connect string had one.
    pub fn chroot(&self) -> Option<&str> {
        self.inner.chroot.root()
    }

    /// A receiver of every later change of session state: `Suspended` when the connection is lost,
    /// `Reconnected` when the session is resumed, and a final `Expired`, `AuthFailed` or `Closed`.
    /// (`Connected` happens before [`Client::connect`] returns; [`Client::state`] tells the present.)
    pub fn state_events(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner.events.subscribe()
    }

    /// Creates a node and returns its path (with the sequential suffix, if any).
    pub async fn create(&self, path: &str, data: &[u8], options: &CreateOptions) -> Result<String> {
        self.create_nullable(path, Some(data), options).await
    }

    /// Like [`Client::create`]; `None` creates the node with null data.
    pub async fn create_nullable(
        &self,
        path: &str,
        data: Option<&[u8]>,
        options: &CreateOptions,
    ) -> Result<String> {
        let request = self.create_request(path, data, options, false)?;
        match self.call(request, Effect::None).await? {
            Response::Create(r) => Ok(self.client_path(&r.path)),
            Response::Create2(r) => Ok(self.client_path(&r.path)),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a node and returns its path and stat (create2; containers and TTL nodes use their own
    /// opcodes, which answer the same way).
    pub async fn create2(
        &self,
        path: &str,
        data: &[u8],
        options: &CreateOptions,
    ) -> Result<(String, Stat)> {
        let request = self.create_request(path, Some(data), options, true)?;
        match self.call(request, Effect::None).await? {
            Response::Create2(r) => Ok((self.client_path(&r.path), r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a node if its version matches (`None`: any version).
    pub async fn delete(&self, path: &str, version: Option<i32>) -> Result<()> {
        let path = self.server_path(path)?;
        self.call(
            Request::Delete(DeleteRequest {
                path,
                version: crate::ops::version(version),
            }),
            Effect::None,
        )
        .await?;
        Ok(())
    }

    /// The node's stat, or `None` if it does not exist.
    pub async fn exists(&self, path: &str) -> Result<Option<Stat>> {
        let path = self.server_path(path)?;
        stat_or_none(
            self.call(
                Request::Exists(ExistsRequest { path, watch: false }),
                Effect::None,
            )
            .await,
        )
    }

    /// Like [`Client::exists`], and a watch that fires when the node is created, changed or deleted.
    pub async fn exists_w(&self, path: &str) -> Result<(Option<Stat>, Watch)> {
        let path = self.server_path(path)?;
        let (tx, rx) = oneshot::channel();
        let effect = Effect::ExistsWatch {
            path: path.clone(),
            tx,
        };
        let stat = stat_or_none(
            self.call(Request::Exists(ExistsRequest { path, watch: true }), effect)
                .await,
        )?;
        Ok((stat, Watch::new(rx)))
    }

    /// The node's data and stat. Null data (see [`Client::get_data_nullable`]) reads as empty.
    pub async fn get_data(&self, path: &str) -> Result<(Bytes, Stat)> {
        let (data, stat) = self.get_data_nullable(path).await?;
        Ok((data.unwrap_or_default(), stat))
    }

    /// The node's data and stat, `None` when the node holds null data (created or set with a null
    /// buffer, which ZooKeeper keeps apart from empty data; its stat's `data_length` is 0).
    pub async fn get_data_nullable(&self, path: &str) -> Result<(Option<Bytes>, Stat)> {
        let path = self.server_path(path)?;
        match self
            .call(
                Request::GetData(GetDataRequest { path, watch: false }),
                Effect::None,
            )
            .await?
        {
            Response::GetData(r) => Ok((r.data, r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// Like [`Client::get_data`], and a watch that fires when the data changes or the node is deleted.
    pub async fn get_data_w(&self, path: &str) -> Result<(Bytes, Stat, Watch)> {
        let path = self.server_path(path)?;
        let (effect, rx) = one_shot(OneShotKind::Data, &path);
        match self
            .call(
                Request::GetData(GetDataRequest { path, watch: true }),
                effect,
            )
            .await?
        {
            Response::GetData(r) => Ok((r.data.unwrap_or_default(), r.stat, Watch::new(rx))),
            other => Err(unexpected(other)),
        }
    }

    /// Sets the node's data if its version matches (`None`: any version); returns the new stat.
    pub async fn set_data(&self, path: &str, data: &[u8], version: Option<i32>) -> Result<Stat> {
        self.set_data_nullable(path, Some(data), version).await
    }

    /// Like [`Client::set_data`]; `None` sets null data.
    pub async fn set_data_nullable(
        &self,
        path: &str,
        data: Option<&[u8]>,
        version: Option<i32>,
    ) -> Result<Stat> {
        let path = self.server_path(path)?;
        let request = Request::SetData(SetDataRequest {
            path,
            data: data.map(Bytes::copy_from_slice),
            version: crate::ops::version(version),
        });
        match self.call(request, Effect::None).await? {
            Response::Stat(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// The names of the node's children (in no particular order).
    pub async fn get_children(&self, path: &str) -> Result<Vec<String>> {
        let path = self.server_path(path)?;
        match self
            .call(
                Request::GetChildren(GetChildrenRequest { path, watch: false }),
                Effect::None,
            )
            .await?
        {
            Response::GetChildren(r) => Ok(r.children),
            other => Err(unexpected(other)),
        }
    }

    /// Like [`Client::get_children`], and a watch that fires when a child is created or deleted, or the
    /// node itself is deleted.
    pub async fn get_children_w(&self, path: &str) -> Result<(Vec<String>, Watch)> {
        let path = self.server_path(path)?;
        let (effect, rx) = one_shot(OneShotKind::Child, &path);
        match self
            .call(
                Request::GetChildren(GetChildrenRequest { path, watch: true }),
                effect,
            )
            .await?
        {
            Response::GetChildren(r) => Ok((r.children, Watch::new(rx))),
            other => Err(unexpected(other)),
        }
    }

    /// The node's children and its stat (getChildren2).
    pub async fn get_children2(&self, path: &str) -> Result<(Vec<String>, Stat)> {
        let path = self.server_path(path)?;
        match self
            .call(
                Request::GetChildren2(GetChildren2Request { path, watch: false }),
                Effect::None,
            )
            .await?
        {
            Response::GetChildren2(r) => Ok((r.children, r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// Like [`Client::get_children2`], with a child watch.
    pub async fn get_children2_w(&self, path: &str) -> Result<(Vec<String>, Stat, Watch)> {
        let path = self.server_path(path)?;
        let (effect, rx) = one_shot(OneShotKind::Child, &path);
        match self
            .call(
                Request::GetChildren2(GetChildren2Request { path, watch: true }),
                effect,
            )
            .await?
        {
            Response::GetChildren2(r) => Ok((r.children, r.stat, Watch::new(rx))),
            other => Err(unexpected(other)),
        }
    }

    /// The node's ACL and stat.
    pub async fn get_acl(&self, path: &str) -> Result<(Vec<Acl>, Stat)> {
        let path = self.server_path(path)?;
        match self
            .call(Request::GetAcl(GetAclRequest { path }), Effect::None)
            .await?
        {
            Response::GetAcl(r) => Ok((r.acl, r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// Sets the node's ACL if its ACL version (`aversion`) matches (`None`: any); returns the new stat.
    pub async fn set_acl(&self, path: &str, acl: &[Acl], version: Option<i32>) -> Result<Stat> {
        let path = self.server_path(path)?;
        if acl.is_empty() {
            return Err(Error::Code(ErrorCode::InvalidAcl));
        }
        let request = Request::SetAcl(SetAclRequest {
            path,
            acl: acl.to_vec(),
            version: crate::ops::version(version),
        });
        match self.call(request, Effect::None).await? {
            Response::Stat(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Runs `ops` as one transaction: all apply or none does. On failure returns the failing op's error;
    /// [`Client::multi_results`] gives every op's result instead.
    pub async fn multi(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let results = self.multi_results(ops).await?;
        match results.iter().find_map(|r| match r {
            OpResult::Error(c) if *c != ErrorCode::Ok => Some(*c),
            _ => None,
        }) {
            Some(code) => Err(Error::from(code)),
            None => Ok(results),
        }
    }

    /// Runs `ops` as one transaction and returns every op's result, including the errors of a failed
    /// transaction (see [`OpResult::Error`]).
    pub async fn multi_results(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let requests = ops
            .iter()
            .map(|op| self.op_request(op))
            .collect::<Result<Vec<_>>>()?;
        let results = match self.call(Request::Multi(requests), Effect::None).await? {
            Response::Multi(r) => r,
            other => return Err(unexpected(other)),
        };
        results
            .into_iter()
            .map(|r| {
                Ok(match r {
                    MultiResult::Create(path) => OpResult::Create {
                        path: self.client_path(&path),
                        stat: None,
                    },
                    MultiResult::Create2(path, stat) => OpResult::Create {
                        path: self.client_path(&path),
                        stat: Some(stat),
                    },
                    MultiResult::Delete => OpResult::Delete,
                    MultiResult::SetData(stat) => OpResult::SetData(stat),
                    MultiResult::Check => OpResult::Check,
                    MultiResult::Error(code) => OpResult::Error(code),
                    MultiResult::GetData(..) | MultiResult::GetChildren(_) => {
                        return Err(Error::Code(ErrorCode::MarshallingError))
                    }
                })
            })
            .collect()
    }

    /// Runs several reads in one round trip (multiRead, ZooKeeper 3.6+). Not a transaction: each read
    /// succeeds or fails on its own.
    pub async fn multi_read(&self, ops: Vec<ReadOp>) -> Result<Vec<ReadResult>> {
        let requests = ops
            .iter()
            .map(|op| {
                Ok(match op {
                    ReadOp::GetData(p) => Request::GetData(GetDataRequest {
                        path: self.server_path(p)?,
                        watch: false,
                    }),
                    ReadOp::GetChildren(p) => Request::GetChildren(GetChildrenRequest {
                        path: self.server_path(p)?,
                        watch: false,
                    }),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let results = match self
            .call(Request::MultiRead(requests), Effect::None)
            .await?
        {
            Response::Multi(r) => r,
            other => return Err(unexpected(other)),
        };
        results
            .into_iter()
            .map(|r| match r {
                MultiResult::GetData(data, stat) => Ok(ReadResult::Data {
                    data: data.unwrap_or_default(),
                    stat,
                }),
                MultiResult::GetChildren(children) => Ok(ReadResult::Children(children)),
                MultiResult::Error(code) => Ok(ReadResult::Error(code)),
                _ => Err(Error::Code(ErrorCode::MarshallingError)),
            })
            .collect()
    }

    /// Waits until the server this client is connected to has caught up with the leader (for `path`),
    /// so that a following read sees every write committed before the sync.
    pub async fn sync(&self, path: &str) -> Result<()> {
        let path = self.server_path(path)?;
        self.call(Request::Sync(SyncRequest { path }), Effect::None)
            .await?;
        Ok(())
    }

    /// Adds a persistent watch (ZooKeeper 3.6+): every event on `path` (mode `Persistent`), or on `path`
    /// and everything below it except child-list changes (mode `PersistentRecursive`), until removed.
    pub async fn add_watch(&self, path: &str, mode: AddWatchMode) -> Result<WatchStream> {
        let path = self.server_path(path)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let effect = Effect::AddWatch {
            mode,
            path: path.clone(),
            tx,
        };
        self.call(
            Request::AddWatch(AddWatchRequest {
                path,
                mode: mode.code(),
            }),
            effect,
        )
        .await?;
        Ok(WatchStream::new(rx))
    }

    /// Removes this session's watches of `watcher_type` on `path`, on the server and locally; the local
    /// watchers receive a `*WatchRemoved` event. Fails with `NoWatcher` if the server has none.
    /// `Persistent` and `PersistentRecursive` need ZooKeeper 3.9 (3.8 answers `MarshallingError`); `Any`
    /// removes persistent watches everywhere.
    pub async fn remove_watches(&self, path: &str, watcher_type: WatcherType) -> Result<()> {
        let path = self.server_path(path)?;
        let effect = Effect::RemoveWatches {
            path: path.clone(),
            watcher_type,
        };
        let request = Request::RemoveWatches(RemoveWatchesRequest {
            path,
            watcher_type: watcher_type.code(),
        });
        self.call(request, effect).await?;
        Ok(())
    }

    /// Asks the server whether this session has a watch of `watcher_type` on `path` (`NoWatcher` if not).
    pub async fn check_watches(&self, path: &str, watcher_type: WatcherType) -> Result<()> {
        let path = self.server_path(path)?;
        let request = Request::CheckWatches(CheckWatchesRequest {
            path,
            watcher_type: watcher_type.code(),
        });
        self.call(request, Effect::None).await?;
        Ok(())
    }

    /// The ephemeral nodes of this session whose path starts with `prefix` (a string prefix, as on the
    /// server; `/` for all).
    pub async fn get_ephemerals(&self, prefix: &str) -> Result<Vec<String>> {
        if !prefix.starts_with('/') {
            return Err(Error::BadArguments(format!(
                "invalid prefix {prefix:?}: must start with /"
            )));
        }
        let prefix_path = self.inner.chroot.to_server(prefix);
        match self
            .call(
                Request::GetEphemerals(GetEphemeralsRequest { prefix_path }),
                Effect::None,
            )
            .await?
        {
            // The server matches string prefixes, so `/app` would also match `/apple`: keep only paths in
            // the chroot.
            Response::GetEphemerals(r) => Ok(r
                .ephemerals
                .iter()
                .filter_map(|p| self.inner.chroot.try_to_client(p))
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    /// The number of nodes below `path` (all descendants, not counting `path`).
    pub async fn get_all_children_number(&self, path: &str) -> Result<i32> {
        let path = self.server_path(path)?;
        match self
            .call(
                Request::GetAllChildrenNumber(GetAllChildrenNumberRequest { path }),
                Effect::None,
            )
            .await?
        {
            Response::AllChildrenNumber(r) => Ok(r.total_number),
            other => Err(unexpected(other)),
        }
    }

    /// The identities the server has attached to this session (whoAmI, ZooKeeper 3.7+).
    pub async fn whoami(&self) -> Result<Vec<ClientInfo>> {
        match self.call(Request::WhoAmI, Effect::None).await? {
            Response::WhoAmI(r) => Ok(r.client_info),
            other => Err(unexpected(other)),
        }
    }

    /// Adds credentials to the session, e.g. `add_auth("digest", b"user:password")`. They are sent
    /// again after every reconnection. If the server rejects them, it closes the connection and the
    /// client ends in [`SessionState::AuthFailed`].
    pub async fn add_auth(&self, scheme: &str, auth: &[u8]) -> Result<()> {
        let packet = AuthPacket {
            auth_type: 0,
            scheme: scheme.to_string(),
            auth: Bytes::copy_from_slice(auth),
        };
        let (tx, rx) = oneshot::channel();
        self.send(Command::Auth { packet, reply: tx })?;
        self.wait(rx).await
    }

    /// Changes the ensemble's membership (reconfig, ZooKeeper 3.5+; needs `reconfigEnabled` and a
    /// super user). Returns the new configuration and the stat of `/zookeeper/config`.
    pub async fn reconfig(
        &self,
        joining: &str,
        leaving: &str,
        new_members: &str,
        from_config: Option<i64>,
    ) -> Result<(Bytes, Stat)> {
        let request = Request::Reconfig(ReconfigRequest {
            joining_servers: joining.to_string(),
            leaving_servers: leaving.to_string(),
            new_members: new_members.to_string(),
            cur_config_id: from_config.unwrap_or(-1),
        });
        match self.call(request, Effect::None).await? {
            Response::GetData(r) => Ok((r.data.unwrap_or_default(), r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// Closes the session: its ephemerals are deleted and its watches dropped. Every handle is closed.
    /// Closing an already closed or expired client succeeds.
    pub async fn close(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Close { reply: tx }).is_err() {
            return Ok(());
        }
        match self.wait(rx).await {
            Ok(_) | Err(Error::Closed | Error::SessionExpired | Error::AuthFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Test hook: drops the TCP connection as a network failure would, and makes no reconnection
    /// attempt for `pause`. The session is suspended meanwhile, and expires on the client if `pause`
    /// outlasts the session timeout.
    #[doc(hidden)]
    pub fn inject_connection_loss(&self, pause: Duration) {
        let _ = self.inner.commands.send(Command::DropConnection { pause });
    }

    fn server_path(&self, path: &str) -> Result<String> {
        validate_path(path, false)?;
        Ok(self.inner.chroot.to_server(path))
    }

    fn client_path(&self, path: &str) -> String {
        self.inner.chroot.to_client(path)
    }

    fn create_request(
        &self,
        path: &str,
        data: Option<&[u8]>,
        options: &CreateOptions,
        stat: bool,
    ) -> Result<Request> {
        let mode = options.mode;
        validate_path(path, mode.is_sequential())?;
        if options.acl.is_empty() {
            // The Java client refuses an empty ACL before sending, with this code.
            return Err(Error::Code(ErrorCode::InvalidAcl));
        }
        let path = self.inner.chroot.to_server(path);
        let data = data.map(Bytes::copy_from_slice);
        let acl = options.acl.clone();
        let flags = mode.code();
        Ok(match (mode.is_ttl(), options.ttl) {
            (true, Some(ttl)) if !ttl.is_zero() => {
                let ttl = ttl.as_millis().min(i64::MAX as u128) as i64;
                Request::CreateTtl(CreateTtlRequest {
                    path,
                    data,
                    acl,
                    flags,
                    ttl,
                })
            }
            (true, _) => {
                return Err(Error::BadArguments(format!(
                    "{mode:?} needs a TTL of at least 1 ms"
                )))
            }
            (false, Some(_)) => return Err(Error::BadArguments(format!("{mode:?} takes no TTL"))),
            (false, None) => {
                let r = CreateRequest {
                    path,
                    data,
                    acl,
                    flags,
                };
                if mode == CreateMode::Container {
                    Request::CreateContainer(r)
                } else if stat {
                    Request::Create2(r)
                } else {
                    Request::Create(r)
                }
            }
        })
    }

    fn op_request(&self, op: &Op) -> Result<Request> {
        Ok(match op {
            Op::Create {
                path,
                data,
                options,
            } => self.create_request(path, Some(data), options, false)?,
            Op::Delete { path, version: v } => Request::Delete(DeleteRequest {
                path: self.server_path(path)?,
                version: version(*v),
            }),
            Op::SetData {
                path,
                data,
                version: v,
            } => Request::SetData(SetDataRequest {
                path: self.server_path(path)?,
                data: Some(data.clone()),
                version: version(*v),
            }),
            Op::Check { path, version: v } => Request::Check(CheckVersionRequest {
                path: self.server_path(path)?,
                version: version(*v),
            }),
        })
    }

    fn send(&self, cmd: Command) -> Result<()> {
        self.inner.commands.send(cmd).map_err(|_| self.dead())
    }

    /// The error of a call the connection task can no longer take.
    fn dead(&self) -> Error {
        let state = self.inner.status.borrow().state;
        if state.is_terminal() {
            state.error()
        } else {
            Error::Closed
        }
    }

    async fn call(&self, request: Request, effect: Effect) -> Result<Response> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Request {
            request,
            effect,
            reply: tx,
        })?;
        self.wait(rx).await
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<Result<T>>) -> Result<T> {
        let reply = async { rx.await.unwrap_or_else(|_| Err(self.dead())) };
        match self.timeout {
            Some(t) => tokio::time::timeout(t, reply)
                .await
                .unwrap_or(Err(Error::Timeout)),
            None => reply.await,
        }
    }
}

fn stat_or_none(reply: Result<Response>) -> Result<Option<Stat>> {
    match reply {
        Ok(Response::Stat(s)) => Ok(Some(s)),
        Ok(other) => Err(unexpected(other)),
        Err(Error::Code(ErrorCode::NoNode)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A reply body of the wrong kind for its request: cannot happen with a correct server, since bodies
/// are decoded by the request's opcode.
fn unexpected(r: Response) -> Error {
    tracing::warn!(response = ?r, "unexpected reply body");
    Error::Code(ErrorCode::MarshallingError)
}

/// The effect that registers a one-shot watch on `path` once its read succeeds, and the receiver its
/// event arrives on.
fn one_shot(kind: OneShotKind, path: &str) -> (Effect, oneshot::Receiver<crate::WatchedEvent>) {
    let (tx, rx) = oneshot::channel();
    let effect = Effect::Watch {
        kind,
        path: path.to_string(),
        tx,
    };
    (effect, rx)
}
