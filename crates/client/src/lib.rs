//! # roster-client: an async ZooKeeper client
//!
//! A tokio client for Roster and for Apache ZooKeeper (3.5 to 3.9), speaking the wire protocol of
//! `roster-proto`: every operation (create, create2, containers and TTL nodes, delete, exists, getData,
//! setData, getChildren/getChildren2, ACLs, multi and multiRead, sync, persistent and recursive
//! watches, removeWatches/checkWatches, getEphemerals, getAllChildrenNumber, whoAmI, auth, reconfig),
//! with one-shot watches as futures ([`Watch`]) and persistent watches as streams ([`WatchStream`]).
//!
//! ```no_run
//! # async fn demo() -> roster_client::Result<()> {
//! use roster_client::{Client, ClientOptions, CreateOptions};
//! let zk = Client::connect("127.0.0.1:2181,127.0.0.1:2182/app", ClientOptions::default()).await?;
//! zk.create("/config", b"v1", &CreateOptions::default()).await?;
//! let (data, stat, changed) = zk.get_data_w("/config").await?;
//! zk.set_data("/config", b"v2", Some(stat.version)).await?;
//! let event = changed.await; // NodeDataChanged on /config
//! # let _ = (data, event); Ok(()) }
//! ```
//!
//! # The session-state model: connection loss is not expiry
//!
//! A ZooKeeper *session* is not a TCP connection. The session is created by the first handshake and
//! lives on the servers until they have heard nothing from it for the negotiated timeout; its ephemeral
//! nodes live exactly as long. The *connection* can drop and be replaced any number of times within
//! that: the client reconnects (to the same server or another) and resumes the session with its id and
//! password, re-sending its credentials and re-registering its watches (`SetWatches`, relative to the
//! last zxid it saw, so that changes it missed fire at once). The client therefore publishes
//! ([`Client::state_events`]) more than "up" and "down":
//!
//! | event | meaning | what to do |
//! |---|---|---|
//! | [`SessionEvent::Connected`] | session established | |
//! | [`SessionEvent::Suspended`] | connection lost; the session **may still be alive** and the client is reconnecting | stop acting as leader/lock owner until told more; calls wait |
//! | [`SessionEvent::Reconnected`] | session resumed: ephemerals and watches intact | carry on |
//! | [`SessionEvent::Expired`] | the session is gone: ephemerals deleted, watches dropped | build a new `Client`, re-create state |
//! | [`SessionEvent::AuthFailed`] | credentials rejected; the client is dead | fix credentials |
//! | [`SessionEvent::Closed`] | [`Client::close`] was called | |
//!
//! Expiry is normally learned from a server, which answers a resumption attempt with "timeout 0".
//! Because a partitioned client may reach no server at all, the client also keeps its own timer: once no
//! server has been heard from for the whole negotiated timeout, the servers must have expired the session,
//! and the client declares it `Expired` itself. While connected, the client pings when it has been
//! silent for a third of the timeout and drops a connection on which nothing arrived for two thirds of it
//! (`readTimeout`), leaving a third for reconnecting elsewhere.
//!
//! A call in flight when the connection drops fails with [`Error::ConnectionLoss`] (its outcome is
//! unknown); calls made while suspended wait for the reconnection; every call fails with
//! [`Error::SessionExpired`] once the session has expired.
//!
//! # Layout
//!
//! - [`session`]: the client session as a state machine without I/O: xids, pending replies, watches,
//!   auth replay, ping and expiry deadlines, driven by frames and by `now`.
//! - [`connection`]: the tokio task that drives a session over TCP, across reconnections.
//! - [`local`]: in-process servers (an embedded Roster node): connect strings naming
//!   `NAME.in-process:0` reach them through an in-memory stream instead of TCP.
//! - [`client`]: [`Client`], the public API, with chroot handling and per-call timeouts.
//! - [`watch`]: the watch table, [`Watch`] and [`WatchStream`].
//! - [`error`]: [`Error`], ZooKeeper's codes plus the client's own conditions.
//! - [`recipes`]: group membership, leader election, service discovery (Curator-compatible layouts),
//!   a mutex and owned names, each following the session-state model above (`docs/recipes/`).
//! - [`hosts`], [`path`], [`ops`], [`acl`]: connect strings, path validation and chroot, call
//!   arguments and results, digest ACLs.
//!
//! # Left out
//!
//! SASL (Kerberos) authentication, read-only mode, TLS and the Java client's `disableAutoWatchReset`.

#![warn(missing_docs)]

pub mod acl;
pub mod client;
pub mod connection;
pub mod error;
pub mod hosts;
pub mod local;
pub mod ops;
pub mod path;
pub mod recipes;
pub mod session;
pub mod tls;
pub mod watch;

pub use acl::{digest_acl, digest_id};
pub use client::{Client, ClientOptions};
pub use error::{Error, Result};
pub use hosts::{ConnectString, HostAddr};
pub use ops::{CreateOptions, Op, OpResult, ReadOp, ReadResult};
pub use session::{SessionEvent, SessionState};
pub use tls::tls_config;
pub use watch::{Watch, WatchStream, WatchedEvent};

pub use roster_proto::{
    perms, Acl, AddWatchMode, ClientInfo, CreateMode, ErrorCode, EventType, Id, KeeperState, Stat,
    WatcherType,
};
