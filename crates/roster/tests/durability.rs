//! Durability at the process level: a torn tail of the log is dropped on restart with every
//! acknowledged write intact; damage inside committed data stops the node with a message naming the
//! file; snapshots are written and the node restarts from snapshot plus log.

mod support;

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::Command;
use support::*;

fn segments(srv: &Roster) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(srv.dir.path().join("data/log"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().map(|x| x == "seg").unwrap_or(false))
        .collect();
    v.sort();
    v
}

/// Where the records of a segment end: the log keeps zero-filled room preallocated after them,
/// which a `kill -9` leaves in place (records end in a payload byte, never zero, in these tests).
fn records_end(seg: &PathBuf) -> u64 {
    let data = std::fs::read(seg).unwrap();
    data.iter()
        .rposition(|b| *b != 0)
        .map_or(0, |p| p as u64 + 1)
}

fn write_some(srv: &Roster, prefix: &str, n: usize) {
    let mut c = Raw::connect(srv.addr, 10_000);
    assert_eq!(c.create(prefix, b"", 0).err, 0);
    for i in 0..n {
        assert_eq!(
            c.create(&format!("{prefix}/n{i:04}"), format!("v{i}").as_bytes(), 0)
                .err,
            0
        );
    }
}

fn check_all(srv: &Roster, prefix: &str, n: usize) {
    let mut c = Raw::connect(srv.addr, 10_000);
    for i in 0..n {
        let g = c.get(&format!("{prefix}/n{i:04}"), false);
        assert_eq!(g.err, 0, "{prefix}/n{i:04} lost");
        assert_eq!(data_of(&g), format!("v{i}").as_bytes());
    }
}

#[test]
fn torn_tail_is_dropped_and_acknowledged_writes_survive() {
    let mut srv = Roster::start(&[]);
    write_some(&srv, "/t", 50);
    srv.kill9();
    let last = segments(&srv).pop().expect("a log segment");
    // A write that was in flight when the power went: half a record right after the last one.
    let end = records_end(&last);
    let mut f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.seek(SeekFrom::Start(end)).unwrap();
    f.write_all(&[0, 0, 0, 90, 1, 2, 3, 4, 0, 0, 0]).unwrap();
    drop(f);
    srv.restart();
    check_all(&srv, "/t", 50);
    assert!(
        srv.log_text().to_lowercase().contains("torn"),
        "the torn tail should be logged:\n{}",
        srv.log_text()
    );
}

#[test]
fn damage_to_committed_data_stops_the_node_naming_the_file() {
    let mut srv = Roster::start(&[]);
    write_some(&srv, "/d", 50);
    srv.kill9();
    let seg = segments(&srv).pop().expect("a log segment");
    let len = records_end(&seg);
    // Flip a byte in the middle of committed records.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    let mut b = [0u8; 1];
    std::io::Read::read_exact(&mut f, &mut b).unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    f.write_all(&[b[0] ^ 0xff]).unwrap();
    drop(f);
    let out = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["serve", "--client-addr", "127.0.0.1:0", "--data-dir"])
        .arg(srv.dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a damaged log must stop the node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = seg.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        stderr.contains(&name),
        "the error must name {name}:\n{stderr}"
    );
}

#[test]
fn snapshots_are_written_and_restart_recovers_from_snapshot_plus_log() {
    let mut srv = Roster::start(&["--snapshot-every", "100"]);
    write_some(&srv, "/s", 350);
    let snaps = || -> usize {
        std::fs::read_dir(srv.dir.path().join("data/snapshots"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().map(|x| x == "snap").unwrap_or(false))
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while snaps() == 0 {
        assert!(std::time::Instant::now() < deadline, "no snapshot written");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(snaps() <= 2, "old snapshots are deleted");
    srv.kill9();
    srv.restart();
    check_all(&srv, "/s", 350);
}

/// Null data (a buffer of length -1) stays null on the wire, in the log and in snapshots: a node
/// created or set with null reads back as length -1, an empty one as length 0, before and after a
/// restart from a snapshot plus log.
#[test]
fn null_data_stays_null_through_the_log_and_a_snapshot() {
    use roster_proto::{Acl, CreateRequest, GetDataRequest, Request, SetDataRequest};
    let mut srv = Roster::start(&["--snapshot-every", "20", "--snapshot-log-keep", "0"]);
    let mut c = Raw::connect(srv.addr, 10_000);
    let create = |path: &str, data: Option<&'static [u8]>| {
        Request::Create(CreateRequest {
            path: path.into(),
            data: data.map(bytes::Bytes::from_static),
            acl: Acl::open_unsafe(),
            flags: 0,
        })
    };
    let set_null = |path: &str| {
        Request::SetData(SetDataRequest {
            path: path.into(),
            data: None,
            version: -1,
        })
    };
    // The getData reply's bytes: reply header (xid, zxid, err: 16 bytes), then the buffer length.
    let data_length_on_the_wire = |c: &mut Raw, path: &str| -> [u8; 4] {
        c.send(&Request::GetData(GetDataRequest {
            path: path.into(),
            watch: false,
        }));
        let frame = c.read_frame().unwrap();
        assert_eq!(&frame[12..16], &[0; 4], "getData {path} failed");
        frame[16..20].try_into().unwrap()
    };
    assert_eq!(c.call(create("/null", None)).err, 0);
    assert_eq!(c.call(create("/empty", Some(b""))).err, 0);
    assert_eq!(c.call(create("/set-null", Some(b"x"))).err, 0);
    assert_eq!(c.call(set_null("/set-null")).err, 0);
    let expect = |c: &mut Raw| {
        assert_eq!(data_length_on_the_wire(c, "/null"), [0xff; 4]);
        assert_eq!(data_length_on_the_wire(c, "/empty"), [0; 4]);
        assert_eq!(data_length_on_the_wire(c, "/set-null"), [0xff; 4]);
        assert_eq!(stat_of(&c.exists("/set-null", false)).data_length, 0);
    };
    expect(&mut c);
    // Enough writes for a snapshot; the null nodes are in it.
    write_some(&srv, "/fill", 60);
    let snaps = || {
        std::fs::read_dir(srv.dir.path().join("data/snapshots"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "snap"))
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while snaps() == 0 {
        assert!(std::time::Instant::now() < deadline, "no snapshot written");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // One more null write after the snapshot, replayed from the log.
    let mut c = Raw::connect(srv.addr, 10_000);
    assert_eq!(c.call(create("/null-after", None)).err, 0);
    drop(c);
    srv.kill9();
    srv.restart();
    let mut c = Raw::connect(srv.addr, 10_000);
    expect(&mut c);
    assert_eq!(data_length_on_the_wire(&mut c, "/null-after"), [0xff; 4]);
}
