//! `GET /api/v1/groups`, `/elections` and `/services`: the recipes' views, read from the node layouts
//! the client library and Apache Curator write (`docs/recipes/`).
//!
//! All three are built from the ephemeral nodes (every member, candidate and instance is one), found
//! through the sessions that own them, so the cost follows the number of ephemerals, not the size of
//! the tree (at most [`SCAN`] nodes and [`DATA_BUDGET`] bytes of data are read). Each ephemeral node
//! is classified by its name and data:
//!
//! - an **election candidate** if its name ends in a 10-digit sequence (`_c_<uuid>-latch-0000000003`,
//!   Curator's `LeaderLatch`, our `LeaderElection`, locks); the lowest sequence under a parent leads
//!   (holds the lock);
//! - a **service instance** if its data is Curator's `ServiceInstance` JSON (an object with `name`,
//!   `id` and `address`): the service is its parent's name, under the base path above it;
//! - otherwise a **group member** (`GROUP/<member-id>`, Curator's `GroupMember`), its data shown as
//!   JSON when it is JSON.
//!
//! `?prefix=/app` keeps only what lies under `/app`.
//!
//! Left out: persistent (non-ephemeral) instances and members, which this scan does not see.

use super::ctx::ApiCtx;
use super::data::query;
use super::error::ApiResult;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// At most this many ephemeral nodes are read for one answer.
pub const SCAN: usize = 50_000;

/// Bytes of a node's data read at most (longer data is cut and not parsed as JSON).
pub const DATA_MAX: usize = 4 * 1024;

/// Bytes of data read at most for one answer (the scan stops there), so that the answer's memory and
/// the time the tree stays locked are bounded whatever the nodes hold.
pub const DATA_BUDGET: usize = 16 * 1024 * 1024;

/// The `prefix` parameter.
#[derive(Debug, Deserialize)]
pub struct Prefix {
    /// Only paths under this one.
    pub prefix: Option<String>,
}

/// One ephemeral node, as read.
struct Eph {
    parent: String,
    name: String,
    data: Vec<u8>,
    session: i64,
    czxid: i64,
    ctime: i64,
}

/// How much the scan read.
#[derive(Debug, Serialize)]
pub struct Scan {
    /// Ephemeral nodes read.
    pub scanned: usize,
    /// Whether it stopped at [`SCAN`] nodes or [`DATA_BUDGET`] bytes (the views are then partial).
    pub truncated: bool,
}

fn scan(api: &ApiCtx, prefix: Option<&str>) -> (Vec<Eph>, Scan) {
    let prefix = prefix.map(|p| p.trim_end_matches('/')).unwrap_or("");
    let under =
        |path: &str| prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"));
    let db = api.admin.node.shared.db.lock();
    let mut out = Vec::new();
    let mut truncated = false;
    let mut bytes = 0usize;
    'all: for (session, s) in db.state.sessions() {
        for path in s.ephemerals.iter() {
            if !under(path) {
                continue;
            }
            if out.len() == SCAN {
                truncated = true;
                break 'all;
            }
            let Some(node) = db.state.node(path) else {
                continue;
            };
            let data = node.data.as_deref().unwrap_or_default();
            let len = data.len().min(DATA_MAX);
            if bytes + len > DATA_BUDGET {
                truncated = true;
                break 'all;
            }
            bytes += len;
            let (parent, name) = roster_state::path::split(path).unwrap_or(("/", path));
            out.push(Eph {
                parent: parent.to_string(),
                name: name.to_string(),
                data: data[..len].to_vec(),
                session,
                czxid: node.czxid,
                ctime: node.ctime,
            });
        }
    }
    drop(db);
    let scanned = out.len();
    (out, Scan { scanned, truncated })
}

/// The sequence of a sequential node's name and its lock name (`latch-`, `lock-`, `__lock__`), without
/// Curator's `_c_<uuid>-` protection prefix.
fn sequence(name: &str) -> Option<(u64, String)> {
    if name.len() < 10 {
        return None;
    }
    let (head, digits) = name.split_at(name.len() - 10);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq = digits.parse().ok()?;
    let lock = match head.strip_prefix("_c_") {
        Some(rest) if rest.len() > 37 && rest.as_bytes()[36] == b'-' => &rest[37..],
        _ => head,
    };
    Some((seq, lock.to_string()))
}

