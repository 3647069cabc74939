//! [`NodeCtx`]: what every task of a node above the Raft layer shares: the node-local state (the
//! replicated tree, watches, connections, counters: `crate::shared`), the Raft handle, the node's
//! identity and cluster-facing state, and the log's counters.
//!
//! Left out: the client side's route to the leader (`crate::net::ctx::ClientCtx` adds it).

use super::state::Cluster;
use crate::raft::handle::RaftHandle;
use crate::shared::Shared;
use crate::storage::log::WalStatsHandle;
use crate::storage::meta::ClusterIdentity;
use crate::transport::tls::PeerTls;
use std::sync::Arc;

/// What the tasks of a node share.
pub struct NodeCtx {
    /// Node-local shared state: the tree, watches, connections, counters, configuration.
    pub shared: Arc<Shared>,
    /// The Raft node.
    pub raft: RaftHandle,
    /// This node's identity.
    pub identity: ClusterIdentity,
    /// Cluster-facing state: addresses, whether clients are served, failover.
    pub cluster: Cluster,
    /// The Raft log's group-commit counters (`mntr`).
    pub wal: WalStatsHandle,
    /// This node's peer TLS (certificate, key, cluster CA); `None`: plain TCP peers.
    pub peer_tls: Option<Arc<PeerTls>>,
}
