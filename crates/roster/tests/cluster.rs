//! The ensemble end to end, with real processes on loopback: a 3-node cluster formed with `--join`,
//! writes through every node visible on every node, kill -9 of the leader under load, a session that
//! moves to another node and keeps its ephemeral, a new node catching up from a snapshot, an observer.

mod support;

use bytes::Bytes;
use roster_proto::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

#[test]
fn three_nodes_join_and_writes_through_every_node_are_seen_on_every_node() {
    let _serial = serial();
    let (a, b, c) = three();
    let nodes = [&a, &b, &c];
    let mut setup = connect_retry(b.addr, 10_000, Duration::from_secs(10));
    assert_eq!(setup.create("/w", b"", 0).err, 0);
    for (i, n) in nodes.iter().enumerate() {
        let mut cl = connect_retry(n.addr, 10_000, Duration::from_secs(10));
        for k in 0..5 {
            let p = format!("/w/n{i}-{k}");
            assert_eq!(
                cl.create(&p, p.as_bytes(), 0).err,
                0,
                "create {p} through node {i}"
            );
            // A read right after the write on the same session sees it, on any node.
            assert_eq!(data_of(&cl.get(&p, false)), p.as_bytes());
        }
    }
    for n in nodes {
        let t = subtree(n.addr, "/w");
        assert_eq!(t.len(), 15, "node {} sees {t:?}", n.addr);
    }
    // Node ids are distinct and the tool reports every member.
    let ids: std::collections::BTreeSet<u64> = nodes.iter().map(|n| node_id(n)).collect();
    assert_eq!(ids.len(), 3);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["cluster", "status", "--server", &c.peer.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("voter").count(), 3, "{text}");
    assert!(
        text.contains(&a.addr.to_string()) && text.contains(&c.addr.to_string()),
        "{text}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .args([
            "cluster",
            "status",
            "--json",
            "--server",
            &b.peer.to_string(),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    assert_eq!(v["view"]["members"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["state"] == "Leader")
            .count(),
        1,
        "{v}"
    );

    // A fourth node finds the target of 3 voters reached and stays a learner (observer); it serves
    // reads and forwards writes too.
    let d = Roster::join(&a, &[]);
    wait_formed(&[&a, &b, &c, &d], 3, 1);
    let mut cl = connect_retry(d.addr, 10_000, Duration::from_secs(10));
    assert_eq!(cl.create("/w/observer", b"o", 0).err, 0);
    sync(&mut cl, "/w");
    assert_eq!(children_of(&mut cl, "/w").len(), 16);
    assert_eq!(subtree(a.addr, "/w").len(), 16);
    // Removing a voter promotes the learner.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .args([
            "cluster",
            "remove",
            &node_id(&c).to_string(),
            "--server",
            &a.peer.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_formed(&[&a, &b, &d], 3, 0);
    // A node asks to leave; no learner is left to promote.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["cluster", "leave", "--server", &d.peer.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_formed(&[&a, &b], 2, 0);
    let mut cl = connect_retry(b.addr, 10_000, Duration::from_secs(10));
    assert_eq!(cl.create("/w/two", b"", 0).err, 0);
}

#[test]
fn leader_kill9_under_load_loses_no_acknowledged_write_and_replicas_agree() {
    let _serial = serial();
    let (a, b, c) = three();
    let mut nodes = [a, b, c];
    let leader = peer_status(nodes[0].peer).unwrap().leader.unwrap();
    let li = nodes.iter().position(|n| node_id(n) == leader).unwrap();
    let mut setup = connect_retry(nodes[li].addr, 10_000, Duration::from_secs(10));
    assert_eq!(setup.create("/load", b"", 0).err, 0);
    drop(setup);
    let acked: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = vec![];
    // Writers on every node (including the one about to die); each reconnects on failure.
    for (t, n) in nodes.iter().enumerate() {
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        let first = n.addr;
        let acked = acked.clone();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut target = first;
            let mut k = 0usize;
            'outer: for attempt in 0..200 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let Ok(mut c) = Raw::connect_with(
                    target,
                    ConnectRequest {
                        timeout: 10_000,
                        passwd: Bytes::from(vec![0u8; 16]),
                        ..Default::default()
                    },
                ) else {
                    target = addrs[(attempt + t) % addrs.len()];
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                let _ = c.stream.set_read_timeout(Some(Duration::from_secs(5)));
                loop {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) || k >= 400 {
                        break 'outer;
                    }
                    let path = format!("/load/w{t}-{k:04}");
                    let data = format!("{t}:{k}").into_bytes();
                    let req = Request::Create(CreateRequest {
                        path: path.clone(),
                        data: Some(Bytes::from(data.clone())),
                        acl: Acl::open_unsafe(),
                        flags: 0,
                    });
                    let xid = c.send(&req);
                    k += 1;
                    match c.recv(OpCode::Create) {
                        Ok(r) if r.xid == xid && r.err == 0 => {
                            acked.lock().unwrap().insert(path, data);
                        }
                        _ => {
                            target = addrs[(attempt + t + 1) % addrs.len()];
                            continue 'outer;
                        }
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 60 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    nodes[li].kill9();
    let killed_at = acked.lock().unwrap().len();
    // Writes continue through the survivors once a new leader is elected.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < killed_at + 60 {
        assert!(
            Instant::now() < deadline,
            "no progress after the kill ({killed_at} acked before)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let survivors: Vec<&Roster> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != li)
        .map(|(_, n)| n)
        .collect();
    for n in &survivors {
        let t = subtree(n.addr, "/load");
        for (p, d) in &acked {
            assert_eq!(t.get(p), Some(d), "acknowledged {p} missing on {}", n.addr);
        }
    }
    nodes[li].restart();
    let refs: Vec<&Roster> = nodes.iter().collect();
    wait_formed(&refs, 3, 0);
    let trees: Vec<_> = nodes.iter().map(|n| subtree(n.addr, "/load")).collect();
    for (p, d) in &acked {
        assert_eq!(
            trees[li].get(p),
            Some(d),
            "acknowledged {p} missing on the restarted node"
        );
    }
    assert_eq!(trees[0], trees[1], "replicas differ");
    assert_eq!(trees[1], trees[2], "replicas differ");
}

#[test]
fn session_moves_to_another_node_and_keeps_its_ephemeral() {
    let _serial = serial();
    let (a, b, c) = three();
    let mut nodes = [a, b, c];
    // The client sits on the leader, the hardest case: its node dies and a new leader must not expire it.
    let leader = peer_status(nodes[0].peer).unwrap().leader.unwrap();
    let li = nodes.iter().position(|n| node_id(n) == leader).unwrap();
    let mut cl = connect_retry(nodes[li].addr, 6_000, Duration::from_secs(10));
    assert_eq!(cl.create("/eph", b"mine", 1).err, 0);
    let session = cl.session_id;
    let resume = cl.resume_request();
    nodes[li].kill9();
    let other = nodes[(li + 1) % 3].addr;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut moved = loop {
        match Raw::connect_with(other, resume.clone()) {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "session could not move: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(moved.session_id, session);
    // Keep the session alive with pings for longer than its timeout: the new leader must hear of it.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        moved.call(Request::Ping);
        std::thread::sleep(Duration::from_millis(500));
    }
    let g = moved.exists("/eph", false);
    assert_eq!(g.err, 0, "the ephemeral is gone");
    assert_eq!(stat_of(&g).ephemeral_owner, session);
    let third = nodes[(li + 2) % 3].addr;
    let mut watcher = connect_retry(third, 10_000, Duration::from_secs(10));
    sync(&mut watcher, "/eph");
    assert_eq!(watcher.exists("/eph", false).err, 0);
    // Closing the session deletes it everywhere.
    moved.close();
    sync(&mut watcher, "/");
    assert_eq!(watcher.exists("/eph", false).err, ErrorCode::NoNode.code());
}

#[test]
fn new_node_catches_up_from_a_snapshot() {
    let _serial = serial();
    let flags = ["--snapshot-every", "40", "--snapshot-log-keep", "0"];
    let (a, b, c) = three_with(&flags);
    let mut cl = connect_retry(a.addr, 10_000, Duration::from_secs(10));
    assert_eq!(cl.create("/s", b"", 0).err, 0);
    for i in 0..150 {
        assert_eq!(
            cl.create(&format!("/s/n{i:03}"), format!("v{i}").as_bytes(), 0)
                .err,
            0
        );
    }
    let d = Roster::join(&b, &flags);
    wait_formed(&[&a, &b, &c, &d], 3, 1);
    let t = subtree(d.addr, "/s");
    assert_eq!(t.len(), 150);
    assert_eq!(t, subtree(a.addr, "/s"));
    assert!(
        d.log_text().contains("receiving snapshot"),
        "the new node should have installed a snapshot:\n{}",
        d.log_text()
    );
    // The whole cluster stops at once and comes back from its data directories alone.
    let mut all = [a, b, c, d];
    for n in all.iter_mut() {
        n.kill9();
    }
    for n in all.iter_mut() {
        n.restart();
    }
    let refs: Vec<&Roster> = all.iter().collect();
    wait_formed(&refs, 3, 1);
    for n in &all {
        assert_eq!(
            subtree(n.addr, "/s"),
            t,
            "node {} after a full restart",
            n.addr
        );
    }
}

#[test]
fn a_node_without_leader_closes_clients_and_recovers_when_the_cluster_heals() {
    let _serial = serial();
    let (a, b, c) = three();
    let mut cl = connect_retry(c.addr, 10_000, Duration::from_secs(10));
    assert_eq!(cl.create("/kept", b"k", 0).err, 0);
    let (mut a, mut b) = (a, b);
    a.kill9();
    b.kill9();
    // Within a few election timeouts the lone node closes its client connections...
    let _ = cl.stream.set_read_timeout(Some(Duration::from_secs(10)));
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(10) {
        cl.send(&Request::Ping);
        if cl.recv(OpCode::Ping).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        closed,
        "the client connection stayed open on a node without leader"
    );
    // ...and refuses new ones.
    assert!(Raw::connect_with(
        c.addr,
        ConnectRequest {
            timeout: 10_000,
            passwd: Bytes::from(vec![0u8; 16]),
            ..Default::default()
        }
    )
    .is_err());
    a.restart();
    b.restart();
    wait_formed(&[&a, &b, &c], 3, 0);
    let mut cl = connect_retry(c.addr, 10_000, Duration::from_secs(20));
    assert_eq!(data_of(&cl.get("/kept", false)), b"k");
    assert_eq!(cl.create("/after", b"", 0).err, 0);
}

#[test]
fn a_session_on_a_follower_lives_while_it_pings_and_expires_when_it_stops() {
    let _serial = serial();
    let (a, b, c) = three_with(&["--min-session-timeout-ms", "2000"]);
    let leader = peer_status(a.peer).unwrap().leader.unwrap();
    let follower = [&a, &b, &c]
        .into_iter()
        .find(|n| node_id(n) != leader)
        .unwrap();
    let mut cl = connect_retry(follower.addr, 3_000, Duration::from_secs(10));
    assert_eq!(cl.timeout, 3_000);
    assert_eq!(cl.create("/alive", b"", 1).err, 0);
    // Pings reach only the follower; the leader must hear of them through forwarded touches.
    let until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until {
        assert_eq!(cl.call(Request::Ping).err, 0);
        std::thread::sleep(Duration::from_millis(700));
    }
    let mut other = connect_retry(a.addr, 10_000, Duration::from_secs(10));
    sync(&mut other, "/");
    assert_eq!(
        other.exists("/alive", false).err,
        0,
        "a pinging session on a follower was expired"
    );
    // Silence: the leader expires it, on every node.
    drop(cl);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        sync(&mut other, "/");
        if other.exists("/alive", false).err == ErrorCode::NoNode.code() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a silent session was never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A client on a follower whose connection drops right after a packet: the leader must count from that
/// last packet, neither from the follower's previous touch batch (early: the session of a client that
/// is reconnecting elsewhere would be gone before its timeout) nor from the next batch (late). Three
/// sessions, each dropped at a different moment of the follower's batch interval (667 ms here).
#[test]
fn a_dropped_session_on_a_follower_expires_counted_from_its_last_packet() {
    let _serial = serial();
    let (a, b, c) = three_with(&["--min-session-timeout-ms", "2000"]);
    let leader_id = peer_status(a.peer).unwrap().leader.unwrap();
    let nodes = [&a, &b, &c];
    let follower = nodes.iter().find(|n| node_id(n) != leader_id).unwrap();
    let leader = nodes.iter().find(|n| node_id(n) == leader_id).unwrap();
    let mut watcher = connect_retry(leader.addr, 10_000, Duration::from_secs(10));
    for (i, pause_ms) in [0u64, 230, 460].into_iter().enumerate() {
        let path = format!("/dropped-{i}");
        let mut cl = connect_retry(follower.addr, 3_000, Duration::from_secs(10));
        assert_eq!(cl.create(&path, b"", 1).err, 0);
        sync(&mut watcher, "/");
        assert_eq!(watcher.exists(&path, true).err, 0);
        // Packets every 100 ms for a while, so the follower's batches have reported the session,
        // then one more packet at a different point of the batch interval, and the socket dropped.
        for _ in 0..12 {
            assert_eq!(cl.call(Request::Ping).err, 0);
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(pause_ms));
        let sent = Instant::now();
        assert_eq!(cl.call(Request::Ping).err, 0);
        let timeout = Duration::from_millis(cl.timeout as u64);
        drop(cl);
        let ev = watcher.next_event().expect("the ephemeral's NodeDeleted");
        let gone = sent.elapsed();
        assert_eq!(ev.path, path);
        // Expiry runs on a session tick (`--session-tick-ms`, 20 ms by default); allow 100 ms.
        assert!(
            gone + Duration::from_millis(100) >= timeout,
            "{path} expired {} ms after its last packet, before its {} ms timeout",
            gone.as_millis(),
            timeout.as_millis()
        );
        assert!(
            gone <= timeout + Duration::from_millis(1_500),
            "{path} expired only {} ms after its last packet ({} ms timeout)",
            gone.as_millis(),
            timeout.as_millis()
        );
    }
}

#[test]
fn peer_port_refuses_other_clusters_wrong_node_ids_and_pristine_restarts_never_rejoin() {
    let _serial = serial();
    use roster_server::cluster::admin;
    use roster_server::transport::{link::Link, wire::*};
    let a = Roster::start(&[]);
    let mut b = Roster::join(&a, &[]);
    wait_formed(&[&a, &b], 2, 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let e = admin::call(
            &a.peer.to_string(),
            Some("not-this-cluster".into()),
            0,
            PeerRequest::Status,
            Duration::from_secs(5),
            None,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("wrong cluster"), "{e}");
        let cluster = admin::cluster_id(&a.peer.to_string(), None).await.unwrap();
        let hello = Hello {
            cluster_id: Some(cluster.clone()),
            from: 0,
            to: Some(424242),
            kind: LinkKind::Raft,
        };
        let e = Link::connect(&a.peer.to_string(), hello, Duration::from_secs(5), None)
            .await
            .err()
            .expect("refused");
        assert!(e.to_string().contains("wrong node"), "{e}");
        // Without a cluster id only administration is possible.
        let hello = Hello {
            cluster_id: None,
            from: 0,
            to: None,
            kind: LinkKind::Admin,
        };
        let l = Link::connect(&a.peer.to_string(), hello, Duration::from_secs(5), None)
            .await
            .unwrap();
        match l
            .call(PeerRequest::Touch(vec![]), Duration::from_secs(5))
            .await
            .unwrap()
        {
            PeerResponse::Err(PeerError::Refused(_)) => {}
            other => panic!("{other:?}"),
        }
    });
    // A node with an identity restarts as itself, whatever --join says.
    let id = node_id(&b);
    b.restart();
    wait_formed(&[&a, &b], 2, 0);
    assert_eq!(node_id(&b), id);
    assert_eq!(peer_status(a.peer).unwrap().members.len(), 2);
}

#[test]
fn on_a_follower_pipelined_requests_keep_their_order_and_watch_events_precede_replies() {
    let _serial = serial();
    let (a, b, c) = three();
    let leader = peer_status(a.peer).unwrap().leader.unwrap();
    let follower = [&a, &b, &c]
        .into_iter()
        .find(|n| node_id(n) != leader)
        .unwrap();
    let mut cl = connect_retry(follower.addr, 10_000, Duration::from_secs(10));
    assert_eq!(cl.create("/p", b"", 0).err, 0);
    // Writes and reads sent back to back without waiting: answered in order, each read sees the
    // write sent before it.
    let mut sent = vec![];
    for i in 0..40 {
        let p = format!("/p/n{i:02}");
        let xid = cl.send(&Request::Create(CreateRequest {
            path: p.clone(),
            data: Some(Bytes::from(p.clone().into_bytes())),
            acl: Acl::open_unsafe(),
            flags: 0,
        }));
        sent.push((xid, OpCode::Create, p.clone()));
        let xid = cl.send(&Request::GetData(GetDataRequest {
            path: p.clone(),
            watch: false,
        }));
        sent.push((xid, OpCode::GetData, p));
    }
    let mut last_zxid = 0;
    for (xid, op, p) in sent {
        let r = cl.recv(op).unwrap();
        assert_eq!(r.xid, xid, "reply out of order");
        assert_eq!(r.err, 0, "{op:?} {p}");
        assert!(r.zxid >= last_zxid, "zxid went back");
        last_zxid = r.zxid;
        if op == OpCode::GetData {
            assert_eq!(data_of(&r), p.as_bytes());
        }
    }
    // A watch set on this follower fires before the reply to the write that triggers it.
    assert_eq!(cl.get("/p/n00", true).err, 0);
    cl.events.clear();
    assert_eq!(cl.set("/p/n00", b"changed", -1).err, 0);
    assert_eq!(
        cl.events.len(),
        1,
        "the event must arrive before the setData reply"
    );
    assert_eq!(cl.events[0].1.path, "/p/n00");
}

#[test]
fn a_frozen_leader_is_replaced_and_catches_up_when_it_wakes() {
    let _serial = serial();
    let (a, b, c) = three();
    let nodes = [a, b, c];
    let leader = peer_status(nodes[0].peer).unwrap().leader.unwrap();
    let li = nodes.iter().position(|n| node_id(n) == leader).unwrap();
    let (f, g) = (&nodes[(li + 1) % 3], &nodes[(li + 2) % 3]);
    let mut cl = connect_retry(f.addr, 10_000, Duration::from_secs(10));
    assert_eq!(cl.create("/frozen", b"", 0).err, 0);
    let mut eph = connect_retry(g.addr, 4_000, Duration::from_secs(10));
    assert_eq!(eph.create("/frozen_eph", b"", 1).err, 0);
    // SIGSTOP: the leader neither answers nor notices anything (a long GC pause, a hung VM).
    nodes[li].signal("STOP");
    wait_new_leader(f, leader);
    let new_leader = wait_formed(&[f, g], 3, 0);
    assert_ne!(new_leader, leader);
    let mut cl = connect_retry(f.addr, 10_000, Duration::from_secs(10));
    let mut cl2 = connect_retry(g.addr, 10_000, Duration::from_secs(10));
    for i in 0..10 {
        assert_eq!(cl.create(&format!("/frozen/f{i}"), b"f", 0).err, 0);
        assert_eq!(cl2.create(&format!("/frozen/g{i}"), b"g", 0).err, 0);
    }
    // Frozen for longer than the session timeout, while the session stays alive on the others.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert_eq!(eph.call(Request::Ping).err, 0);
        std::thread::sleep(Duration::from_millis(500));
    }
    nodes[li].signal("CONT");
    // It wakes up believing it leads, learns of the new term, follows and catches up.
    wait_formed(&[&nodes[0], &nodes[1], &nodes[2]], 3, 0);
    let trees: Vec<_> = nodes.iter().map(|n| subtree(n.addr, "/frozen")).collect();
    assert_eq!(trees[0].len(), 20);
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[1], trees[2]);
    // The woken node's stale session deadlines expired nothing, and it accepts the session.
    eph.call(Request::Ping);
    let resume = eph.resume_request();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut moved = loop {
        match Raw::connect_with(nodes[li].addr, resume.clone()) {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the woken node refuses the session: {e}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    sync(&mut moved, "/");
    assert_eq!(moved.exists("/frozen_eph", false).err, 0);
}

#[test]
fn a_follower_that_installs_a_snapshot_makes_its_clients_resync_their_watches() {
    let _serial = serial();
    let flags = ["--snapshot-every", "20", "--snapshot-log-keep", "0"];
    let net = FaultNet::new();
    let (a, b, c, leader) = three_behind_with(&net, &flags);
    let mut nodes = [a, b, c];
    let li = nodes.iter().position(|n| node_id(n) == leader).unwrap();
    let (fi, gi) = ((li + 1) % 3, (li + 2) % 3);
    let mut w = connect_retry(nodes[fi].addr, 20_000, Duration::from_secs(10));
    assert_eq!(w.create("/sw", b"v0", 0).err, 0);
    assert_eq!(w.get("/sw", true).err, 0);
    // F falls behind: paused (so it keeps its client connection), and black-holed so that nothing the
    // leader sends meanwhile waits in its socket buffers (it would catch up from them on waking).
    // G, a follower, snapshots and purges its log as it goes.
    net.blackhole(node_id(&nodes[fi]));
    std::thread::sleep(Duration::from_millis(100));
    nodes[fi].signal("STOP");
    let mut cl = connect_retry(nodes[gi].addr, 10_000, Duration::from_secs(20));
    assert_eq!(cl.set("/sw", b"v1", -1).err, 0);
    for i in 0..60 {
        assert_eq!(cl.create(&format!("/sw/n{i}"), b"", 0).err, 0);
    }
    // The leader dies as F wakes: G leads and has no log old enough for F, so F gets a snapshot.
    nodes[li].kill9();
    net.heal();
    nodes[fi].signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    // Wait for the install itself (its end closes F's client connections), not its first chunk: a
    // client that resumed in between would be closed again.
    while !nodes[fi]
        .log_text()
        .contains("snapshot installed: closing client connections")
    {
        assert!(
            Instant::now() < deadline,
            "the follower did not get a snapshot"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // F dropped its clients (no watch fired for what the snapshot changed)...
    let _ = w.stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut got_event = false;
    while w.read_frame().is_ok() {
        got_event = true; // a notification sent before the close is fine too
    }
    // ...which reconnect with their session and re-register watches from the zxid they saw.
    let resume = w.resume_request();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut w2 = loop {
        match Raw::connect_with(nodes[fi].addr, resume.clone()) {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot resume: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let r = w2.call(Request::SetWatches(SetWatches {
        relative_zxid: w.last_zxid,
        data_watches: vec!["/sw".into()],
        exist_watches: vec![],
        child_watches: vec![],
    }));
    assert_eq!(r.err, 0);
    if !got_event {
        let ev = match w2.events.first() {
            Some(e) => e.1.clone(),
            None => w2.next_event().expect("the missed change fires"),
        };
        assert_eq!(ev.path, "/sw");
    }
    assert_eq!(data_of(&w2.get("/sw", false)), b"v1");
    nodes[li].restart();
    wait_formed(&[&nodes[0], &nodes[1], &nodes[2]], 3, 0);
    assert_eq!(
        subtree(nodes[li].addr, "/sw"),
        subtree(nodes[fi].addr, "/sw")
    );
}

#[test]
fn the_leader_can_leave_and_the_others_carry_on() {
    let _serial = serial();
    let (a, b, c) = three();
    let nodes = [a, b, c];
    let leader = peer_status(nodes[0].peer).unwrap().leader.unwrap();
    let li = nodes.iter().position(|n| node_id(n) == leader).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["cluster", "leave", "--server", &nodes[li].peer.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rest: Vec<&Roster> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != li)
        .map(|(_, n)| n)
        .collect();
    wait_new_leader(rest[0], leader);
    let new_leader = wait_formed(&rest, 2, 0);
    assert_ne!(new_leader, leader);
    let mut cl = connect_retry(rest[0].addr, 10_000, Duration::from_secs(10));
    assert_eq!(cl.create("/after_leave", b"", 0).err, 0);
    let mut other = connect_retry(rest[1].addr, 10_000, Duration::from_secs(10));
    sync(&mut other, "/");
    assert_eq!(other.exists("/after_leave", false).err, 0);
}

#[test]
fn with_linearizable_reads_a_read_on_any_node_sees_every_acknowledged_write() {
    let _serial = serial();
    let (a, b, c) = three_with(&["--linearizable-reads", "true"]);
    let leader = wait_formed(&[&a, &b, &c], 3, 0);
    let nodes = [&a, &b, &c];
    let mut writer = connect_retry(a.addr, 10_000, Duration::from_secs(10));
    assert_eq!(writer.create("/lin", b"0", 0).err, 0);
    let mut readers: Vec<Raw> = nodes
        .iter()
        .map(|n| connect_retry(n.addr, 10_000, Duration::from_secs(10)))
        .collect();
    // No sync: each read must still see the write acknowledged just before it, through any node.
    for i in 1..=30 {
        assert_eq!(writer.set("/lin", format!("{i}").as_bytes(), -1).err, 0);
        for (k, r) in readers.iter_mut().enumerate() {
            let g = r.get("/lin", false);
            assert_eq!(
                data_of(&g),
                format!("{i}").as_bytes(),
                "node {k} (leader id {leader}) read a stale value"
            );
        }
    }
}

#[test]
fn follower_kill9_under_load_and_restart_lose_nothing() {
    let _serial = serial();
    let (a, b, c) = three();
    let leader = wait_formed(&[&a, &b, &c], 3, 0);
    let mut nodes = [a, b, c];
    let fidx = nodes.iter().position(|n| node_id(n) != leader).unwrap();
    let others: Vec<SocketAddr> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != fidx)
        .map(|(_, n)| n.addr)
        .collect();
    let mut setup = connect_retry(others[0], 10_000, Duration::from_secs(10));
    assert_eq!(setup.create("/fl", b"", 0).err, 0);
    // Writers on the two other nodes keep going while the follower is killed and restarted.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = vec![];
    for (t, addr) in others.iter().enumerate() {
        let (acked, stop, addr) = (acked.clone(), stop.clone(), *addr);
        threads.push(std::thread::spawn(move || {
            let mut c = connect_retry(addr, 10_000, Duration::from_secs(10));
            for n in 0..100_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let p = format!("/fl/t{t}-{n:06}");
                if c.create(&p, b"x", 0).err == 0 {
                    acked.lock().unwrap().push(p);
                } else {
                    return;
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(400));
    nodes[fidx].kill9();
    std::thread::sleep(Duration::from_millis(800));
    let during = acked.lock().unwrap().len();
    nodes[fidx].restart();
    std::thread::sleep(Duration::from_millis(600));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > during && during > 0,
        "writes must continue while a follower is down"
    );
    wait_formed(&[&nodes[0], &nodes[1], &nodes[2]], 3, 0);
    let trees: Vec<_> = nodes.iter().map(|n| subtree(n.addr, "/fl")).collect();
    for p in &acked {
        assert!(trees[0].contains_key(p), "acknowledged {p} lost");
    }
    assert_eq!(trees[0], trees[1], "replicas differ");
    assert_eq!(trees[0], trees[2], "the restarted follower differs");
}

#[test]
fn leave_on_shutdown_takes_a_gracefully_stopped_node_out_of_the_cluster() {
    let _serial = serial();
    let a = Roster::start(&[]);
    let b = Roster::join(&a, &[]);
    let c = Roster::join(&a, &["--leave-on-shutdown", "true"]);
    wait_formed(&[&a, &b, &c], 3, 0);
    let gone = node_id(&c);
    c.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = peer_status(a.peer).unwrap();
        if s.members.len() == 2 && s.members.iter().all(|m| m.node_id != gone) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not leave: {s:#?}\n{}",
            c.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The remaining two still serve writes.
    let mut cl = connect_retry(b.addr, 10_000, Duration::from_secs(10));
    assert_eq!(cl.create("/after-leave", b"", 0).err, 0);
    drop(c);
}

#[test]
fn joining_nodes_get_the_next_small_ids_and_keep_them_across_restarts() {
    let _serial = serial();
    let (a, mut b, c) = three();
    let mut ids: Vec<u64> = [&a, &b, &c].iter().map(|n| node_id(n)).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3], "ids a person can read and type");
    let before = node_id(&b);
    b.restart();
    wait_formed(&[&a, &b, &c], 3, 0);
    assert_eq!(node_id(&b), before, "a restarted node keeps its id");
    let status = peer_status(a.peer).unwrap();
    let mut members: Vec<u64> = status.members.iter().map(|m| m.node_id).collect();
    members.sort_unstable();
    assert_eq!(members, vec![1, 2, 3]);
}
