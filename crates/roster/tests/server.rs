//! End-to-end tests of `roster serve`: the real binary on loopback, driven over real TCP by a raw
//! protocol client (exact bytes, ordering, bad input) and by the independent `zookeeper-client` crate.
//! Crash tests SIGKILL the process and restart it on the same data directory.

mod support;

use bytes::Bytes;
use roster_proto::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const OK: i32 = 0;

#[test]
fn basic_operations_and_stat_bookkeeping() {
    let srv = Roster::start(&[]);
    let mut c = Raw::connect(srv.addr, 10_000);
    assert_eq!(c.timeout, 10_000);
    let r = c.create("/a", b"one", 0);
    assert_eq!(r.err, OK);
    assert_eq!(
        r.body,
        Some(Response::Create(CreateResponse { path: "/a".into() }))
    );
    let g = c.get("/a", false);
    let st = stat_of(&g);
    assert_eq!(data_of(&g), b"one");
    assert_eq!(
        (st.version, st.czxid, st.mzxid, st.pzxid, st.data_length),
        (0, st.mzxid, r.zxid, r.zxid, 3)
    );
    assert_eq!(c.set("/a", b"two", 5).err, ErrorCode::BadVersion.code());
    let s = c.set("/a", b"two", 0);
    assert_eq!(stat_of(&s).version, 1);
    assert!(stat_of(&s).mzxid > st.czxid);
    assert_eq!(c.create("/a", b"", 0).err, ErrorCode::NodeExists.code());
    assert_eq!(c.create("/missing/x", b"", 0).err, ErrorCode::NoNode.code());
    // Sequential suffix from the parent's cversion.
    c.create("/a/x", b"", 0);
    let seq = c.create("/a/s-", b"", CreateMode::PersistentSequential.code());
    assert_eq!(
        seq.body,
        Some(Response::Create(CreateResponse {
            path: "/a/s-0000000001".into()
        }))
    );
    assert_eq!(c.delete("/a", -1).err, ErrorCode::NotEmpty.code());
    // Ephemeral owner is the session.
    let e = c.call(Request::Create2(CreateRequest {
        path: "/a/e".into(),
        data: Some(Bytes::new()),
        acl: Acl::open_unsafe(),
        flags: CreateMode::Ephemeral.code(),
    }));
    assert_eq!(stat_of(&e).ephemeral_owner, c.session_id);
    assert_eq!(
        c.create("/a/e/child", b"", 0).err,
        ErrorCode::NoChildrenForEphemerals.code()
    );
    let ch = c.children("/a", false);
    let Some(Response::GetChildren(GetChildrenResponse { mut children })) = ch.body else {
        panic!("{ch:?}")
    };
    children.sort();
    assert_eq!(children, vec!["e", "s-0000000001", "x"]);
    // ZooKeeper stores the root under "" too: reads of "" answer for "/".
    assert_eq!(
        stat_of(&c.exists("", false)),
        stat_of(&c.exists("/", false))
    );
    // Special nodes.
    assert_eq!(c.exists("/zookeeper/quota", false).err, OK);
    assert_eq!(c.exists("/zookeeper/config", false).err, OK);
    // sync answers its path after earlier writes.
    let sy = c.call(Request::Sync(SyncRequest { path: "/a".into() }));
    assert_eq!(
        sy.body,
        Some(Response::Sync(SyncResponse { path: "/a".into() }))
    );
    c.close();
}

#[test]
fn watch_event_arrives_before_the_reply_that_reveals_the_change() {
    let srv = Roster::start(&[]);
    let mut a = Raw::connect(srv.addr, 10_000);
    let mut b = Raw::connect(srv.addr, 10_000);
    a.create("/w", b"0", 0);
    for i in 1..=20 {
        assert_eq!(a.get("/w", true).err, OK);
        assert_eq!(b.set("/w", format!("{i}").as_bytes(), -1).err, OK);
        // a's next reply reveals the new data, so the notification must already have been read.
        let g = a.get("/w", false);
        assert_eq!(data_of(&g), format!("{i}").as_bytes());
        assert_eq!(a.events.len(), 1, "round {i}: event must precede the reply");
        let (_, ev) = a.events.remove(0);
        assert_eq!(
            (ev.event_type, ev.path.as_str(), ev.state),
            (EventType::NodeDataChanged.code(), "/w", 3)
        );
    }
    // One-shot: a change without a re-armed watch fires nothing.
    b.set("/w", b"x", -1);
    a.get("/w", false);
    assert!(a.events.is_empty());
}

