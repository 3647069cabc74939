//! Codec tests: every record and request/response variant round-trips, every strict prefix of a frame
//! parses as incomplete, hostile lengths are rejected without allocating, and handshake sizes match
//! the sizes ZooKeeper and ClickHouse Keeper document.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use roster_proto::*;

fn stat(n: i64) -> Stat {
    Stat {
        czxid: n,
        mzxid: n + 1,
        ctime: n * 1000,
        mtime: n * 1000 + 5,
        version: 3,
        cversion: -1,
        aversion: 7,
        ephemeral_owner: i64::MIN,
        data_length: 100,
        num_children: 2,
        pzxid: n + 2,
    }
}

fn acl() -> Vec<Acl> {
    vec![
        Acl {
            perms: perms::ALL,
            id: Id::new("world", "anyone"),
        },
        Acl {
            perms: perms::READ,
            id: Id::new("digest", "u:abc="),
        },
    ]
}

fn roundtrip<T: Jute + PartialEq + std::fmt::Debug>(v: T) {
    let bytes = jute::to_vec(&v);
    let back: T = decode_exact(&bytes).expect("decodes");
    assert_eq!(back, v);
    // Every strict prefix of a record is malformed, never a panic.
    for i in 0..bytes.len() {
        assert!(
            decode_exact::<T>(&bytes[..i]).is_err(),
            "prefix {i} of {v:?} decoded"
        );
    }
}

#[test]
fn records_roundtrip() {
    let data = Bytes::from_static(b"hello");
    roundtrip(stat(5));
    roundtrip(Id::new("ip", "127.0.0.1/8"));
    roundtrip(RequestHeader { xid: 7, op_type: 4 });
    roundtrip(ReplyHeader {
        xid: -1,
        zxid: 1 << 40,
        err: -101,
    });
    roundtrip(MultiHeader {
        op_type: 1,
        done: false,
        err: -1,
    });
    roundtrip(AuthPacket {
        auth_type: 0,
        scheme: "digest".into(),
        auth: Bytes::from_static(b"u:p"),
    });
    roundtrip(SetWatches {
        relative_zxid: 9,
        data_watches: vec!["/a".into()],
        exist_watches: vec![],
        child_watches: vec!["/".into(), "/b".into()],
    });
    roundtrip(SetWatches2 {
        relative_zxid: 9,
        data_watches: vec!["/a".into()],
        exist_watches: vec!["/x".into()],
        child_watches: vec![],
        persistent_watches: vec!["/p".into()],
        persistent_recursive_watches: vec!["/r".into()],
    });
    roundtrip(GetDataRequest {
        path: "/a".into(),
        watch: true,
    });
    roundtrip(SetDataRequest {
        path: "/a".into(),
        data: Some(data.clone()),
        version: -1,
    });
    roundtrip(ReconfigRequest {
        joining_servers: "a".into(),
        leaving_servers: "b".into(),
        new_members: String::new(),
        cur_config_id: -1,
    });
    roundtrip(SetDataResponse { stat: stat(1) });
    roundtrip(GetSaslRequest {
        token: data.clone(),
    });
    roundtrip(SetSaslResponse {
        token: Bytes::new(),
    });
    roundtrip(CreateRequest {
        path: "/a".into(),
        data: Some(data.clone()),
        acl: acl(),
        flags: 3,
    });
    roundtrip(CreateTtlRequest {
        path: "/a".into(),
        data: Some(data.clone()),
        acl: acl(),
        flags: 5,
        ttl: 1000,
    });
    roundtrip(DeleteRequest {
        path: "/a".into(),
        version: 2,
    });
    roundtrip(GetChildrenRequest {
        path: "/".into(),
        watch: false,
    });
    roundtrip(GetAllChildrenNumberRequest { path: "/".into() });
    roundtrip(GetChildren2Request {
        path: "/".into(),
        watch: true,
    });
    roundtrip(CheckVersionRequest {
        path: "/a".into(),
        version: 0,
    });
    roundtrip(SyncRequest { path: "/".into() });
    roundtrip(SyncResponse { path: "/".into() });
    roundtrip(GetAclRequest { path: "/".into() });
    roundtrip(SetAclRequest {
        path: "/".into(),
        acl: acl(),
        version: 0,
    });
    roundtrip(SetAclResponse { stat: stat(2) });
    roundtrip(AddWatchRequest {
        path: "/".into(),
        mode: 1,
    });
    roundtrip(WatcherEvent {
        event_type: 4,
        state: 3,
        path: "/a".into(),
    });
    roundtrip(ErrorResponse { err: -101 });
    roundtrip(CreateResponse {
        path: "/a0000000001".into(),
    });
    roundtrip(Create2Response {
        path: "/a".into(),
        stat: stat(3),
    });
    roundtrip(ExistsRequest {
        path: "/a".into(),
        watch: true,
    });
    roundtrip(ExistsResponse { stat: stat(4) });
    roundtrip(GetDataResponse {
        data: Some(data.clone()),
        stat: stat(5),
    });
    roundtrip(GetChildrenResponse {
        children: vec!["a".into(), "b".into()],
    });
    roundtrip(GetAllChildrenNumberResponse { total_number: 12 });
    roundtrip(GetChildren2Response {
        children: vec![],
        stat: stat(6),
    });
    roundtrip(GetAclResponse {
        acl: acl(),
        stat: stat(7),
    });
    roundtrip(CheckWatchesRequest {
        path: "/a".into(),
        watcher_type: 3,
    });
    roundtrip(RemoveWatchesRequest {
        path: "/a".into(),
        watcher_type: 1,
    });
    roundtrip(GetEphemeralsRequest {
        prefix_path: "/".into(),
    });
    roundtrip(GetEphemeralsResponse {
        ephemerals: vec!["/e".into()],
    });
    roundtrip(ClientInfo {
        auth_scheme: "ip".into(),
        user: "127.0.0.1".into(),
    });
    roundtrip(WhoAmIResponse {
        client_info: vec![ClientInfo {
            auth_scheme: "ip".into(),
            user: "1".into(),
        }],
    });
}

