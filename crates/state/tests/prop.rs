//! Property tests of the state machine as a whole:
//! - determinism: the same txns applied to two fresh states give equal results and byte-equal snapshots;
//! - snapshots: `from_snapshot(to_snapshot(s))` re-encodes to the same bytes, answers reads the same, and
//!   keeps applying the same way; the indexes kept beside the tree stay consistent after every txn;
//! - robustness: arbitrary (garbage) txns and arbitrary snapshot bytes never panic.

use bytes::Bytes;
use proptest::prelude::*;
use roster_proto::*;
use roster_state::{read, State, Txn, TxnOp, WatchTable};

const PATHS: &[&str] = &[
    "/",
    "/a",
    "/a/b",
    "/a/b/c",
    "/b",
    "/b/x",
    "/c",
    "/zookeeper",
    "/zookeeper/config",
    "/a/",
];

fn path() -> impl Strategy<Value = String> {
    prop::sample::select(PATHS).prop_map(String::from)
}

fn acl() -> impl Strategy<Value = Vec<Acl>> {
    prop_oneof![
        4 => Just(Acl::open_unsafe()),
        1 => Just(Acl::read_unsafe()),
        1 => Just(Acl::creator_all()),
        1 => Just(vec![Acl { perms: perms::ALL, id: Id::new("ip", "10.0.0.0/8") }]),
        1 => Just(vec![]),
    ]
}

fn auth() -> impl Strategy<Value = Vec<Id>> {
    prop_oneof![
        3 => Just(vec![]),
        1 => Just(vec![Id::new("digest", &roster_state::digest("u:p"))]),
        1 => Just(vec![Id::new("ip", "10.1.1.1")]),
        1 => Just(vec![Id::new("super", "")]),
    ]
}

fn version() -> impl Strategy<Value = i32> {
    prop_oneof![3 => Just(-1), 1 => 0..3i32]
}

/// A write op over a small path universe, so that ops collide often.
fn write_op() -> impl Strategy<Value = Request> {
    prop_oneof![
        4 => (path(), 0..7i32, acl(), any::<bool>()).prop_map(|(path, flags, acl, two)| {
            let r = CreateRequest { path, data: Some(Bytes::from_static(b"d")), acl, flags };
            if two { Request::Create2(r) } else { Request::Create(r) }
        }),
        1 => (path(), acl()).prop_map(|(path, acl)| Request::CreateContainer(CreateRequest {
            path, data: None, acl, flags: 4 })),
        1 => (path(), 5..7i32, -1..200i64).prop_map(|(path, flags, ttl)| Request::CreateTtl(CreateTtlRequest {
            path, data: Some(Bytes::new()), acl: Acl::open_unsafe(), flags, ttl })),
        3 => (path(), version()).prop_map(|(path, version)| Request::Delete(DeleteRequest { path, version })),
        2 => (path(), version(), any::<u8>()).prop_map(|(path, version, b)| Request::SetData(SetDataRequest {
            path, data: (b > 0).then(|| Bytes::from(vec![b])), version })),
        1 => (path(), acl(), version()).prop_map(|(path, acl, version)| Request::SetAcl(SetAclRequest { path, acl, version })),
        1 => (path(), version()).prop_map(|(path, version)| Request::Check(CheckVersionRequest { path, version })),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        6 => write_op(),
        1 => prop::collection::vec(write_op(), 0..5).prop_map(Request::Multi),
    ]
}

/// (session index, time step, op)
fn txn() -> impl Strategy<Value = (usize, i64, TxnOp)> {
    let op = prop_oneof![
        1 => (1000..5000i32).prop_map(|t| TxnOp::CreateSession { timeout_ms: t, passwd: Bytes::from_static(b"p") }),
        1 => Just(TxnOp::CloseSession),
        8 => (request(), auth()).prop_map(|(request, auth)| TxnOp::Request { request, auth }),
        1 => prop::collection::vec(path(), 0..3).prop_map(|paths| TxnOp::ExpireTtl { paths }),
    ];
    (0..4usize, 0..100i64, op)
}

/// Applies a script of txns, resolving session indexes against the sessions opened so far.
fn run(script: &[(usize, i64, TxnOp)]) -> (State, Vec<String>) {
    let mut s = State::new();
    let mut sessions = vec![0i64];
    let mut time = 1_000_000;
    let mut results = Vec::new();
    for (i, (si, dt, op)) in script.iter().enumerate() {
        time += dt;
        let session_id = sessions[si % sessions.len()];
        let applied = s.apply(
            i as i64 + 1,
            &Txn {
                session_id,
                time,
                op: op.clone(),
            },
        );
        if let roster_state::TxnResult::Session { session_id, .. } = applied.result {
            sessions.push(session_id);
        }
        results.push(format!("{applied:?}"));
    }
    (s, results)
}

