//! openraft type configuration: what a log entry carries ([`Command`], a `roster_state::Txn`) and what
//! applying one answers ([`WriteReply`], defined below the Raft layer in `crate::reply`). Type aliases
//! keep openraft's generics out of signatures.

pub use crate::reply::{Outcome, StateView, WriteReply};
use roster_state::Txn;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A Raft log entry's application payload: one ZooKeeper transaction. Behind an `Arc` so that the log
/// store's decoded tail ([`crate::raft::log_store`]) hands entries to the apply and replication tasks
/// without copying their paths and data; it encodes exactly as the bare `Txn` (serde's `rc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Command(pub Arc<Txn>);

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "txn(session={:#x}, time={})",
            self.0.session_id, self.0.time
        )
    }
}

openraft::declare_raft_types!(
    /// Roster's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = WriteReply,
        NodeId = u64,
        Node = openraft::BasicNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// A log id.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// Stored membership.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
