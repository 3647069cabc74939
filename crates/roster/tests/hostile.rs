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
        &["--handshake-timeout-ms", "120000"],
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
        srv.log_text().contains("open file descriptors near the limit"),
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
