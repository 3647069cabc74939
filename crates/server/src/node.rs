//! One Roster node, wired in the order of openraft's checklist: configuration → identity → storage
//! (metadata, log, snapshots) → state machine → network → `Raft::new` → peer port → join or recovery →
//! client port → session ticker, cluster monitor, touch forwarder.
//!
//! Identity: a pristine data directory without `--join` gets a new cluster identity (node id 1) and
//! initializes a one-voter Raft group. With `--join SEED` it asks the seed for the cluster id, asks it for a node
//! id, persists `ClusterIdentity { cluster_id, node_id }`, starts Raft uninitialized and
//! asks the seed to add it (the leader adds it as a learner, then as a voter while voters are short of
//! `--target-voters`). Node ids are small: 1 for the node that bootstrapped the cluster, and for a
//! joiner the smallest id free in the cluster, given by the leader (data directories of older versions
//! keep their random 64-bit ids). A node with an identity never initializes or joins again (openraft #898); the one
//! exception is a joiner whose join never completed (no membership received yet), which asks again with
//! the same identity.
//!
//! A node that is its cluster's only voter starts as before: it waits for leadership and commits a read
//! barrier so every acknowledged write is applied before clients connect. A member of a larger cluster
//! starts serving once it has a leader; the cluster monitor stops it serving (closing its client
//! connections) when it has had no working leader for [`LEADERLESS`] (a leader: no quorum
//! acknowledged it for that long), and resumes when one is back. After recovery every live session gets a fresh timeout, and so does every session when
//! a node becomes leader, so clients can reconnect (to any node) and keep their ephemerals.
//!
//! The session ticker is the leader's: it expires sessions whose deadline passed by proposing
//! `CloseSession` through the log (so ephemerals vanish on every replica at the same zxid), and proposes
//! the deletion of TTL nodes that are due.
//!
//! `/zookeeper/config` follows the membership and ZooKeeper's `reconfig` changes it (`cluster::reconfig`).
//!
//! A node is a library object: it never exits the process and installs no signal handler (the `roster
//! serve` binary does both), so it can run inside an application (`roster-embed`). Without a client
//! port (`client_addr` `None`) it serves in-process connections only ([`Node::in_process`]); a storage
//! failure that stops Raft resolves [`Node::failed`] with the reason.
//!
//! This file only wires the layers together (see `lib.rs` for the layers): it starts storage, Raft
//! (`raft::start`), the peer port (`transport::server` serving `cluster::service`), the client port
//! (`net`), and the node's own tasks: the session ticker and the cluster monitor. Everything but the
//! client and admin ports runs on the node's cluster plane, a runtime of its own (`Plane`), so client
//! load cannot delay heartbeats, peer answers or session bookkeeping.
//!
//! Left out: changing a member's peer address once it has peers. Replacing dead voters automatically
//! is off unless `replace_dead_voters_ms` is set (`cluster::membership::replace_dead_voters`).

use crate::cluster::ctx::NodeCtx;
use crate::cluster::state::Cluster;
use crate::cluster::status::LEADERLESS;
use crate::cluster::{self, admin};
use crate::config::Config;
use crate::events::EventKind;
use crate::net::{self, ctx::ClientCtx};
use crate::raft::handle::{MembershipChange, RaftHandle};
use crate::raft::log_store::LogStore;
use crate::raft::types::TypeConfig;
use crate::raft::HEARTBEAT;
use crate::shared::{now_ms, ConnMsg, Shared};
use crate::storage::meta::{ClusterIdentity, MetaStore};
use crate::storage::snapshot::SnapshotStore;
use crate::transport::server::{LocalIdentity, PeerConn};
use crate::transport::tls::PeerTls;
use crate::transport::wire::PeerResponse;
use roster_state::{State, Txn, TxnOp};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A running node.
pub struct Node {
    /// Shared context.
    pub ctx: Arc<NodeCtx>,
    client: Arc<ClientCtx>,
    /// The bound client address (useful with port 0); `None` without a client port
    /// ([`Config::client_addr`] `None`: in-process clients only, see [`Node::in_process`]).
    pub client_addr: Option<SocketAddr>,
    /// The bound peer address, if the peer port could be bound.
    pub peer_addr: Option<SocketAddr>,
    /// The bound admin HTTP address, if the admin port is on and could be bound.
    pub admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The runtime of client connections (the caller's of [`Node::start`]).
    runtime: tokio::runtime::Handle,
    /// The cluster plane's own threads; dropped last.
    plane: Option<Plane>,
}

/// Worker threads of the cluster plane ([`Plane`]): openraft's core, its replication and apply tasks,
/// the peer port, routing and the session tasks. Two, whatever the machine: the plane's work is a
/// few long-lived tasks, and client connections get every core on their own runtime.
const PLANE_THREADS: usize = 2;

/// The cluster plane: a tokio runtime of its own ([`PLANE_THREADS`] threads named `roster-cluster`)
/// that runs Raft (heartbeats, elections, replication, apply), the peer port, the route and session
/// touches to the leader, the session ticker and the cluster monitor. Client connections run on the
/// caller's runtime. On one runtime, thousands of busy client tasks (a mass reconnect, 16,000
/// connections per node opening sessions) queued the leader's heartbeats and peer answers behind
/// them for seconds, until every follower gave up on it; with threads of its own the kernel schedules
/// the plane beside the client work instead of behind it.
struct Plane {
    /// `None` once stopped.
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl Plane {
    fn new() -> std::io::Result<Plane> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(PLANE_THREADS)
            .thread_name("roster-cluster")
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        Ok(Plane {
            rt: Some(rt),
            handle,
        })
    }