#[test]
fn pipelined_requests_are_answered_in_order_and_reads_see_earlier_writes() {
    let srv = Roster::start(&[]);
    let mut c = Raw::connect(srv.addr, 10_000);
    c.create("/p", b"", 0);
    let mut sent = vec![];
    for i in 0..150 {
        let path = format!("/p/n{i}");
        sent.push((
            c.send(&Request::Create(CreateRequest {
                path: path.clone(),
                data: Some(Bytes::from(format!("{i}"))),
                acl: Acl::open_unsafe(),
                flags: 0,
            })),
            OpCode::Create,
        ));
        sent.push((
            c.send(&Request::GetData(GetDataRequest { path, watch: false })),
            OpCode::GetData,
        ));
    }
    let mut last_zxid = 0;
    for (i, (xid, op)) in sent.into_iter().enumerate() {
        let r = c.recv(op).unwrap();
        assert_eq!(r.xid, xid, "reply {i} out of order");
        assert_eq!(r.err, OK, "reply {i}: {r:?}");
        assert!(r.zxid >= last_zxid, "zxids go backwards");
        last_zxid = r.zxid;
        if op == OpCode::GetData {
            assert_eq!(data_of(&r), format!("{}", i / 2).as_bytes());
        }
    }
}

/// Replies of writes answered together leave in one batch (one socket write): still in request
/// order, and each write's watch event still ahead of its reply (pipeline rule 4).
#[test]
fn writes_answered_together_reply_in_order_with_each_event_before_its_reply() {
    let srv = Roster::start(&[]);
    let mut c = Raw::connect(srv.addr, 10_000);
    c.create("/c", b"", 0);
    let n: usize = 200;
    for i in 0..n {
        c.create(&format!("/c/k{i}"), b"", 0);
        assert_eq!(c.get(&format!("/c/k{i}"), true).err, OK);
    }
    // All the setData in one TCP write, so they reach the log together and are applied together.
    let mut burst = Vec::new();
    let mut xids = Vec::new();
    for i in 0..n {
        let xid = 10_000 + i as i32;
        xids.push(xid);
        let mut frame = bytes::BytesMut::new();
        write_frame(&mut frame, |b| {
            RequestHeader {
                xid,
                op_type: OpCode::SetData.code(),
            }
            .encode(b);
            Request::SetData(SetDataRequest {
                path: format!("/c/k{i}"),
                data: Some(Bytes::from(format!("v{i}"))),
                version: -1,
            })
            .encode_body(b);
        });
        burst.extend_from_slice(&frame);
    }
    c.send_bytes(&burst).unwrap();
    let mut last_zxid = 0;
    for (i, xid) in xids.into_iter().enumerate() {
        let r = c.recv(OpCode::SetData).unwrap();
        assert_eq!((r.xid, r.err), (xid, OK), "reply {i} out of order: {r:?}");
        assert!(r.zxid > last_zxid, "zxids go backwards at reply {i}");
        last_zxid = r.zxid;
        // Events leave as their writes are applied: the event of write i is there before its
        // reply (those of later writes may be too), in zxid order.
        assert!(
            c.events.len() > i,
            "the event of write {i} precedes its reply"
        );
        let (zxid, ev) = &c.events[i];
        assert_eq!(
            (ev.path.as_str(), ev.event_type, *zxid),
            (
                format!("/c/k{i}").as_str(),
                EventType::NodeDataChanged.code(),
                r.zxid
            ),
            "event {i}"
        );
    }
}

