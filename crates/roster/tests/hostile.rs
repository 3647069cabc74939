//! What a hostile client on loopback tried (issue 10, item 4), each as a regression test against the
//! real binary: descriptor exhaustion by idle connections, connections that never finish the
//! handshake, a multiRead whose reply would be huge, and a client that never reads its replies.
//! Every load is bounded in count and time; memory is checked through /proc/PID/status (VmHWM).

mod support;

use roster_proto::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

const OK: i32 = 0;

/// Peak resident memory of process `pid`, bytes.
fn peak_rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb * 1024
}

/// Whether the server closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// A node whose descriptor limit is 1024 (soft and hard) held 1,100 idle connections while a session
/// wrote: the log's metadata file failed with EMFILE and the node refused every write for good.
/// Now the connections past the limit minus `fd-reserve` are refused and every write succeeds.
#[test]
fn idle_connections_cannot_exhaust_the_descriptors_storage_needs() {
    let _g = serial();
    let srv = Roster::start_wrapped(
        &["prlimit", "--nofile=1024:1024", "--"],
        &[
            "--handshake-timeout-ms",
            "120000",
            "--snapshot-every",
            "10",
            "--snapshot-log-keep",
            "5",
        ],
    );
    let mut c = Raw::connect(srv.addr, 30_000);
    assert_eq!(c.create("/w", b"", 0).err, OK);
    let mut idle = Vec::new();
    for i in 0..1_100 {
        match TcpStream::connect(srv.addr) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect {i}: {e}"),
        }
        if i % 25 == 0 {
            let r = c.set("/w", format!("{i}").as_bytes(), -1);
            assert_eq!(r.err, OK, "write during connection {i} failed");
        }
    }
    // Every idle connection is in (or refused by) the server now; writes still work.
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..20 {
        let r = c.create(&format!("/w/n{i}"), b"x", 0);
        assert_eq!(r.err, OK, "write {i} with 1,100 idle connections failed");
    }
    let mntr = four_letter(srv.addr, "mntr").unwrap_or_default();
    drop(idle);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(four_letter(srv.addr, "ruok").unwrap(), "imok");
    let mut d = Raw::connect(srv.addr, 30_000);
    assert_eq!(d.create("/after", b"", 0).err, OK);
    assert_eq!(c.set("/w", b"end", -1).err, OK);
    assert!(
        srv.log_text()
            .contains("open file descriptors near the limit"),
        "the refusal is logged; mntr was:\n{mntr}"
    );
    assert!(!srv.log_text().contains("write-ahead log failed"));
}