#[test]
fn handshake_sizes_and_optional_read_only() {
    let mut req = ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0,
        timeout: 30000,
        session_id: 0,
        passwd: Bytes::from(vec![0u8; 16]),
        read_only: None,
    };
    // Sizes from ClickHouse Keeper's CLIENT_HANDSHAKE_LENGTH[_WITH_READONLY].
    assert_eq!(jute::to_vec(&req).len(), 44);
    assert_eq!(
        decode_exact::<ConnectRequest>(&jute::to_vec(&req))
            .unwrap()
            .read_only,
        None
    );
    req.read_only = Some(false);
    assert_eq!(jute::to_vec(&req).len(), 45);
    assert_eq!(
        decode_exact::<ConnectRequest>(&jute::to_vec(&req)).unwrap(),
        req
    );
    let mut resp = ConnectResponse {
        protocol_version: 0,
        timeout: 30000,
        session_id: 0x1234,
        passwd: Bytes::from(vec![7u8; 16]),
        read_only: None,
    };
    assert_eq!(jute::to_vec(&resp).len(), 36);
    resp.read_only = Some(false);
    assert_eq!(jute::to_vec(&resp).len(), 37);
    assert_eq!(
        decode_exact::<ConnectResponse>(&jute::to_vec(&resp)).unwrap(),
        resp
    );
}

/// Golden bytes: a getData request for "/a" with a watch, as every client encodes it.
#[test]
fn golden_get_data_frame() {
    let mut out = BytesMut::new();
    write_frame(&mut out, |b| {
        RequestHeader {
            xid: 1,
            op_type: OpCode::GetData.code(),
        }
        .encode(b);
        Request::GetData(GetDataRequest {
            path: "/a".into(),
            watch: true,
        })
        .encode_body(b);
    });
    assert_eq!(
        &out[..],
        &[0, 0, 0, 15, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 2, b'/', b'a', 1][..]
    );
}

