//! Unit tests of the session state machine: the session driven by hand: frames in, frames out, time as a number.

use super::*;
use roster_proto::{decode_exact, ExistsRequest, GetDataRequest, GetDataResponse, Stat};

const TIMEOUT: Duration = Duration::from_millis(3000);

fn start() -> (Session, Instant) {
    let t0 = Instant::now();
    let config = SessionConfig {
        timeout: TIMEOUT,
        session_id: 0,
        password: Bytes::new(),
        chroot: Chroot::default(),
    };
    (Session::new(config, t0), t0)
}

fn handshake(s: &mut Session, now: Instant) {
    let resp = ConnectResponse {
        protocol_version: 0,
        timeout: TIMEOUT.as_millis() as i32,
        session_id: 0x42,
        passwd: Bytes::from_static(&[7; 16]),
        read_only: Some(false),
    };
    s.on_connected(&resp, now);
}

/// Drains the outbox into (xid, opcode, body) triples.
fn sent(s: &mut Session) -> Vec<(i32, i32, Vec<u8>)> {
    let mut out = Vec::new();
    let buf = s.outbox().split();
    let mut rest = &buf[..];
    while let Some((roster_proto::Frame::Packet(body), used)) =
        roster_proto::parse_frame(rest, usize::MAX >> 1, false).unwrap()
    {
        let mut b = body;
        let h = RequestHeader::decode(&mut b).unwrap();
        out.push((h.xid, h.op_type, b.to_vec()));
        rest = &rest[used..];
    }
    out
}

fn reply(xid: i32, zxid: i64, err: i32, body: Option<Response>) -> Vec<u8> {
    let mut out = Vec::new();
    ReplyHeader { xid, zxid, err }.encode(&mut out);
    if let Some(b) = body {
        b.encode(&mut out);
    }
    out
}

fn notification(event_type: EventType, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    ReplyHeader {
        xid: -1,
        zxid: -1,
        err: 0,
    }
    .encode(&mut out);
    WatcherEvent {
        event_type: event_type.code(),
        state: 3,
        path: path.into(),
    }
    .encode(&mut out);
    out
}

fn get_data(path: &str) -> Request {
    Request::GetData(GetDataRequest {
        path: path.into(),
        watch: true,
    })
}

fn events(s: &mut Session) -> Vec<SessionEvent> {
    s.take_events().collect()
}

#[test]
fn replies_match_requests_in_order_and_track_the_zxid() {
    let (mut s, t0) = start();
    assert_eq!(s.connect_request().passwd.len(), 16);
    handshake(&mut s, t0);
    assert_eq!(events(&mut s), [SessionEvent::Connected]);
    let (tx1, mut rx1) = oneshot::channel();
    let (tx2, mut rx2) = oneshot::channel();
    s.submit(get_data("/a"), Effect::None, tx1, t0);
    s.submit(get_data("/b"), Effect::None, tx2, t0);
    let out = sent(&mut s);
    assert_eq!(
        out.iter().map(|o| (o.0, o.1)).collect::<Vec<_>>(),
        [(1, 4), (2, 4)]
    );
    let body = Response::GetData(GetDataResponse {
        data: Some(Bytes::from_static(b"x")),
        stat: Stat::default(),
    });
    s.on_frame(&reply(1, 9, 0, Some(body.clone())), t0);
    s.on_frame(&reply(2, 8, -101, None), t0);
    assert_eq!(rx1.try_recv().unwrap(), Ok(body));
    assert_eq!(rx2.try_recv().unwrap(), Err(Error::Code(ErrorCode::NoNode)));
    assert_eq!(s.last_zxid(), 9);
    assert_eq!(s.connect_request().last_zxid_seen, 9);
}

#[test]
fn an_out_of_order_xid_drops_the_connection() {
    let (mut s, t0) = start();
    handshake(&mut s, t0);
    let (tx, mut rx) = oneshot::channel();
    s.submit(get_data("/a"), Effect::None, tx, t0);
    s.on_frame(&reply(5, 1, 0, None), t0);
    assert_eq!(rx.try_recv().unwrap(), Err(Error::ConnectionLoss));
    assert!(!s.is_connected());
    assert_eq!(s.state(), SessionState::Suspended);
}

