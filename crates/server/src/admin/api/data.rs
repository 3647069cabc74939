//! `GET /api/v1/sessions` and `GET /api/v1/znodes?path=`: the replicated sessions and the znode tree
//! as this node has applied them.
//!
//! Znode reads check the node's ACL as an anonymous reader (`world:anyone`): stat, kind and child
//! names are always shown (as `exists` and `stat` show them to anyone), the data and the child names
//! only when the ACL grants READ to anyone, or when the request carries the admin token (the operator
//! sees everything, as with `super`). Digest ids in ACLs are masked as for a client without ADMIN.
//!
//! Left out: watches (`/commands/watches` and `wchp` list them), writes.

use super::ctx::ApiCtx;
use super::error::{ApiError, ApiResult};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use base64::Engine;
use roster_state::NodeKind;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// At most this many rows in a list, unless `limit` asks for fewer.
pub const MAX_LIMIT: usize = 10_000;

/// The `limit` parameter.
#[derive(Debug, Deserialize)]
pub struct Limit {
    /// Rows at most (default 1,000, at most [`MAX_LIMIT`]).
    pub limit: Option<usize>,
}

/// Parses the query or says what is wrong with it.
pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| {
        ApiError::bad_request(
            format!("bad query string: {}", e.body_text()),
            "see docs/observability.md for the parameters of this endpoint",
        )
    })
}

fn limit(l: Option<usize>) -> usize {
    l.unwrap_or(1_000).clamp(1, MAX_LIMIT)
}

/// The sessions.
#[derive(Debug, Serialize)]
pub struct Sessions {
    /// How many sessions there are.
    pub total: usize,
    /// The first `limit` of them, by id.
    pub sessions: Vec<SessionRow>,
}

/// One session.
#[derive(Debug, Serialize)]
pub struct SessionRow {
    /// Session id, hex (`0x...`).
    pub id: String,
    /// Negotiated timeout, ms.
    pub timeout_ms: i32,
    /// How many ephemeral nodes it owns.
    pub ephemerals: usize,
    /// Its first ephemeral nodes (at most 20).
    pub ephemeral_paths: Vec<String>,
    /// Whether its connection is on this node.
    pub connected_here: bool,
    /// The client's address, when connected here.
    pub client: Option<String>,
    /// When this node leads: ms until it expires unless the client is heard from.
    pub expires_in_ms: Option<i64>,
}

/// `GET /api/v1/sessions?limit=`.
pub async fn sessions(
    State(api): State<Arc<ApiCtx>>,
    q: Result<Query<Limit>, QueryRejection>,
) -> ApiResult<Sessions> {
    let limit = limit(query(q)?.limit);
    let shared = &api.admin.node.shared;
    let leads = api.admin.node.raft.is_leader();
    let now = crate::shared::now_ms();
    // Lock order: db, conns, tracker.
    let db = shared.db.lock();
    let conns = shared.conns.lock();
    let tracker = shared.tracker.lock();
    let mut ids: Vec<i64> = db.state.sessions().map(|(id, _)| id).collect();
    ids.sort_unstable();
    let total = ids.len();
    let sessions = ids
        .into_iter()
        .take(limit)
        .filter_map(|id| {
            let s = db.state.session(id)?;
            let client = conns
                .by_session
                .get(&id)
                .and_then(|c| conns.by_id.get(c))
                .map(|c| c.peer.to_string());
            Some(SessionRow {
                id: format!("{id:#x}"),
                timeout_ms: s.timeout_ms,
                ephemerals: s.ephemerals.len(),
                ephemeral_paths: s.ephemerals.iter().take(20).cloned().collect(),
                connected_here: client.is_some(),
                client,
                expires_in_ms: if leads {
                    tracker.deadline(id).map(|d| d - now)
                } else {
                    None
                },
            })
        })
        .collect();
    Ok(Json(Sessions { total, sessions }))
}

/// The `path` and `limit` parameters.
#[derive(Debug, Deserialize)]
pub struct ZnodeQuery {
    /// The znode (default `/`).
    pub path: Option<String>,
    /// Child names at most.
    pub limit: Option<usize>,
}

/// One znode.
#[derive(Debug, Serialize)]
pub struct Znode {
    /// Its path.
    pub path: String,
    /// `persistent`, `ephemeral`, `container` or `ttl`.
    pub kind: &'static str,
    /// The owning session of an ephemeral node (hex).
    pub owner: Option<String>,
    /// The TTL of a TTL node, ms.
    pub ttl_ms: Option<i64>,
    /// Its stat, as clients see it.
    pub stat: StatJson,
    /// Whether the data and child names are shown (see the module doc).
    pub readable: bool,
    /// Whether the data is null (a client created or set it with no bytes at all), not empty.
    pub null_data: bool,
    /// The data as UTF-8, if it is valid UTF-8 and readable.
    pub data_utf8: Option<String>,
    /// The data, base64 (standard alphabet), if readable.
    pub data_base64: Option<String>,
    /// Its ACL (digests masked).
    pub acl: Vec<AclJson>,
    /// How many children it has.
    pub children_total: usize,
    /// The first `limit` child names, sorted (empty when not readable).
    pub children: Vec<String>,
}

