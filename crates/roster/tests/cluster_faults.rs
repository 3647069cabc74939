//! Membership and faults of a real 3-node ensemble (processes on loopback):
//! - `reconfig` and `/zookeeper/config` follow and drive the Raft membership;
//! - a partition that cuts the leader off from the two others (a fault-injecting proxy on every
//!   node's peer port, [`FaultNet`]): the old leader stops serving, the majority elects a new leader
//!   and keeps writing, and after healing the old leader rejoins by itself with an identical tree;
//!   the survivors see the leader's connections end but find it alive, so no fast failover;
//!   the cut-off leader stops saying `Mode: leader` within the leaderless bound, and says `follower`
//!   again after the heal;
//! - a follower cut off for 3 s under writes returns without any election (Pre-Vote): same leader, same
//!   term, caught up;
//! - a `kill -9` of the leader: a survivor finds the leader's process gone and campaigns at once (fast
//!   failover), and an existing session on a survivor writes again with its ephemeral intact;
//! - a dead follower: the leader dials it at most once per backoff step, however many writes it takes.

mod support;

use bytes::Bytes;
use roster_proto::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

/// The whole tree as one node serves it after a sync: path → (data, czxid, mzxid, version, owner).
fn dump(addr: SocketAddr) -> BTreeMap<String, (Vec<u8>, i64, i64, i32, i64)> {
    let mut c = connect_retry(addr, 10_000, Duration::from_secs(30));
    sync(&mut c, "/");
    let mut out = BTreeMap::new();
    let mut todo = vec!["/".to_string()];
    while let Some(p) = todo.pop() {
        let g = c.get(&p, false);
        assert_eq!(g.err, 0, "{p} listed but not readable on {addr}");
        let st = stat_of(&g);
        out.insert(
            p.clone(),
            (
                data_of(&g),
                st.czxid,
                st.mzxid,
                st.version,
                st.ephemeral_owner,
            ),
        );
        for child in children_of(&mut c, &p) {
            todo.push(if p == "/" {
                format!("/{child}")
            } else {
                format!("{p}/{child}")
            });
        }
    }
    out
}

fn super_flags() -> Vec<String> {
    vec![
        "--super-digest".to_string(),
        roster_proto::digest("super:secret"),
    ]
}

fn as_super(c: &mut Raw) {
    c.send(&Request::Auth(AuthPacket {
        auth_type: 0,
        scheme: "digest".into(),
        auth: Bytes::from_static(b"super:secret"),
    }));
    let r = c.recv(OpCode::Auth).expect("auth reply");
    assert_eq!(r.err, 0, "addauth super");
}

fn reconfig(c: &mut Raw, joining: &str, leaving: &str, new_members: &str, from: i64) -> Reply {
    c.call(Request::Reconfig(ReconfigRequest {
        joining_servers: joining.into(),
        leaving_servers: leaving.into(),
        new_members: new_members.into(),
        cur_config_id: from,
    }))
}

