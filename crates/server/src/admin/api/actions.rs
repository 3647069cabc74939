//! The authenticated actions (`Authorization: Bearer <admin.token>`, see [`super::auth`]):
//!
//! - `POST /api/v1/actions/snapshot`: this node builds a snapshot of its applied state now (and
//!   compacts its log); answers at once, the new index shows in `/api/v1/cluster` (`snapshot`).
//! - `POST /api/v1/actions/leave`: this node leaves the cluster (as `roster cluster leave`).
//! - `POST /api/v1/actions/remove/{id}`: node `id` is removed (as `roster cluster remove`).
//!
//! Membership changes are carried out by the leader (this node forwards them) and answered once
//! committed.
//!
//! Left out: leadership transfer on request, adding a node (a node joins with `--join`).

use super::ctx::ApiCtx;
use super::error::{ApiError, ApiResult};
use crate::cluster::membership;
use crate::transport::wire::{PeerError, PeerResponse};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// How long a membership change may take before the action answers 504.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// What an action did.
#[derive(Debug, Serialize)]
pub struct Done {
    /// The action.
    pub action: String,
    /// What happened, in words.
    pub result: String,
}

/// `POST /api/v1/actions/snapshot`.
pub async fn snapshot(State(api): State<Arc<ApiCtx>>, headers: HeaderMap) -> ApiResult<Done> {
    api.token.check(&headers)?;
    let node = &api.admin.node;
    let before = node.raft.status().snapshot;
    node.raft.snapshot_now().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("snapshot not started: {e}"),
            "the node is stopping or its Raft failed: check its log",
        )
    })?;
    tracing::info!(before, "snapshot requested through the admin API");
    Ok(Json(Done {
        action: "snapshot".into(),
        result: format!(
            "snapshot started (the previous one covers index {before}); /api/v1/cluster shows the new index when it is done"
        ),
    }))
}

/// `POST /api/v1/actions/leave`.
pub async fn leave(State(api): State<Arc<ApiCtx>>, headers: HeaderMap) -> ApiResult<Done> {
    api.token.check(&headers)?;
    let me = api.admin.node.identity.node_id;
    change(&api, me, "leave").await
}

/// `POST /api/v1/actions/remove/{id}`.
pub async fn remove(
    State(api): State<Arc<ApiCtx>>,
    headers: HeaderMap,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<Done> {
    api.token.check(&headers)?;
    let Path(id) = id.map_err(|e| {
        ApiError::bad_request(
            format!("bad node id: {}", e.body_text()),
            "give the numeric node id, as /api/v1/cluster lists it: /api/v1/actions/remove/3",
        )
    })?;
    if !api.admin.node.raft.status().nodes.contains_key(&id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("node {id} is not a member"),
            "GET /api/v1/cluster lists the members and their ids",
        ));
    }
    change(&api, id, "remove").await
}

async fn change(api: &ApiCtx, id: u64, action: &str) -> ApiResult<Done> {
    tracing::info!(
        node = id,
        action,
        "membership change requested through the admin API"
    );
    let answer = tokio::time::timeout(CHANGE_TIMEOUT, membership::remove(&api.admin.node, id))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the change was not committed within {} s",
                    CHANGE_TIMEOUT.as_secs()
                ),
                "it may still complete: GET /api/v1/cluster shows the members; check that a majority of the voters is up",
            )
        })?;
    match answer {
        PeerResponse::Ack => Ok(Json(Done {
            action: action.into(),
            result: format!("node {id} is no longer a member"),
        })),
        PeerResponse::Err(PeerError::Refused(why)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("refused: {why}"),
            "a cluster keeps at least one voter: add a node before removing this one",
        )),
        PeerResponse::Err(PeerError::NotLeader(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no leader to carry out the change",
            "wait until /readyz answers 200 (the cluster has a leader), then try again",
        )),
        other => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the change failed: {other:?}"),
            "check that a majority of the voters is up (GET /api/v1/cluster), then try again",
        )),
    }
}