fn instance(data: &[u8]) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice::<Value>(data).ok()? {
        Value::Object(o)
            if o.get("name").is_some_and(Value::is_string)
                && o.get("id").is_some_and(Value::is_string)
                && o.contains_key("address") =>
        {
            Some(o)
        }
        _ => None,
    }
}

fn text(data: &[u8]) -> Option<String> {
    std::str::from_utf8(data).ok().map(str::to_string)
}

fn join(parent: &str, name: &str) -> String {
    roster_state::path::join(parent, name)
}

/// The groups.
#[derive(Debug, Serialize)]
pub struct Groups {
    /// Every group with at least one member, by path.
    pub groups: Vec<Group>,
    /// What was read.
    pub scan: Scan,
}

/// One group.
#[derive(Debug, Serialize)]
pub struct Group {
    /// The group node.
    pub path: String,
    /// Its members, by id.
    pub members: Vec<GroupMember>,
}

/// One member.
#[derive(Debug, Serialize)]
pub struct GroupMember {
    /// Its id (the node's name).
    pub id: String,
    /// Its data as UTF-8 (if it is).
    pub data: Option<String>,
    /// Its data as JSON (if it is).
    pub json: Option<Value>,
    /// Its session (hex).
    pub session: String,
    /// zxid of its node's create.
    pub czxid: i64,
    /// When it joined, ms since the epoch.
    pub ctime: i64,
}

/// `GET /api/v1/groups?prefix=`.
pub async fn groups(
    State(api): State<Arc<ApiCtx>>,
    q: Result<Query<Prefix>, QueryRejection>,
) -> ApiResult<Groups> {
    let q = query(q)?;
    let (nodes, scan) = scan(&api, q.prefix.as_deref());
    let mut by: BTreeMap<String, Vec<GroupMember>> = BTreeMap::new();
    for e in nodes {
        if sequence(&e.name).is_some() || instance(&e.data).is_some() {
            continue;
        }
        by.entry(e.parent).or_default().push(GroupMember {
            json: serde_json::from_slice(&e.data).ok(),
            data: text(&e.data),
            id: e.name,
            session: format!("{:#x}", e.session),
            czxid: e.czxid,
            ctime: e.ctime,
        });
    }
    let groups = by
        .into_iter()
        .map(|(path, mut members)| {
            members.sort_by(|a, b| a.id.cmp(&b.id));
            Group { path, members }
        })
        .collect();
    Ok(Json(Groups { groups, scan }))
}

/// The elections.
#[derive(Debug, Serialize)]
pub struct Elections {
    /// Every election (or lock) with at least one candidate, by path.
    pub elections: Vec<Election>,
    /// What was read.
    pub scan: Scan,
}

/// One election.
#[derive(Debug, Serialize)]
pub struct Election {
    /// The election node.
    pub path: String,
    /// The leader's participant id (its node's data), or its node name when the data is empty.
    pub leader: Option<String>,
    /// The candidates in line, leader first.
    pub candidates: Vec<Candidate>,
}

/// One candidate.
#[derive(Debug, Serialize)]
pub struct Candidate {
    /// Its node's name.
    pub node: String,
    /// Its participant id (the node's data as UTF-8).
    pub participant: Option<String>,
    /// Its sequence number.
    pub sequence: u64,
    /// The lock name in its node's name (`latch-`, `lock-`, ...).
    pub lock_name: String,
    /// Whether it leads (the lowest sequence).
    pub leader: bool,
    /// Its session (hex).
    pub session: String,
    /// zxid of its node's create: the fencing token while it leads.
    pub czxid: i64,
    /// When it entered, ms since the epoch.
    pub ctime: i64,
}

/// `GET /api/v1/elections?prefix=`.
pub async fn elections(
    State(api): State<Arc<ApiCtx>>,
    q: Result<Query<Prefix>, QueryRejection>,
) -> ApiResult<Elections> {
    let q = query(q)?;
    let (nodes, scan) = scan(&api, q.prefix.as_deref());
    let mut by: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for e in nodes {
        let Some((sequence, lock_name)) = sequence(&e.name) else {
            continue;
        };
        by.entry(e.parent).or_default().push(Candidate {
            participant: text(&e.data),
            node: e.name,
            sequence,
            lock_name,
            leader: false,
            session: format!("{:#x}", e.session),
            czxid: e.czxid,
            ctime: e.ctime,
        });
    }
    let elections = by
        .into_iter()
        .map(|(path, mut candidates)| {
            candidates.sort_by_key(|c| c.sequence);
            if let Some(first) = candidates.first_mut() {
                first.leader = true;
            }
            let leader = candidates.first().map(|c| match &c.participant {
                Some(p) if !p.is_empty() => p.clone(),
                _ => c.node.clone(),
            });
            Election {
                path,
                leader,
                candidates,
            }
        })
        .collect();
    Ok(Json(Elections { elections, scan }))
}

