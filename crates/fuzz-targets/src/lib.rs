//! The fuzz targets' bodies: one function per target, taking the raw input. `fuzz/` (cargo-fuzz,
//! libFuzzer, nightly) calls them from its `fuzz_target!`s; `tests/corpus.rs` replays every stored
//! corpus input through them on stable, so what the fuzzer found once is checked in every test run.
//! Each panics on a broken property (a round trip that differs, a node that stops answering); a
//! decoder that rejects its input is the expected outcome for most inputs.
//!
//! Left out: the fuzzing engine itself (see `fuzz/` and `scripts/fuzz`).

#![warn(missing_docs)]

use roster_proto::{parse_frame, ConnectRequest, Jute, OpCode, Request, RequestHeader};
use roster_server::raft::log_store::entry_index;
use roster_server::raft::rpc::{decode, RaftRequest, RaftResponse};
use roster_server::storage::log::{Wal, WalOptions};
use roster_server::storage::snapshot::SnapshotStore;
use roster_server::transport::wire::{read_msg, Blob};
use roster_state::State;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The names of the targets, as `fuzz/` and `fuzz/corpus/` know them.
pub const TARGETS: [&str; 5] = [
    "client_request",
    "client_conn",
    "peer_frame",
    "snapshot",
    "log_segment",
];

/// Runs target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "client_request" => client_request(data),
        "client_conn" => client_conn(data),
        "peer_frame" => peer_frame(data),
        "snapshot" => snapshot(data),
        "log_segment" => log_segment(data),
        _ => return false,
    }
    true
}

/// Client frames, decoded as the server decodes them: the byte stream split into frames, the
/// ConnectRequest, the request header and the body of every opcode. A body that decodes must encode
/// back to a body that decodes to the same request (no decoder accepts what the encoder cannot say).
pub fn client_request(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 4 {
        0 => {
            let mut buf = rest;
            let mut first = true;
            while let Ok(Some((_frame, used))) = parse_frame(buf, 1 << 20, first) {
                first = false;
                buf = &buf[used..];
            }
        }
        1 => {
            let mut b = rest;
            let _ = ConnectRequest::decode(&mut b);
        }
        2 => {
            let mut b = rest;
            let _ = RequestHeader::decode(&mut b);
        }
        _ => {
            if rest.len() < 4 {
                return;
            }
            let op = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let Ok(op) = OpCode::of_request(op) else {
                return;
            };
            if let Ok(req) = Request::decode(op, &rest[4..]) {
                let mut again = Vec::new();
                req.encode_body(&mut again);
                let back = Request::decode(op, &again).expect("an encoded request decodes");
                assert_eq!(back, req, "decode(encode(r)) != r for {op:?}");
            }
        }
    }
}

static NODE: OnceLock<SocketAddr> = OnceLock::new();
static RUNS: AtomicU64 = AtomicU64::new(0);

/// The client port of a node running in this process (started once, on its own thread; its data
/// directory on tmpfs when there is one, so fsyncs are cheap and nothing is left on disk).
fn node() -> SocketAddr {
    *NODE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
            rt.block_on(async move {
                let base = if std::path::Path::new("/dev/shm").is_dir() {
                    std::path::PathBuf::from("/dev/shm")
                } else {
                    std::env::temp_dir()
                };
                let dir = tempfile::tempdir_in(base).expect("a temporary data directory");
                let config = roster_server::Config {
                    client_addr: Some("127.0.0.1:0".parse().expect("an address")),
                    peer_addr: "127.0.0.1:0".parse().expect("an address"),
                    admin_addr: "off".into(),
                    data_dir: dir.path().to_path_buf(),
                    ..roster_server::Config::default()
                };
                let node = roster_server::Node::start(config)
                    .await
                    .expect("the node starts");
                tx.send(node.client_addr.expect("a client port"))
                    .expect("the caller waits");
                let _keep = dir;
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("the node started")
    })
}

fn exchange(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("the node accepts connections");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    let _ = s.write_all(data);
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Whole client connections against a live node: the input is sent as is on a fresh TCP connection
/// to a node running in this process (four-letter words, handshakes, any sequence of requests,
/// garbage), the write side is closed and every reply read until the node closes. A panic anywhere
/// in the node aborts the fuzzing process; every 256 inputs the node must still answer `ruok`.
pub fn client_conn(data: &[u8]) {
    let addr = node();
    exchange(addr, data);
    if RUNS.fetch_add(1, Ordering::Relaxed).is_multiple_of(256) {
        assert_eq!(
            exchange(addr, b"ruok"),
            b"imok",
            "the node stopped answering ruok"
        );
    }
}

/// Peer-port frames as the listener reads them, and the Raft messages they carry, decoded as the
/// receiving end of Raft RPCs decodes them.
pub fn peer_frame(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel % 2 == 0 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime");
        rt.block_on(async {
            let mut r = rest;
            for _ in 0..64 {
                match read_msg(&mut r).await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        });
    } else {
        let blob = Blob(rest.to_vec());
        let _ = decode::<RaftRequest>(&blob);
        let _ = decode::<RaftResponse>(&blob);
    }
}

/// Snapshots: the body decoder (`State::from_snapshot`, what a follower runs on a snapshot a leader
/// sent, and start-up on the newest file; what decodes must round-trip) and the file framing
/// (`SnapshotStore::latest` on a directory holding the input as a snapshot file).
pub fn snapshot(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel % 4 != 0 {
        if let Ok(state) = State::from_snapshot(rest) {
            let again = state.to_snapshot();
            let back = State::from_snapshot(&again).expect("a snapshot it wrote decodes");
            assert_eq!(back.to_snapshot(), again, "snapshot round trip differs");
        }
    } else {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let name = format!("snap-{:020}-{:020}.snap", 1, 100);
        std::fs::write(dir.path().join(name), rest).expect("write the file");
        let store = SnapshotStore::open(dir.path()).expect("open the directory");
        if let Ok(Some(file)) = store.latest() {
            let _ = State::from_snapshot(&file.body);
        }
    }
}

/// Rewrites `input` as log records with valid checksums: a `u16` length and that many payload bytes
/// per record, indexes from 1 (the format in crates/server/src/storage/log).
fn records(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut index = 1u64;
    while input.len() >= 2 {
        let len = (u16::from_be_bytes([input[0], input[1]]) as usize).min(input.len() - 2);
        let payload = &input[2..2 + len];
        input = &input[2 + len..];
        let idx = index.to_be_bytes();
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32c(&idx, payload).to_be_bytes());
        out.extend_from_slice(&idx);
        out.extend_from_slice(payload);
        index += 1;
    }
    out
}

/// crc32c (Castagnoli), bitwise: slow but independent of the code under test.
fn crc32c(a: &[u8], b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in a.iter().chain(b) {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Log segments as start-up reads them back: `Wal::open` on a directory holding the input as a
/// segment file, then every record decoded as a Raft entry. Even selector bytes first make the input
/// into records with valid checksums, so the fuzzer reaches the entry decoder behind them.
pub fn log_segment(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let bytes = if sel % 2 == 0 {
        records(rest)
    } else {
        rest.to_vec()
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join(format!("{:020}.seg", 1)), &bytes).expect("write the segment");
    let opts = WalOptions {
        prealloc_bytes: 0,
        ..WalOptions::default()
    };
    if let Ok(wal) = Wal::open(dir.path(), opts) {
        if let Ok(all) = wal.read(.., None) {
            for (_, payload) in all {
                let _ = entry_index(&payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_crc32c() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"1234", b"56789"), 0xE306_9283);
    }
}
