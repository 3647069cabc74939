//! `/metrics`: the node's Prometheus metrics in the text exposition format (OpenMetrics).
//!
//! At each scrape the route reads what is sampled rather than recorded (znodes, watches,
//! connections, sessions, Raft progress, file descriptors) into a [`Sample`] and lets
//! [`crate::metrics::Metrics::render`] encode the registry. With `metrics = false` it answers 404 and
//! says how to turn them on.
//!
//! Left out: the protobuf exposition, compression.

use super::ctx::AdminCtx;
use crate::cluster::ctx::NodeCtx;
use crate::metrics::{FollowerSample, Sample};
use crate::raft::handle::Role;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The metrics route.
pub fn routes() -> Router<Arc<AdminCtx>> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(ctx): State<Arc<AdminCtx>>) -> Response {
    let node = &ctx.node;
    match node.shared.metrics.render(&sample(node)) {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are off on this node (setting metrics = false, flag --metrics false); set it to true to record them\n",
        )
            .into_response(),
    }
}

/// The role's label value.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Candidate => "candidate",
        Role::Follower => "follower",
        Role::Learner => "learner",
        Role::Shutdown => "shutdown",
    }
}

/// Reads the node's sampled numbers.
pub fn sample(node: &NodeCtx) -> Sample {
    let shared = &node.shared;
    let st = &shared.stats;
    let mut s = Sample::default();
    {
        let db = shared.db.lock();
        // ZooKeeper counts the root twice (see `net::fourlw`).
        s.znode_count = db.state.node_count() as u64 + 1;
        s.watches = db.watches.count_by_kind().map(|n| n as u64);
        s.ephemerals_count = db.state.ephemeral_count() as u64;
        s.approximate_data_size = db.state.approximate_data_size();
        s.global_sessions = db.state.sessions().count() as u64;
    }
    s.num_alive_connections = shared.conns.lock().by_id.len() as u64;
    s.outstanding_requests = st.outstanding.load(Ordering::Relaxed);
    s.packets_received = st.packets_received.load(Ordering::Relaxed);
    s.packets_sent = st.packets_sent.load(Ordering::Relaxed);
    s.uptime_ms = shared.started.elapsed().as_millis() as u64;
    s.fds = (
        crate::net::fourlw::open_files(),
        crate::net::fourlw::max_open_files(),
    );
    s.connection_rejected = st.connections_refused.load(Ordering::Relaxed);
    s.rss_bytes = crate::net::fourlw::rss_bytes();
    s.serving = node.cluster.is_serving();
    let status = node.raft.status();
    s.role = role_name(status.role);
    s.term = status.term;
    s.leader = status.leader.unwrap_or(0);
    s.leader_uptime_ms = shared.metrics.leader_uptime_ms();
    s.quorum_size = status.voters.len() as u64;
    s.learners = status.learners().count() as u64;
    s.committed = status.committed;
    s.applied = status.applied;
    let progress = node.raft.progress();
    s.last_log = progress.last_log;
    s.snapshot_index = progress.snapshot;
    s.followers = progress
        .followers
        .iter()
        .map(|f| FollowerSample {
            id: f.id,
            lag_entries: progress.last_log.saturating_sub(f.matched),
            lag_seconds: f.last_ack.map(|d| d.as_secs_f64()),
        })
        .collect();
    s.wal_bytes = node.wal.get().bytes_written;
    s
}