fn all_requests() -> Vec<Request> {
    let create = CreateRequest {
        path: "/c".into(),
        data: Some(Bytes::from_static(b"d")),
        acl: acl(),
        flags: 0,
    };
    vec![
        Request::Create(create.clone()),
        Request::Create2(create.clone()),
        Request::CreateContainer(CreateRequest {
            flags: 4,
            ..create.clone()
        }),
        Request::CreateTtl(CreateTtlRequest {
            path: "/t".into(),
            data: Some(Bytes::new()),
            acl: acl(),
            flags: 5,
            ttl: 10,
        }),
        Request::Delete(DeleteRequest {
            path: "/c".into(),
            version: -1,
        }),
        Request::Exists(ExistsRequest {
            path: "/c".into(),
            watch: true,
        }),
        Request::GetData(GetDataRequest {
            path: "/c".into(),
            watch: false,
        }),
        Request::SetData(SetDataRequest {
            path: "/c".into(),
            data: Some(Bytes::from_static(b"x")),
            version: 1,
        }),
        Request::GetAcl(GetAclRequest { path: "/c".into() }),
        Request::SetAcl(SetAclRequest {
            path: "/c".into(),
            acl: acl(),
            version: -1,
        }),
        Request::GetChildren(GetChildrenRequest {
            path: "/".into(),
            watch: true,
        }),
        Request::GetChildren2(GetChildren2Request {
            path: "/".into(),
            watch: false,
        }),
        Request::Check(CheckVersionRequest {
            path: "/c".into(),
            version: 2,
        }),
        Request::Multi(vec![
            Request::Create(create.clone()),
            Request::SetData(SetDataRequest {
                path: "/c".into(),
                data: Some(Bytes::new()),
                version: -1,
            }),
            Request::Check(CheckVersionRequest {
                path: "/c".into(),
                version: 1,
            }),
            Request::Delete(DeleteRequest {
                path: "/c".into(),
                version: -1,
            }),
        ]),
        Request::Multi(vec![]),
        Request::MultiRead(vec![
            Request::GetData(GetDataRequest {
                path: "/c".into(),
                watch: false,
            }),
            Request::GetChildren(GetChildrenRequest {
                path: "/".into(),
                watch: false,
            }),
        ]),
        Request::Sync(SyncRequest { path: "/".into() }),
        Request::Ping,
        Request::Auth(AuthPacket {
            auth_type: 0,
            scheme: "digest".into(),
            auth: Bytes::from_static(b"a:b"),
        }),
        Request::SetWatches(SetWatches::default()),
        Request::SetWatches2(SetWatches2::default()),
        Request::AddWatch(AddWatchRequest {
            path: "/".into(),
            mode: 0,
        }),
        Request::RemoveWatches(RemoveWatchesRequest {
            path: "/".into(),
            watcher_type: 3,
        }),
        Request::CheckWatches(CheckWatchesRequest {
            path: "/".into(),
            watcher_type: 2,
        }),
        Request::GetEphemerals(GetEphemeralsRequest {
            prefix_path: "/".into(),
        }),
        Request::GetAllChildrenNumber(GetAllChildrenNumberRequest { path: "/".into() }),
        Request::WhoAmI,
        Request::CloseSession,
        Request::Reconfig(ReconfigRequest::default()),
        Request::Sasl(GetSaslRequest {
            token: Bytes::from_static(b"t"),
        }),
    ]
}

#[test]
fn requests_roundtrip_by_opcode_and_frames_need_every_byte() {
    for req in all_requests() {
        let mut body = Vec::new();
        req.encode_body(&mut body);
        assert_eq!(Request::decode(req.op_code(), &body).unwrap(), req);
        // Framed: every strict prefix is incomplete, the whole frame parses.
        let mut frame = BytesMut::new();
        write_frame(&mut frame, |b| {
            RequestHeader {
                xid: 3,
                op_type: req.op_code().code(),
            }
            .encode(b);
            req.encode_body(b);
        });
        for i in 0..frame.len() {
            assert_eq!(
                parse_frame(&frame[..i], DEFAULT_MAX_FRAME, false).unwrap(),
                None,
                "{req:?} prefix {i}"
            );
        }
        let (f, used) = parse_frame(&frame, DEFAULT_MAX_FRAME, false)
            .unwrap()
            .unwrap();
        assert_eq!(used, frame.len());
        assert!(matches!(f, Frame::Packet(p) if p.len() == frame.len() - 4));
        // Trailing bytes after a body are ignored, as ZooKeeper ignores them.
        body.extend_from_slice(&[0, 1, 0xff]);
        assert_eq!(Request::decode(req.op_code(), &body).unwrap(), req);
    }
}

#[test]
fn multi_refuses_foreign_ops() {
    let mut body = Vec::new();
    Request::Multi(vec![Request::GetData(GetDataRequest {
        path: "/".into(),
        watch: false,
    })])
    .encode_body(&mut body);
    assert!(Request::decode(OpCode::Multi, &body).is_err());
    let mut body = Vec::new();
    Request::MultiRead(vec![Request::Delete(DeleteRequest {
        path: "/".into(),
        version: 0,
    })])
    .encode_body(&mut body);
    assert!(Request::decode(OpCode::MultiRead, &body).is_err());
}

