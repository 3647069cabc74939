//! The admin port's `/metrics` and `/commands/*` on real `roster serve` processes: the metrics move as
//! a known workload says they must (requests by opcode, znodes, sessions, watches, log fsyncs, Raft
//! roles on a 3-node cluster), `metrics = false` serves none, and every AdminServer command answers
//! with the keys and value types of ZooKeeper 3.8's (recorded in tests/compat/reference/zk-3.8-admin).

mod support;

use roster_proto::{CreateMode, Request};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

/// Every sample of a scrape: `name{labels}` → value.
fn scrape(admin: SocketAddr) -> BTreeMap<String, f64> {
    let (code, body) = http_get(admin, "/metrics");
    assert_eq!(code, 200, "/metrics answered {code}: {body}");
    assert!(body.ends_with("# EOF\n"), "no OpenMetrics EOF marker");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("name value");
            let v = match v {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {l}")),
            };
            (k.to_string(), v)
        })
        .collect()
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in the scrape"))
}

fn command(admin: SocketAddr, name: &str) -> Value {
    let (code, body) = http_get(admin, &format!("/commands/{name}"));
    assert_eq!(code, 200, "/commands/{name} answered {code}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/commands/{name}: {e}: {body}"))
}

#[test]
fn metrics_follow_a_known_workload() {
    let r = Roster::start(&[]);
    let before = scrape(r.admin);
    assert_eq!(get(&before, "roster_raft_role{role=\"leader\"}"), 1.0);
    assert!(get(&before, "roster_raft_term") >= 1.0);
    let znodes = get(&before, "znode_count");

    let mut c = Raw::connect(r.addr, 10_000);
    assert_eq!(c.create("/m", b"", 0).err, 0);
    for i in 0..5 {
        assert_eq!(c.create(&format!("/m/{i}"), b"0123456789", 0).err, 0);
    }
    assert_eq!(c.create("/m/e", b"", CreateMode::Ephemeral.code()).err, 0);
    for _ in 0..3 {
        assert_eq!(c.get("/m/0", false).err, 0);
    }
    assert_eq!(c.set("/m/1", b"x", -1).err, 0);
    assert_eq!(c.set("/m/2", b"y", -1).err, 0);
    assert_eq!(c.get("/m/3", true).err, 0);
    assert_eq!(c.children("/m", true).err, 0);

    let m = scrape(r.admin);
    let count = |op: &str| {
        get(
            &m,
            &format!("roster_request_duration_seconds_count{{op=\"{op}\"}}"),
        )
    };
    assert_eq!(
        count("create"),
        7.0 + get(
            &before,
            "roster_request_duration_seconds_count{op=\"create\"}"
        )
    );
    assert_eq!(count("getData"), 4.0);
    assert_eq!(count("setData"), 2.0);
    assert_eq!(count("getChildren"), 1.0);
    assert_eq!(
        get(
            &m,
            "roster_request_duration_seconds_bucket{le=\"+Inf\",op=\"create\"}"
        ),
        count("create"),
        "the +Inf bucket holds every observation"
    );
    assert!(get(&m, "updatelatency_count") >= 9.0);
    assert!(get(&m, "readlatency_count") >= 5.0);
    assert_eq!(get(&m, "znode_count"), znodes + 7.0);
    assert_eq!(get(&m, "ephemerals_count"), 1.0);
    assert_eq!(get(&m, "global_sessions"), 1.0);
    assert_eq!(get(&m, "num_alive_connections"), 1.0);
    assert_eq!(get(&m, "roster_sessions_created_total"), 1.0);
    assert_eq!(get(&m, "roster_watches{kind=\"data\"}"), 1.0);
    assert_eq!(get(&m, "roster_watches{kind=\"child\"}"), 1.0);
    assert_eq!(get(&m, "watch_count"), 2.0);
    assert!(get(&m, "approximate_data_size") >= 50.0);
    assert!(get(&m, "fsynctime_count") > 0.0, "log fsyncs are timed");
    assert!(
        get(&m, "sync_processor_batch_size_sum") >= 9.0,
        "every write was in a synced batch"
    );
    assert!(get(&m, "roster_client_received_bytes_total") > 0.0);
    assert!(get(&m, "roster_client_sent_bytes_total") > 0.0);
    assert!(get(&m, "packets_received") >= 14.0);
    assert!(get(&m, "roster_raft_applied_index") >= 9.0);
    assert!(get(&m, "roster_raft_commit_index") >= get(&before, "roster_raft_commit_index") + 9.0);
    assert!(get(&m, "leader_uptime") > 0.0);
    assert_eq!(get(&m, "quorum_size"), 1.0);

    c.close();
    let after = scrape(r.admin);
    assert_eq!(get(&after, "roster_sessions_closed_total"), 1.0);
    assert_eq!(get(&after, "global_sessions"), 0.0);
    assert_eq!(get(&after, "ephemerals_count"), 0.0);
    assert_eq!(get(&after, "watch_count"), 0.0);
}