/// Every read the paths universe allows, as text.
fn reads(s: &State) -> Vec<String> {
    let mut w = WatchTable::new();
    let mut out = Vec::new();
    for p in PATHS {
        for req in [
            Request::GetData(GetDataRequest {
                path: p.to_string(),
                watch: true,
            }),
            Request::GetChildren2(GetChildren2Request {
                path: p.to_string(),
                watch: true,
            }),
            Request::Exists(ExistsRequest {
                path: p.to_string(),
                watch: true,
            }),
            Request::GetAcl(GetAclRequest {
                path: p.to_string(),
            }),
            Request::GetAllChildrenNumber(GetAllChildrenNumberRequest {
                path: p.to_string(),
            }),
        ] {
            out.push(format!("{:?}", read(s, &mut w, 1, 0, &req, &[])));
        }
    }
    for (id, _) in s.sessions() {
        let req = Request::GetEphemerals(GetEphemeralsRequest {
            prefix_path: "/".into(),
        });
        out.push(format!("{:?}", read(s, &mut w, 1, id, &req, &[])));
    }
    out.push(format!(
        "{:?} {} {} {}",
        s.ttl_candidates(i64::MAX),
        s.node_count(),
        s.ephemeral_count(),
        s.last_zxid()
    ));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn deterministic_and_snapshot_round_trip(script in prop::collection::vec(txn(), 0..60)) {
        let (a, ra) = run(&script);
        let (b, rb) = run(&script);
        prop_assert_eq!(ra, rb);
        let bytes = a.to_snapshot();
        prop_assert_eq!(&bytes, &b.to_snapshot());
        prop_assert_eq!(a.check_invariants(), Ok(()));

        let restored = State::from_snapshot(&bytes).unwrap();
        prop_assert_eq!(&restored.to_snapshot(), &bytes);
        prop_assert_eq!(reads(&restored), reads(&a));

        // The restored state keeps applying exactly like the original.
        let mut a2 = a.clone();
        let mut r2 = restored;
        let tail = run(&script).1.len() as i64;
        for (i, (_, _, op)) in script.iter().enumerate() {
            let txn = Txn { session_id: a.sessions().next().map(|(id, _)| id).unwrap_or(0), time: 2_000_000, op: op.clone() };
            let z = tail + 1 + i as i64;
            prop_assert_eq!(a2.apply(z, &txn), r2.apply(z, &txn));
        }
        prop_assert_eq!(a2.to_snapshot(), r2.to_snapshot());
        // The clone taken above was not disturbed by applying to the copy.
        prop_assert_eq!(a.to_snapshot(), bytes);
    }

    #[test]
    fn invariants_hold_after_every_txn(script in prop::collection::vec(txn(), 0..40)) {
        let mut s = State::new();
        let mut sessions = vec![0i64];
        for (i, (si, dt, op)) in script.iter().enumerate() {
            let applied = s.apply(i as i64 + 1, &Txn { session_id: sessions[si % sessions.len()], time: *dt, op: op.clone() });
            if let roster_state::TxnResult::Session { session_id, .. } = applied.result {
                sessions.push(session_id);
            }
            prop_assert_eq!(s.check_invariants(), Ok(()));
        }
    }

    #[test]
    fn garbage_never_panics(
        ops in prop::collection::vec((any::<i64>(), 0..6usize, any::<i64>(), garbage_op()), 0..30),
        zxids in prop::collection::vec(prop_oneof![9 => Just(None), 1 => any::<i64>().prop_map(Some)], 30),
    ) {
        let mut s = State::new();
        let mut w = WatchTable::new();
        let mut sessions = Vec::new();
        for (i, (raw_session, pick, time, op)) in ops.into_iter().enumerate() {
            // Mostly a live session (so requests get past the session check), sometimes anything.
            let session_id = if pick < 5 && !sessions.is_empty() { sessions[pick % sessions.len()] } else { raw_session };
            let zxid = zxids[i].unwrap_or(s.last_zxid().saturating_add(1));
            let applied = s.apply(zxid, &Txn { session_id, time, op: op.clone() });
            if let roster_state::TxnResult::Session { session_id, .. } = applied.result {
                sessions.push(session_id);
            }
            w.trigger(&applied.changes);
            if let TxnOp::Request { request, auth } = &op {
                let _ = read(&s, &mut w, (i % 3) as u64, session_id, request, auth);
            }
        }
        prop_assert_eq!(s.check_invariants(), Ok(()));
    }

    #[test]
    fn garbage_snapshots_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4)) {
        let _ = State::from_snapshot(&bytes);
        let mut with_header = b"RSTS\0\0\0\x01".to_vec();
        with_header.extend_from_slice(&bytes);
        let _ = State::from_snapshot(&with_header);
        // Corrupt a real snapshot.
        let (s, _) = run(&[]);
        let mut real = s.to_snapshot();
        for (i, b) in flips {
            let n = real.len();
            real[i % n] ^= b;
        }
        if let Ok(loaded) = State::from_snapshot(&real) {
            prop_assert_eq!(loaded.check_invariants(), Ok(()));
        }
    }
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        path(),
        ".{0,12}",
        "/[a-c/.\\x00\\x01\u{1F600}\u{E000}]{0,8}",
    ]
}