#[test]
fn session_resume_keeps_ephemerals_and_refusals_match_zookeeper() {
    let srv = Roster::start(&[]);
    let mut a = Raw::connect(srv.addr, 10_000);
    a.create("/eph", b"", CreateMode::Ephemeral.code());
    a.exists("/other", true);
    let resume = a.resume_request();
    drop(a); // connection lost, session alive
    let mut a2 = Raw::connect_with(srv.addr, resume.clone()).expect("resumes");
    assert_eq!(a2.session_id, resume.session_id);
    assert_eq!(a2.exists("/eph", false).err, OK);
    // A wrong password is refused exactly as ZooKeeper does: timeout 0, session 0.
    let mut bad = resume.clone();
    bad.passwd = Bytes::from(vec![9u8; 16]);
    let err = Raw::connect_with(srv.addr, bad).err().unwrap();
    assert!(
        err.contains("timeout: 0") && err.contains("session_id: 0"),
        "{err}"
    );
    // A client that has seen a later zxid than the server is refused without an answer.
    let mut ahead = resume.clone();
    ahead.last_zxid_seen = 1 << 50;
    let err = Raw::connect_with(srv.addr, ahead).err().unwrap();
    assert!(err.contains("handshake"), "{err}");
    // The session is still fine on its connection; moving it closes the old connection.
    assert_eq!(a2.exists("/eph", false).err, OK);
    let mut a3 = Raw::connect_with(srv.addr, resume).expect("resumes again");
    assert_eq!(a3.exists("/eph", false).err, OK);
    std::thread::sleep(Duration::from_millis(200));
    a2.send(&Request::Exists(ExistsRequest {
        path: "/eph".into(),
        watch: false,
    }));
    assert!(
        a2.recv(OpCode::Exists).is_err(),
        "old connection must be closed after the session moved"
    );
}

#[test]
fn expiry_deletes_ephemerals_and_fires_watches_within_the_timeout() {
    let srv = Roster::start(&[
        "--min-session-timeout-ms",
        "1000",
        "--session-tick-ms",
        "10",
    ]);
    let mut owner = Raw::connect(srv.addr, 1000);
    assert_eq!(owner.timeout, 1000);
    owner.create("/member", b"", CreateMode::Ephemeral.code());
    let resume = owner.resume_request();
    let mut watcher = Raw::connect(srv.addr, 10_000);
    assert_eq!(watcher.exists("/member", true).err, OK);
    let lost = Instant::now();
    owner.stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(owner);
    let ev = watcher.next_event().unwrap();
    let took = lost.elapsed();
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeDeleted.code(), "/member")
    );
    assert!(
        took >= Duration::from_millis(900),
        "expired too early: {took:?}"
    );
    assert_eq!(
        watcher.exists("/member", false).err,
        ErrorCode::NoNode.code()
    );
    // The expired session cannot be resumed.
    let err = Raw::connect_with(srv.addr, resume).err().unwrap();
    assert!(err.contains("timeout: 0"), "{err}");
}

