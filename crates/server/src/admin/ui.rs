//! The live web view at `/`: one page of plain HTML, CSS and JavaScript embedded in the binary
//! (`admin/ui/`, no build step, nothing fetched from the network), which draws the cluster, the
//! groups, elections and services, a znode browser and the event timeline from `/api/v1`, and
//! redraws on each message of the event stream.
//!
//! Left out: any action (the page only reads; the actions need the token).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("ui/index.html");
const STYLE: &str = include_str!("ui/style.css");
const APP: &str = include_str!("ui/app.js");

/// The page and its two assets.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui/style.css", get(style))
        .route("/ui/app.js", get(app))
}

const NO_CACHE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-cache");

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), NO_CACHE],
        INDEX,
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), NO_CACHE],
        STYLE,
    )
}

async fn app() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            NO_CACHE,
        ],
        APP,
    )
}