/// `roster serve` raises its soft descriptor limit to the hard limit.
#[test]
fn serve_raises_its_soft_descriptor_limit() {
    let _g = serial();
    let srv = Roster::start_wrapped(&["prlimit", "--nofile=1024:4096", "--"], &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", srv.pid().unwrap())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let soft: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((soft[3], soft[4]), ("4096", "4096"), "{line}");
}

/// `mntr`'s value for `key`.
fn mntr_value(addr: std::net::SocketAddr, key: &str) -> Option<i64> {
    let text = four_letter(addr, "mntr").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
}

/// 500 connections that never finish the handshake (half of them in the middle of a 64 KiB frame)
/// all stayed open. Now each is closed after `handshake-timeout-ms`, and memory stays bounded.
#[test]
fn connections_without_handshake_are_closed_after_the_timeout() {
    let _g = serial();
    let srv = Roster::start(&["--handshake-timeout-ms", "2000"]);
    let mut conns = Vec::new();
    let mut partial = vec![0u8; 64 * 1024];
    partial[..4].copy_from_slice(&(1_000_000i32).to_be_bytes());
    for i in 0..500 {
        let mut s = TcpStream::connect(srv.addr).unwrap();
        if i % 2 == 0 {
            s.write_all(&partial).unwrap();
        }
        conns.push(s);
    }
    let started = Instant::now();
    for (i, s) in conns.iter_mut().enumerate() {
        let left = Duration::from_secs(10).saturating_sub(started.elapsed());
        assert!(
            closed_within(s, left.max(Duration::from_millis(1))),
            "connection {i} still open {:?} after the flood",
            started.elapsed()
        );
    }
    // A real client is served meanwhile and after.
    let mut c = Raw::connect(srv.addr, 10_000);
    assert_eq!(c.create("/ok", b"", 0).err, OK);
    let peak = peak_rss(srv.pid().unwrap());
    assert!(peak < 300 << 20, "peak RSS {} MB", peak >> 20);
}

/// A client that never reads kept its connection and its whole backlog after its session expired.
/// Now the connection is closed at expiry although the client still reads nothing.
#[test]
fn a_client_that_never_reads_is_closed_at_session_expiry() {
    let _g = serial();
    let srv = Roster::start(&["--min-session-timeout-ms", "1000"]);
    let mut w = Raw::connect(srv.addr, 10_000);
    assert_eq!(w.create("/big", &vec![7u8; 512 * 1024], 0).err, OK);
    let mut c = Raw::connect(srv.addr, 2_000);
    // About 8 MB of replies, more than the socket buffers hold, less than max-outgoing-bytes.
    for _ in 0..16 {
        c.send(&Request::GetData(GetDataRequest {
            path: "/big".into(),
            watch: false,
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    // Counted by mntr: w, c and mntr's own connection.
    assert_eq!(mntr_value(srv.addr, "zk_num_alive_connections"), Some(3));
    // No pings, no reads: the session expires within ~2 s, and its connection must go with it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while mntr_value(srv.addr, "zk_num_alive_connections") != Some(2) {
        assert!(
            Instant::now() < deadline,
            "the connection of the expired session is still open"
        );
        // w keeps its own session alive.
        assert_eq!(w.exists("/big", false).err, OK);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(w.set("/big", b"small", -1).err, OK);
}

/// A client that pipelines requests and never reads their replies is closed once more than
/// `max-outgoing-bytes` is queued for it, and the server's memory stays bounded.
#[test]
fn a_client_that_never_reads_is_closed_past_the_outgoing_bound() {
    let _g = serial();
    let srv = Roster::start(&["--max-outgoing-bytes", "4194304"]);
    let mut w = Raw::connect(srv.addr, 10_000);
    assert_eq!(w.create("/big", &vec![7u8; 1_000_000], 0).err, OK);
    let mut c = Raw::connect(srv.addr, 30_000);
    c.stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // 200 MB of replies asked for; none read.
    let mut req = bytes::BytesMut::new();
    for xid in 1..=200 {
        write_frame(&mut req, |b| {
            RequestHeader {
                xid,
                op_type: OpCode::GetData.code(),
            }
            .encode(b);
            Request::GetData(GetDataRequest {
                path: "/big".into(),
                watch: false,
            })
            .encode_body(b);
        });
    }
    let _ = c.stream.write_all(&req);
    let deadline = Instant::now() + Duration::from_secs(20);
    while mntr_value(srv.addr, "zk_num_alive_connections") != Some(2) {
        assert!(
            Instant::now() < deadline,
            "the slow reader is still connected"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Only what was queued before the close reaches the client.
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut total = 0usize;
    let mut b = vec![0u8; 1 << 16];
    while let Ok(n) = c.stream.read(&mut b) {
        if n == 0 {
            break;
        }
        total += n;
    }
    assert!(total < 40_000_000, "{total} bytes reached the client");
    let peak = peak_rss(srv.pid().unwrap());
    assert!(peak < 400 << 20, "peak RSS {} MB", peak >> 20);
    assert!(srv.log_text().contains("closing a slow reader"));
    assert_eq!(w.set("/big", b"small", -1).err, OK);
}

/// One 18 KB multiRead of getData on a 1 MB node made a 1 GB reply. Now a multiRead whose reply
/// would pass max-frame-bytes is answered MarshallingError, without building it; smaller ones work.
#[test]
fn a_multiread_too_big_to_answer_is_refused_without_building_it() {
    let _g = serial();
    let srv = Roster::start(&[]);
    let mut c = Raw::connect(srv.addr, 30_000);
    assert_eq!(c.create("/big", &vec![7u8; 1_000_000], 0).err, OK);
    let get = || {
        Request::GetData(GetDataRequest {
            path: "/big".into(),
            watch: false,
        })
    };
    let r = c.call(Request::MultiRead((0..300).map(|_| get()).collect()));
    assert_eq!(r.err, ErrorCode::MarshallingError.code());
    let r = c.call(Request::MultiRead(vec![get()]));
    assert_eq!(r.err, OK);
    let Some(Response::Multi(results)) = r.body else {
        panic!("multiRead answered {:?}", r.body)
    };
    assert!(matches!(&results[0], MultiResult::GetData(Some(d), _) if d.len() == 1_000_000));
    let peak = peak_rss(srv.pid().unwrap());
    assert!(peak < 250 << 20, "peak RSS {} MB", peak >> 20);
    assert_eq!(c.get("/big", false).err, OK);
}

/// A node whose storage failed for good stayed up answering `ruok` with `imok` while refusing every
/// write. Now a full disk is retried for a while (storage::RETRY_FOR, 30 s), then the node says it is
/// not serving (ruok silent, srvr and mntr "not currently serving", /readyz 503) and `roster serve`
/// exits non-zero for its supervisor. The disk is a 3 MB tmpfs in a
/// mount namespace of the server's own.
#[test]
fn a_node_whose_storage_failed_exits_instead_of_lingering() {
    let _g = serial();
    let script = r#"for a; do [ "$prev" = --data-dir ] && d=$a; prev=$a; done; mkdir -p "$d" && mount -t tmpfs -o size=3m roster-test "$d" && exec "$@""#;
    let mut srv = Roster::start_wrapped(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ],
        &[],
    );
    let mut c = Raw::connect(srv.addr, 30_000);
    assert_eq!(c.create("/d", b"", 0).err, OK);
    // 8 MB of writes into 3 MB: sent without waiting, the disk fills.
    for i in 0..80 {
        c.send(&Request::Create(CreateRequest {
            path: format!("/d/n{i}"),
            data: Some(vec![1u8; 100_000].into()),
            acl: Acl::open_unsafe(),
            flags: 0,
        }));
    }
    // Once storage failed, the node says so until it exits (for 3 s).
    let deadline = Instant::now() + Duration::from_secs(90);
    while !srv.log_text().contains("this node serves nothing more") {
        assert!(
            Instant::now() < deadline,
            "storage never failed; log:\n{}",
            srv.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        four_letter(srv.addr, "ruok").unwrap(),
        "",
        "ruok must be silent"
    );
    assert!(four_letter(srv.addr, "srvr")
        .unwrap()
        .contains("not currently serving requests"));
    assert!(four_letter(srv.addr, "mntr")
        .unwrap()
        .contains("not currently serving requests"));
    let (code, body) = http_get(srv.admin, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("storage failed"), "{body}");
    let status = srv.wait_exit(Duration::from_secs(30));
    let log = srv.log_text();
    let status = status.unwrap_or_else(|| panic!("the node did not exit; log:\n{log}"));
    assert!(!status.success(), "exit status {status}");
    assert!(log.contains("transient storage error"), "{log}");
    assert!(log.contains("exiting: storage failed"), "{log}");
}

/// Eight connections to the peer port each sent the start of a 16 MiB frame and held 131 MB; a
/// connection that sends nothing was never closed. Now a hello over 64 KiB closes the connection at
/// once, a missing hello after 10 s, and nothing is allocated ahead of the bytes that arrived.
#[test]
fn half_sent_frames_on_the_peer_port_hold_no_memory() {
    let _g = serial();
    let srv = Roster::start(&[]);
    let mut idle = TcpStream::connect(srv.peer).unwrap();
    let started = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(srv.peer).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&(16u32 << 20).to_be_bytes());
        // Up to 4 MiB of the body; the server may close before it has all.
        let _ = s.write_all(&vec![1u8; 4 << 20]);
        conns.push(s);
    }
    for (i, s) in conns.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(5)),
            "peer connection {i} with a half-sent 16 MiB frame is still open"
        );
    }
    assert!(
        closed_within(&mut idle, Duration::from_secs(15)),
        "a peer connection without hello is still open after {:?}",
        started.elapsed()
    );
    let peak = peak_rss(srv.pid().unwrap());
    assert!(peak < 200 << 20, "peak RSS {} MB", peak >> 20);
    assert_eq!(four_letter(srv.addr, "ruok").unwrap(), "imok");
}

/// A client with thousands of requests outstanding (sent at once, read only at the end) gets every
/// reply, in order, while another session is served meanwhile.
#[test]
fn thousands_of_outstanding_requests_lose_nothing_and_starve_no_one() {
    let _g = serial();
    let srv = Roster::start(&[]);
    let mut b = Raw::connect(srv.addr, 30_000);
    assert_eq!(b.create("/q", b"", 0).err, OK);
    let mut a = Raw::connect(srv.addr, 30_000);
    let mut req = bytes::BytesMut::new();
    let n = 4_000;
    for xid in 1..=n {
        write_frame(&mut req, |buf| {
            let (op, r) = if xid % 2 == 0 {
                (
                    OpCode::Create,
                    Request::Create(CreateRequest {
                        path: format!("/q/a{xid}"),
                        data: Some(vec![3u8; 200].into()),
                        acl: Acl::open_unsafe(),
                        flags: 0,
                    }),
                )
            } else {
                (
                    OpCode::GetData,
                    Request::GetData(GetDataRequest {
                        path: "/q".into(),
                        watch: false,
                    }),
                )
            };
            RequestHeader {
                xid,
                op_type: op.code(),
            }
            .encode(buf);
            r.encode_body(buf);
        });
    }
    a.send_bytes(&req).unwrap();
    // The other session is served meanwhile (a generous bound: liveness, not speed).
    for i in 0..20 {
        let t = Instant::now();
        assert_eq!(b.create(&format!("/q/b{i}"), b"", 0).err, OK);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "write {i} of the other session took {:?}",
            t.elapsed()
        );
    }
    for xid in 1..=n {
        let op = if xid % 2 == 0 {
            OpCode::Create
        } else {
            OpCode::GetData
        };
        let r = a.recv(op).unwrap();
        assert_eq!((r.xid, r.err), (xid, OK), "reply {xid}");
    }
    assert_eq!(children_of(&mut b, "/q").len(), n as usize / 2 + 20);
}
