//! `/commands/NAME`: ZooKeeper 3.8's AdminServer commands, with its JSON shapes, so that tools written
//! for ZooKeeper's AdminServer read a Roster node unchanged.
//!
//! Every answer is a JSON object with `command` (the command's primary name) and `error` (`null`, or
//! why it failed); an unknown name answers `"error": "Unknown command: NAME"`, as ZooKeeper does.
//! Short names (`srvr`, `mntr`, `wchs`...) and long ones (`server_stats`, `monitor`,
//! `watch_summary`...) both work. The numbers are those of the four-letter words
//! (`crate::net::fourlw`); the reference shapes are in `tests/compat/reference/zk-3.8-admin/`.
//!
//! Left out: the commands that only exist for ZooKeeper's own quorum protocol (`voting_view`,
//! `zabstate`, `observer_connection_stat_reset`, `leader`, `snapshot`, `restore`) answer with their
//! keys and empty or Roster-equivalent values; `system_properties` describes no JVM (empty);
//! authentication of commands (ZooKeeper 3.9) is not implemented: bind the port to loopback.

use super::ctx::AdminCtx;
use crate::cluster::ctx::NodeCtx;
use crate::net::fourlw;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The command routes.
pub fn routes() -> Router<Arc<AdminCtx>> {
    Router::new()
        .route("/commands", get(list))
        .route("/commands/", get(list))
        .route("/commands/{name}", get(command))
}

/// (primary name, other names).
const COMMANDS: &[(&str, &[&str])] = &[
    ("connection_stat_reset", &["crst"]),
    ("configuration", &["conf", "config"]),
    ("connections", &["cons"]),
    ("hash", &[]),
    ("dirs", &[]),
    ("dump", &[]),
    ("environment", &["envi", "env"]),
    ("get_trace_mask", &["gtmk"]),
    ("initial_configuration", &["icfg"]),
    ("is_read_only", &["isro"]),
    ("last_snapshot", &["lsnp"]),
    ("leader", &["lead"]),
    ("monitor", &["mntr"]),
    ("observers", &["obsr"]),
    ("ruok", &[]),
    ("server_stats", &["srvr"]),
    ("stat_reset", &["srst"]),
    ("stats", &["stat"]),
    ("system_properties", &["sysp"]),
    ("voting_view", &[]),
    ("watch_summary", &["wchs"]),
    ("watches", &["wchc"]),
    ("watches_by_path", &["wchp"]),
    ("zabstate", &[]),
];

async fn list() -> Json<Value> {
    let names: Vec<String> = COMMANDS
        .iter()
        .map(|(n, alt)| {
            if alt.is_empty() {
                n.to_string()
            } else {
                format!("{n} ({})", alt.join(", "))
            }
        })
        .collect();
    Json(json!({"command": "commands", "error": null, "commands": names}))
}

async fn command(State(ctx): State<Arc<AdminCtx>>, Path(name): Path<String>) -> Json<Value> {
    Json(run(&name, &ctx.node))
}

/// The primary name of a command called `name`, if there is one.
pub fn primary(name: &str) -> Option<&'static str> {
    COMMANDS
        .iter()
        .find(|(n, alt)| *n == name || alt.contains(&name))
        .map(|(n, _)| *n)
}

/// Answers one command.
pub fn run(name: &str, node: &NodeCtx) -> Value {
    let Some(cmd) = primary(name) else {
        return json!({"command": name, "error": format!("Unknown command: {name}")});
    };
    let mut out = match body(cmd, node) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    out.insert("command".into(), json!(cmd));
    out.entry("error").or_insert(Value::Null);
    Value::Object(out)
}

/// A `zk_` text value as JSON: an integer, a float, or a string.
fn value(v: &str) -> Value {
    if let Ok(i) = v.parse::<i64>() {
        json!(i)
    } else if let Ok(f) = v.parse::<f64>() {
        json!(f)
    } else {
        json!(v)
    }
}

