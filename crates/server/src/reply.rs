//! What a replicated write answers: the applied [`WriteReply`] (zxid and outcome, and the state right
//! after it for reads queued behind the write), and [`WriteInFlight`], the future of one a connection
//! waits for. Defined below every layer that carries them: the Raft state machine makes them, the
//! peer transport carries them from the leader, the client side answers with them.
//!
//! Left out: how a write is proposed or routed (`crate::net`).

use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

/// The pending result of a proposal; resolves once this node applied it.
pub type WriteInFlight = Pin<Box<dyn Future<Output = Result<WriteReply, Error>> + Send>>;

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
