//! # roster-embed: a Roster node inside your application
//!
//! The application's own instances form the Raft cluster: no separate ZooKeeper or `roster serve` to
//! deploy. Each instance starts an [`Embedded`] node on the application's tokio runtime and talks to it
//! through an in-process [`roster_client::Client`] (the client library's whole API and recipes, over
//! an in-memory stream instead of TCP). Outside tools (`roster members`, zkCli, kazoo) can still use a
//! client port if one is configured.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use roster_embed::Embedded;
//! use roster_client::recipes::membership::{Group, MemberInfo};
//! let node = Embedded::builder("/var/lib/myapp/roster")
//!     .peer_addr("10.0.0.1:2888".parse()?)
//!     .join(std::env::var("SEED").ok()) // None on the first instance: it bootstraps
//!     .start()
//!     .await?;
//! let zk = node.client(Default::default()).await?;
//! let _me = Group::new(&zk, "/myapp/members")
//!     .join("instance-1", MemberInfo::new("10.0.0.1", 8080))
//!     .await?;
//! // ... on the way out:
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! What the node does and does not do inside an application:
//! - it logs through `tracing`, so through the application's subscriber (it installs none);
//! - it never exits the process and installs no signal handler: a storage failure resolves
//!   [`Embedded::failed`] with the reason, and the application decides;
//! - the first instance (no [`Builder::join`]) bootstraps a cluster; the others join any running
//!   instance by its peer address; an instance restarted on its data directory rejoins as itself
//!   (the join address is then ignored);
//! - voters up to [`Builder::target_voters`] (3), the others learners; with
//!   [`Builder::replace_dead_voters`] the leader replaces a voter silent for that long by a learner;
//! - [`Embedded::shutdown`] leaves the cluster or stays a member as [`Builder::leave_on_shutdown`]
//!   says.
//!
//! Left out: discovery of the seed (the application passes a peer address), TLS between instances.
//! docs/embedding.md says when to embed and when to run Roster beside the application.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use roster_client::{Client, ClientOptions};
pub use roster_server::config::Config;
pub use roster_server::node::StartError;
pub use roster_server::transport::wire::StatusInfo;

/// Builds an embedded node's configuration in code. Every setting not named here is
/// [`Config`]'s default, except: no client port, no admin port (an embedded node serves its own
/// process unless told otherwise). [`Builder::configure`] reaches every other setting.
#[derive(Debug, Clone)]
pub struct Builder {
    config: Config,
    name: Option<String>,
}

impl Builder {
    /// The name of the in-process server (`NAME.in-process:0` in connect strings); default
    /// `roster-NODEID-N`, unique in the process. A fixed name keeps connect strings valid across a
    /// restart of the node within the process.
    pub fn name(mut self, name: &str) -> Builder {
        self.name = Some(name.to_string());
        self
    }

    /// The address other instances reach this one's peer port on (Raft, joins); bound as given.
    /// Default 127.0.0.1:2888.
    pub fn peer_addr(mut self, addr: SocketAddr) -> Builder {
        self.config.peer_addr = addr;
        self
    }

    /// The peer address of any running instance, for a pristine data directory to join its cluster;
    /// `None` bootstraps a new cluster. Ignored once the data directory belongs to a cluster.
    pub fn join(mut self, seed: Option<String>) -> Builder {
        self.config.join = seed;
        self
    }

    /// A ZooKeeper client port for outside clients (zkCli, kazoo, `roster members`), or `None`
    /// (the default): in-process clients only.
    pub fn client_addr(mut self, addr: Option<SocketAddr>) -> Builder {
        self.config.client_addr = addr;
        self
    }