/// The request classes: exactly the seven ZooKeeper write ops may sit in a multi, all of them are
/// writes; data reads are never writes; a multi that holds a foreign op does not decode.
#[test]
fn request_classes() {
    let in_multi: Vec<OpCode> = all_requests()
        .iter()
        .filter(|r| r.allowed_in_multi())
        .map(Request::op_code)
        .collect();
    for op in [
        OpCode::Create,
        OpCode::Create2,
        OpCode::CreateContainer,
        OpCode::CreateTtl,
        OpCode::Delete,
        OpCode::SetData,
        OpCode::Check,
    ] {
        assert!(in_multi.contains(&op), "{op:?} is allowed in a multi");
    }
    for req in all_requests() {
        if req.allowed_in_multi() {
            assert!(req.is_write(), "{req:?} in a multi but not a write");
        }
        if req.is_data_read() {
            assert!(!req.is_write(), "{req:?} both a data read and a write");
        }
        // A multi that holds this op decodes exactly when the op is allowed in one.
        let mut body = Vec::new();
        Request::Multi(vec![req.clone()]).encode_body(&mut body);
        assert_eq!(
            Request::decode(OpCode::Multi, &body).is_ok(),
            req.allowed_in_multi(),
            "{req:?}"
        );
    }
    assert!(all_requests()
        .iter()
        .any(|r| matches!(r, Request::GetData(_)) && r.is_data_read()));
    assert!(!Request::CloseSession.is_data_read());
}

#[test]
fn responses_roundtrip() {
    let cases = vec![
        (
            OpCode::Create,
            Response::Create(CreateResponse { path: "/a".into() }),
        ),
        (
            OpCode::Create2,
            Response::Create2(Create2Response {
                path: "/a".into(),
                stat: stat(1),
            }),
        ),
        (OpCode::Exists, Response::Stat(stat(2))),
        (
            OpCode::GetData,
            Response::GetData(GetDataResponse {
                data: Some(Bytes::from_static(b"x")),
                stat: stat(3),
            }),
        ),
        (
            OpCode::GetAcl,
            Response::GetAcl(GetAclResponse {
                acl: acl(),
                stat: stat(4),
            }),
        ),
        (
            OpCode::GetChildren,
            Response::GetChildren(GetChildrenResponse {
                children: vec!["a".into()],
            }),
        ),
        (
            OpCode::GetChildren2,
            Response::GetChildren2(GetChildren2Response {
                children: vec![],
                stat: stat(5),
            }),
        ),
        (
            OpCode::Sync,
            Response::Sync(SyncResponse { path: "/".into() }),
        ),
        (
            OpCode::GetEphemerals,
            Response::GetEphemerals(GetEphemeralsResponse {
                ephemerals: vec!["/e".into()],
            }),
        ),
        (
            OpCode::GetAllChildrenNumber,
            Response::AllChildrenNumber(GetAllChildrenNumberResponse { total_number: 3 }),
        ),
        (
            OpCode::WhoAmI,
            Response::WhoAmI(WhoAmIResponse {
                client_info: vec![],
            }),
        ),
        (
            OpCode::Sasl,
            Response::Sasl(SetSaslResponse {
                token: Bytes::new(),
            }),
        ),
        (OpCode::AddWatch, Response::Error(ErrorResponse { err: 0 })),
        (OpCode::Delete, Response::Empty),
        (
            OpCode::Multi,
            Response::Multi(vec![
                MultiResult::Create("/a".into()),
                MultiResult::Create2("/b".into(), stat(6)),
                MultiResult::Delete,
                MultiResult::SetData(stat(7)),
                MultiResult::Check,
                MultiResult::Error(ErrorCode::Ok),
                MultiResult::Error(ErrorCode::NoNode),
                MultiResult::Error(ErrorCode::RuntimeInconsistency),
            ]),
        ),
        (
            OpCode::MultiRead,
            Response::Multi(vec![
                MultiResult::GetData(Some(Bytes::from_static(b"v")), stat(8)),
                MultiResult::GetChildren(vec!["x".into()]),
                MultiResult::Error(ErrorCode::NoNode),
            ]),
        ),
    ];
    for (op, resp) in cases {
        let mut body = Vec::new();
        resp.encode(&mut body);
        assert_eq!(Response::decode(op, &body).unwrap(), resp, "{op:?}");
    }
}

#[test]
fn four_letter_words_only_first() {
    let (f, used) = parse_frame(b"ruok", DEFAULT_MAX_FRAME, true)
        .unwrap()
        .unwrap();
    assert_eq!((f, used), (Frame::FourLetterWord("ruok"), 4));
    // Not the first frame: "ruok" as a length is far above the limit.
    assert!(parse_frame(b"ruok", DEFAULT_MAX_FRAME, false).is_err());
    assert!(parse_frame(b"xxxx", DEFAULT_MAX_FRAME, true).is_err());
}