fn body(cmd: &str, node: &NodeCtx) -> Value {
    let shared = &node.shared;
    match cmd {
        "ruok" => json!({}),
        "monitor" => {
            let mut m = Map::new();
            for line in fourlw::mntr(node).lines() {
                if let Some((k, v)) = line.split_once('\t') {
                    m.insert(k.trim_start_matches("zk_").to_string(), value(v));
                }
            }
            Value::Object(m)
        }
        "server_stats" => server_stats(node, false),
        "stats" => server_stats(node, true),
        "configuration" => {
            let c = &shared.config;
            let dir = std::fs::canonicalize(&c.data_dir).unwrap_or_else(|_| c.data_dir.clone());
            json!({
                "client_port": c.client_addr.map(|a| a.port()).unwrap_or(0),
                "client_port_listen_backlog": -1,
                "data_dir": dir.join("snapshots").display().to_string(),
                "data_log_dir": dir.join("log").display().to_string(),
                "max_client_cnxns": c.max_connections_per_ip,
                "max_session_timeout": c.max_session_timeout_ms,
                "min_session_timeout": c.min_session_timeout_ms,
                "server_id": node.identity.node_id,
                "tick_time": c.session_tick_ms,
            })
        }
        "initial_configuration" => {
            let text = toml::to_string(&shared.config).unwrap_or_default();
            json!({"initial_configuration": text})
        }
        "environment" => {
            let mut m = Map::new();
            for line in fourlw::envi(node).lines().skip(1) {
                if let Some((k, v)) = line.split_once('=') {
                    m.insert(k.to_string(), json!(v));
                }
            }
            Value::Object(m)
        }
        "connections" => json!({"connections": connections(node, true), "secure_connections": []}),
        "watch_summary" => {
            let (conns, paths, total) = shared.db.lock().watches.summary();
            json!({"num_connections": conns, "num_paths": paths, "num_total_watches": total})
        }
        "watches" => {
            let by_watcher = shared.db.lock().watches.by_watcher();
            let sessions = fourlw::session_of_conns(node);
            let mut m = Map::new();
            for (conn, paths) in by_watcher {
                let sid = sessions.get(&conn).copied().unwrap_or(0);
                m.insert(sid.to_string(), json!(paths));
            }
            json!({"session_id_to_watched_paths": m})
        }
        "watches_by_path" => {
            let by_path = shared.watches_by_path();
            let sessions = fourlw::session_of_conns(node);
            let mut m = Map::new();
            for (path, conns) in by_path {
                let ids: Vec<i64> = conns
                    .iter()
                    .map(|c| sessions.get(c).copied().unwrap_or(0))
                    .collect();
                m.insert(path, json!(ids));
            }
            json!({"path_to_session_ids": m})
        }
        "dirs" => {
            let (log, snap) = fourlw::dir_sizes(node);
            json!({"datadir_size": snap, "logdir_size": log})
        }
        "is_read_only" => json!({"read_only": false}),
        "dump" => {
            let db = shared.db.lock();
            let mut eph = Map::new();
            let mut expiry: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
            let now = crate::shared::now_ms();
            for (id, s) in db.state.sessions() {
                expiry
                    .entry(now + i64::from(s.timeout_ms))
                    .or_default()
                    .push(id);
                if !s.ephemerals.is_empty() {
                    let paths: Vec<&String> = s.ephemerals.iter().collect();
                    eph.insert(id.to_string(), json!(paths));
                }
            }
            let expiry: Map<String, Value> = expiry
                .into_iter()
                .map(|(t, ids)| (t.to_string(), json!(ids)))
                .collect();
            json!({"expiry_time_to_session_ids": expiry, "session_id_to_ephemeral_paths": eph})
        }
        "connection_stat_reset" => json!({}),
        "stat_reset" => {
            shared.stats.reset();
            json!({})
        }
        "get_trace_mask" => json!({"tracemask": 0}),
        "hash" => json!({"digests": []}),
        "last_snapshot" => {
            let p = node.raft.progress();
            json!({"zxid": format!("{:x}", p.snapshot), "timestamp": 0})
        }
        "leader" => {
            let s = node.raft.status();
            match s.leader {
                Some(l) => json!({
                    "is_leader": l == s.id,
                    "leader_id": l,
                    "leader_ip": s.nodes.get(&l).cloned().unwrap_or_default(),
                }),
                None => json!({"error": "no leader is known"}),
            }
        }
        "observers" => {
            let s = node.raft.status();
            let learners: Vec<u64> = s.learners().collect();
            json!({"synced_observers": learners.len(), "observers": learners})
        }
        "voting_view" => {
            let s = node.raft.status();
            let mut m = Map::new();
            for v in &s.voters {
                m.insert(
                    v.to_string(),
                    json!(s.nodes.get(v).cloned().unwrap_or_default()),
                );
            }
            json!({"current_config": m})
        }
        "zabstate" => {
            let s = node.raft.status();
            json!({"voting": s.voters.contains(&s.id), "zabstate": if s.leader.is_some() { "broadcast" } else { "election" }})
        }
        "system_properties" => json!({}),
        _ => json!({}),
    }
}