    /// Stops the plane's tasks and waits (up to 10 s, off the async threads) until they are dropped, so
    /// the files and ports they held are closed when the node's shutdown returns.
    async fn stop(mut self) {
        if let Some(rt) = self.rt.take() {
            let stopped =
                tokio::task::spawn_blocking(move || rt.shutdown_timeout(Duration::from_secs(10)));
            let _ = stopped.await;
        }
    }
}

impl Drop for Plane {
    /// Without [`Plane::stop`] (a start that failed, a node dropped without shutdown): stops the tasks
    /// without waiting (a runtime cannot block inside another's async context).
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Storage could not be opened or is damaged.
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    /// openraft refused to start or recover.
    #[error("raft: {0}")]
    Raft(String),
    /// The peer TLS files could not be loaded.
    #[error("peer TLS: {0}")]
    Tls(String),
    /// Joining the cluster failed.
    #[error("cannot join the cluster: {0}")]
    Join(String),
    /// The client port could not be bound.
    #[error("cannot listen on {addr}: {source} (is another server using it? set --client-addr)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The peer port could not be bound.
    #[error(
        "cannot listen for peers on {addr}: {source} (is another server using it? set --peer-addr)"
    )]
    BindPeer {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory is in a format this build does not read (the message names both versions
    /// and what to do).
    #[error("{0}")]
    Format(String),
    /// `roster import --update` was given a directory it cannot update.
    #[error("cannot update {path}: {reason}")]
    NotUpdatable {
        /// The directory.
        path: std::path::PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// The cluster plane's threads could not be started.
    #[error("cannot start the cluster threads: {0}")]
    Runtime(std::io::Error),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The node id of a node that bootstrapped its cluster.
const NODE_ID: u64 = 1;
/// Binds a listener owned by the runtime `on` (its connections are then registered there).
async fn bind_on(on: &tokio::runtime::Handle, addr: SocketAddr) -> std::io::Result<TcpListener> {
    match on.spawn(TcpListener::bind(addr)).await {
        Ok(bound) => bound,
        Err(e) => Err(std::io::Error::other(format!("binding {addr}: {e}"))),
    }
}

/// Binds the TLS client port and starts accepting on it.
async fn start_tls_port(
    config: &Config,
    addr: SocketAddr,
    client: &Arc<ClientCtx>,
    rx: &watch::Receiver<bool>,
    clients: &tokio::runtime::Handle,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<(), StartError> {
    let (Some(cert), Some(key)) = (&config.client_tls_cert, &config.client_tls_key) else {
        return Err(crate::config::ConfigError::Invalid {
            setting: "secure-client-addr",
            message: "the TLS port needs client-tls-cert and client-tls-key".into(),
        }
        .into());
    };
    let files = net::tls::TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        ca: config.client_tls_ca.clone(),
        require_client_cert: config.client_tls_client_auth == "need",
    };
    let tls =
        net::tls::Reloading::new(files).map_err(|message| crate::config::ConfigError::Invalid {
            setting: "client-tls-cert / client-tls-key / client-tls-ca",
            message,
        })?;
    let listener = bind_on(clients, addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(secure_client_addr = %bound, client_certs = ?config.client_tls_ca.as_ref().map(|_| config.client_tls_client_auth.as_str()), "TLS client port open");
    tasks.push(clients.spawn(net::serve_tls(
        listener,
        Arc::new(tls),
        client.clone(),
        rx.clone(),
    )));
    Ok(())
}

/// Asks the cluster (through `seed`) for this joining node's id, retrying while it has no leader.
async fn allocate_id(
    seed: &str,
    cluster_id: &str,
    tls: Option<&PeerTls>,
) -> Result<u64, StartError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match admin::allocate_id(seed, cluster_id, tls).await {
            Ok(id) => return Ok(id),
            Err(e @ crate::error::Error::Certificate(_)) => {
                return Err(StartError::Join(format!(
                    "asking {seed} for a node id: {e}"
                )))
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%seed, error = %e, "no node id yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(StartError::Join(format!(
                    "asking {seed} for a node id: {e}"
                )))
            }
        }
    }
}

