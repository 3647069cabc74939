//! [`ApiCtx`]: what the API handlers share.
//!
//! Left out: the handlers (the other files of `api`).

use super::auth;
use crate::admin::ctx::AdminCtx;
use std::sync::Arc;
use tokio::sync::watch;

/// What the API handlers read: the node, the actions' token, and the port's shutdown signal (which
/// ends the open event streams so the port can stop).
pub struct ApiCtx {
    /// The admin port's context (the node).
    pub admin: Arc<AdminCtx>,
    /// The bearer token the actions need.
    pub token: auth::Token,
    /// Turns true when the node shuts down.
    pub stop: watch::Receiver<bool>,
}