/// `/zookeeper/config` on `addr`: (server lines, version).
fn config(c: &mut Raw) -> (Vec<String>, u64, Stat) {
    let g = c.get("/zookeeper/config", false);
    let text = String::from_utf8(data_of(&g)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let v = lines.pop().expect("a version line");
    let version = u64::from_str_radix(
        v.strip_prefix("version=")
            .unwrap_or_else(|| panic!("{text:?}")),
        16,
    )
    .unwrap();
    (lines, version, stat_of(&g))
}

fn server_line(n: &Roster, id: u64, role: &str) -> String {
    format!("server.{id}={}:0:{role};{}", n.peer, n.addr)
}

/// Waits until `/zookeeper/config` on `addr` holds exactly `lines`.
fn wait_config(addr: SocketAddr, lines: &[String]) -> (u64, Stat) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut c = connect_retry(addr, 10_000, Duration::from_secs(30));
    loop {
        sync(&mut c, "/zookeeper/config");
        let (got, version, stat) = config(&mut c);
        if got == lines {
            return (version, stat);
        }
        assert!(
            Instant::now() < deadline,
            "config on {addr} is {got:#?}, want {lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn reconfig_and_zookeeper_config_follow_the_raft_membership() {
    let _serial = serial();
    let flags = super_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    // A single node describes itself.
    let a = Roster::start(&flags);
    let ida = node_id(&a);
    assert_eq!(ida, 1);
    let (v1, st1) = wait_config(a.addr, &[server_line(&a, 1, "participant")]);
    assert!(st1.mzxid > 0 && st1.version >= 1, "{st1:?}");

    let b = Roster::join(&a, &flags);
    let c = Roster::join(&a, &flags);
    wait_formed(&[&a, &b, &c], 3, 0);
    let (idb, idc) = (node_id(&b), node_id(&c));
    let mut three: Vec<(u64, String)> = vec![
        (ida, server_line(&a, ida, "participant")),
        (idb, server_line(&b, idb, "participant")),
        (idc, server_line(&c, idc, "participant")),
    ];
    three.sort();
    let three: Vec<String> = three.into_iter().map(|(_, l)| l).collect();
    // Every replica's tree holds the same config, at the same zxid.
    let (v3, st3) = wait_config(a.addr, &three);
    for n in [&b, &c] {
        let (v, st) = wait_config(n.addr, &three);
        assert_eq!((v, st.mzxid, st.version), (v3, st3.mzxid, st3.version));
    }
    assert!(v3 > v1 && st3.mzxid > st1.mzxid && st3.version > st1.version);

    // Only a super user may reconfig; a stale config version is refused; malformed specs too.
    let mut anyone = connect_retry(b.addr, 10_000, Duration::from_secs(10));
    assert_eq!(
        reconfig(&mut anyone, "", &idc.to_string(), "", -1).err,
        ErrorCode::NoAuth.code()
    );
    let mut admin = connect_retry(b.addr, 10_000, Duration::from_secs(10));
    as_super(&mut admin);
    assert_eq!(
        reconfig(&mut admin, "", &idc.to_string(), "", v3 as i64 + 1).err,
        ErrorCode::BadVersion.code()
    );
    assert_eq!(
        reconfig(&mut admin, "server.x=nope", "", "", -1).err,
        ErrorCode::BadArguments.code()
    );
    let all_ids = format!("{ida},{idb},{idc}");
    assert_eq!(
        reconfig(&mut admin, "", &all_ids, "", -1).err,
        ErrorCode::BadArguments.code()
    );

    // Remove c with a stock client (zookeeper-client's update_ensemble, through b): the answer is the
    // new config and the stat of /zookeeper/config.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (text, stat) = rt.block_on(async {
        let zk = zookeeper_client::Client::connect(&b.addr.to_string())
            .await
            .expect("connects");
        let (data, _) = zk.get_config().await.unwrap();
        assert!(String::from_utf8(data)
            .unwrap()
            .ends_with(&format!("version={v3:x}")));
        zk.auth("digest", b"super:secret").await.unwrap();
        let leaving = idc.to_string();
        let update = zookeeper_client::EnsembleUpdate::Incremental {
            joinings: Vec::<&str>::new().into_iter(),
            leavings: vec![leaving.as_str()].into_iter(),
        };
        let (data, stat) = zk
            .update_ensemble(update, Some(v3 as i64))
            .await
            .expect("reconfig -remove");
        (String::from_utf8(data).unwrap(), stat)
    });
    let two: Vec<String> = three
        .iter()
        .filter(|l| !l.starts_with(&format!("server.{idc}=")))
        .cloned()
        .collect();
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("server."))
            .collect::<Vec<_>>(),
        two,
        "{text}"
    );
    assert!(stat.mzxid > st3.mzxid);
    wait_formed(&[&a, &b], 2, 0);
    wait_config(a.addr, &two);

    // c (still running, same identity) comes back as an observer, then becomes a participant.
    let spec = format!("server.{idc}={}:0:observer;{}", c.peer, c.addr);
    let r = reconfig(&mut admin, &spec, "", "", -1);
    assert_eq!(r.err, 0, "reconfig -add observer");
    wait_formed(&[&a, &b, &c], 2, 1);
    let mut with_observer = two.clone();
    with_observer.push(server_line(&c, idc, "observer"));
    with_observer.sort_by_key(|l| {
        l.split('=')
            .next()
            .unwrap()
            .trim_start_matches("server.")
            .parse::<u64>()
            .unwrap()
    });
    wait_config(c.addr, &with_observer);
    let spec = format!("server.{idc}={}:0:participant;{}", c.peer, c.addr);
    let r = reconfig(&mut admin, &spec, "", "", -1);
    assert_eq!(r.err, 0, "reconfig -add participant");
    wait_formed(&[&a, &b, &c], 3, 0);
    let (_, st) = wait_config(c.addr, &three);
    assert_eq!(st.mzxid, stat_of(&r).mzxid);
    // Non-incremental: the whole member set (here unchanged).
    let r = reconfig(&mut admin, "", "", &three.join(","), -1);
    assert_eq!(r.err, 0, "reconfig -members");
    let text = String::from_utf8(data_of(&r)).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("server."))
            .collect::<Vec<_>>(),
        three,
        "{text}"
    );
}