#[test]
fn kill9_under_concurrent_writes_loses_no_acknowledged_write() {
    let mut srv = Roster::start(&["--snapshot-every", "300"]);
    let mut setup = Raw::connect(srv.addr, 10_000);
    setup.create("/load", b"", 0);
    drop(setup);
    // path -> (data, zxid) of every acknowledged create.
    type Acked = Arc<Mutex<BTreeMap<String, (Vec<u8>, i64)>>>;
    let acked: Acked = Arc::default();
    let addr = srv.addr;
    let mut threads = vec![];
    for t in 0..4 {
        let acked = acked.clone();
        threads.push(std::thread::spawn(move || {
            let Ok(mut c) = Raw::connect_with(
                addr,
                ConnectRequest {
                    timeout: 10_000,
                    passwd: Bytes::from(vec![0u8; 16]),
                    ..Default::default()
                },
            ) else {
                return;
            };
            for n in 0..100_000 {
                let path = format!("/load/t{t}-{n:06}");
                let data = format!("{t}:{n}").into_bytes();
                let xid = c.send(&Request::Create(CreateRequest {
                    path: path.clone(),
                    data: Some(Bytes::from(data.clone())),
                    acl: Acl::open_unsafe(),
                    flags: 0,
                }));
                match c.recv(OpCode::Create) {
                    Ok(r) if r.err == 0 && r.xid == xid => {
                        acked.lock().unwrap().insert(path, (data, r.zxid));
                    }
                    _ => return,
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    srv.kill9();
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "load too small to mean anything: {}",
        acked.len()
    );
    srv.restart();
    let mut c = Raw::connect(srv.addr, 10_000);
    let max_acked_zxid = acked.values().map(|(_, z)| *z).max().unwrap();
    for (path, (data, _)) in &acked {
        let g = c.get(path, false);
        assert_eq!(g.err, OK, "acknowledged write {path} lost after kill -9");
        assert_eq!(&data_of(&g), data);
    }
    // The tree is consistent: the parent's child count matches its children.
    let ch = c.children("/load", false);
    let Some(Response::GetChildren(GetChildrenResponse { children })) = ch.body else {
        panic!()
    };
    let st = stat_of(&c.exists("/load", false));
    assert_eq!(st.num_children as usize, children.len());
    assert!(children.len() >= acked.len());
    // zxids continue upward.
    let w = c.create("/after-restart", b"", 0);
    assert!(
        w.zxid > max_acked_zxid,
        "zxid went back: {} <= {max_acked_zxid}",
        w.zxid
    );
}

#[test]
fn restart_keeps_sessions_and_their_ephemerals() {
    let mut srv = Roster::start(&[]);
    let mut a = Raw::connect(srv.addr, 20_000);
    a.create("/keep", b"", CreateMode::Ephemeral.code());
    let resume = a.resume_request();
    drop(a);
    srv.restart();
    let mut a = Raw::connect_with(srv.addr, resume).expect("session survives a restart");
    assert_eq!(a.exists("/keep", false).err, OK);
}

#[test]
fn bad_input_gets_an_error_or_a_close_and_harms_nobody() {
    let mut srv = Roster::start(&["--max-frame-bytes", "4096"]);
    let mut bystander = Raw::connect(srv.addr, 10_000);
    bystander.create("/b", b"", CreateMode::Ephemeral.code());
    assert_eq!(bystander.exists("/b", true).err, OK);
    let before = four_letter(srv.addr, "srvr").unwrap();
    let node_count = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("Node count"))
            .unwrap()
            .to_string()
    };

    // Oversized frame: closed.
    let mut c = Raw::connect(srv.addr, 10_000);
    c.send_bytes(&(1_000_000i32).to_be_bytes()).unwrap();
    assert!(c.recv(OpCode::Ping).is_err());
    // Negative length: closed.
    let mut c = Raw::connect(srv.addr, 10_000);
    c.send_bytes(&(-5i32).to_be_bytes()).unwrap();
    assert!(c.recv(OpCode::Ping).is_err());
    // Truncated frame, then the client goes away.
    let mut c = Raw::connect(srv.addr, 10_000);
    c.send_bytes(&[0, 0, 0, 50, 0, 0]).unwrap();
    drop(c);
    // Unknown opcode: Unimplemented, then closed.
    let mut c = Raw::connect(srv.addr, 10_000);
    let mut frame = bytes::BytesMut::new();
    write_frame(&mut frame, |b| {
        RequestHeader {
            xid: 1,
            op_type: 999,
        }
        .encode(b)
    });
    c.send_bytes(&frame).unwrap();
    let r = c.recv(OpCode::Ping).unwrap();
    assert_eq!(r.err, ErrorCode::Unimplemented.code());
    assert!(c.recv(OpCode::Ping).is_err());
    // A body that does not decode: MarshallingError, connection stays usable.
    let mut c = Raw::connect(srv.addr, 10_000);
    let mut frame = bytes::BytesMut::new();
    write_frame(&mut frame, |b| {
        RequestHeader {
            xid: 1,
            op_type: OpCode::Create.code(),
        }
        .encode(b);
        b.extend_from_slice(&[0, 0, 0, 200, b'/']);
    });
    c.send_bytes(&frame).unwrap();
    assert_eq!(
        c.recv(OpCode::Create).unwrap().err,
        ErrorCode::MarshallingError.code()
    );
    assert_eq!(c.exists("/", false).err, OK);
    // As ZooKeeper 3.8: bytes after a record are ignored (the request is answered as without them),
    // opcodes 0 and -1 (reply-only) are Unimplemented and close, and an auth packet that does not
    // decode closes the connection without a reply.
    let request = |op: i32, body: &[u8]| {
        let mut frame = bytes::BytesMut::new();
        write_frame(&mut frame, |b| {
            RequestHeader {
                xid: 7,
                op_type: op,
            }
            .encode(b);
            b.extend_from_slice(body);
        });
        frame
    };
    let mut body = Vec::new();
    GetDataRequest {
        path: "/".into(),
        watch: false,
    }
    .encode(&mut body);
    body.extend_from_slice(&[1, 2, 3]);
    c.send_bytes(&request(OpCode::GetData.code(), &body))
        .unwrap();
    assert_eq!(c.recv(OpCode::GetData).unwrap().err, OK);
    for op in [0, -1] {
        let mut c = Raw::connect(srv.addr, 10_000);
        c.send_bytes(&request(op, &[9; 8])).unwrap();
        let r = c.recv(OpCode::Ping).unwrap();
        assert_eq!(r.err, ErrorCode::Unimplemented.code(), "opcode {op}");
        assert!(c.recv(OpCode::Ping).is_err(), "opcode {op} must close");
    }
    let mut a = Raw::connect(srv.addr, 10_000);
    a.send_bytes(&request(OpCode::Auth.code(), &[0, 0, 0, 0, 0x7f, 0, 0, 0]))
        .unwrap();
    assert!(
        a.recv(OpCode::Auth).is_err(),
        "a garbage auth packet closes"
    );
    // Invalid paths and ACLs. ZooKeeper looks up the parent before validating the whole path, so a
    // missing parent answers NoNode; these all have an existing parent.
    assert_eq!(c.create("/a", b"", 0).err, OK);
    assert_eq!(c.create("/a//b", b"", 0).err, ErrorCode::NoNode.code());
    for p in ["", "a", "/a/", "/.", "/a/..", "/a/.", "/nul\u{0}"] {
        assert_eq!(
            c.create(p, b"", 0).err,
            ErrorCode::BadArguments.code(),
            "path {p:?}"
        );
    }
    let r = c.call(Request::Create(CreateRequest {
        path: "/acl".into(),
        data: Some(Bytes::new()),
        acl: vec![],
        flags: 0,
    }));
    assert_eq!(r.err, ErrorCode::InvalidAcl.code());
    let r = c.call(Request::Create(CreateRequest {
        path: "/acl".into(),
        data: Some(Bytes::new()),
        acl: vec![Acl {
            perms: 31,
            id: Id::new("nosuchscheme", "x"),
        }],
        flags: 0,
    }));
    assert_eq!(r.err, ErrorCode::InvalidAcl.code());
    // Random bytes instead of a handshake: closed.
    for seed in 0..20u8 {
        let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let junk: Vec<u8> = (0..64u32)
            .map(|i| {
                (i as u8)
                    .wrapping_mul(31)
                    .wrapping_add(seed.wrapping_mul(97))
            })
            .collect();
        let _ = s.write_all(&junk);
        let mut buf = [0u8; 64];
        let _ = std::io::Read::read(&mut s, &mut buf);
    }
    // Nobody else was harmed: the server lives, the bystander's session, ephemeral and watch are intact,
    // and the tree is unchanged.
    assert!(srv.alive());
    assert_eq!(bystander.exists("/b", false).err, OK);
    assert_eq!(c.delete("/a", -1).err, OK);
    assert_eq!(
        node_count(&four_letter(srv.addr, "srvr").unwrap()),
        node_count(&before)
    );
    let mut other = Raw::connect(srv.addr, 10_000);
    other.delete("/b", -1);
    assert_eq!(
        bystander.next_event().unwrap().event_type,
        EventType::NodeDeleted.code()
    );
}

#[test]
fn connection_and_watch_limits_give_clear_errors() {
    let srv = Roster::start(&[
        "--max-connections-per-ip",
        "3",
        "--max-watches-per-session",
        "2",
    ]);
    let mut c1 = Raw::connect(srv.addr, 10_000);
    let _c2 = Raw::connect(srv.addr, 10_000);
    let _c3 = Raw::connect(srv.addr, 10_000);
    assert!(Raw::connect_with(
        srv.addr,
        ConnectRequest {
            timeout: 10_000,
            passwd: Bytes::from(vec![0u8; 16]),
            ..Default::default()
        }
    )
    .is_err());
    assert_eq!(c1.exists("/x1", true).err, ErrorCode::NoNode.code());
    assert_eq!(c1.exists("/x2", true).err, ErrorCode::NoNode.code());
    assert_eq!(c1.exists("/x3", true).err, ErrorCode::QuotaExceeded.code());
    assert_eq!(c1.exists("/x3", false).err, ErrorCode::NoNode.code());
    drop(_c3);
    std::thread::sleep(Duration::from_millis(200));
    let _c4 = Raw::connect(srv.addr, 10_000);
    assert!(srv.log_text().contains("max-connections-per-ip"));
    assert!(srv.log_text().contains("max-watches-per-session"));
}

#[test]
fn four_letter_words() {
    let srv = Roster::start(&[]);
    assert_eq!(four_letter(srv.addr, "ruok").unwrap(), "imok");
    let srvr = four_letter(srv.addr, "srvr").unwrap();
    assert!(srvr.starts_with("Zookeeper version: 3.9.3"), "{srvr}");
    assert!(srvr.contains("Mode: standalone") && srvr.contains("Zxid: 0x"));
    let mntr = four_letter(srv.addr, "mntr").unwrap();
    assert!(mntr.contains("zk_znode_count\t"), "{mntr}");
    // The log's group-commit counters move with writes: every acknowledged write is a record
    // written, and an fdatasync happened before it was acknowledged.
    let counter = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}\t")))
            .unwrap_or_else(|| panic!("{key} missing:\n{text}"))
            .parse()
            .unwrap()
    };
    let records_before = counter(&mntr, "zk_roster_wal_records_written");
    let mut c = Raw::connect(srv.addr, 10_000);
    for i in 0..5 {
        assert_eq!(c.create(&format!("/m{i}"), b"x", 0).err, 0);
    }
    let after = four_letter(srv.addr, "mntr").unwrap();
    assert!(counter(&after, "zk_roster_wal_records_written") >= records_before + 5);
    assert!(counter(&after, "zk_roster_wal_fsync_count") >= 1);
    assert!(counter(&after, "zk_roster_wal_batch_count") >= 1);
    assert!(counter(&after, "zk_roster_wal_bytes_written") > 0);
    assert!(four_letter(srv.addr, "envi")
        .unwrap()
        .contains("zookeeper.version=3.9.3"));
    assert_eq!(four_letter(srv.addr, "isro").unwrap(), "rw");
    let limited = Roster::start(&["--4lw-whitelist", "ruok"]);
    assert_eq!(four_letter(limited.addr, "ruok").unwrap(), "imok");
    assert_eq!(
        four_letter(limited.addr, "srvr").unwrap(),
        "srvr is not executed because it is not in the whitelist.\n"
    );
}

#[test]
fn independent_rust_client_zookeeper_client_crate() {
    let srv = Roster::start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = zookeeper_client::Client::connect(&srv.addr.to_string())
            .await
            .expect("connects");
        let opts = zookeeper_client::CreateMode::Persistent
            .with_acls(zookeeper_client::Acls::anyone_all());
        let (stat, _) = client.create("/zc", b"v1", &opts).await.unwrap();
        assert_eq!(stat.version, 0);
        let (data, _stat, watcher) = client.get_and_watch_data("/zc").await.unwrap();
        assert_eq!(data, b"v1");
        client.set_data("/zc", b"v2", None).await.unwrap();
        let ev = watcher.changed().await;
        assert_eq!(ev.event_type, zookeeper_client::EventType::NodeDataChanged);
        let eph = zookeeper_client::CreateMode::EphemeralSequential
            .with_acls(zookeeper_client::Acls::anyone_all());
        let (_, seq) = client.create("/zc/m-", b"", &eph).await.unwrap();
        assert_eq!(seq.into_i64(), 0);
        let children = client.list_children("/zc").await.unwrap();
        assert_eq!(children, vec!["m-0000000000".to_string()]);
        client.sync("/zc").await.unwrap();
        let (data, _) = client.get_data("/zc").await.unwrap();
        assert_eq!(data, b"v2");
    });
}

