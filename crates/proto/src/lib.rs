//! # roster-proto: the ZooKeeper client wire protocol
//!
//! Pure encode and decode of everything a ZooKeeper 3.9 client and server exchange, with no I/O, so the
//! server, the client library and the tests share one definition of the bytes.
//!
//! # Layout
//! - [`jute`]: the serialization primitives and the [`Jute`] trait.
//! - [`records`]: every record of `zookeeper.jute` (Stat, ACL, the request and response records).
//! - [`connect`]: the handshake, whose trailing `readOnly` byte is optional.
//! - [`request`] / [`response`]: [`Request`] decoded by opcode, [`Response`] and multi results.
//! - [`data`]: null node data, and the serde layout that keeps old Raft log entries readable.
//! - [`frame`]: length-prefixed frames and four-letter-word detection.
//! - [`op_code`] / [`error_code`]: the protocol's enumerations, and which opcodes a multi may hold.
//! - [`digest()`]: the `digest` auth scheme's identity of `user:password`.
//!
//! # Left out
//! SASL tokens are carried but never interpreted; Keeper-only opcodes (500+) are unknown opcodes.

#![warn(missing_docs)]

pub mod connect;
pub mod data;
mod digest;
pub mod error_code;
pub mod frame;
pub mod jute;
pub mod op_code;
pub mod records;
pub mod request;
pub mod response;

pub use connect::{ConnectRequest, ConnectResponse};
pub use digest::digest;
pub use error_code::ErrorCode;
pub use frame::{parse_frame, write_frame, write_reply, Frame, FrameError, DEFAULT_MAX_FRAME};
pub use jute::{decode_exact, DecodeError, Jute};
pub use op_code::{
    perms, xid, AddWatchMode, CreateMode, EventType, KeeperState, OpCode, WatcherType,
};
pub use records::*;
pub use request::Request;
pub use response::{MultiResult, Response};