/// The leaderless bound (`roster_server::cluster::status::LEADERLESS`).
const LEADERLESS: Duration = roster_server::cluster::status::LEADERLESS;

/// One value of a node's `mntr`.
fn mntr_value(addr: SocketAddr, key: &str) -> String {
    let m = four_letter(addr, "mntr").unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('\t'))
        .unwrap_or_else(|| panic!("no {key} in mntr: {m}"))
        .to_string()
}

/// Sends a write and waits for its reply, or the error that broke the connection.
fn try_create(c: &mut Raw, path: &str, data: &[u8], flags: i32) -> std::io::Result<Reply> {
    use std::io::Write;
    let req = Request::Create(CreateRequest {
        path: path.into(),
        data: Some(Bytes::copy_from_slice(data)),
        acl: Acl::open_unsafe(),
        flags,
    });
    let mut out = bytes::BytesMut::new();
    write_frame(&mut out, |b| {
        RequestHeader {
            xid: 1_000_000,
            op_type: OpCode::Create.code(),
        }
        .encode(b);
        req.encode_body(b);
    });
    c.stream.write_all(&out)?;
    let r = c.recv(OpCode::Create)?;
    assert_eq!(r.xid, 1_000_000);
    Ok(r)
}

/// A session's client on a majority node: writes, reconnecting to the same node (resuming the session)
/// when the connection breaks.
struct Client {
    addr: SocketAddr,
    raw: Raw,
}

impl Client {
    /// Pings (the raw client does not on its own), reconnecting if needed.
    fn ping(&mut self) {
        self.raw.send(&Request::Ping);
        if self.raw.recv(OpCode::Ping).is_err() {
            if let Ok(raw) = Raw::connect_with(self.addr, self.raw.resume_request()) {
                self.raw = raw;
            }
        }
    }

    fn create(&mut self, path: &str, data: &[u8], flags: i32) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match try_create(&mut self.raw, path, data, flags) {
                Ok(r) if r.err == ErrorCode::NodeExists.code() && flags & 1 == 0 => return 0, // a retried create that had landed
                Ok(r) => return r.err,
                Err(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "{path}: no answer from {}",
                        self.addr
                    );
                    std::thread::sleep(Duration::from_millis(100));
                    if let Ok(raw) = Raw::connect_with(self.addr, self.raw.resume_request()) {
                        self.raw = raw;
                    }
                }
            }
        }
    }
}

