//! The admin HTTP port (`--admin-addr`, default `127.0.0.1:8080`, ZooKeeper's AdminServer port): what
//! operators, Prometheus and browsers read about a node.
//!
//! - [`health`]: `/healthz` (the process answers) and `/readyz` (it serves clients: it has a working
//!   leader and has recovered).
//! - [`metrics`]: `/metrics`, Prometheus text format.
//! - [`commands`]: `/commands/*`, ZooKeeper's AdminServer commands with its JSON shapes.
//! - [`api`]: the JSON API under `/api/v1` (cluster, sessions, znodes, recipes, events and their
//!   live stream, authenticated actions).
//! - [`ui`]: the live web view at `/`, embedded in the binary.
//!
//! Every route reads the node through [`ctx::AdminCtx`]; none of them changes the replicated state
//! except the authenticated actions.
//!
//! Left out: TLS on this port (bind it to loopback or a private network).

pub mod api;
pub mod commands;
pub mod ctx;
pub mod health;
pub mod metrics;
pub mod ui;

use axum::Router;
use ctx::AdminCtx;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Every route of the admin port. `stop` turns true when the node shuts down (it ends the event
/// streams); the API's token is read from (or made in) the data directory.
pub fn router(ctx: Arc<AdminCtx>, stop: watch::Receiver<bool>) -> Router {
    let token = api::auth::Token::load_or_create(&ctx.node.shared.config.data_dir);
    let api = Arc::new(api::ctx::ApiCtx {
        admin: ctx.clone(),
        token,
        stop,
    });
    Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(commands::routes())
        .with_state(ctx)
        .merge(ui::routes())
        .merge(api::routes().with_state(api))
}

/// Serves the admin port until `shutdown` turns true.
pub async fn serve(listener: TcpListener, ctx: Arc<AdminCtx>, mut shutdown: watch::Receiver<bool>) {
    let app = router(ctx, shutdown.clone());
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
