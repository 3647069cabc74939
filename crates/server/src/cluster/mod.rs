//! Cluster management: who the members are, who leads, and changing both.
//!
//! - [`ctx`]: [`ctx::NodeCtx`], what the node's tasks share.
//! - [`state`]: the node's cluster-facing state (addresses, serving or not, failover bookkeeping).
//! - [`status`]: whether the node has a working leader, its status report, its ZooKeeper role.
//! - [`service`]: answers the requests other nodes and tools send to the peer port.
//! - [`membership`]: join, remove and leave, carried out by the leader (other nodes forward to it).
//! - [`reconfig`]: ZooKeeper's `reconfig` and `/zookeeper/config`, mapped onto the Raft membership.
//! - [`failover`]: a follower whose leader's process vanished campaigns at once.
//! - [`admin`]: the calls a tool or a joining node makes (cluster id, join, status, remove, leave).
//! - [`watch`]: publishes leader and membership changes, with their causes, to the event journal.
//!
//! Built on the Raft layer (`crate::raft::handle`) and the peer transport (`crate::transport`); used
//! by the client side (`crate::net`) and the node's wiring.
//!
//! Left out: TLS/authentication between peers, automatic replacement of dead voters, leader transfer
//! on request (only [`failover`] transfers, for a leader that is gone).

pub mod admin;
pub mod ctx;
pub mod failover;
pub mod membership;
pub mod reconfig;
pub mod service;
pub mod state;
pub mod status;
pub mod watch;