fn connections(node: &NodeCtx, detailed: bool) -> Vec<Value> {
    let conns = node.shared.conns.lock();
    let mut rows: Vec<_> = conns.by_id.iter().collect();
    rows.sort_by_key(|(id, _)| **id);
    rows.into_iter()
        .map(|(_, c)| {
            let st = &c.stats;
            let mut m = json!({
                "remote_socket_address": c.peer.to_string(),
                "interest_ops": 1,
                "outstanding_requests": st.outstanding.load(Ordering::Relaxed),
                "packets_received": st.received.load(Ordering::Relaxed),
                "packets_sent": st.sent.load(Ordering::Relaxed),
            });
            if let (true, Some(sid), Value::Object(o)) = (detailed, c.session_id, &mut m) {
                let completed = st.completed.load(Ordering::Relaxed);
                let avg = st
                    .latency_total_ms
                    .load(Ordering::Relaxed)
                    .checked_div(completed)
                    .unwrap_or(0);
                let est = c
                    .since
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                for (k, v) in [
                    ("session_id", json!(sid)),
                    ("session_timeout", json!(c.timeout_ms)),
                    ("established", json!(est)),
                    ("last_cxid", json!(st.last_cxid.load(Ordering::Relaxed))),
                    ("last_zxid", json!(st.last_zxid.load(Ordering::Relaxed))),
                    ("last_operation", json!("NA")),
                    ("last_response_time", json!(0)),
                    ("last_latency", json!(0)),
                    ("min_latency", json!(0)),
                    ("avg_latency", json!(avg)),
                    (
                        "max_latency",
                        json!(st.latency_max_ms.load(Ordering::Relaxed)),
                    ),
                ] {
                    o.insert(k.into(), v);
                }
            }
            m
        })
        .collect()
}

fn server_stats(node: &NodeCtx, with_connections: bool) -> Value {
    let shared = &node.shared;
    let st = &shared.stats;
    let (min, avg, max) = fourlw::latency(node);
    let (zxid, nodes) = {
        let db = shared.db.lock();
        (
            db.state.last_zxid(),
            fourlw::znode_count(db.state.node_count()),
        )
    };
    let (log, snap) = fourlw::dir_sizes(node);
    let client_response =
        json!({"last_buffer_size": -1, "max_buffer_size": -1, "min_buffer_size": -1});
    let mut v = json!({
        "version": format!("{}, built on {}", fourlw::ZK_VERSION, fourlw::BUILT_ON),
        "read_only": false,
        "node_count": nodes,
        "client_response": client_response,
        "server_stats": {
            "auth_failed_count": 0,
            "avg_latency": avg,
            "client_response_stats": client_response,
            "data_dir_size": snap,
            "fsync_threshold_exceed_count": 0,
            "last_processed_zxid": zxid,
            "log_dir_size": log,
            "max_latency": max,
            "min_latency": min,
            "non_mtlslocal_conn_count": 0,
            "non_mtlsremote_conn_count": 0,
            "num_alive_client_connections": shared.conns.lock().by_id.len(),
            "outstanding_requests": st.outstanding.load(Ordering::Relaxed),
            "packets_received": st.packets_received.load(Ordering::Relaxed),
            "packets_sent": st.packets_sent.load(Ordering::Relaxed),
            "provider_null": false,
            "server_state": fourlw::server_state(node),
            "uptime": shared.started.elapsed().as_millis() as u64,
        },
    });
    if let (true, Value::Object(o)) = (with_connections, &mut v) {
        o.insert("connections".into(), json!(connections(node, false)));
        o.insert("secure_connections".into(), json!([]));
    }
    v
}
