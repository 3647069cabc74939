//! One Roster node, wired in the order of openraft's checklist: configuration → storage (metadata, log,
//! snapshots) → state machine → network → `Raft::new` → recovery → client port → session ticker.
//!
//! A pristine data directory gets a new cluster identity and initializes a one-voter Raft group; a data
//! directory with an identity never initializes again (openraft #898). After recovery (latest snapshot
//! plus the committed log) every live session gets a fresh timeout, so clients that were connected at a
//! crash can reconnect and keep their ephemerals, as ZooKeeper does after a restart.
//!
//! The session ticker is the leader's: it expires sessions whose deadline passed by proposing
//! `CloseSession` through the log (so ephemerals vanish on every replica at the same zxid), and proposes
//! the deletion of TTL nodes that are due.

use crate::config::Config;
use crate::net;
use crate::raft::log_store::LogStore;
use crate::raft::network::SingleNodeNetwork;
use crate::raft::state_machine::StateMachine;
use crate::raft::types::{Command, Raft, TypeConfig};
use crate::shared::{now_ms, Shared};
use crate::storage::meta::{ClusterIdentity, MetaStore};
use crate::storage::snapshot::SnapshotStore;
use openraft::{BasicNode, SnapshotPolicy};
use roster_state::{State, Txn, TxnOp};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What connection tasks need: the shared state and the Raft handle.
pub struct NodeCtx {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The Raft node.
    pub raft: Raft,
    /// This node's identity.
    pub identity: ClusterIdentity,
}

/// A running node.
pub struct Node {
    /// Shared context.
    pub ctx: Arc<NodeCtx>,
    /// The bound client address (useful with port 0).
    pub client_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
    /// The client port could not be bound.
    #[error("cannot listen on {addr}: {source} (is another server using it? set --client-addr)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

const NODE_ID: u64 = 1;

impl Node {
    /// Starts a node and returns once it serves clients.
    pub async fn start(config: Config) -> Result<Node, StartError> {
        config.validate()?;
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir { path: dir.clone(), source })?;
        let meta = MetaStore::open(dir.join("meta"))?;
        let identity = match meta.load_identity()? {
            Some(id) => id,
            None => {
                let id = ClusterIdentity::new_random(NODE_ID);
                meta.save_identity(&id)?;
                tracing::info!(cluster = %id.cluster_id, node = id.node_id, dir = %dir.display(), "new data directory: created cluster identity");
                id
            }
        };
        let log_store = LogStore::<TypeConfig>::open(&dir)?;
        let snapshots = Arc::new(SnapshotStore::open(dir.join("snapshots"))?);
        let shared = Arc::new(Shared::new(config.clone(), State::new()));
        let sm = StateMachine::new(shared.clone(), snapshots);
        let raft_config = openraft::Config {
            cluster_name: format!("roster-{}", identity.cluster_id),
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: 1_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let raft = Raft::new(identity.node_id, Arc::new(raft_config), SingleNodeNetwork, log_store, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))? {
            let members = BTreeMap::from([(identity.node_id, BasicNode::new(config.client_addr.to_string()))]);
            raft.initialize(members).await.map_err(|e| StartError::Raft(e.to_string()))?;
            tracing::info!("initialized a one-voter raft group");
        }
        raft.wait_for_recovery(Some(Duration::from_secs(600)))
            .await
            .map_err(|e| StartError::Raft(format!("recovery: {e}")))?;
        raft.wait(Some(Duration::from_secs(30)))
            .state(openraft::ServerState::Leader, "leader")
            .await
            .map_err(|e| StartError::Raft(format!("no leadership: {e}")))?;
        // Leadership alone does not mean the whole log is applied: the log store persists `committed`
        // lazily, so entries acknowledged before a crash may still be waiting. A read barrier commits this
        // term's first entry, which applies everything before it.
        raft.ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
            .await
            .map_err(|e| StartError::Raft(format!("catching up the log: {e}")))?;
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
        tracing::info!(sessions, nodes, zxid = format_args!("{zxid:#x}"), "recovered");

        let listener = TcpListener::bind(config.client_addr)
            .await
            .map_err(|source| StartError::Bind { addr: config.client_addr, source })?;
        let client_addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.client_addr, source })?;
        let ctx = Arc::new(NodeCtx { shared, raft, identity });
        let (shutdown, rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(net::serve(listener, ctx.clone(), rx.clone())),
            tokio::spawn(session_ticker(ctx.clone(), rx)),
        ];
        tracing::info!(%client_addr, data_dir = %dir.display(), "roster is serving ZooKeeper clients");
        Ok(Node { ctx, client_addr, shutdown, tasks })
    }

    /// Stops accepting, closes connections (sessions stay alive for a later restart) and stops Raft.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Err(e) = self.ctx.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// Expires sessions and TTL nodes while this node leads. Time is read here, once per tick, and travels
/// in the proposed transactions.
async fn session_ticker(ctx: Arc<NodeCtx>, mut shutdown: watch::Receiver<bool>) {
    let shared = ctx.shared.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(shared.config.session_tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ttl_proposed: HashMap<String, i64> = HashMap::new();
    let mut last_ttl_check = 0i64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !ctx.raft.is_leader() {
            continue;
        }
        let now = now_ms();
        let expired = shared.tracker.lock().expired(now);
        for session_id in expired {
            shared.closing.lock().insert(session_id);
            shared.stats.sessions_expired.fetch_add(1, Ordering::Relaxed);
            tracing::info!(session = format_args!("{session_id:#x}"), "session expired: proposing close");
            let txn = Txn { session_id, time: now, op: TxnOp::CloseSession };
            if let Err(e) = ctx.raft.write(Command(txn)).await {
                tracing::warn!(error = %e, "cannot propose session close");
            }
        }
        if now - last_ttl_check >= 250 {
            last_ttl_check = now;
            let due = shared.db.lock().state.ttl_candidates(now);
            ttl_proposed.retain(|_, at| now - *at < 2_000);
            let paths: Vec<String> = due.into_iter().filter(|p| !ttl_proposed.contains_key(p)).collect();
            if !paths.is_empty() {
                for p in &paths {
                    ttl_proposed.insert(p.clone(), now);
                }
                tracing::debug!(count = paths.len(), "proposing deletion of expired TTL nodes");
                let txn = Txn { session_id: 0, time: now, op: TxnOp::ExpireTtl { paths } };
                if let Err(e) = ctx.raft.write(Command(txn)).await {
                    tracing::warn!(error = %e, "cannot propose TTL expiry");
                }
            }
        }
    }
}
