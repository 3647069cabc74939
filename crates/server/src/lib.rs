//! # roster-server: one Roster node
//!
//! A ZooKeeper-protocol server whose every write is a Raft log entry (openraft), durable on disk before
//! it is acknowledged. Even a single node is a one-voter Raft group, so the write path is the ensemble's.
//!
//! # Layers
//! Each layer uses only the layers below it (`scripts/lint` checks that no file imports a layer above
//! its own, and that no two files import each other); `docs/architecture.md` is the tour.
//!
//! 1. Bottom, shared by all: [`config`] (every setting), [`error`] (why a replicated request failed,
//!    and what the client is told), [`events`] (the journal of membership, leadership and session
//!    events, each logged once with its cause), [`metrics`] (the Prometheus registry and the handles
//!    every layer records into), [`format`](mod@format) (the format versions this build reads and writes, and the
//!    cluster's), [`reply`] (what an applied write answers), [`shared`] (the tree,
//!    watches, connections and counters every task reaches, and their lock order), [`storage`] (the
//!    write-ahead log, metadata and snapshot files on disk).
//! 2. [`transport`]: the peer port's frames, links and listener; knows nothing of Raft.
//! 3. [`raft`]: all openraft glue (types, log store, state machine, network, the receiving end of
//!    Raft RPCs) behind [`raft::handle::RaftHandle`]; the only place that names openraft.
//! 4. [`cluster`]: membership (join, leave, remove, `reconfig`), fast failover, the node's view of its
//!    leader, the peer-port service; [`cluster::ctx::NodeCtx`] is what the node's tasks share.
//! 5. [`net`]: the client side: the client port, the request pipeline, routing, the write path, the
//!    four-letter words. [`admin`], beside it: the admin HTTP port (health, metrics, JSON API, web
//!    view).
//! 6. [`node`]: wires the layers together and runs the node's own tasks.

//! # Data flow
//! A client write is decoded by its connection, stamped with the leader's clock into a
//! `roster_state::Txn`, proposed to Raft, fsynced (group commit), applied by the state machine (which
//! fires watches), and answered in request order. Reads are answered from the local state under the same
//! lock, after the connection's earlier writes.
//!
//! # Left out
//! Quotas enforcement, read-only mode, Kerberos (SASL is DIGEST-MD5 only: `net::sasl`).

#![warn(missing_docs)]

pub mod admin;
pub mod cluster;
pub mod config;
pub mod error;
pub mod events;
pub mod format;
pub mod metrics;
pub mod net;
pub mod node;
pub mod raft;
pub mod reply;
pub mod shared;
pub mod storage;
pub mod transport;

pub use config::Config;
pub use node::Node;