#[test]
fn pipelined_reads_see_exactly_the_writes_sent_before_them() {
    let srv = Roster::start(&[]);
    let mut c = Raw::connect(srv.addr, 10_000);
    c.create("/k", b"0", 0);
    // set, get, set, get ... all sent before any reply is read: each get must see its own preceding
    // set and never the one sent after it, even though writes behind reads are proposed at once.
    let mut sent = vec![];
    for i in 1..=200 {
        let set = SetDataRequest {
            path: "/k".into(),
            data: Some(Bytes::from(format!("{i}"))),
            version: -1,
        };
        sent.push((c.send(&Request::SetData(set)), OpCode::SetData, i));
        sent.push((
            c.send(&Request::GetData(GetDataRequest {
                path: "/k".into(),
                watch: false,
            })),
            OpCode::GetData,
            i,
        ));
    }
    let mut last = 0;
    for (xid, op, i) in sent {
        let r = c.recv(op).unwrap();
        assert_eq!((r.xid, r.err), (xid, OK));
        assert!(r.zxid >= last, "reply zxids go backwards");
        last = r.zxid;
        if op == OpCode::GetData {
            assert_eq!(
                data_of(&r),
                format!("{i}").as_bytes(),
                "read {i} saw another write"
            );
            assert_eq!(stat_of(&r).version, i);
        }
    }
    // A watch set by a pipelined read fires for the write sent right after it, after the read's reply
    // and before that write's reply.
    for round in 0..50 {
        let w1 = c.send(&Request::SetData(SetDataRequest {
            path: "/k".into(),
            data: Some(Bytes::from("a")),
            version: -1,
        }));
        let r1 = c.send(&Request::GetData(GetDataRequest {
            path: "/k".into(),
            watch: true,
        }));
        let w2 = c.send(&Request::SetData(SetDataRequest {
            path: "/k".into(),
            data: Some(Bytes::from("b")),
            version: -1,
        }));
        assert_eq!(c.recv(OpCode::SetData).unwrap().xid, w1);
        let r = c.recv(OpCode::GetData).unwrap();
        assert_eq!((r.xid, data_of(&r)), (r1, b"a".to_vec()), "round {round}");
        assert!(
            c.events.is_empty(),
            "round {round}: the event came before the read that set the watch"
        );
        let r = c.recv(OpCode::SetData).unwrap();
        assert_eq!(r.xid, w2);
        assert_eq!(
            c.events.len(),
            1,
            "round {round}: the event must precede the reply of the write that fired it"
        );
        let (_, ev) = c.events.remove(0);
        assert_eq!(
            (ev.event_type, ev.path.as_str()),
            (EventType::NodeDataChanged.code(), "/k")
        );
    }
}