fn garbage_acl() -> impl Strategy<Value = Vec<Acl>> {
    prop::collection::vec(
        (
            any::<i32>(),
            prop::sample::select(&["world", "auth", "digest", "ip", "super", "x"][..]),
            any_string(),
        )
            .prop_map(|(perms, scheme, id)| Acl {
                perms,
                id: Id::new(scheme, &id),
            }),
        0..3,
    )
}

fn garbage_request() -> impl Strategy<Value = Request> {
    let leaf = prop_oneof![
        (any_string(), any::<i32>(), garbage_acl()).prop_map(|(path, flags, acl)| Request::Create(
            CreateRequest {
                path,
                data: Some(Bytes::new()),
                acl,
                flags
            }
        )),
        (any_string(), any::<i32>(), garbage_acl()).prop_map(|(path, flags, acl)| {
            Request::CreateContainer(CreateRequest {
                path,
                data: Some(Bytes::new()),
                acl,
                flags,
            })
        }),
        (any_string(), any::<i32>(), any::<i64>()).prop_map(|(path, flags, ttl)| {
            Request::CreateTtl(CreateTtlRequest {
                path,
                data: Some(Bytes::new()),
                acl: Acl::open_unsafe(),
                flags,
                ttl,
            })
        }),
        (any_string(), any::<i32>())
            .prop_map(|(path, version)| Request::Delete(DeleteRequest { path, version })),
        (any_string(), any::<i32>()).prop_map(|(path, version)| Request::SetData(SetDataRequest {
            path,
            data: Some(Bytes::new()),
            version
        })),
        (any_string(), garbage_acl(), any::<i32>())
            .prop_map(|(path, acl, version)| Request::SetAcl(SetAclRequest { path, acl, version })),
        (any_string(), any::<i32>())
            .prop_map(|(path, version)| Request::Check(CheckVersionRequest { path, version })),
        (any_string(), any::<bool>())
            .prop_map(|(path, watch)| Request::GetData(GetDataRequest { path, watch })),
        (any_string(), any::<bool>())
            .prop_map(|(path, watch)| Request::Exists(ExistsRequest { path, watch })),
        any_string()
            .prop_map(|prefix_path| Request::GetEphemerals(GetEphemeralsRequest { prefix_path })),
        any_string()
            .prop_map(|path| Request::GetAllChildrenNumber(GetAllChildrenNumberRequest { path })),
        (any_string(), any::<i32>())
            .prop_map(|(path, mode)| Request::AddWatch(AddWatchRequest { path, mode })),
        (any_string(), any::<i32>()).prop_map(|(path, watcher_type)| Request::RemoveWatches(
            RemoveWatchesRequest { path, watcher_type }
        )),
        Just(Request::CloseSession),
        Just(Request::Ping),
        Just(Request::WhoAmI),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Request::Multi),
            prop::collection::vec(inner, 0..4).prop_map(Request::MultiRead),
        ]
    })
}

fn garbage_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        1 => (any::<i32>(), prop::collection::vec(any::<u8>(), 0..4))
            .prop_map(|(timeout_ms, p)| TxnOp::CreateSession { timeout_ms, passwd: Bytes::from(p) }),
        1 => Just(TxnOp::CloseSession),
        6 => (garbage_request(), prop::collection::vec((any_string(), any_string()).prop_map(|(s, i)| Id { scheme: s, id: i }), 0..2))
            .prop_map(|(request, auth)| TxnOp::Request { request, auth }),
        1 => prop::collection::vec(any_string(), 0..3).prop_map(|paths| TxnOp::ExpireTtl { paths }),
    ]
}

#[test]
fn cheap_clone_is_independent() {
    let mut s = State::new();
    let open = Txn {
        session_id: 0,
        time: 1,
        op: TxnOp::CreateSession {
            timeout_ms: 1000,
            passwd: Bytes::new(),
        },
    };
    let sid = match s.apply(1, &open).result {
        roster_state::TxnResult::Session { session_id, .. } => session_id,
        r => panic!("{r:?}"),
    };
    for i in 0..1000 {
        let req = Request::Create(CreateRequest {
            path: format!("/n{i}"),
            data: Some(Bytes::from_static(b"x")),
            acl: Acl::open_unsafe(),
            flags: 0,
        });
        s.apply(
            i + 2,
            &Txn {
                session_id: sid,
                time: 2,
                op: TxnOp::Request {
                    request: req,
                    auth: vec![],
                },
            },
        );
    }
    // 1000 nodes with one ACL list share it.
    assert_eq!(s.tree().acl_table().len(), 2);
    let snap = s.clone();
    let before = snap.to_snapshot();
    let req = Request::Delete(DeleteRequest {
        path: "/n7".into(),
        version: -1,
    });
    s.apply(
        5000,
        &Txn {
            session_id: sid,
            time: 3,
            op: TxnOp::Request {
                request: req,
                auth: vec![],
            },
        },
    );
    assert_eq!(snap.to_snapshot(), before);
    assert_ne!(s.to_snapshot(), before);
    assert_eq!(s.node_count(), 4 + 999);
}
