//! [`ClientCtx`]: what the client side's tasks share: the node's context (`crate::cluster::ctx`) and
//! the [`Route`] proposals take now (kept current by `super::routing::run`).
//!
//! Left out: per-connection state (each connection's own).

use super::pipeline::Target;
use crate::cluster::ctx::NodeCtx;
use crate::transport::link::Link;
use std::sync::Arc;
use tokio::sync::watch;

/// What client connections share.
pub struct ClientCtx {
    /// The node.
    pub node: Arc<NodeCtx>,
    /// Where client proposals go now.
    pub routes: watch::Receiver<Route>,
    /// Bytes all client connections hold of frames not yet complete (bounded; see `connection`).
    pub partial_bytes: std::sync::atomic::AtomicUsize,
}

/// Where proposals go now.
#[derive(Clone)]
pub struct Route {
    /// The target, as the pipelines see it.
    pub target: Target,
    /// The leader, when one is known.
    pub leader: Option<u64>,
    /// The link, when the target is [`Target::Forward`].
    pub link: Option<Link>,
}

impl Route {
    /// No route.
    pub fn unreachable(leader: Option<u64>) -> Route {
        Route {
            target: Target::Unreachable,
            leader,
            link: None,
        }
    }
}

/// The routing channel: the task's sender and the receiver connections clone.
pub fn channel() -> (watch::Sender<Route>, watch::Receiver<Route>) {
    watch::channel(Route::unreachable(None))
}
