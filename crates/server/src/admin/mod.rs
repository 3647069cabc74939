//! The admin HTTP port (`--admin-addr`, default `127.0.0.1:8080`, ZooKeeper's AdminServer port): what
//! operators, Prometheus and browsers read about a node.
//!
//! - [`health`]: `/healthz` (the process answers) and `/readyz` (it serves clients: it has a working
//!   leader and has recovered).
//! - [`metrics`]: `/metrics`, Prometheus text format.
//! - [`commands`]: `/commands/*`, ZooKeeper's AdminServer commands with its JSON shapes.
//!
//! Every route reads the node through [`AdminCtx`]; none of them changes the replicated state
//! except the authenticated actions.
//!
//! Left out: TLS on this port (bind it to loopback or a private network).

pub mod commands;
pub mod health;
pub mod metrics;

use crate::cluster::ctx::NodeCtx;
use axum::Router;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the admin routes read.
pub struct AdminCtx {
    /// The node.
    pub node: Arc<NodeCtx>,
}

/// Every route of the admin port.
pub fn router(ctx: Arc<AdminCtx>) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(commands::routes())
        .with_state(ctx)
}

/// Serves the admin port until `shutdown` turns true.
pub async fn serve(listener: TcpListener, ctx: Arc<AdminCtx>, mut shutdown: watch::Receiver<bool>) {
    let app = router(ctx);
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::warn!(error = %e, "admin HTTP port stopped");
    }
}