#[test]
fn refused_handshakes_are_counted_by_reason() {
    let r = Roster::start(&[]);
    let mut c = Raw::connect(r.addr, 10_000);
    let mut resume = c.resume_request();
    resume.passwd = bytes::Bytes::from(vec![7u8; 16]);
    assert!(
        Raw::connect_with(r.addr, resume).is_err(),
        "a wrong password is refused"
    );
    let _ = c.call(Request::Ping);
    let m = scrape(r.admin);
    assert_eq!(
        get(
            &m,
            "roster_connections_rejected_total{reason=\"session_expired\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "roster_connections_rejected_total{reason=\"per_ip_limit\"}"
        ),
        0.0
    );
}

#[test]
fn metrics_off_records_and_serves_nothing() {
    let r = Roster::start(&["--metrics", "false"]);
    let mut c = Raw::connect(r.addr, 10_000);
    assert_eq!(c.create("/off", b"", 0).err, 0);
    let (code, body) = http_get(r.admin, "/metrics");
    assert_eq!(code, 404);
    assert!(
        body.contains("metrics = false"),
        "the answer says how to turn them on: {body}"
    );
    // The AdminServer commands still answer (they read the four-letter words' counters).
    assert_eq!(command(r.admin, "ruok")["error"], Value::Null);
}

/// The JSON kind of a value, numbers of any form as one.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every key of `zk` is in `ours` with the same kind, one level into objects and into the first
/// element of arrays of objects (maps keyed by session ids or paths compare their values' kinds).
fn same_shape(name: &str, zk: &Value, ours: &Value, keyed: bool) {
    let (Value::Object(zk), Value::Object(ours)) = (zk, ours) else {
        panic!("{name}: not objects: {zk} / {ours}");
    };
    if keyed {
        let zk_kinds: Vec<_> = zk.values().map(kind).collect();
        let our_kinds: Vec<_> = ours.values().map(kind).collect();
        assert!(
            !our_kinds.is_empty(),
            "{name}: empty where ZooKeeper has {zk:?}"
        );
        assert_eq!(zk_kinds[0], our_kinds[0], "{name}: value kinds differ");
        return;
    }
    for (k, v) in zk {
        let o = ours
            .get(k)
            .unwrap_or_else(|| panic!("{name}: key {k} missing; Roster: {ours:?}"));
        assert_eq!(kind(v), kind(o), "{name}.{k}: ZooKeeper {v}, Roster {o}");
        match (v, o) {
            (Value::Object(_), Value::Object(_)) => {
                let keyed = matches!(
                    k.as_str(),
                    "session_id_to_watched_paths"
                        | "path_to_session_ids"
                        | "session_id_to_ephemeral_paths"
                        | "expiry_time_to_session_ids"
                );
                if !(keyed && v.as_object().is_some_and(|m| m.is_empty())) {
                    same_shape(&format!("{name}.{k}"), v, o, keyed);
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                if let (Some(x @ Value::Object(_)), Some(y)) = (a.first(), b.first()) {
                    same_shape(&format!("{name}.{k}[0]"), x, y, false);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn admin_commands_have_zookeepers_json_shapes() {
    let r = Roster::start(&[]);
    // The set-up of tests/compat/make_admin_reference.py.
    let mut c = Raw::connect(r.addr, 10_000);
    assert_eq!(c.create("/ref", b"x", 0).err, 0);
    assert_eq!(c.create("/ref/e", b"", CreateMode::Ephemeral.code()).err, 0);
    assert_eq!(c.get("/ref", true).err, 0);
    assert_eq!(c.children("/ref", true).err, 0);
    let _ = c.exists("/ref/none", true);
    assert_eq!(c.exists("/ref/e", true).err, 0);

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/compat/reference/zk-3.8-admin");
    // (reference file, command name Roster is asked with: short and long names both work)
    let cases = [
        ("ruok", "ruok"),
        ("srvr", "srvr"),
        ("stat", "stats"),
        ("conf", "conf"),
        ("envi", "environment"),
        ("cons", "cons"),
        ("wchs", "wchs"),
        ("wchc", "watches"),
        ("wchp", "wchp"),
        ("dirs", "dirs"),
        ("is_read_only", "isro"),
        ("dump", "dump"),
        ("crst", "crst"),
        ("srst", "srst"),
        ("gtmk", "gtmk"),
        ("hash", "hash"),
        ("observers", "observers"),
        ("zabstate", "zabstate"),
        ("voting_view", "voting_view"),
        ("last_snapshot", "last_snapshot"),
        ("no_such_command", "no_such_command"),
    ];
    for (file, name) in cases {
        let zk: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{file}.json"))).unwrap(),
        )
        .unwrap();
        let ours = command(r.admin, name);
        assert_eq!(ours["command"], zk["command"], "{name}: command name");
        assert_eq!(kind(&ours["error"]), kind(&zk["error"]), "{name}: error");
        same_shape(name, &zk, &ours, false);
    }

    // mntr: ZooKeeper has hundreds of keys; the basic ones (those of its Prometheus gauges and the
    // classic `mntr` monitoring scripts) are all here, with ZooKeeper's kinds.
    let zk: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mntr.json")).unwrap()).unwrap();
    let ours = command(r.admin, "mntr");
    assert_eq!(ours["command"], "monitor");
    for k in [
        "version",
        "server_state",
        "avg_latency",
        "max_latency",
        "min_latency",
        "packets_received",
        "packets_sent",
        "num_alive_connections",
        "outstanding_requests",
        "znode_count",
        "watch_count",
        "ephemerals_count",
        "approximate_data_size",
        "open_file_descriptor_count",
        "max_file_descriptor_count",
        "global_sessions",
        "local_sessions",
        "uptime",
        "connection_rejected",
    ] {
        assert_eq!(
            kind(&ours[k]),
            kind(&zk[k]),
            "mntr.{k}: ZooKeeper {}, Roster {}",
            zk[k],
            ours[k]
        );
    }
    assert_eq!(
        ours["znode_count"], zk["znode_count"],
        "same tree, same count"
    );
    assert_eq!(ours["ephemerals_count"], 1);
}

#[test]
fn cluster_metrics_agree_on_one_leader() {
    let _g = serial();
    let (a, b, c) = three();
    let nodes = [&a, &b, &c];
    let leader_id = peer_status(a.peer).unwrap().leader.expect("a leader");
    // Some writes, so followers have something to acknowledge.
    let mut cl = connect_retry(a.addr, 10_000, Duration::from_secs(30));
    for i in 0..5 {
        assert_eq!(cl.create(&format!("/c{i}"), b"", 0).err, 0);
    }
    sync(&mut cl, "/");
    let scrapes: Vec<_> = nodes.iter().map(|n| scrape(n.admin)).collect();
    let leaders = scrapes
        .iter()
        .filter(|m| get(m, "roster_raft_role{role=\"leader\"}") == 1.0)
        .count();
    assert_eq!(leaders, 1, "exactly one node reports the leader role");
    let term = get(&scrapes[0], "roster_raft_term");
    assert!(term >= 1.0);
    for m in &scrapes {
        assert_eq!(get(m, "roster_raft_term"), term, "one term");
        assert_eq!(get(m, "roster_raft_leader"), leader_id as f64);
        assert_eq!(get(m, "quorum_size"), 3.0);
        assert!(get(m, "fsynctime_count") > 0.0);
    }
    let lead = scrapes
        .iter()
        .find(|m| get(m, "roster_raft_role{role=\"leader\"}") == 1.0)
        .unwrap();
    let followers: Vec<_> = lead
        .keys()
        .filter(|k| k.starts_with("roster_raft_follower_lag_entries{"))
        .collect();
    assert_eq!(
        followers.len(),
        2,
        "the leader reports both followers: {followers:?}"
    );
    for family in LEADER_ONLY {
        let n = lead
            .keys()
            .filter(|k| k.starts_with(&format!("{family}{{follower=")))
            .count();
        assert_eq!(n, 2, "the leader reports {family} for both followers");
    }
    assert_eq!(get(lead, "synced_followers"), 2.0);
    for m in scrapes.iter().filter(|m| !std::ptr::eq(*m, lead)) {
        assert_eq!(get(m, "leader_uptime"), 0.0);
        assert!(!m
            .keys()
            .any(|k| k.starts_with("roster_raft_follower_lag_entries{")));
    }
}

/// Families with samples only on a leader with followers (checked by the cluster test).
const LEADER_ONLY: [&str; 2] = [
    "roster_raft_follower_lag_entries",
    "roster_raft_follower_last_ack_age_seconds",
];

#[test]
fn the_dashboard_names_only_metrics_a_node_exports() {
    let r = Roster::start(&[]);
    // Every family the node declares (`# TYPE name kind`), samples or not (follower lag has
    // samples only on a leader with followers).
    let (_, body) = http_get(r.admin, "/metrics");
    let families: std::collections::BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let exported = |name: &str| {
        LEADER_ONLY.contains(&name)
            || families.contains(name)
            || ["_bucket", "_count", "_sum", "_total"]
                .iter()
                .any(|sfx| name.strip_suffix(sfx).is_some_and(|b| families.contains(b)))
    };
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/grafana/roster.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            // A metric name is an identifier followed by `{` (every query selects `instance`).
            for (i, _) in expr.match_indices('{') {
                let name: String = expr[..i]
                    .chars()
                    .rev()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                if name.is_empty() || name == "by" {
                    continue;
                }
                assert!(
                    exported(&name),
                    "dashboard panel {} queries {name}, which no node exports",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 25,
        "only {checked} metric names found in the dashboard"
    );
}