#[test]
fn linearizable_reads_setting_puts_every_read_behind_a_barrier() {
    let srv = Roster::start(&["--linearizable-reads", "true"]);
    let mut a = Raw::connect(srv.addr, 10_000);
    let mut b = Raw::connect(srv.addr, 10_000);
    a.create("/lin", b"0", 0);
    for i in 1..=20 {
        assert_eq!(b.set("/lin", format!("{i}").as_bytes(), -1).err, OK);
        assert_eq!(data_of(&a.get("/lin", false)), format!("{i}").as_bytes());
    }
    // Pipelined: a read between two writes sees the first and not the second.
    let mut sent = vec![];
    for i in 0..50 {
        let set = SetDataRequest {
            path: "/lin".into(),
            data: Some(Bytes::from(format!("p{i}"))),
            version: -1,
        };
        sent.push((a.send(&Request::SetData(set)), OpCode::SetData, i));
        sent.push((
            a.send(&Request::GetData(GetDataRequest {
                path: "/lin".into(),
                watch: false,
            })),
            OpCode::GetData,
            i,
        ));
    }
    for (xid, op, i) in sent {
        let r = a.recv(op).unwrap();
        assert_eq!((r.xid, r.err), (xid, OK));
        if op == OpCode::GetData {
            assert_eq!(data_of(&r), format!("p{i}").as_bytes());
        }
    }
}
