//! # roster-state: Roster's replicated state machine
//!
//! Everything a ZooKeeper server keeps about the data tree and sessions, as a deterministic function of
//! the Raft log: [`State::apply`] takes a log index (the zxid) and a [`Txn`] and returns what the client
//! gets back and which nodes changed. Reads ([`read()`]) run against a `&State` on any replica, together
//! with the node-local [`WatchTable`]. The crate does no I/O, reads no clock and uses no randomness; time
//! arrives inside each `Txn`, stamped once by the leader, and every collection that reaches an output is
//! ordered, so every replica that applies the same log holds the same state and produces the same
//! snapshot bytes.
//!
//! # Layout
//! - [`path`]: ZooKeeper's path validation, parent/child splitting, the sequential suffix.
//! - [`acl`]: ACL checks, `fixupACL`, the digest hash, the interned ACL table.
//! - [`tree`]: the znodes, their stats (ZooKeeper's `StatPersisted` and its `copyStat` rules).
//! - [`session`]: the replicated session entry, session ids, the leader-local expiry tracker.
//! - [`txn`]: the Raft command.
//! - [`apply`]: [`State`] and the write path, in ZooKeeper's check order.
//! - [`read`](mod@read): the read path and watch registration.
//! - [`watch`]: watch registrations and triggering (`WatchManager` rules).
//! - [`snapshot`]: the versioned, byte-deterministic snapshot format.
//!
//! # What the server must do
//! - Stamp `Txn::time` from the leader's clock once per proposal; put the session's identities in
//!   `TxnOp::Request::auth` (`digest:user:hash` per `addauth`, `ip:<remote address>`, and `super:` for a
//!   superuser, which bypasses every ACL check).
//! - Apply every committed entry in log order with its index as zxid, calling [`State::note_zxid`] for
//!   entries without a txn; feed [`Applied::changes`] to every connection's watch table *before* sending
//!   the response, and send the events first.
//! - On the leader: track session liveness in an [`ExpiryTracker`] and propose `CloseSession` for expired
//!   sessions; poll [`State::ttl_candidates`] and propose `ExpireTtl`. Containers need nothing: they are
//!   deleted by apply itself when their last child goes.
//!
//! # Left out
//! Quotas, reconfig as a client request (answered `ReconfigDisabled` if one reaches apply: the server
//! carries reconfig out itself and records the configuration with [`TxnOp::SetConfig`]), local sessions, SASL, and the leader-side pre-check of
//! ZooKeeper's `PrepRequestProcessor` (every check runs in apply, so a failed write still costs a log
//! entry). Each module lists its own omissions.

#![warn(missing_docs)]

pub mod acl;
pub mod apply;
pub mod path;
pub mod read;
pub mod session;
pub mod snapshot;
pub mod tree;
pub mod txn;
pub mod watch;

pub use acl::digest;
pub use apply::{Applied, Change, State, TxnResult};
pub use read::read;
pub use session::{ExpiryTracker, Session};
pub use snapshot::{
    imported_parts, imported_snapshot, ImportedNode, ImportedSession, SnapshotError,
};
pub use tree::{DataTree, Node, NodeKind};
pub use txn::{Txn, TxnOp};
pub use watch::WatchTable;
