//! [`Txn`]: the Raft command, the only input that changes a [`crate::State`].
//!
//! The leader builds a `Txn` for each write: it stamps `time` once from its own clock (ZooKeeper's
//! `TxnHeader.time`, read in `PrepRequestProcessor`), names the session, and copies the session's
//! identities into `auth` for requests, so that apply can check ACLs without any node-local state. The
//! server serializes it with postcard; the zxid is not inside: it is the Raft log index of the entry.
//!
//! Validation happens in apply, not on the leader: a `Txn` that fails (NoNode, BadVersion, NoAuth...) is
//! still a log entry, and every replica computes the same error for it.

use roster_proto::{Id, Request};
use serde::{Deserialize, Serialize};

/// One replicated command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Txn {
    /// The session issuing the command (ignored by `CreateSession`, which assigns one).
    pub session_id: i64,
    /// Leader's wall clock when it proposed the command, ms since the epoch: ctime/mtime of changed nodes
    /// and the reference time for TTL expiry.
    pub time: i64,
    /// What to do.
    pub op: TxnOp,
}

/// The command's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TxnOp {
    /// A new session; apply assigns the id deterministically.
    CreateSession {
        /// Negotiated timeout in milliseconds.
        timeout_ms: i32,
        /// The password the leader generated for the session.
        passwd: bytes::Bytes,
    },
    /// End of `session_id`: the client's closeSession or the leader's expiry decision. Deletes its
    /// ephemerals.
    CloseSession,
    /// A client write (create*, delete, setData, setACL, check, multi; sync is answered too) with the
    /// session's identities.
    Request {
        /// The request as decoded from the wire.
        request: Request,
        /// The session's identities (digest, ip, super...), for ACL checks and the `auth` scheme.
        auth: Vec<Id>,
    },
    /// Leader-proposed TTL cleanup (from [`crate::State::ttl_candidates`]). Apply re-checks that each path
    /// is still a childless TTL node whose TTL has run out at `time`, and skips it otherwise.
    ExpireTtl {
        /// Candidate paths.
        paths: Vec<String>,
    },
    /// The ensemble's configuration changed: set the data of `/zookeeper/config` (ZooKeeper's dynamic
    /// config format, built by the leader from the Raft membership). Apply bumps its version, mzxid and
    /// mtime like a setData, without an ACL check (the server proposes it, not a client), and fires its
    /// data watches. Appended last: older entries keep their encoding.
    SetConfig {
        /// The new content of `/zookeeper/config`.
        data: bytes::Bytes,
    },
}