#[test]
fn a_notification_reaches_the_watcher_before_the_next_reply() {
    let (mut s, t0) = start();
    handshake(&mut s, t0);
    let (wtx, mut wrx) = oneshot::channel();
    let (tx, mut rx) = oneshot::channel();
    let effect = Effect::Watch {
        kind: OneShotKind::Data,
        path: "/a".into(),
        tx: wtx,
    };
    s.submit(get_data("/a"), effect, tx, t0);
    let body = Response::GetData(GetDataResponse {
        data: Some(Bytes::new()),
        stat: Stat::default(),
    });
    s.on_frame(&reply(1, 3, 0, Some(body)), t0);
    assert!(rx.try_recv().unwrap().is_ok());
    assert!(wrx.try_recv().is_err(), "not fired yet");
    // The change: the notification arrives, then the reply to a later read.
    let (tx2, mut rx2) = oneshot::channel();
    s.submit(get_data("/a"), Effect::None, tx2, t0);
    s.on_frame(&notification(EventType::NodeDataChanged, "/a"), t0);
    assert_eq!(
        wrx.try_recv().unwrap().event_type,
        EventType::NodeDataChanged
    );
    assert!(rx2.try_recv().is_err(), "the reply is not there yet");
}

#[test]
fn exists_on_a_missing_node_sets_an_exist_watch() {
    let (mut s, t0) = start();
    handshake(&mut s, t0);
    let (wtx, mut wrx) = oneshot::channel();
    let (tx, mut rx) = oneshot::channel();
    let req = Request::Exists(ExistsRequest {
        path: "/n".into(),
        watch: true,
    });
    s.submit(
        req,
        Effect::ExistsWatch {
            path: "/n".into(),
            tx: wtx,
        },
        tx,
        t0,
    );
    s.on_frame(&reply(1, 3, ErrorCode::NoNode.code(), None), t0);
    assert_eq!(rx.try_recv().unwrap(), Err(Error::Code(ErrorCode::NoNode)));
    s.on_frame(&notification(EventType::NodeCreated, "/n"), t0);
    assert_eq!(wrx.try_recv().unwrap().event_type, EventType::NodeCreated);
}

#[test]
fn pings_when_idle_and_drops_a_silent_connection() {
    let (mut s, t0) = start();
    handshake(&mut s, t0);
    // readTimeout = 2000 ms, ping every 1000 ms of silence.
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(1000)));
    s.on_timeout(t0 + Duration::from_millis(1000));
    assert_eq!(sent(&mut s)[0].0, xid::PING);
    s.on_frame(
        &reply(xid::PING, 5, 0, None),
        t0 + Duration::from_millis(1001),
    );
    assert_eq!(s.last_zxid(), 0, "ping replies do not move lastZxidSeen");
    let (tx, mut rx) = oneshot::channel();
    s.submit(
        get_data("/a"),
        Effect::None,
        tx,
        t0 + Duration::from_millis(1500),
    );
    s.on_timeout(t0 + Duration::from_millis(3001));
    assert_eq!(rx.try_recv().unwrap(), Err(Error::ConnectionLoss));
    assert_eq!(
        events(&mut s),
        [SessionEvent::Connected, SessionEvent::Suspended]
    );
    // Suspended: expiry one whole timeout after the last thing heard (1001 ms).
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(4001)));
}

#[test]
fn a_suspended_session_expires_on_the_client_after_the_timeout() {
    let (mut s, t0) = start();
    handshake(&mut s, t0);
    s.on_disconnect("test");
    let (tx, mut rx) = oneshot::channel();
    s.submit(get_data("/a"), Effect::None, tx, t0);
    let (wtx, mut wrx) = oneshot::channel();
    s.watches.add_oneshot(OneShotKind::Child, "/w".into(), wtx);
    s.on_timeout(t0 + Duration::from_millis(2999));
    assert_eq!(s.state(), SessionState::Suspended);
    s.on_timeout(t0 + TIMEOUT);
    assert_eq!(s.state(), SessionState::Expired);
    assert_eq!(rx.try_recv().unwrap(), Err(Error::SessionExpired));
    assert_eq!(wrx.try_recv().unwrap().state, KeeperState::Expired);
    assert_eq!(
        events(&mut s),
        [
            SessionEvent::Connected,
            SessionEvent::Suspended,
            SessionEvent::Expired
        ]
    );
    let (tx, mut rx) = oneshot::channel();
    s.submit(get_data("/a"), Effect::None, tx, t0);
    assert_eq!(rx.try_recv().unwrap(), Err(Error::SessionExpired));
}

