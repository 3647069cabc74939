//! openraft type configuration: what a log entry carries ([`Command`], a `roster_state::Txn`) and what
//! applying one answers ([`WriteReply`]). Type aliases keep openraft's generics out of signatures.

use roster_state::Txn;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A Raft log entry's application payload: one ZooKeeper transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Command(pub Txn);

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "txn(session={:#x}, time={})",
            self.0.session_id, self.0.time
        )
    }
}

/// What applying one entry answers to the proposer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteReply {
    /// The entry's zxid (its log index).
    pub zxid: i64,
    /// The outcome.
    pub outcome: Outcome,
    /// The state right after this entry, for the proposer's reads queued behind it (node-local,
    /// never serialized; set only for sessions that pipeline reads behind writes).
    #[serde(skip)]
    pub view: StateView,
}

impl WriteReply {
    /// A reply without a state view.
    pub fn new(zxid: i64, outcome: Outcome) -> WriteReply {
        WriteReply {
            zxid,
            outcome,
            view: StateView::default(),
        }
    }
}

/// An O(1) copy of the replicated state as of one applied entry (see [`WriteReply::view`]).
#[derive(Clone, Default)]
pub struct StateView(pub Option<roster_state::State>);

impl std::fmt::Debug for StateView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "StateView(..)"
        } else {
            "StateView(None)"
        })
    }
}

impl PartialEq for StateView {
    /// Views are a node-local cache: two replies are equal whatever views they carry.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The outcome of one applied transaction: the state machine's result, defined once in
/// `roster_state` (same variants and wire encoding as the enum that used to be here).
pub use roster_state::TxnResult as Outcome;

openraft::declare_raft_types!(
    /// Roster's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = WriteReply,
        NodeId = u64,
        Node = openraft::BasicNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig, super::state_machine::StateMachine>;
/// A log id.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// Stored membership.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
