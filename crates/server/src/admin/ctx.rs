//! [`AdminCtx`]: what the admin routes read (the node).
//!
//! Left out: the routes (the other files of `admin`).

use crate::cluster::ctx::NodeCtx;
use std::sync::Arc;

/// What the admin routes read.
pub struct AdminCtx {
    /// The node.
    pub node: Arc<NodeCtx>,
}
