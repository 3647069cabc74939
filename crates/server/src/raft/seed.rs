//! Seeding a new data directory with a state made elsewhere (`roster import` from ZooKeeper).
//!
//! The state is written as the Raft snapshot a one-voter cluster would hold: last log id
//! (term 0, index = the state's last zxid), membership {node: peer address}, the same term and
//! node that `Raft::initialize` gives a fresh node's first entry. Roster's zxid is the log index,
//! so the next write gets a zxid above every imported one, as a client that reconnects with its
//! last seen zxid needs. On start openraft installs this snapshot, finds the log empty up to it,
//! and the node elects itself at term 1 as any fresh node does.
//!
//! `roster import --update` replaces the seed of a directory that nothing has served since it was
//! seeded ([`read_unserved_seed`] refuses any other): a served node has a vote, log entries after the
//! seed's index (the leader's first entry at least) or snapshots of its own, and Roster's own writes
//! would diverge from a tree that ZooKeeper's later writes were replayed onto.
//!
//! Left out: checking that the directory is empty (the caller refuses non-empty ones), and
//! seeding more than one node (the others join and receive the snapshot from the leader).

use super::log_store::{LOG_DIR, META_DIR};
use super::types::{LogId, SnapshotMeta, StoredMembership};
use crate::storage::log::{Wal, WalOptions};
use crate::storage::meta::{MetaStore, KEY_VOTE};
use crate::storage::snapshot::SnapshotStore;
use crate::storage::Error;
use openraft::{BasicNode, Membership};
use roster_state::State;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Writes `state` as the snapshot of node `node_id` announcing `peer_addr`; returns the file.
pub fn write_seed_snapshot(
    snapshots: &SnapshotStore,
    node_id: u64,
    peer_addr: &str,
    state: &State,
) -> crate::storage::Result<PathBuf> {
    write_seed_bytes(
        snapshots,
        node_id,
        peer_addr,
        state.last_zxid(),
        &state.to_snapshot(),
    )
}

/// [`write_seed_snapshot`] of a state already encoded (`State::to_snapshot`'s format) at
/// `last_zxid`.
pub fn write_seed_bytes(
    snapshots: &SnapshotStore,
    node_id: u64,
    peer_addr: &str,
    last_zxid: i64,
    body: &[u8],
) -> crate::storage::Result<PathBuf> {
    let index = last_zxid.max(1) as u64;
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
    snapshots.write(0, index, &meta_bytes, body)
}

/// The seed snapshot of a directory that nothing has served since it was seeded.
#[derive(Debug)]
pub struct Seed {
    /// The log index (and zxid) of the snapshot.
    pub index: u64,
    /// The peer address the seeded node announces.
    pub peer_addr: String,
    /// The state snapshot's bytes (`State::to_snapshot`).
    pub body: Vec<u8>,
    /// The snapshot file.
    pub path: PathBuf,
}

/// Reads the seed of `data_dir` (node `node_id`); `Ok(Err(why))` when the directory has been served
/// since it was seeded (a vote, log entries, or snapshots other than the seed), with the reason.
pub fn read_unserved_seed(
    data_dir: &Path,
    snapshots: &SnapshotStore,
    node_id: u64,
) -> crate::storage::Result<Result<Seed, String>> {
    let meta = MetaStore::open(data_dir.join(META_DIR))?;
    if meta.get(KEY_VOTE)?.is_some() {
        return Ok(Err(
            "it holds a Raft vote: roster serve has run on it since the import".into(),
        ));
    }
    // Seeds are written at term 0 (an update that crashed before deleting the previous seed leaves
    // two); a node that served writes its own snapshots at term 1 or later.
    let all = snapshots.list()?;
    if let Some((term, i, _)) = all.iter().find(|(t, _, _)| *t != 0) {
        return Ok(Err(format!(
            "it holds a snapshot Roster took (term {term}, index {i}): roster serve has run on it \
             since the import"
        )));
    }
    let Some(&(_, index, _)) = all.first() else {
        return Ok(Err("it holds no snapshot".into()));
    };
    let log_dir = data_dir.join(LOG_DIR);
    if log_dir.exists() {
        let wal = Wal::open(&log_dir, WalOptions::default())?;
        if let Some(last) = wal.last_index() {
            return Ok(Err(format!(
                "its Raft log holds entries up to index {last} after the import's index {index}: \
                 roster serve has run on it since the import"
            )));
        }
    }
    let Some(file) = snapshots.latest()? else {
        return Ok(Err("it holds no snapshot".into()));
    };
    if file.index != index {
        return Ok(Err(format!(
            "its snapshot at index {index} changed while it was read"
        )));
    }
    let meta: SnapshotMeta = postcard::from_bytes(&file.meta).map_err(|e| {
        Error::corrupt(
            &file.path,
            0,
            format!("snapshot metadata does not decode: {e}"),
        )
    })?;
    let membership = meta.last_membership.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    if voters != [node_id] {
        return Ok(Err(format!(
            "its snapshot's members are {voters:?}, not the one node an import makes"
        )));
    }
    let peer_addr = membership
        .get_node(&node_id)
        .map(|n| n.addr.clone())
        .unwrap_or_default();
    Ok(Ok(Seed {
        index,
        peer_addr,
        body: file.body,
        path: file.path,
    }))
}

/// Writes a state (encoded, at `last_zxid`) as the new seed of a directory whose seed `old` was
/// (see [`read_unserved_seed`]), then deletes every older seed.
pub fn replace_seed(
    snapshots: &SnapshotStore,
    node_id: u64,
    old: &Seed,
    last_zxid: i64,
    body: &[u8],
) -> crate::storage::Result<PathBuf> {
    let new = write_seed_bytes(snapshots, node_id, &old.peer_addr, last_zxid, body)?;
    for (_, _, path) in snapshots.list()? {
        if path != new {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(new)
}