/// A stat, with zxids as numbers and hex.
#[derive(Debug, Serialize)]
pub struct StatJson {
    /// zxid of the create.
    pub czxid: i64,
    /// zxid of the last data change.
    pub mzxid: i64,
    /// zxid of the last child change.
    pub pzxid: i64,
    /// Create time, ms since the epoch.
    pub ctime: i64,
    /// Last data change, ms since the epoch.
    pub mtime: i64,
    /// Data version.
    pub version: i32,
    /// Child version.
    pub cversion: i32,
    /// ACL version.
    pub aversion: i32,
    /// Owner as clients see it (0 for containers and TTL nodes).
    pub ephemeral_owner: i64,
    /// Data length.
    pub data_length: i32,
    /// Number of children.
    pub num_children: i32,
}

/// One ACL entry.
#[derive(Debug, Serialize)]
pub struct AclJson {
    /// Scheme.
    pub scheme: String,
    /// Id in the scheme.
    pub id: String,
    /// Permissions as letters, `cdrwa` order as zkCli prints them.
    pub perms: String,
}

fn perms(p: i32) -> String {
    use roster_proto::perms::*;
    [
        (CREATE, 'c'),
        (DELETE, 'd'),
        (READ, 'r'),
        (WRITE, 'w'),
        (ADMIN, 'a'),
    ]
    .iter()
    .filter(|(bit, _)| p & bit != 0)
    .map(|(_, c)| *c)
    .collect()
}

/// `GET /api/v1/znodes?path=/a/b&limit=`.
pub async fn znodes(
    State(api): State<Arc<ApiCtx>>,
    headers: HeaderMap,
    q: Result<Query<ZnodeQuery>, QueryRejection>,
) -> ApiResult<Znode> {
    let q = query(q)?;
    let path = q.path.unwrap_or_else(|| "/".into());
    if let Err(e) = roster_state::path::validate_path(&path) {
        return Err(ApiError::bad_request(
            format!("bad path {path:?}: {e:?}"),
            "give an absolute znode path such as /app/members (no trailing slash)",
        ));
    }
    let limit = limit(q.limit);
    let operator = api.token.granted(&headers);
    let db = api.admin.node.shared.db.lock();
    let tree = db.state.tree();
    let Some(node) = tree.get(&path) else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("no znode at {path}"),
            "list the parent with /api/v1/znodes?path=<parent> to see which children exist",
        ));
    };
    let acl = tree.acl_of(node);
    let readable =
        operator || roster_state::acl::check_acl(acl, roster_proto::perms::READ, &[]).is_ok();
    let st = node.stat();
    let data: &[u8] = node.data.as_deref().unwrap_or_default();
    let (kind, owner, ttl_ms) = match node.kind() {
        NodeKind::Persistent => ("persistent", None, None),
        NodeKind::Ephemeral(s) => ("ephemeral", Some(format!("{s:#x}")), None),
        NodeKind::Container => ("container", None, None),
        NodeKind::Ttl(t) => ("ttl", None, Some(t)),
    };
    let children = if readable {
        let mut c = tree.children(&path);
        c.truncate(limit);
        c
    } else {
        Vec::new()
    };
    let znode = Znode {
        kind,
        owner,
        ttl_ms,
        stat: StatJson {
            czxid: st.czxid,
            mzxid: st.mzxid,
            pzxid: st.pzxid,
            ctime: st.ctime,
            mtime: st.mtime,
            version: st.version,
            cversion: st.cversion,
            aversion: st.aversion,
            ephemeral_owner: st.ephemeral_owner,
            data_length: st.data_length,
            num_children: st.num_children,
        },
        readable,
        null_data: node.data.is_none(),
        data_utf8: readable
            .then(|| std::str::from_utf8(data).ok().map(str::to_string))
            .flatten(),
        data_base64: readable.then(|| base64::engine::general_purpose::STANDARD.encode(data)),
        acl: roster_state::acl::mask_digests(acl)
            .into_iter()
            .map(|a| AclJson {
                scheme: a.id.scheme,
                id: a.id.id,
                perms: perms(a.perms),
            })
            .collect(),
        children_total: node.num_children as usize,
        children,
        path,
    };
    Ok(Json(znode))
}
