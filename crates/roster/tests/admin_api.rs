//! The admin JSON API (`/api/v1`) and the web view's assets, against real `roster serve` processes on
//! loopback: the cluster view (one node, then three with one killed), znodes, sessions, the recipes'
//! views read from real ephemeral nodes, the event journal and its server-sent-event stream, and the
//! actions' token. A tiny HTTP/1.1 client over `TcpStream` speaks to the admin port.

mod support;

use roster_proto::CreateMode;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::*;

/// One HTTP/1.1 exchange; `Connection: close`, so the body is everything after the head.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("admin port accepts");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, _, body) = http(addr, "GET", path, &[]);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, json)
}

fn ok(addr: SocketAddr, path: &str) -> Value {
    let (status, json) = get(addr, path);
    assert_eq!(status, 200, "{path}: {json}");
    json
}

fn wait_ready(r: &Roster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(r.admin, "GET", "/readyz", &[]).0 != 200 {
        assert!(Instant::now() < deadline, "not ready: {}", r.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `path` until `check` holds (at most `within`); the last answer.
fn wait_json(
    addr: SocketAddr,
    path: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = ok(addr, path);
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path} never matched: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const EPHEMERAL: i32 = CreateMode::Ephemeral as i32;
const EPHEMERAL_SEQUENTIAL: i32 = CreateMode::EphemeralSequential as i32;

#[test]
fn one_node_api_shows_cluster_znodes_sessions_and_recipes() {
    let r = Roster::start(&[]);
    wait_ready(&r);

    let c = ok(r.admin, "/api/v1/cluster");
    let me = c["node_id"].as_u64().unwrap();
    assert_eq!(c["leader"].as_u64(), Some(me), "{c:#}");
    assert_eq!(c["has_leader"], true);
    let members = c["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{c:#}");
    assert_eq!(members[0]["role"], "leader");
    assert_eq!(members[0]["health"], "ok");
    assert_eq!(members[0]["this_node"], true);
    assert_eq!(members[0]["client_addr"], r.addr.to_string());

    // The layouts of the recipes: a group, an election with two candidates, a Curator service.
    let mut z = Raw::connect(r.addr, 10_000);
    for p in [
        "/app",
        "/app/members",
        "/app/leader",
        "/services",
        "/services/api",
    ] {
        z.create(p, b"", 0);
    }
    let member = r#"{"id":"node-1","address":"10.0.0.1","port":2552,"tags":{"dc":"east"}}"#;
    z.create("/app/members/node-1", member.as_bytes(), EPHEMERAL);
    let uuid = "0f6a1d52-7d3e-4a8e-9c1b-2f2f7a1e3b4c";
    z.create(
        &format!("/app/leader/_c_{uuid}-latch-"),
        b"alice",
        EPHEMERAL_SEQUENTIAL,
    );
    z.create(
        &format!("/app/leader/_c_{uuid}-latch-"),
        b"bob",
        EPHEMERAL_SEQUENTIAL,
    );
    let instance = r#"{"name":"api","id":"i1","address":"127.0.0.9","port":8080,"sslPort":null,"payload":{"zone":"b"},"registrationTimeUTC":1764150000000,"serviceType":"DYNAMIC","uriSpec":null}"#;
    z.create("/services/api/i1", instance.as_bytes(), EPHEMERAL);
    z.create("/bin", &[0xff, 0x00, 0x80], 0);

    let g = ok(r.admin, "/api/v1/groups");
    let groups = g["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "only the group is a group: {g:#}");
    assert_eq!(groups[0]["path"], "/app/members");
    assert_eq!(groups[0]["members"][0]["id"], "node-1");
    assert_eq!(groups[0]["members"][0]["json"]["port"], 2552);

    let e = ok(r.admin, "/api/v1/elections");
    let elections = e["elections"].as_array().unwrap();
    assert_eq!(elections.len(), 1, "{e:#}");
    assert_eq!(elections[0]["path"], "/app/leader");
    assert_eq!(elections[0]["leader"], "alice", "the lowest sequence leads");
    let cands = elections[0]["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 2);
    assert_eq!(
        (cands[0]["leader"].clone(), cands[1]["leader"].clone()),
        (Value::Bool(true), Value::Bool(false))
    );
    assert_eq!(cands[1]["participant"], "bob");
    assert_eq!(cands[0]["lock_name"], "latch-");
    assert!(cands[0]["sequence"].as_u64() < cands[1]["sequence"].as_u64());

    let s = ok(r.admin, "/api/v1/services");
    assert_eq!(s["services"].as_array().unwrap().len(), 1, "{s:#}");
    assert_eq!(s["services"][0]["name"], "api");
    assert_eq!(s["services"][0]["base"], "/services");
    assert_eq!(s["services"][0]["instances"][0]["id"], "i1");
    assert_eq!(s["services"][0]["instances"][0]["port"], 8080);
    assert_eq!(s["services"][0]["instances"][0]["payload"]["zone"], "b");
    let filtered = ok(r.admin, "/api/v1/elections?prefix=/services");
    assert_eq!(
        filtered["elections"].as_array().unwrap().len(),
        0,
        "{filtered:#}"
    );

    // Znodes: a member (UTF-8), binary data (base64 only), a listing, errors.
    let n = ok(r.admin, "/api/v1/znodes?path=/app/members/node-1");
    assert_eq!(n["kind"], "ephemeral");
    assert_eq!(n["data_utf8"], member);
    assert_eq!(n["readable"], true);
    assert_eq!(n["acl"][0]["perms"], "cdrwa");
    let b = ok(r.admin, "/api/v1/znodes?path=/bin");
    assert_eq!(b["data_utf8"], Value::Null);
    assert_eq!(b["data_base64"], "/wCA");
    let app = ok(r.admin, "/api/v1/znodes?path=/app");
    assert_eq!(app["children"], serde_json::json!(["leader", "members"]));
    assert_eq!(app["children_total"], 2);
    // A node only alice may read: anonymous readers see its stat and ACL (digest masked), not its
    // data; the admin token reads it.
    let secret = z.call(roster_proto::Request::Create(roster_proto::CreateRequest {
        path: "/secret".into(),
        data: Some(bytes::Bytes::from_static(b"s3cr3t")),
        acl: vec![roster_proto::Acl {
            perms: roster_proto::perms::ALL,
            id: roster_proto::Id::new("digest", "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E="),
        }],
        flags: 0,
    }));
    assert_eq!(secret.err, 0, "{:?}", secret.body);
    let hidden = ok(r.admin, "/api/v1/znodes?path=/secret");
    assert_eq!(hidden["readable"], false, "{hidden:#}");
    assert_eq!(hidden["data_base64"], Value::Null);
    assert_eq!(hidden["stat"]["data_length"], 6);
    assert_eq!(hidden["acl"][0]["id"], "alice:x", "digests are masked");
    let token = std::fs::read_to_string(r.dir.path().join("data").join("admin.token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let (status, _, body) = http(
        r.admin,
        "GET",
        "/api/v1/znodes?path=/secret",
        &[("Authorization", bearer.as_str())],
    );
    assert_eq!(status, 200);
    let shown: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["data_utf8"], "s3cr3t", "{shown:#}");

    let (status, err) = get(r.admin, "/api/v1/znodes?path=/nope");
    assert_eq!(status, 404, "{err}");
    assert!(err["hint"].as_str().unwrap().contains("parent"), "{err}");
    let (status, err) = get(r.admin, "/api/v1/znodes?path=app/");
    assert_eq!(status, 400, "{err}");
    let (status, err) = get(r.admin, "/api/v1/sessions?limit=many");
    assert_eq!(status, 400, "{err}");
    let (status, err) = get(r.admin, "/api/v1/nothing-here");
    assert_eq!(status, 404, "{err}");
    assert!(err["error"].is_string() && err["hint"].is_string());

    // Sessions: ours, connected here, with its four ephemerals, and an expiry deadline (we lead).
    let ss = ok(r.admin, "/api/v1/sessions");
    let ours: Vec<&Value> = ss["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["ephemerals"] == 4)
        .collect();
    assert_eq!(ours.len(), 1, "{ss:#}");
    assert_eq!(ours[0]["connected_here"], true);
    assert!(ours[0]["expires_in_ms"].as_i64().unwrap() > 0, "{ss:#}");
    let session = ours[0]["id"].as_str().unwrap().to_string();
    assert!(session.starts_with("0x"), "{session}");

    // The recipes' views follow the session: its ephemerals go with it.
    z.close();
    wait_json(r.admin, "/api/v1/groups", Duration::from_secs(10), |g| {
        g["groups"].as_array().unwrap().is_empty()
    });
    let e = ok(r.admin, "/api/v1/elections");
    assert!(e["elections"].as_array().unwrap().is_empty(), "{e:#}");
    // Actions need the token from the data directory.
    let (status, _, body) = http(r.admin, "POST", "/api/v1/actions/snapshot", &[]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("admin.token"), "the hint says where: {body}");
    let (status, _, _) = http(
        r.admin,
        "POST",
        "/api/v1/actions/snapshot",
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(status, 403);
    let auth = [("Authorization", bearer.as_str())];
    let (status, _, body) = http(r.admin, "POST", "/api/v1/actions/snapshot", &auth);
    assert_eq!(status, 200, "{body}");
    let applied = ok(r.admin, "/api/v1/cluster")["applied"].as_u64().unwrap();
    wait_json(r.admin, "/api/v1/cluster", Duration::from_secs(20), |c| {
        c["snapshot"].as_u64().unwrap() >= applied
    });
    let (status, _, body) = http(r.admin, "POST", "/api/v1/actions/remove/99", &auth);
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = http(r.admin, "POST", "/api/v1/actions/leave", &auth);
    assert_eq!(status, 409, "the last voter cannot leave: {body}");

    // The web view and its assets are served from the binary.
    let (status, head, page) = http(r.admin, "GET", "/", &[]);
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("text/html"), "{head}");
    assert!(
        page.contains("/ui/app.js") && page.contains("id=\"nodes\""),
        "{page}"
    );
    let (status, _, js) = http(r.admin, "GET", "/ui/app.js", &[]);
    assert_eq!(status, 200);
    assert!(js.contains("/api/v1/events/stream"));
    assert_eq!(http(r.admin, "GET", "/ui/style.css", &[]).0, 200);
}

#[test]
fn event_journal_and_its_stream_replay_then_follow_a_join_live() {
    let a = Roster::start(&[]);
    wait_ready(&a);
    let me = ok(a.admin, "/api/v1/cluster")["node_id"].as_u64().unwrap();

    // The journal has this node's own election, with its cause.
    let ev = wait_json(a.admin, "/api/v1/events", Duration::from_secs(10), |ev| {
        ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "leader_changed" && e["leader"].as_u64() == Some(me))
    });
    let events = ev["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .all(|e| e["cause"].as_str().is_some_and(|c| !c.is_empty())
                && e["seen_by"].as_u64() == Some(me)),
        "every event has a cause and says who saw it: {ev:#}"
    );
    let last = ev["last_seq"].as_u64().unwrap();
    assert_eq!(events.last().unwrap()["seq"].as_u64(), Some(last));
    assert!(
        ok(a.admin, &format!("/api/v1/events?after={last}"))["events"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The stream: the replay after Last-Event-ID, then a node joining, live.
    let mut stream = TcpStream::connect(a.admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        stream,
        "GET /api/v1/events/stream HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {}\r\n\r\n",
        last - 1
    )
    .unwrap();
    let mut seen = String::new();
    let read_until = |seen: &mut String, stream: &mut TcpStream, what: &str, within: u64| {
        let deadline = Instant::now() + Duration::from_secs(within);
        let mut buf = [0u8; 4096];
        while !seen.contains(what) {
            assert!(
                Instant::now() < deadline,
                "stream never said {what:?}: {seen}"
            );
            if let Ok(n) = stream.read(&mut buf) {
                assert!(n > 0, "stream closed: {seen}");
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    };
    read_until(&mut seen, &mut stream, &format!("id: {last}\n"), 10);
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(
        !seen.contains(&format!("id: {}\n", last - 1)),
        "the replay starts after Last-Event-ID: {seen}"
    );
    let b = Roster::join(&a, &[]);
    let joined = node_id(&b);
    read_until(&mut seen, &mut stream, "\"kind\":\"member_joined\"", 60);
    let line = seen
        .lines()
        .find(|l| l.contains("\"kind\":\"member_joined\""))
        .unwrap();
    let event: Value = serde_json::from_str(line.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(event["node"].as_u64(), Some(joined), "{event:#}");
    assert_eq!(event["peer_addr"], b.peer.to_string());
    assert!(event["seq"].as_u64().unwrap() > last);
}

#[test]
fn three_nodes_cluster_view_shows_every_member_a_killed_one_unreachable_then_removed() {
    let a = Roster::start(&[]);
    let b = Roster::join(&a, &[]);
    let c = Roster::join(&a, &[]);
    let leader = wait_cluster(&[&a, &b, &c], 3, 0, Duration::from_secs(60));
    let mut nodes = vec![a, b, c];
    let ids: Vec<u64> = nodes.iter().map(node_id).collect();
    let li = ids.iter().position(|i| *i == leader).unwrap();

    // Every node tells the same picture: three voters, one leader, all healthy.
    for n in &nodes {
        let v = wait_json(n.admin, "/api/v1/cluster", Duration::from_secs(10), |v| {
            v["members"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["health"] == "ok")
        });
        let members = v["members"].as_array().unwrap();
        assert_eq!(members.len(), 3, "{v:#}");
        assert_eq!(v["leader"].as_u64(), Some(leader));
        let leaders: Vec<u64> = members
            .iter()
            .filter(|m| m["role"] == "leader")
            .map(|m| m["id"].as_u64().unwrap())
            .collect();
        assert_eq!(leaders, vec![leader], "{v:#}");
        assert!(members.iter().all(|m| m["voter"] == true));
        assert_eq!(members.iter().filter(|m| m["this_node"] == true).count(), 1);
    }
    // The leader also knows each follower's replication.
    let v = ok(nodes[li].admin, "/api/v1/cluster");
    for m in v["members"].as_array().unwrap() {
        if m["id"].as_u64() != Some(leader) {
            assert!(m["matched"].as_u64().is_some(), "{v:#}");
            assert!(m["last_ack_ms"].as_i64().is_some(), "{v:#}");
        }
    }

    // Kill a follower: the other follower shows it unreachable (from Raft's word), the leader stays.
    let vi = (0..3).find(|i| *i != li).unwrap();
    let wi = (0..3).find(|i| *i != li && *i != vi).unwrap();
    nodes[vi].kill9();
    let v = wait_dead(&nodes[wi], ids[vi]);
    assert_eq!(v["leader"].as_u64(), Some(leader));

    // The operator removes it through the surviving follower (forwarded to the leader).
    let token =
        std::fs::read_to_string(nodes[wi].dir.path().join("data").join("admin.token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let path = format!("/api/v1/actions/remove/{}", ids[vi]);
    let (status, _, body) = http(nodes[wi].admin, "POST", &path, &[]);
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = http(
        nodes[wi].admin,
        "POST",
        &path,
        &[("Authorization", bearer.as_str())],
    );
    assert_eq!(status, 200, "{body}");
    let v = wait_json(
        nodes[li].admin,
        "/api/v1/cluster",
        Duration::from_secs(20),
        |v| v["members"].as_array().unwrap().len() == 2,
    );
    assert!(
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["health"] == "ok" && m["id"].as_u64() != Some(ids[vi])),
        "{v:#}"
    );
}

fn wait_dead(watcher: &Roster, victim: u64) -> Value {
    let v = wait_json(
        watcher.admin,
        "/api/v1/cluster",
        Duration::from_secs(15),
        |v| {
            v["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"].as_u64() == Some(victim) && m["health"] == "unreachable")
        },
    );
    let m = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"].as_u64() == Some(victim))
        .unwrap()
        .clone();
    assert_eq!(m["source"], "raft", "{m:#}");
    assert!(m["error"].is_string(), "{m:#}");
    assert_eq!(
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["health"] == "ok")
            .count(),
        2,
        "{v:#}"
    );
    v
}
