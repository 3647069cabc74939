//! The admin JSON API, version 1, under `/api/v1`: what a node knows of its cluster, its sessions, its
//! znodes and the recipes built on them, its event journal (recent, and live as server-sent events),
//! and the few actions an operator takes (snapshot now, leave, remove a node).
//!
//! - [`cluster`]: `GET /api/v1/cluster`, this node's view with every member's role, health and lag.
//! - [`data`]: `GET /api/v1/sessions` and `GET /api/v1/znodes?path=`.
//! - [`recipes`]: `GET /api/v1/groups`, `/elections`, `/services`, read from the layouts the client
//!   library (and Apache Curator) write.
//! - [`stream`]: `GET /api/v1/events?after=` and `GET /api/v1/events/stream` (SSE).
//! - [`actions`]: `POST /api/v1/actions/{snapshot,leave,remove/{id}}`, with the bearer token of
//!   [`auth`].
//!
//! Reads need no token; the actions do. Every error is JSON, `{"error": "...", "hint": "..."}`, with
//! an HTTP status that says whose fault it is. `docs/observability.md` documents every shape.
//!
//! Left out: writes to znodes (use a ZooKeeper client), pagination beyond a `limit`, CORS.

pub mod actions;
pub mod auth;
pub mod cluster;
pub mod ctx;
pub mod data;
pub mod error;
pub mod recipes;
pub mod stream;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use ctx::ApiCtx;
use error::ApiError;
use std::sync::Arc;

/// The routes of `/api/v1`.
pub fn routes() -> Router<Arc<ApiCtx>> {
    Router::new()
        .route("/api/v1/cluster", get(cluster::cluster))
        .route("/api/v1/sessions", get(data::sessions))
        .route("/api/v1/znodes", get(data::znodes))
        .route("/api/v1/groups", get(recipes::groups))
        .route("/api/v1/elections", get(recipes::elections))
        .route("/api/v1/services", get(recipes::services))
        .route("/api/v1/events", get(stream::recent))
        .route("/api/v1/events/stream", get(stream::live))
        .route("/api/v1/actions/snapshot", post(actions::snapshot))
        .route("/api/v1/actions/leave", post(actions::leave))
        .route("/api/v1/actions/remove/{id}", post(actions::remove))
        .route("/api/v1", get(not_found))
        .route("/api/v1/{*rest}", get(not_found).post(not_found))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such API endpoint",
        "see docs/observability.md for the endpoints of /api/v1",
    )
}
