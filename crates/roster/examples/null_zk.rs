//! A null ZooKeeper: the ceiling a load generator can reach on this machine. It speaks the client
//! protocol's framing and records (through `roster-proto`) and answers every request at once, with
//! success and an empty body of the right record type, keeping no state: no tree, no sessions, no
//! log, no disk, no replication, no watches. Creates echo the requested path; reads see empty data and a
//! zeroed stat; `closeSession` closes the connection after its reply.
//!
//! What a load costs here is the load generator's own CPU, the kernel's TCP work on both ends (connect,
//! accept, reads, writes, close) and the decode/encode of each frame. `scripts/bench --ceiling` runs
//! the create, set, get, mix, pinned-* and churn phases against it next to Roster and ZooKeeper: a
//! server can go no faster than this with that generator on the same cores (BENCHMARKS.md,
//! "Snapshots that grow rarer with the tree, and how much the machine allows").
//!
//! Left out on purpose: multi and multiRead (answered `Unimplemented`), watch events, expiry, auth
//! checks, four-letter words other than `ruok`. It is a measuring tool and must never be used as a server.
//!
//! Run: `cargo run --release -p roster --example null_zk -- --listen 127.0.0.1:2181,127.0.0.1:2182`.

use bytes::{Buf, BytesMut};
use roster_proto::{
    parse_frame, write_frame, write_reply, ConnectRequest, ConnectResponse, Create2Response,
    CreateResponse, ErrorCode, Frame, GetChildren2Response, GetChildrenResponse, GetDataResponse,
    Jute, OpCode, ReplyHeader, Request, RequestHeader, Response, Stat, SyncResponse,
    DEFAULT_MAX_FRAME,
};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() {
    let mut listen = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--listen", Some(v)) => listen.extend(v.split(',').map(str::to_string)),
            _ => usage(),
        }
    }
    if listen.is_empty() {
        usage();
    }
    let sessions = Arc::new(AtomicI64::new(1));
    let mut tasks = Vec::new();
    for addr in listen {
        let listener = match TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("null_zk: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        };
        let sessions = sessions.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let sessions = sessions.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &sessions).await;
                });
            }
        }));
    }
    println!("null_zk: listening");
    for t in tasks {
        let _ = t.await;
    }
}

fn usage() -> ! {
    eprintln!("usage: null_zk --listen HOST:PORT[,HOST:PORT...]");
    std::process::exit(2);
}

/// One connection: the handshake, then one reply per request until the client closes or says
/// `closeSession`.
async fn serve(mut stream: TcpStream, sessions: &AtomicI64) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::with_capacity(4096);
    let mut connected = false;
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut close = false;
        loop {
            let (body, used) = match parse_frame(&buf, DEFAULT_MAX_FRAME, !connected) {
                Ok(Some((Frame::Packet(body), used))) => (body, used),
                // `ruok` only, so scripts can wait for the port like for a real server.
                Ok(Some((Frame::FourLetterWord("ruok"), _))) => {
                    stream.write_all(b"imok").await?;
                    return Ok(());
                }
                Ok(Some((Frame::FourLetterWord(_), _))) | Err(_) => return Ok(()),
                Ok(None) => break,
            };
            if !connected {
                let Ok(req) = roster_proto::decode_exact::<ConnectRequest>(body) else {
                    return Ok(());
                };
                let resp = ConnectResponse {
                    protocol_version: 0,
                    timeout: req.timeout,
                    session_id: sessions.fetch_add(1, Ordering::Relaxed),
                    passwd: vec![0u8; 16].into(),
                    read_only: req.read_only.map(|_| false),
                };
                write_frame(&mut out, |o| resp.encode(o));
                connected = true;
            } else {
                close |= answer(body, &mut out);
            }
            buf.advance(used);
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if close {
            return Ok(());
        }
    }
}

/// Appends the reply to one request; true for `closeSession`.
fn answer(body: &[u8], out: &mut BytesMut) -> bool {
    let mut rest = body;
    let Ok(header) = RequestHeader::decode(&mut rest) else {
        return true;
    };
    let mut reply = ReplyHeader {
        xid: header.xid,
        zxid: 0,
        err: 0,
    };
    let request = OpCode::of_request(header.op_type).and_then(|op| Request::decode(op, rest));
    let response = match request {
        Ok(Request::Create(r)) | Ok(Request::CreateContainer(r)) => {
            Response::Create(CreateResponse { path: r.path })
        }
        Ok(Request::Create2(r)) => Response::Create2(Create2Response {
            path: r.path,
            stat: Stat::default(),
        }),
        Ok(Request::CreateTtl(r)) => Response::Create2(Create2Response {
            path: r.path,
            stat: Stat::default(),
        }),
        Ok(Request::Exists(_)) | Ok(Request::SetData(_)) | Ok(Request::SetAcl(_)) => {
            Response::Stat(Stat::default())
        }
        Ok(Request::GetData(_)) => Response::GetData(GetDataResponse {
            data: Some(Default::default()),
            stat: Stat::default(),
        }),
        Ok(Request::GetChildren(_)) => {
            Response::GetChildren(GetChildrenResponse { children: vec![] })
        }
        Ok(Request::GetChildren2(_)) => Response::GetChildren2(GetChildren2Response {
            children: vec![],
            stat: Stat::default(),
        }),
        Ok(Request::Sync(r)) => Response::Sync(SyncResponse { path: r.path }),
        Ok(Request::Multi(_)) | Ok(Request::MultiRead(_)) | Err(_) => {
            reply.err = ErrorCode::Unimplemented.code();
            Response::Empty
        }
        Ok(Request::CloseSession) => {
            write_reply(out, &reply, Some(&Response::Empty));
            return true;
        }
        Ok(_) => Response::Empty,
    };
    write_reply(out, &reply, Some(&response));
    false
}
