//! The peer transport: how Roster nodes exchange messages on the peer port (`--peer-addr`), with no
//! knowledge of what the messages mean.
//!
//! - [`wire`]: frames (length, format version, postcard) and the messages. Raft RPCs travel as opaque
//!   [`wire::Blob`]s that the Raft layer encodes, so nothing here names openraft.
//! - [`link`]: the dialing side, one TCP connection multiplexed by request id.
//! - [`server`]: the listening side, hello checks, then a [`server::PeerConn`] per connection for the
//!   layer above.
//! - [`tls`]: mutual TLS 1.3 on both sides when the node has peer certificates, and the role a
//!   certificate gives (node or administrator).
//!
//! Used by the Raft network (`crate::raft::network`) and by cluster management (`crate::cluster`),
//! never the other way round.
//!
//! Left out: compression.

pub mod link;
pub mod server;
pub mod tls;
pub mod wire;