#[test]
fn an_isolated_leader_stops_serving_the_majority_carries_on_and_the_old_leader_rejoins() {
    let _serial = serial();
    let net = FaultNet::new();
    let (a, b, c, leader) = three_behind(&net);
    let nodes = [&a, &b, &c];
    let old = *nodes.iter().find(|n| node_id(n) == leader).unwrap();
    let majority: Vec<&Roster> = nodes
        .iter()
        .copied()
        .filter(|n| node_id(n) != leader)
        .collect();

    // Sessions: one on each majority node (one of them is later killed), one on the leader.
    let mut setup = connect_retry(majority[0].addr, 10_000, Duration::from_secs(10));
    assert_eq!(setup.create("/w", b"", 0).err, 0);
    assert_eq!(setup.create("/e", b"", 0).err, 0);
    let mut kept = Client {
        addr: majority[0].addr,
        raw: connect_retry(majority[0].addr, 6_000, Duration::from_secs(10)),
    };
    assert_eq!(kept.create("/e/kept", b"", CreateMode::Ephemeral as i32), 0);
    let mut killed = connect_retry(majority[1].addr, 2_000, Duration::from_secs(10));
    assert_eq!(
        killed
            .create("/e/killed", b"", CreateMode::Ephemeral as i32)
            .err,
        0
    );
    let mut on_old = connect_retry(old.addr, 10_000, Duration::from_secs(10));
    let mut acked: Vec<String> = Vec::new();
    for i in 0..5 {
        let p = format!("/w/before-{i}");
        assert_eq!(on_old.create(&p, b"x", 0).err, 0);
        acked.push(p);
    }

    // A stock client (zookeeper-client) that knows only the old leader.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stock = rt
        .block_on(zookeeper_client::Client::connect(&old.addr.to_string()))
        .expect("connects");

    // Cut the leader off from both others, both directions. Its clients see the connection close
    // (a write never answered, or answered by a closed socket) and it refuses new sessions.
    net.isolate(leader);
    let cut_at = Instant::now();
    let opts =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    let r = rt.block_on(stock.create("/w/stock", b"", &opts));
    assert!(
        matches!(r, Err(zookeeper_client::Error::ConnectionLoss)),
        "stock client: {r:?}"
    );
    match try_create(&mut on_old, "/w/on-old-leader", b"x", 0) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) => {}
        other => panic!("the isolated leader did not close the connection: {other:?}"),
    }
    assert!(
        cut_at.elapsed() < Duration::from_secs(15),
        "the isolated leader kept the connection {:?}",
        cut_at.elapsed()
    );
    std::thread::sleep(Duration::from_millis(300));
    let refused = Raw::connect_with(
        old.addr,
        ConnectRequest {
            timeout: 10_000,
            passwd: Bytes::from(vec![0u8; 16]),
            read_only: Some(false),
            ..Default::default()
        },
    );
    assert!(
        refused.is_err(),
        "the isolated leader accepted a new session"
    );
    // It does not claim to lead any more: srvr says it serves nothing, mntr says `looking`, and its
    // status shows a leader without quorum, no leader. The bound counts from the last heartbeat a
    // quorum acknowledged (before the cut); allow for a busy machine on top.
    let deadline = cut_at + LEADERLESS + Duration::from_millis(1_500);
    loop {
        let srvr = four_letter(old.addr, "srvr").unwrap_or_default();
        if srvr.contains("not currently serving requests") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cut-off leader still answers {srvr:?} after {:?}",
            cut_at.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(mntr_value(old.addr, "zk_server_state"), "looking");
    let st = peer_status(old.peer).unwrap();
    assert_eq!(
        (st.state.as_str(), st.leader, st.serving),
        ("Leader (no quorum)", None, false)
    );
    drop(killed); // the client dies: no closeSession; its session must expire.

    // The majority elects a new leader and keeps serving writes, through both of its nodes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_leader = loop {
        let s = peer_status(majority[0].peer).unwrap();
        if let Some(l) = s.leader.filter(|l| *l != leader) {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "the majority elected no new leader"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The old leader is alive (its announced peer address still accepts connections): the majority
    // saw its connections end but left the election to the timers, no fast failover.
    for n in &majority {
        let log = n.log_text();
        assert!(
            log.contains("leaving it to the election timers"),
            "a survivor did not probe the cut leader"
        );
        assert!(
            !log.contains("fast failover: campaigning"),
            "fast failover triggered for a leader that is alive"
        );
    }
    for i in 0..10 {
        let p = format!("/w/during-{i}");
        assert_eq!(kept.create(&p, b"y", 0), 0, "{p}");
        acked.push(p);
    }
    let mut other = connect_retry(majority[1].addr, 10_000, Duration::from_secs(30));
    for i in 0..5 {
        let p = format!("/w/during-b-{i}");
        assert_eq!(other.create(&p, b"z", 0).err, 0, "{p}");
        acked.push(p);
    }
    // The killed client's session expires on the majority: its ephemeral goes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while other.exists("/e/killed", false).err == 0 {
        kept.ping();
        assert!(
            Instant::now() < deadline,
            "the killed client's ephemeral is still there"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Heal: the old leader rejoins by itself (no restart) under the new leader and serves again.
    net.heal();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = peer_status(old.peer).unwrap();
        if s.serving && s.leader == Some(new_leader) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old leader did not rejoin: {s:?}"
        );
        kept.ping();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        four_letter(old.addr, "srvr")
            .unwrap()
            .contains("Mode: follower"),
        "the old leader serves as a follower after the heal"
    );
    assert_eq!(mntr_value(old.addr, "zk_server_state"), "follower");
    let mut back = connect_retry(old.addr, 10_000, Duration::from_secs(30));
    assert_eq!(back.create("/w/after", b"w", 0).err, 0);
    acked.push("/w/after".into());
    // Keep the surviving session alive through the checks.
    assert_eq!(kept.create("/w/kept-alive", b"", 0), 0);
    acked.push("/w/kept-alive".into());

    let trees: Vec<_> = nodes.iter().map(|n| dump(n.addr)).collect();
    for p in &acked {
        assert!(trees[0].contains_key(p), "acknowledged write {p} lost");
    }
    assert!(!trees[0].contains_key("/w/on-old-leader") || trees[0]["/w/on-old-leader"].0 == b"x");
    assert!(
        trees[0].contains_key("/e/kept"),
        "the ephemeral of the session on a majority node is gone"
    );
    assert_eq!(trees[0]["/e/kept"].4, kept.raw.session_id);
    assert!(
        !trees[0].contains_key("/e/killed"),
        "the killed client's ephemeral survived"
    );
    assert_eq!(trees[0], trees[1], "replicas differ");
    assert_eq!(trees[0], trees[2], "replicas differ");
}