/// The services.
#[derive(Debug, Serialize)]
pub struct Services {
    /// Every service with at least one instance, by path.
    pub services: Vec<Service>,
    /// What was read.
    pub scan: Scan,
}

/// One service.
#[derive(Debug, Serialize)]
pub struct Service {
    /// Its name (the service node's name).
    pub name: String,
    /// The base path of its registry (`/services` by default in the CLI).
    pub base: String,
    /// The service node.
    pub path: String,
    /// Its instances, by id.
    pub instances: Vec<Instance>,
}

/// One instance (Curator's `ServiceInstance`).
#[derive(Debug, Serialize)]
pub struct Instance {
    /// Its id.
    pub id: String,
    /// Its address.
    pub address: Value,
    /// Its port.
    pub port: Value,
    /// Its TLS port.
    pub ssl_port: Value,
    /// Its payload.
    pub payload: Value,
    /// When it registered, ms since the epoch.
    pub registration_time_utc: Value,
    /// `DYNAMIC`, `STATIC`, `PERMANENT`, ...
    pub service_type: Value,
    /// Its URI template.
    pub uri_spec: Value,
    /// Its node.
    pub node: String,
    /// Its session (hex).
    pub session: String,
}

/// `GET /api/v1/services?prefix=`.
pub async fn services(
    State(api): State<Arc<ApiCtx>>,
    q: Result<Query<Prefix>, QueryRejection>,
) -> ApiResult<Services> {
    let q = query(q)?;
    let (nodes, scan) = scan(&api, q.prefix.as_deref());
    let mut by: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
    for e in nodes {
        if sequence(&e.name).is_some() {
            continue;
        }
        let Some(mut o) = instance(&e.data) else {
            continue;
        };
        let mut take = |k: &str| o.remove(k).unwrap_or(Value::Null);
        let id = match take("id") {
            Value::String(s) => s,
            other => other.to_string(),
        };
        let inst = Instance {
            id,
            address: take("address"),
            port: take("port"),
            ssl_port: take("sslPort"),
            payload: take("payload"),
            registration_time_utc: take("registrationTimeUTC"),
            service_type: take("serviceType"),
            uri_spec: take("uriSpec"),
            node: join(&e.parent, &e.name),
            session: format!("{:#x}", e.session),
        };
        by.entry(e.parent).or_default().push(inst);
    }
    let services = by
        .into_iter()
        .map(|(path, mut instances)| {
            instances.sort_by(|a, b| a.id.cmp(&b.id));
            let (base, name) = roster_state::path::split(&path).unwrap_or(("/", &path));
            Service {
                name: name.to_string(),
                base: base.to_string(),
                path: path.clone(),
                instances,
            }
        })
        .collect();
    Ok(Json(Services { services, scan }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_told_by_their_sequence_and_lock_name() {
        assert_eq!(
            sequence("_c_0f6a1d52-7d3e-4a8e-9c1b-2f2f7a1e3b4c-latch-0000000007"),
            Some((7, "latch-".to_string()))
        );
        assert_eq!(sequence("lock-0000000012"), Some((12, "lock-".into())));
        assert_eq!(
            sequence("3e1f__lock__0000000001"),
            Some((1, "3e1f__lock__".into()))
        );
        assert_eq!(sequence("node-1"), None);
        assert_eq!(sequence("member-00000000x1"), None);
    }

    #[test]
    fn curator_instances_are_told_by_their_json() {
        let curator = br#"{"name":"user","id":"u1","address":"10.0.0.1","port":8080,"sslPort":null,"payload":{"zone":"b"},"registrationTimeUTC":1,"serviceType":"DYNAMIC","uriSpec":null}"#;
        assert!(instance(curator).is_some());
        let member = br#"{"id": "node-1", "address": "10.0.0.1", "port": 2552, "tags": {}}"#;
        assert!(instance(member).is_none(), "a group member has no name");
        assert!(instance(b"not json").is_none());
    }
}