/// Asks `seed` for its cluster id, retrying for a while (the seed may be starting too).
async fn discover_cluster(seed: &str, tls: Option<&PeerTls>) -> Result<String, StartError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match admin::cluster_id(seed, tls).await {
            Ok(id) => return Ok(id),
            Err(e @ crate::error::Error::Certificate(_)) => {
                return Err(StartError::Join(format!(
                    "asking {seed} for the cluster id: {e}"
                )))
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%seed, error = %e, "cluster id not known yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(StartError::Join(format!(
                    "asking {seed} for the cluster id: {e}"
                )))
            }
        }
    }
}

/// Seeds a new data directory `dir` with `state` (made by `roster import`): the cluster identity a
/// fresh node would create (node 1) and the state as its Raft snapshot at the state's last zxid
/// (`raft::seed`), announcing `peer_addr` (corrected at start if `roster serve` uses another).
/// `roster serve --data-dir DIR` then starts with the tree. Refuses a directory that holds anything.
pub fn seed_data_dir(
    dir: &std::path::Path,
    state: &State,
    peer_addr: &str,
) -> Result<ClusterIdentity, StartError> {
    let data_dir_error = |source| StartError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(data_dir_error(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the directory is not empty; import into a new or empty directory",
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(data_dir_error)?;
    let meta = MetaStore::open(dir.join("meta"))?;
    let id = ClusterIdentity::new_random(NODE_ID);
    let snapshots = SnapshotStore::open(dir.join("snapshots"))?;
    crate::raft::seed::write_seed_snapshot(&snapshots, NODE_ID, peer_addr, state)?;
    // The identity last: a directory without one is pristine, and a crash before this line leaves
    // only a snapshot that the next import refuses to overwrite (delete the directory and retry).
    meta.save_identity(&id)?;
    Ok(id)
}

/// The seed of a data directory that [`seed_data_dir`] wrote and that nothing has served since
/// (`roster import --update`); refuses any other directory, saying why.
pub fn open_unserved_seed(
    dir: &std::path::Path,
) -> Result<(ClusterIdentity, crate::raft::seed::Seed), StartError> {
    let refuse = |reason: String| StartError::NotUpdatable {
        path: dir.to_path_buf(),
        reason,
    };
    if !dir.join("meta").is_dir() {
        return Err(refuse(
            "it is not a Roster data directory (no meta/): run a full roster import into a new directory".into(),
        ));
    }
    let meta = MetaStore::open(dir.join("meta"))?;
    let Some(id) = meta.load_identity()? else {
        return Err(refuse(
            "it has no cluster identity (an import that did not finish): delete it and run a full roster import".into(),
        ));
    };
    if id.node_id != NODE_ID {
        return Err(refuse(format!(
            "it belongs to node {} of a cluster, not to the one node an import makes",
            id.node_id
        )));
    }
    let snapshots = SnapshotStore::open(dir.join("snapshots"))?;
    match crate::raft::seed::read_unserved_seed(dir, &snapshots, NODE_ID)? {
        Ok(seed) => Ok((id, seed)),
        Err(why) => Err(refuse(format!(
            "{why}; Roster's own writes would diverge from ZooKeeper's, so run a full roster import \
             into a new directory"
        ))),
    }
}

/// Replaces the seed `old` of `dir` (from [`open_unserved_seed`]) by a state encoded as
/// `State::to_snapshot` does (`roster_state::imported_snapshot`) at `last_zxid`, keeping the cluster
/// identity and the announced peer address; returns the new snapshot file.
pub fn reseed_data_dir(
    dir: &std::path::Path,
    old: &crate::raft::seed::Seed,
    last_zxid: i64,
    body: &[u8],
) -> Result<std::path::PathBuf, StartError> {
    let snapshots = SnapshotStore::open(dir.join("snapshots"))?;
    Ok(crate::raft::seed::replace_seed(
        &snapshots, NODE_ID, old, last_zxid, body,
    )?)
}

impl Node {
    /// Starts a node and returns once it serves clients (or, as a member of a larger cluster, once its
    /// client port is open; it serves when it has a leader).
    ///
    /// Raft, the peer port and the node's own tasks run on two threads of their own (the cluster
    /// plane, `roster-cluster`); client connections and the admin port run on the caller's runtime.
    pub async fn start(config: Config) -> Result<Node, StartError> {
        config.validate()?;
        let clients = tokio::runtime::Handle::current();
        let plane = Plane::new().map_err(StartError::Runtime)?;
        match plane.handle.spawn(Node::start_on(config, clients)).await {
            Ok(Ok(mut node)) => {
                node.plane = Some(plane);
                Ok(node)
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(StartError::Raft(format!("the node's start stopped: {e}"))),
        }
    }

    /// [`Node::start`]'s work, on the cluster plane: what it spawns runs there, except the client
    /// and admin ports, spawned on `clients`.
    async fn start_on(config: Config, clients: tokio::runtime::Handle) -> Result<Node, StartError> {
        let peer_tls = match config.peer_tls()? {
            Some((cert, key, ca)) => Some(Arc::new(
                PeerTls::load_node(cert, key, ca).map_err(StartError::Tls)?,
            )),
            None if !config.peer_addr.ip().is_loopback() => {
                tracing::warn!(peer_addr = %config.peer_addr, "insecure peers: the peer port is plain text and unauthenticated (anyone who reaches it can join, remove members and vote); set --peer-tls-cert/-key/-ca (docs/security.md)");
                None
            }
            None => None,
        };
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let meta = MetaStore::open(dir.join("meta"))?;
        // Before anything else of the directory is read: a directory of a newer format is refused
        // here, with both versions named, rather than misread (`format`).
        let formats = Arc::new(crate::format::Formats::default());
        formats
            .open_dir(&dir, meta.clone())
            .map_err(StartError::Format)?;
        let identity = match meta.load_identity()? {
            Some(id) => id,
            None => {
                let id = match &config.join {
                    None => ClusterIdentity::new_random(NODE_ID),
                    Some(seed) => {
                        let cluster_id = discover_cluster(seed, peer_tls.as_deref()).await?;
                        let node_id = allocate_id(seed, &cluster_id, peer_tls.as_deref()).await?;
                        ClusterIdentity {
                            cluster_id,
                            node_id,
                        }
                    }
                };
                meta.save_identity(&id)?;
                tracing::info!(cluster = %id.cluster_id, node = id.node_id, dir = %dir.display(), "new data directory: created cluster identity");
                id
            }
        };
        let log_store = LogStore::<TypeConfig>::open(&dir)?;
        let wal = log_store.wal().stats_handle();
        let snapshots = Arc::new(SnapshotStore::open(dir.join("snapshots"))?);
        let mut shared = Shared::new(config.clone(), State::new());
        shared.formats = formats;
        let shared = Arc::new(shared);
        shared.events.set_node(identity.node_id);
        let raft = crate::raft::start(
            &identity,
            &config,
            log_store,
            shared.clone(),
            snapshots,
            peer_tls.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        // A joiner is a node that got its identity from a seed and has not received a membership yet.
        let join_seed = match (&config.join, initialized) {
            (Some(seed), false) if identity.node_id != NODE_ID => Some(seed.clone()),
            _ => None,
        };
        if let (Some(seed), true) = (&config.join, initialized) {
            tracing::info!(%seed, cluster = %identity.cluster_id, node = identity.node_id, "ignoring --join: this node already belongs to a cluster");
        }
        if !initialized && join_seed.is_none() {
            if identity.node_id != NODE_ID {
                return Err(StartError::Join(format!(
                    "this data directory belongs to node {} of cluster {}, which never finished joining; start it with --join HOST:PEERPORT of a member",
                    identity.node_id, identity.cluster_id
                )));
            }
            raft.initialize_alone(identity.node_id, config.peer_addr.to_string())
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
            tracing::info!(peer_addr = %config.peer_addr, "initialized a one-voter raft group");
        }

        if join_seed.is_none() {
            // The metrics show the stored (or just initialized) membership shortly after start.
            raft.wait_membership_loaded(Duration::from_secs(10)).await;
        }
        // Only a cluster's sole member may run without its peer port (two single nodes on one host).
        let alone = |raft: &RaftHandle| raft.status().alone();
        // `ROSTER_PEER_LISTEN=HOST:PORT` binds the peer port there while `--peer-addr` stays the announced
        // address: for a node behind a proxy or NAT (the partition tests put a fault-injecting proxy
        // on the announced address).
        let peer_bind = match std::env::var("ROSTER_PEER_LISTEN") {
            Ok(a) if !a.is_empty() => a.parse::<SocketAddr>().map_err(|_| {
                StartError::Join(format!("ROSTER_PEER_LISTEN={a:?} is not a socket address"))
            })?,
            _ => config.peer_addr,
        };
        let peer_listener = match TcpListener::bind(peer_bind).await {
            Ok(l) => Some(l),
            Err(source) if join_seed.is_none() && alone(&raft) => {
                tracing::warn!(addr = %config.peer_addr, error = %source, "peer port unavailable: running as a single node that no other node can join (set --peer-addr)");
                None
            }
            Err(source) => {
                return Err(StartError::BindPeer {
                    addr: config.peer_addr,
                    source,
                })
            }
        };
        let peer_addr = peer_listener.as_ref().and_then(|l| l.local_addr().ok());
        let (route_tx, routes) = net::ctx::channel();
        let ctx = Arc::new(NodeCtx {
            shared: shared.clone(),
            raft: raft.clone(),
            identity: identity.clone(),
            cluster: Cluster::new(config.peer_addr.to_string(), config.target_voters, false),
            wal,
            peer_tls: peer_tls.clone(),
        });
        let client = Arc::new(ClientCtx {
            node: ctx.clone(),
            routes,
            partial_bytes: Default::default(),
        });
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(net::routing::run(
            ctx.clone(),
            route_tx,
            rx.clone(),
        ))];
        if let Some(l) = peer_listener {
            let me = LocalIdentity {
                cluster_id: identity.cluster_id.clone(),
                node_id: identity.node_id,
                formats: ctx.shared.formats.clone(),
            };
            let node = ctx.clone();
            let stop = rx.clone();
            // Each connection's service ends at shutdown too (it would outlive the node in a process
            // that goes on, as an embedded node's does).
            let serve = Arc::new(move |conn: PeerConn| {
                let mut stop = stop.clone();
                let service = cluster::service::serve(node.clone(), conn);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = service => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                });
            });
            tasks.push(tokio::spawn(crate::transport::server::serve(
                l,
                me,
                peer_tls.clone(),
                serve,
                rx.clone(),
            )));
        }

        if let Some(seed) = &join_seed {
            join(&ctx, seed).await?;
        }
        if alone(&raft) {
            raft.wait_for_recovery(Some(Duration::from_secs(600)))
                .await
                .map_err(|e| StartError::Raft(format!("recovery: {e}")))?;
            ctx.cluster.recovered.store(true, Ordering::Release);
            raft.wait_leader(Duration::from_secs(30))
                .await
                .map_err(|e| StartError::Raft(format!("no leadership: {e}")))?;
            // Leadership alone does not mean the whole log is applied: the log store persists `committed`
            // lazily, so entries acknowledged before a crash may still be waiting. A read barrier commits
            // this term's first entry, which applies everything before it.
            raft.barrier()
                .await
                .map_err(|e| StartError::Raft(format!("catching up the log: {e}")))?;
            ctx.cluster.serving.store(true, Ordering::Release);
            // Data directories made before the peer port existed (or moved to another --peer-addr)
            // announce another address in the membership: correct it so that nodes can join.
            let announced = raft.status().nodes.get(&identity.node_id).cloned();
            let wanted = config.peer_addr.to_string();
            if announced.as_deref() != Some(wanted.as_str()) {
                let nodes = BTreeMap::from([(identity.node_id, wanted.clone())]);
                match raft
                    .change_membership(MembershipChange::SetAddresses(nodes), true)
                    .await
                {
                    Ok(_) => {
                        tracing::info!(old = ?announced, new = %wanted, "announced peer address updated")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot update the announced peer address")
                    }
                }
            }
        } else {
            // Recovery needs the cluster's commit index, hence a quorum: when the whole cluster
            // restarts, every node must open its ports first. Clients are served once it is done.
            let ctx2 = ctx.clone();
            let mut stop = rx.clone();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    r = ctx2.raft.wait_for_recovery(None) => match r {
                        Ok(_) => {
                            ctx2.cluster.recovered.store(true, Ordering::Release);
                            tracing::info!("recovered the committed state of the cluster");
                        }
                        Err(e) => tracing::warn!(error = %e, "recovery did not complete"),
                    },
                    _ = stop.changed() => {}
                }
            }));
        }
        // Sessions alive at the last stop get a fresh timeout from now.
        let (sessions, nodes, zxid) = {
            let db = shared.db.lock();
            let mut tracker = shared.tracker.lock();
            let now = now_ms();
            for (id, s) in db.state.sessions() {
                tracker.touch(id, s.timeout_ms, now);
            }
            (tracker.len(), db.state.node_count(), db.state.last_zxid())
        };
        tracing::info!(
            sessions,
            nodes,
            zxid = format_args!("{zxid:#x}"),
            node = identity.node_id,
            "recovered"
        );

        let client_addr = match config.client_addr {
            None => None,
            Some(addr) => {
                let listener = bind_on(&clients, addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?;
                *ctx.cluster.client_addr.lock() = bound.to_string();
                tasks.push(clients.spawn(net::serve(listener, client.clone(), rx.clone())));
                Some(bound)
            }
        };
        if let Some(addr) = config.secure_client_addr {
            start_tls_port(&config, addr, &client, &rx, &clients, &mut tasks).await?;
        }
        if let Some(path) = &config.sasl_users_file {
            let users = net::sasl::Users::load(path).map_err(|message| {
                crate::config::ConfigError::Invalid {
                    setting: "sasl-users-file",
                    message,
                }
            })?;
            tracing::info!(file = %path.display(), users = users.0.len(), "SASL DIGEST-MD5 logins enabled");
        }
        tasks.push(tokio::spawn(session_ticker(ctx.clone(), rx.clone())));
        tasks.push(tokio::spawn(crate::raft::snapshot_policy::run(
            ctx.raft.clone(),
            ctx.shared.clone(),
            crate::raft::snapshot_policy::Interval::draw(config.snapshot_every),
            rx.clone(),
        )));
        if config.replace_dead_voters_ms > 0 {
            tasks.push(tokio::spawn(cluster::membership::replace_dead_voters(
                ctx.clone(),
                Duration::from_millis(config.replace_dead_voters_ms),
                rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(cluster_monitor(ctx.clone(), rx.clone())));
        tasks.push(tokio::spawn(cluster::watch::run(ctx.clone(), rx.clone())));
        tasks.push(tokio::spawn(cluster::reconfig::config_loop(
            ctx.clone(),
            rx.clone(),
        )));
        tasks.push(tokio::spawn(net::forward::touch_loop(
            client.clone(),
            rx.clone(),
        )));
        // Metrics: elections (ends when Raft stops) and the log's fsyncs.
        tokio::spawn(crate::raft::handle::record_elections(
            ctx.raft.clone(),
            ctx.shared.clone(),
        ));
        ctx.wal.observe(ctx.shared.metrics.wal());
        let admin_addr = match config.admin_socket()? {
            None => None,
            Some(addr) => match bind_on(&clients, addr).await {
                Ok(l) => {
                    let bound = l.local_addr().ok();
                    let admin = Arc::new(crate::admin::ctx::AdminCtx { node: ctx.clone() });
                    tasks.push(clients.spawn(crate::admin::serve(l, admin, rx)));
                    bound
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "admin HTTP port unavailable: running without it (set --admin-addr to another port, or off)");
                    None
                }
            },
        };
        if let Some(a) = admin_addr {
            tracing::info!("admin HTTP port: http://{a}/ (metrics at /metrics, API at /api/v1)");
        }
        match client_addr {
            Some(a) => {
                tracing::info!(client_addr = %a, peer_addr = ?peer_addr, data_dir = %dir.display(), "roster is serving ZooKeeper clients")
            }
            None => {
                tracing::info!(peer_addr = ?peer_addr, data_dir = %dir.display(), "roster is serving in-process clients (no client port)")
            }
        }
        Ok(Node {
            ctx,
            client,
            client_addr,
            admin_addr,
            peer_addr,
            shutdown,
            tasks,
            runtime: clients,
            plane: None,
        })
    }

    /// Turns `Some(reason)` when this node's storage failed for good (a disk error that is not
    /// transient): the node then refuses every client and answers no `ruok`; the application should
    /// shut it down and exit (`roster serve` exits non-zero, for a supervisor to restart it).
    pub fn storage_failed(&self) -> watch::Receiver<Option<String>> {
        self.ctx.cluster.storage_failed.subscribe()
    }

    /// Opens connections to this node without a port (see [`net::InProcess`]): what an application
    /// embedding the node gives its own ZooKeeper clients (`roster-embed`).
    pub fn in_process(&self) -> net::InProcess {
        net::InProcess::new(
            self.client.clone(),
            self.shutdown.subscribe(),
            self.runtime.clone(),
        )
    }

    /// Resolves when the node can no longer serve by itself: its storage failed for good (see
    /// [`Node::storage_failed`]) or Raft stopped (the write-ahead log could not be written or
    /// synced), with the reason; an application embedding the node decides what to do then. Never
    /// resolves while the node runs normally.
    pub async fn failed(&self) -> String {
        let mut storage = self.storage_failed();
        let storage = async move {
            loop {
                if let Some(reason) = storage.borrow_and_update().clone() {
                    return reason;
                }
                if storage.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        };
        tokio::select! {
            reason = storage => reason,
            reason = self.ctx.raft.stopped() => reason,
        }
    }

    /// Stops accepting, closes connections (sessions stay alive for a later restart) and stops Raft;
    /// leaves the cluster first if [`Config::leave_on_shutdown`] is set.
    pub async fn shutdown(self) {
        let leave = self.ctx.shared.config.leave_on_shutdown;
        self.shutdown_leaving(leave).await
    }

    /// [`Node::shutdown`], leaving the cluster first (removed from the membership, a learner promoted
    /// if voters fall short of the target) when `leave` is true, whatever the configuration says.
    pub async fn shutdown_leaving(self, leave: bool) {
        if leave {
            let members = self.ctx.raft.status().nodes.len();
            if members > 1 {
                tracing::info!("leaving the cluster before shutting down (leave-on-shutdown)");
                match tokio::time::timeout(
                    Duration::from_secs(30),
                    cluster::membership::remove(&self.ctx, self.ctx.identity.node_id),
                )
                .await
                {
                    Ok(PeerResponse::Ack) => tracing::info!("left the cluster"),
                    Ok(other) => tracing::warn!(answer = ?other, "could not leave the cluster"),
                    Err(_) => tracing::warn!("could not leave the cluster within 30 s"),
                }
            }
        }
        let _ = self.shutdown.send(true);
        drop(self.client);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Err(e) = self.ctx.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        if let Some(plane) = self.plane {
            plane.stop().await;
        }
    }
}

/// Asks `seed` to add this node, retrying while the cluster has no leader, then waits until this node
/// applied what the leader had committed when it was added.
async fn join(ctx: &Arc<NodeCtx>, seed: &str) -> Result<(), StartError> {
    let id = &ctx.identity;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let (voter, committed) = loop {
        let tls = ctx.peer_tls.as_deref();
        match admin::join(
            seed,
            &id.cluster_id,
            id.node_id,
            &ctx.cluster.peer_addr,
            tls,
        )
        .await
        {
            Ok(r) => break r,
            Err(e @ crate::error::Error::Certificate(_)) => {
                return Err(StartError::Join(e.to_string()))
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%seed, error = %e, "join not done yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(StartError::Join(e.to_string())),
        }
    };
    tracing::info!(node = id.node_id, voter, committed, "joined the cluster");
    ctx.raft
        .wait_applied(committed, Duration::from_secs(60))
        .await
        .map_err(|e| StartError::Join(e.to_string()))?;
    Ok(())
}

/// Serves clients only while the node has a leader: stops (closing every client connection, so clients
/// move to another node) after [`LEADERLESS`] without one, and resumes when one is back.
async fn cluster_monitor(ctx: Arc<NodeCtx>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Some(why) = ctx.wal.failure().or_else(|| ctx.raft.fatal()) {
            if ctx.cluster.fail_storage(why.clone()) {
                ctx.cluster.serving.store(false, Ordering::Release);
                tracing::error!(reason = %why, "storage failed: this node serves nothing more and must be restarted (restore the data directory if the disk is damaged)");
                ctx.shared.events.publish(
                    EventKind::Serving { serving: false },
                    format!("storage failed: {why}"),
                );
                for c in ctx.shared.conns.lock().by_id.values() {
                    let _ = c.tx.send(ConnMsg::Close("this server's storage failed"));
                }
            }
            continue;
        }
        let healthy =
            ctx.cluster.recovered.load(Ordering::Acquire) && cluster::status::has_leader(&ctx);
        let serving = ctx.cluster.is_serving();
        if healthy {
            if !serving {
                ctx.cluster.serving.store(true, Ordering::Release);
                let cause = match ctx.raft.leader() {
                    Some(l) if l == ctx.identity.node_id => {
                        "this node leads with a quorum".to_string()
                    }
                    Some(l) => format!("leader node {l} is reachable"),
                    None => "a leader is known".to_string(),
                };
                ctx.shared
                    .events
                    .publish(EventKind::Serving { serving: true }, cause);
            }
        } else if serving {
            ctx.cluster.serving.store(false, Ordering::Release);
            let silent = cluster::status::leaderless_ms(&ctx);
            let conns = ctx.shared.conns.lock();
            let cause = if !ctx.cluster.recovered.load(Ordering::Acquire) {
                "the committed state is not recovered yet".to_string()
            } else {
                format!(
                    "no working leader for {silent} ms (limit {} ms): closing {} client connection(s) and refusing new ones until the cluster heals",
                    LEADERLESS.as_millis(),
                    conns.by_id.len()
                )
            };
            ctx.shared
                .events
                .publish(EventKind::Serving { serving: false }, cause);
            for c in conns.by_id.values() {
                let _ = c.tx.send(ConnMsg::Close("this server has no leader"));
            }
        }
    }
}

/// Publishes (and so logs) a session expiry with its cause: how long the session was silent against its
/// timeout, and where it was last connected.
fn publish_expiry(ctx: &NodeCtx, session_id: i64, deadline: i64, now: i64) {
    let shared = &ctx.shared;
    let (timeout_ms, ephemerals) = {
        let db = shared.db.lock();
        db.state
            .session(session_id)
            .map(|s| (s.timeout_ms, s.ephemerals.len()))
            .unwrap_or((0, 0))
    };
    let me = ctx.identity.node_id;
    let on = if shared.conns.lock().by_session.contains_key(&session_id) {
        Some(me)
    } else {
        shared.last_seen_on.lock().remove(&session_id)
    };
    let silent_ms = now - (deadline - timeout_ms as i64);
    let place = match on {
        Some(n) if n == me => format!("last connected to node {n} (this node)"),
        Some(n) => format!("last connected to node {n}"),
        None => "last connected to a node that restarted or lost its leader".to_string(),
    };
    shared.events.publish(
        crate::events::EventKind::SessionExpired {
            session: format!("{session_id:#x}"),
            timeout_ms,
            silent_ms,
            ephemerals,
        },
        format!(
            "no request or ping for {silent_ms} ms, timeout {timeout_ms} ms, {place}; {ephemerals} ephemeral node(s) go with it"
        ),
    );
}

/// Expires sessions and TTL nodes while this node leads. Time is read here, once per tick, and travels
/// in the proposed transactions.
/// As the leader: once every member announced a newer format version than the cluster's, records
/// the lowest of them as the cluster's in the log (`format`). Not during a membership change (a
/// joining node's version is not known yet).
#[cfg(feature = "format-next")]
async fn raise_format(ctx: &NodeCtx, now: i64) {
    let st = ctx.raft.status();
    if st.changing {
        return;
    }
    let others: Vec<u64> = st.nodes.keys().copied().filter(|n| *n != st.id).collect();
    let Some(version) = ctx.shared.formats.decide(&others) else {
        return;
    };
    tracing::info!(
        version,
        from = ctx.shared.formats.cluster(),
        members = ?st.nodes.keys().collect::<Vec<_>>(),
        "every member runs format {version}: recording it as the cluster's format version"
    );
    // The directory first: the entry is in this node's log before it commits.
    if let Err(e) = ctx.shared.formats.mark_dir(version) {
        tracing::error!(error = %e, "cannot record the data directory's format version");
        return;
    }
    let txn = Txn {
        session_id: 0,
        time: now,
        op: TxnOp::SetFormat { version },
    };
    if let Err(e) = ctx.raft.submit(txn).await {
        tracing::warn!(error = %e, "cannot propose the cluster format version; retrying in 1 s");
    }
}

/// A build of format 2 (the base) never has a newer version to record.
#[cfg(not(feature = "format-next"))]
async fn raise_format(_: &NodeCtx, _: i64) {}

async fn session_ticker(ctx: Arc<NodeCtx>, mut shutdown: watch::Receiver<bool>) {
    let shared = ctx.shared.clone();
    let mut tick = tokio::time::interval(shared.config.session_tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ttl_proposed: HashMap<String, i64> = HashMap::new();
    let mut last_ttl_check = 0i64;
    let mut last_prune = 0i64;
    let mut last_format = 0i64;
    let mut was_leader = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        // A leader that no quorum has acknowledged for LEADERLESS expires nothing: its closes could
        // not commit, and the sessions it would expire may be alive on the majority's side. Once it
        // leads with a quorum again, every session starts a fresh timeout, as under a new leader.
        if !ctx.raft.is_leader() || !cluster::status::has_leader(&ctx) {
            if was_leader {
                // Closes proposed while leading may never commit (a deposed leader's entries are
                // truncated): forget them, or this node would refuse those sessions as expired.
                shared.closing.lock().clear();
            }
            was_leader = false;
            continue;
        }
        let now = now_ms();
        if !was_leader {
            // A new leader knows nothing of when sessions connected to other nodes were last heard
            // from: every session starts a fresh timeout before anything is expired.
            // The tracker is rebuilt from the replicated sessions (a follower's may hold sessions a
            // snapshot removed), and closes proposed in an earlier term are forgotten: if they were
            // lost, the session expires again.
            was_leader = true;
            shared.closing.lock().clear();
            let db = shared.db.lock();
            let mut tracker = shared.tracker.lock();
            *tracker = roster_state::ExpiryTracker::new();
            for (id, s) in db.state.sessions() {
                tracker.touch(id, s.timeout_ms, now);
            }
            tracing::info!(
                sessions = tracker.len(),
                "leading: every session starts a fresh timeout"
            );
        }
        let expired = shared.tracker.lock().expired_with_deadlines(now);
        // Every close is proposed at once and awaited together (one group commit for a batch of
        // expiries): awaiting each commit before proposing the next made the last of 1,000 sessions
        // that expired together wait for 999 commits (up to 400 ms late at 10,000 held sessions).
        let mut closes = Vec::new();
        for (session_id, deadline) in expired {
            shared.closing.lock().insert(session_id);
            shared
                .stats
                .sessions_expired
                .fetch_add(1, Ordering::Relaxed);
            shared.metrics.session_expired();
            publish_expiry(&ctx, session_id, deadline, now);
            let txn = Txn {
                session_id,
                time: now,
                op: TxnOp::CloseSession,
            };
            match ctx.raft.propose(txn).await {
                Ok(done) => closes.push(done),
                Err(e) => tracing::warn!(error = %e, "cannot propose session close"),
            }
        }
        if !closes.is_empty() {
            tokio::spawn(async move {
                for done in closes {
                    if let Err(e) = done.await {
                        tracing::warn!(error = %e, "session close not applied");
                    }
                }
            });
        }
        if now - last_format >= 1_000 {
            last_format = now;
            raise_format(&ctx, now).await;
        }
        if now - last_prune >= 10_000 {
            // Forget where sessions that are gone were last seen.
            last_prune = now;
            let db = shared.db.lock();
            shared
                .last_seen_on
                .lock()
                .retain(|id, _| db.state.session(*id).is_some());
        }
        if now - last_ttl_check >= 250 {
            last_ttl_check = now;
            let due = shared.db.lock().state.ttl_candidates(now);
            ttl_proposed.retain(|_, at| now - *at < 2_000);
            let paths: Vec<String> = due
                .into_iter()
                .filter(|p| !ttl_proposed.contains_key(p))
                .collect();
            if !paths.is_empty() {
                for p in &paths {
                    ttl_proposed.insert(p.clone(), now);
                }
                tracing::debug!(
                    count = paths.len(),
                    "proposing deletion of expired TTL nodes"
                );
                let txn = Txn {
                    session_id: 0,
                    time: now,
                    op: TxnOp::ExpireTtl { paths },
                };
                if let Err(e) = ctx.raft.submit(txn).await {
                    tracing::warn!(error = %e, "cannot propose TTL expiry");
                }
            }
        }
    }
}