    /// The admin HTTP port (health, metrics, JSON API, web view), or `None` (the default).
    pub fn admin_addr(mut self, addr: Option<SocketAddr>) -> Builder {
        self.config.admin_addr = addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into());
        self
    }

    /// How many voters the cluster aims for (default 3); instances beyond them are learners.
    pub fn target_voters(mut self, n: usize) -> Builder {
        self.config.target_voters = n;
        self
    }

    /// Whether [`Embedded::shutdown`] leaves the cluster (removed from the membership, a learner
    /// promoted in its place) or stays a member that is down until it restarts (default: stays).
    pub fn leave_on_shutdown(mut self, leave: bool) -> Builder {
        self.config.leave_on_shutdown = leave;
        self
    }

    /// On the leader, replace a voter that acknowledged nothing for `after` by a caught-up learner
    /// (the dead voter becomes a learner and rejoins as one); `None` (the default) never does.
    /// docs/embedding.md explains why this is safe but not free.
    pub fn replace_dead_voters(mut self, after: Option<Duration>) -> Builder {
        self.config.replace_dead_voters_ms = after.map(|d| d.as_millis() as u64).unwrap_or(0);
        self
    }

    /// Changes any other setting of the node's [`Config`].
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Builder {
        f(&mut self.config);
        self
    }

    /// The configuration as it stands.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts the node on the current tokio runtime and returns once it serves (a single instance) or
    /// has joined its cluster (the in-process client then connects as soon as there is a leader).
    pub async fn start(self) -> Result<Embedded, StartError> {
        let node = roster_server::Node::start(self.config.clone()).await?;
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = self.name.unwrap_or_else(|| {
            format!(
                "roster-{}-{}",
                node.ctx.identity.node_id,
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
        });
        let inproc = node.in_process();
        let registration = roster_client::local::register(&name, move || {
            let s = inproc.connect()?;
            Ok(Box::new(s) as roster_client::local::BoxStream)
        });
        tracing::info!(
            node = node.ctx.identity.node_id,
            connect = %registration.connect_string(),
            "embedded roster node started"
        );
        Ok(Embedded { node, registration })
    }
}

/// A Roster node running inside this process. Dropping it without [`Embedded::shutdown`] stops it
/// abruptly, as a killed process would: its Raft and its connections end at once, without leaving
/// the cluster, which then sees a member down.
pub struct Embedded {
    node: roster_server::Node,
    registration: roster_client::local::Registration,
}

impl Embedded {
    /// A builder with `data_dir` (created if missing) and the embedded defaults.
    pub fn builder(data_dir: impl Into<PathBuf>) -> Builder {
        let config = Config {
            data_dir: data_dir.into(),
            client_addr: None,
            admin_addr: "off".into(),
            ..Config::default()
        };
        Builder { config, name: None }
    }

    /// Opens a session on this node through the in-process stream. Same API, recipes and session
    /// semantics as a TCP client; if this node loses its leader the session is suspended and resumed
    /// here when the cluster heals (or expires, as any session would).
    pub async fn client(&self, options: ClientOptions) -> roster_client::Result<Client> {
        Client::connect(&self.connect_string(), options).await
    }

    /// The in-process connect string (`roster-N-M.in-process:0`), valid in this process only: append
    /// `/chroot`, or other instances' client addresses (`,host:port`) for a client that may fail over
    /// to them over TCP.
    pub fn connect_string(&self) -> String {
        self.registration.connect_string()
    }

    /// This node's id in its cluster (1 for the instance that bootstrapped it).
    pub fn node_id(&self) -> u64 {
        self.node.ctx.identity.node_id
    }

    /// The bound peer address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.node.peer_addr
    }

    /// The bound client port, if one was configured.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.node.client_addr
    }

    /// The bound admin port, if one was configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.node.admin_addr
    }

    /// This node's view of the cluster: role, term, leader, members (voters and learners).
    pub fn status(&self) -> StatusInfo {
        roster_server::cluster::status::status(&self.node.ctx)
    }

    /// The node itself, for what this crate does not wrap.
    pub fn node(&self) -> &roster_server::Node {
        &self.node
    }

    /// Resolves when the node stops by itself (its storage failed) with the reason. The node never
    /// exits the process: what to do (restart the instance, alert) is the application's decision.
    pub async fn failed(&self) -> String {
        self.node.failed().await
    }

    /// Shuts down gracefully: leaves the cluster first if configured to
    /// ([`Builder::leave_on_shutdown`]), closes in-process and TCP connections (sessions stay alive
    /// on the cluster until their timeout), stops Raft.
    pub async fn shutdown(self) {
        let leave = self.node.ctx.shared.config.leave_on_shutdown;
        self.shutdown_leaving(leave).await
    }

    /// [`Embedded::shutdown`], leaving the cluster (`true`) or staying a member (`false`) whatever
    /// the configuration says.
    pub async fn shutdown_leaving(self, leave: bool) {
        drop(self.registration);
        self.node.shutdown_leaving(leave).await;
    }
}