#[test]
fn a_killed_leader_is_replaced_by_fast_failover_and_sessions_survive() {
    let _serial = serial();
    let (a, b, c) = three();
    let mut nodes = [a, b, c];
    let leader = wait_formed(&[&nodes[0], &nodes[1], &nodes[2]], 3, 0);
    let li = nodes.iter().position(|n| node_id(n) == leader).unwrap();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != li).collect();

    // A session on a survivor, with an ephemeral and a node to write.
    let mut client = Client {
        addr: nodes[survivors[0]].addr,
        raw: connect_retry(nodes[survivors[0]].addr, 10_000, Duration::from_secs(10)),
    };
    assert_eq!(client.create("/f", b"", 0), 0);
    assert_eq!(
        client.create("/f/eph", b"", CreateMode::Ephemeral as i32),
        0
    );
    let session = client.raw.session_id;

    nodes[li].kill9();

    // A survivor found the leader's port refusing connections and campaigned at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !survivors
        .iter()
        .any(|i| nodes[*i].log_text().contains("fast failover: campaigning"))
    {
        assert!(Instant::now() < deadline, "no survivor campaigned at once");
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in &survivors {
        wait_new_leader(&nodes[*i], leader);
    }
    // The existing session writes again (on the same connection, or after resuming it); its ephemeral
    // is still there: connection loss during a failover is not session expiry.
    assert_eq!(client.create("/f/after", b"x", 0), 0);
    assert_eq!(client.raw.session_id, session);
    let r = client.raw.exists("/f/eph", false);
    assert_eq!(r.err, 0, "the session's ephemeral is gone");
    assert_eq!(stat_of(&r).ephemeral_owner, session);
    let mut other = connect_retry(nodes[survivors[1]].addr, 10_000, Duration::from_secs(30));
    sync(&mut other, "/f");
    assert_eq!(children_of(&mut other, "/f"), vec!["after", "eph"]);
}

