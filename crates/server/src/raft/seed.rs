//! Seeding a new data directory with a state made elsewhere (`roster import` from ZooKeeper).
//!
//! The state is written as the Raft snapshot a one-voter cluster would hold: last log id
//! (term 0, index = the state's last zxid), membership {node: peer address}, the same term and
//! node that `Raft::initialize` gives a fresh node's first entry. Roster's zxid is the log index,
//! so the next write gets a zxid above every imported one, as a client that reconnects with its
//! last seen zxid needs. On start openraft installs this snapshot, finds the log empty up to it,
//! and the node elects itself at term 1 as any fresh node does.
//!
//! Left out: checking that the directory is empty (the caller refuses non-empty ones), and
//! seeding more than one node (the others join and receive the snapshot from the leader).

use super::types::{LogId, SnapshotMeta, StoredMembership};
use crate::storage::snapshot::SnapshotStore;
use openraft::{BasicNode, Membership};
use roster_state::State;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Writes `state` as the snapshot of node `node_id` announcing `peer_addr`; returns the file.
pub fn write_seed_snapshot(
    snapshots: &SnapshotStore,
    node_id: u64,
    peer_addr: &str,
    state: &State,
) -> crate::storage::Result<PathBuf> {
    let index = state.last_zxid().max(1) as u64;
    let log_id = LogId::new_term_index(0, index);
    let membership = Membership::new(
        vec![BTreeSet::from([node_id])],
        BTreeMap::from([(node_id, BasicNode::new(peer_addr))]),
    )
    .map_err(|e| crate::storage::Error::Invalid(format!("membership: {e}")))?;
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
    };
    let meta_bytes = postcard::to_allocvec(&meta)
        .map_err(|e| crate::storage::Error::Invalid(format!("snapshot metadata: {e}")))?;
    snapshots.write(0, index, &meta_bytes, &state.to_snapshot())
}
