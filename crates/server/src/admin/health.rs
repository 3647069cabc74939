//! `/healthz` and `/readyz`, for supervisors and load balancers.
//!
//! - `/healthz`: 200 `ok` while the process answers at all.
//! - `/readyz`: 200 `ready` while the node serves ZooKeeper clients (it has recovered its state and has
//!   a working leader, the same test that decides whether it accepts connections); 503 with the reason
//!   otherwise.
//!
//! Left out: deeper checks (disk space, lag thresholds): `/metrics` has the numbers.

use super::ctx::AdminCtx;
use crate::cluster::status;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The health routes.
pub fn routes() -> Router<Arc<AdminCtx>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(ctx): State<Arc<AdminCtx>>) -> (StatusCode, String) {
    let node = &ctx.node;
    if let Some(why) = node.cluster.storage_failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: storage failed: {why}\n"),
        );
    }
    if !node.cluster.recovered.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: recovering the committed state\n".into(),
        );
    }
    if !status::has_leader(node) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: no working leader for {} ms\n",
                status::leaderless_ms(node)
            ),
        );
    }
    if !node.cluster.is_serving() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not serving clients yet\n".into(),
        );
    }
    (StatusCode::OK, "ready\n".into())
}
