//! # roster-server: one Roster node
//!
//! A ZooKeeper-protocol server whose every write is a Raft log entry (openraft), durable on disk before
//! it is acknowledged. Even a single node is a one-voter Raft group, so the write path is the ensemble's.
//!
//! # Layout
//! - [`config`]: every setting, its default, the optional TOML file.
//! - [`node`]: starts a node in openraft's order and runs the leader's session ticker.
//! - [`net`]: the client port: [`net::pipeline`] holds one connection's ordering rules (no I/O),
//!   [`net::connection`] drives it (handshake, decoding, reads, bad input), [`net::routing`] decides
//!   where proposals go (local Raft, the link to the leader, or wait for one).
//! - [`fourlw`]: the four-letter words (`ruok`, `srvr`, `mntr`, ...).
//! - [`shared`]: the state, watches, connections and counters every task shares, and its lock order.
//! - [`raft`]: all openraft glue: types, state machine, log store, network.
//! - [`peer`]: the peer protocol between nodes: replication transport, joins, forwarding writes.
//! - [`storage`]: the write-ahead log, metadata files and snapshot files on disk.
//!
//! # Data flow
//! A client write is decoded by its connection, stamped with the leader's clock into a
//! `roster_state::Txn`, proposed to Raft, fsynced (group commit), applied by the state machine (which
//! fires watches), and answered in request order. Reads are answered from the local state under the same
//! lock, after the connection's earlier writes.
//!
//! # Left out
//! TLS, SASL, quotas enforcement, read-only mode.

#![warn(missing_docs)]

pub mod config;
pub mod fourlw;
pub mod net;
pub mod node;
pub mod peer;
pub mod raft;
pub mod shared;
pub mod storage;

pub use config::Config;
pub use node::Node;