#[test]
fn bad_lengths_are_errors() {
    assert!(parse_frame(&(-1i32).to_be_bytes(), DEFAULT_MAX_FRAME, false).is_err());
    assert!(parse_frame(
        &((DEFAULT_MAX_FRAME + 1) as i32).to_be_bytes(),
        DEFAULT_MAX_FRAME,
        false
    )
    .is_err());
    // A string claiming 2 GiB inside a 10-byte body is malformed, not an allocation.
    let mut body = Vec::new();
    body.extend_from_slice(&i32::MAX.to_be_bytes());
    body.extend_from_slice(b"abcdef");
    assert!(Request::decode(OpCode::GetData, &body).is_err());
    // A vector claiming a huge count likewise.
    let mut body = Vec::new();
    "/".to_string().encode(&mut body);
    body.extend_from_slice(&(1i32 << 30).to_be_bytes());
    assert!(
        Request::decode(OpCode::GetAcl, &body).is_err()
            || Request::decode(OpCode::SetAcl, &body).is_err()
    );
}

proptest! {
    #[test]
    fn random_bytes_never_panic(op in -20i32..120, bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(op) = OpCode::from_i32(op) {
            let _ = Request::decode(op, &bytes);
            let _ = Response::decode(op, &bytes);
        }
        let _ = decode_exact::<ConnectRequest>(&bytes);
        let _ = parse_frame(&bytes, DEFAULT_MAX_FRAME, true);
    }

    #[test]
    fn strings_and_buffers_roundtrip(s in ".{0,40}", d in proptest::collection::vec(any::<u8>(), 0..100), v in any::<i32>()) {
        let r = SetDataRequest { path: s, data: Some(Bytes::from(d)), version: v };
        let bytes = jute::to_vec(&r);
        prop_assert_eq!(decode_exact::<SetDataRequest>(&bytes).unwrap(), r);
    }
}

#[test]
fn null_data_is_length_minus_one_and_stays_apart_from_empty() {
    // getData reply of a null node: data length -1, then the Stat (ZooKeeper's GetDataResponse).
    let null = GetDataResponse {
        data: None,
        stat: stat(1),
    };
    let bytes = jute::to_vec(&null);
    assert_eq!(&bytes[..4], &[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(bytes.len(), 4 + jute::to_vec(&stat(1)).len());
    assert_eq!(decode_exact::<GetDataResponse>(&bytes).unwrap(), null);
    let empty = GetDataResponse {
        data: Some(Bytes::new()),
        stat: stat(1),
    };
    assert_eq!(&jute::to_vec(&empty)[..4], &[0, 0, 0, 0]);
    assert_eq!(
        decode_exact::<GetDataResponse>(&jute::to_vec(&empty)).unwrap(),
        empty
    );
    // A create and a setData with a null buffer decode as null.
    let create = [
        &[0, 0, 0, 2, b'/', b'n'][..],
        &[0xff, 0xff, 0xff, 0xff],
        &[0, 0, 0, 0],
        &[0, 0, 0, 0],
    ]
    .concat();
    match Request::decode(OpCode::Create, &create).unwrap() {
        Request::Create(c) => assert_eq!((c.path.as_str(), c.data), ("/n", None)),
        r => panic!("{r:?}"),
    }
    let set = [&[0, 0, 0, 2, b'/', b'n'][..], &[0xff; 4], &[0, 0, 0, 3]].concat();
    match Request::decode(OpCode::SetData, &set).unwrap() {
        Request::SetData(s) => assert_eq!((s.data, s.version), (None, 3)),
        r => panic!("{r:?}"),
    }
    // Inside a multiRead reply too.
    let multi = Response::Multi(vec![MultiResult::GetData(None, stat(2))]);
    let mut out = Vec::new();
    multi.encode(&mut out);
    assert_eq!(&out[9..13], &[0xff; 4]);
    assert_eq!(Response::decode(OpCode::MultiRead, &out).unwrap(), multi);
    // Other negative lengths stay malformed.
    let bad = [
        &[0, 0, 0, 2, b'/', b'n'][..],
        &[0xff, 0xff, 0xff, 0xfe],
        &[0, 0, 0, 3],
    ]
    .concat();
    assert!(Request::decode(OpCode::SetData, &bad).is_err());
}