#[test]
fn a_follower_returning_from_a_partition_changes_no_leader() {
    let _serial = serial();
    let net = FaultNet::new();
    let (a, b, c, leader) = three_behind(&net);
    let nodes = [&a, &b, &c];
    let lead = *nodes.iter().find(|n| node_id(n) == leader).unwrap();
    let cut = *nodes.iter().find(|n| node_id(n) != leader).unwrap();
    let cut_id = node_id(cut);
    let term0 = peer_status(lead.peer).unwrap().term;
    assert_eq!(
        mntr_value(lead.addr, "zk_roster_raft_term"),
        term0.to_string()
    );

    // Light writes on the leader throughout; the follower is cut off for 3 s (many election timeouts).
    let mut w = connect_retry(lead.addr, 10_000, Duration::from_secs(10));
    assert_eq!(w.create("/p", b"", 0).err, 0);
    net.isolate(cut_id);
    let cut_at = Instant::now();
    let mut i = 0;
    while cut_at.elapsed() < Duration::from_secs(3) {
        assert_eq!(w.create(&format!("/p/n{i}"), b"x", 0).err, 0);
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let cut_status = peer_status(cut.peer).unwrap();
    assert_eq!(
        cut_status.term, term0,
        "the cut-off follower raised its term: {cut_status:?}"
    );
    assert!(
        !cut_status.serving,
        "a follower without its leader for 3 s still serves"
    );
    net.heal();

    // It catches up; nobody campaigned: the same leader in the same term on every node.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all: Vec<_> = nodes.iter().map(|n| peer_status(n.peer).unwrap()).collect();
        for s in &all {
            assert_eq!(s.term, term0, "a new term after the heal: {all:#?}");
            assert!(
                s.leader.is_none_or(|l| l == leader),
                "another leader: {all:#?}"
            );
        }
        if all.iter().all(|s| s.serving && s.applied == all[0].applied) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower did not catch up: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(w.create("/p/after", b"", 0).err, 0);
    assert_eq!(subtree(cut.addr, "/p").len(), i + 1);
    for n in nodes {
        let log = n.log_text();
        assert!(
            !log.contains("leading: every session starts a fresh timeout") || n.addr == lead.addr,
            "a node other than the leader took over"
        );
    }
}

#[test]
fn a_dead_follower_is_dialed_once_per_backoff_step_not_once_per_write() {
    let _serial = serial();
    let (a, b, c) = three();
    let mut nodes = [a, b, c];
    let leader = wait_formed(&[&nodes[0], &nodes[1], &nodes[2]], 3, 0);
    let li = nodes.iter().position(|n| node_id(n) == leader).unwrap();
    let dead = (li + 1) % 3;
    nodes[dead].kill9();
    let lead = &nodes[li];
    let mut w = connect_retry(lead.addr, 10_000, Duration::from_secs(10));
    assert_eq!(w.create("/d", b"", 0).err, 0);
    let failed = |n: &Roster| -> u64 {
        mntr_value(n.addr, "zk_roster_peer_dials_failed")
            .parse()
            .unwrap()
    };
    let before = failed(lead);
    let started = Instant::now();
    let writes = 400;
    for i in 0..writes {
        assert_eq!(w.create(&format!("/d/n{i}"), b"x", 0).err, 0);
    }
    let elapsed = started.elapsed();
    let dials = failed(lead) - before;
    // One dial per 250 ms at most once the backoff is at its cap (plus the 50/100/200 ms steps and
    // the link kinds that failed first on their own connection).
    let bound = 6 + elapsed.as_millis() as u64 / 250;
    assert!(
        dials <= bound,
        "{dials} failed dials to the dead follower in {elapsed:?} for {writes} writes (bound {bound})"
    );
    let unreachable_lines = lead.log_text().matches("peer unreachable").count();
    assert!(
        unreachable_lines <= 2 + elapsed.as_secs() as usize / 10,
        "{unreachable_lines} log lines about the dead peer"
    );
}

/// The reproduction: the leader is cut off (packets dropped, connections left open), a client
/// of a follower sends setData and, right behind it, getData on the same session. The write cannot be
/// answered by the cut-off leader; the follower must close the connection once it learns of the new
/// leader (not when the old one returns), and never answer the getData before the setData (kazoo:
/// "xids do not match", its connection thread dies).
#[test]
fn a_write_forwarded_to_a_cut_off_leader_closes_its_connection_in_order_once_a_new_leader_is_elected(
) {
    let _serial = serial();
    let net = FaultNet::new();
    let (a, b, c, leader) = three_behind(&net);
    let nodes = [&a, &b, &c];
    let followers: Vec<&Roster> = nodes
        .iter()
        .copied()
        .filter(|n| node_id(n) != leader)
        .collect();
    let mut client = connect_retry(followers[0].addr, 6_000, Duration::from_secs(10));
    assert_eq!(client.create("/k", b"0", 0).err, 0);

    net.blackhole(leader);
    let cut_at = Instant::now();
    // When the majority elects a new leader, seen from the other follower's peer port.
    let watcher_peer = followers[1].peer;
    let elected = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(l) = peer_status(watcher_peer)
                .ok()
                .and_then(|s| s.leader)
                .filter(|l| *l != leader)
            {
                return Some((l, cut_at.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    });
    let set_xid = client.send(&Request::SetData(SetDataRequest {
        path: "/k".into(),
        data: Some(Bytes::from_static(b"1")),
        version: -1,
    }));
    let get_xid = client.send(&Request::GetData(GetDataRequest {
        path: "/k".into(),
        watch: false,
    }));
    // The partition lasts until the client's session timeout (6 s) would have passed: an answer (or a
    // close) must come well before the heal.
    let heal_after = Duration::from_secs(8);
    client
        .stream
        .set_read_timeout(Some(heal_after))
        .expect("read timeout");
    let first = client.recv(OpCode::SetData);
    let answered_at = cut_at.elapsed();
    match &first {
        Ok(r) => {
            assert_eq!(r.xid, set_xid, "a reply overtook the setData: {r:?}");
            let second = client.recv(OpCode::GetData).expect("getData answered after setData");
            assert_eq!(second.xid, get_xid);
        }
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ),
            "the write was neither answered nor its connection closed before the heal ({answered_at:?}): {e}"
        ),
    }
    // The answer (or the close) came at most a second after the new leader was elected.
    let (new_leader, elected_at) = elected
        .join()
        .unwrap()
        .expect("the majority elected no new leader");
    eprintln!(
        "cut at 0, new leader {new_leader} seen at {elected_at:?}, answered or closed at {answered_at:?}: {first:?}"
    );
    assert!(
        answered_at < elected_at + Duration::from_secs(1),
        "the write was answered or closed {answered_at:?} after the cut, more than 1 s after the new leader ({elected_at:?})"
    );
    net.heal();
    // The session survives the close: it resumes on the other follower and sees a consistent value.
    let mut resumed = Raw::connect_with(followers[1].addr, client.resume_request())
        .expect("the session resumes on another node");
    let r = resumed.get("/k", false);
    assert_eq!(r.err, 0);
    assert!(matches!(data_of(&r).as_slice(), b"0" | b"1"));
}