#[test]
fn reconnect_replays_auth_then_watches_then_queued_calls() {
    let (mut s, t0) = start();
    handshake(&mut s, t0);
    let (atx, mut arx) = oneshot::channel();
    s.submit_auth(
        AuthPacket {
            auth_type: 0,
            scheme: "digest".into(),
            auth: Bytes::from_static(b"u:p"),
        },
        atx,
        t0,
    );
    s.on_frame(&reply(xid::AUTH, 0, 0, None), t0);
    assert_eq!(arx.try_recv().unwrap(), Ok(()));
    let (wtx, _wrx) = oneshot::channel();
    s.watches.add_oneshot(OneShotKind::Data, "/w".into(), wtx);
    s.on_frame(&reply(0, 0, 0, None), t0); // stray: nothing pending
    assert_eq!(s.state(), SessionState::Suspended);
    sent(&mut s);
    let (tx, _rx) = oneshot::channel();
    s.submit(get_data("/q"), Effect::None, tx, t0);
    assert!(sent(&mut s).is_empty(), "queued while disconnected");
    let req = s.connect_request();
    assert_eq!((req.session_id, req.passwd.len()), (0x42, 16));
    handshake(&mut s, t0);
    let out = sent(&mut s);
    let order: Vec<(i32, i32)> = out.iter().map(|o| (o.0, o.1)).collect();
    assert_eq!(order, [(xid::AUTH, 100), (xid::SET_WATCHES, 101), (1, 4)]);
    let sw: roster_proto::SetWatches = decode_exact(&out[1].2).unwrap();
    assert_eq!(sw.data_watches, ["/w"]);
    assert_eq!(
        events(&mut s),
        [
            SessionEvent::Connected,
            SessionEvent::Suspended,
            SessionEvent::Reconnected
        ]
    );
    // The SetWatches reply (xid -8) is matched in order like any other.
    s.on_frame(&reply(xid::SET_WATCHES, 0, 0, None), t0);
    assert!(s.is_connected());
}

#[test]
fn a_zero_timeout_handshake_means_expired() {
    let (mut s, t0) = start();
    let (tx, mut rx) = oneshot::channel();
    s.submit(get_data("/a"), Effect::None, tx, t0);
    s.on_connected(
        &ConnectResponse {
            passwd: Bytes::from_static(&[0; 16]),
            ..Default::default()
        },
        t0,
    );
    assert_eq!(s.state(), SessionState::Expired);
    assert_eq!(rx.try_recv().unwrap(), Err(Error::SessionExpired));
}

#[test]
fn auth_failure_is_terminal() {
    let (mut s, t0) = start();
    handshake(&mut s, t0);
    let (tx, mut rx) = oneshot::channel();
    s.submit(get_data("/a"), Effect::None, tx, t0);
    let (atx, mut arx) = oneshot::channel();
    s.submit_auth(
        AuthPacket {
            auth_type: 0,
            scheme: "nope".into(),
            auth: Bytes::new(),
        },
        atx,
        t0,
    );
    s.on_frame(&reply(xid::AUTH, 0, ErrorCode::AuthFailed.code(), None), t0);
    assert_eq!(arx.try_recv().unwrap(), Err(Error::AuthFailed));
    assert_eq!(rx.try_recv().unwrap(), Err(Error::AuthFailed));
    assert_eq!(s.state(), SessionState::AuthFailed);
}

#[test]
fn close_sends_close_session_and_waits_for_its_reply() {
    let (mut s, t0) = start();
    handshake(&mut s, t0);
    let (tx, mut rx) = oneshot::channel();
    s.close(Some(tx), t0);
    let out = sent(&mut s);
    assert_eq!((out[0].0, out[0].1), (1, OpCode::CloseSession.code()));
    let (tx2, mut rx2) = oneshot::channel();
    s.submit(get_data("/a"), Effect::None, tx2, t0);
    assert_eq!(rx2.try_recv().unwrap(), Err(Error::Closed));
    assert!(rx.try_recv().is_err());
    s.on_frame(&reply(1, 0, 0, None), t0);
    assert_eq!(rx.try_recv().unwrap(), Ok(Response::Empty));
    assert_eq!(s.state(), SessionState::Closed);
}

#[test]
fn xids_wrap_to_one() {
    let (mut s, _) = start();
    s.next_xid = i32::MAX;
    assert_eq!(s.next_xid(), i32::MAX);
    assert_eq!(s.next_xid(), 1);
}
