//! A minimal raw ZooKeeper-protocol session on tokio and `roster-proto`, built for load generation:
//! requests are encoded into a write buffer (`queue`), sent in one syscall (`flush`), and replies are
//! parsed straight out of the read buffer without decoding bodies the caller does not need. One task owns
//! one connection; there are no channels or per-request futures, so a session costs almost nothing per op.
//! With `roster bench --tls-ca`, every connection is TLS (to a secure client port; [`set_tls`]).

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use roster_proto::jute::Jute;
use roster_proto::{
    parse_frame, write_frame, xid, Acl, ConnectRequest, ConnectResponse, CreateRequest,
    DeleteRequest, Frame, ReplyHeader, Request, RequestHeader, WatcherEvent,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection to a server: plain TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// The TLS configuration of every bench connection, set once from `--tls-ca` before any connects.
static TLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// Makes every later connection TLS, with this configuration.
pub fn set_tls(config: Arc<rustls::ClientConfig>) {
    let _ = TLS.set(config);
}

/// Largest reply frame accepted (replies can exceed the server's request limit, e.g. getChildren).
const MAX_REPLY: usize = 64 << 20;

/// `NodeExists`, ignored when (re)creating fixed bench nodes.
pub const ERR_NODE_EXISTS: i32 = -110;

/// One frame from the server after the handshake.
#[derive(Debug)]
pub enum Incoming {
    /// A reply: its header and the undecoded body.
    Reply(ReplyHeader, Bytes),
    /// A watch notification (xid -1).
    Event(WatcherEvent),
}

/// An open session.
pub struct Conn {
    stream: Box<dyn Stream>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Bytes reserved in the read buffer when it runs low (small for sessions that are only held).
    read_chunk: usize,
    next_xid: i32,
    /// The session id the server granted.
    pub session_id: i64,
    /// The negotiated session timeout, ms.
    pub timeout_ms: i32,
    /// The session password the server granted (to resume the session on another connection).
    pub passwd: Bytes,
    /// The largest zxid seen in a reply (sent when resuming, as ZooKeeper clients do).
    pub last_zxid: i64,
    /// Notifications read while waiting for a reply (by `call`).
    pub events: Vec<WatcherEvent>,
}

impl Conn {
    /// Connects and performs the handshake for a new session with the requested timeout.
    pub async fn connect(addr: SocketAddr, timeout_ms: i32) -> anyhow::Result<Conn> {
        Conn::open(
            addr,
            timeout_ms,
            None,
            Duration::from_secs(10),
            Duration::from_secs(30),
        )
        .await
    }

    /// Connects and performs the handshake: a new session, or with `resume` (session id, password,
    /// last zxid seen) the same session on a new connection. Connect and handshake are each bounded.
    pub async fn open(
        addr: SocketAddr,
        timeout_ms: i32,
        resume: Option<(i64, Bytes, i64)>,
        connect_timeout: Duration,
        handshake_timeout: Duration,
    ) -> anyhow::Result<Conn> {
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connect to {addr}: timed out"))?
            .with_context(|| format!("connect to {addr}"))?;
        Conn::handshake(stream, addr, timeout_ms, resume, handshake_timeout).await
    }

    /// A new session from the local address `local` (any port), with small buffers: for workloads that
    /// hold tens of thousands of sessions (spreading them over loopback source addresses 127.0.0.x
    /// when one address's ephemeral ports would run short).
    pub async fn connect_held(
        addr: SocketAddr,
        local: Option<IpAddr>,
        timeout_ms: i32,
    ) -> anyhow::Result<Conn> {
        let connect = async {
            let sock = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }?;
            if let Some(ip) = local {
                sock.bind(SocketAddr::new(ip, 0))?;
            }
            sock.connect(addr).await
        };
        let stream = tokio::time::timeout(Duration::from_secs(30), connect)
            .await
            .with_context(|| format!("connect to {addr}: timed out"))?
            .with_context(|| format!("connect to {addr} from {local:?} (file limit? ulimit -n)"))?;
        let mut c =
            Conn::handshake(stream, addr, timeout_ms, None, Duration::from_secs(60)).await?;
        c.read_chunk = 1024;
        if c.rbuf.is_empty() {
            c.rbuf = BytesMut::with_capacity(1024);
        }
        c.wbuf = BytesMut::with_capacity(256);
        Ok(c)
    }

    async fn handshake(
        stream: TcpStream,
        addr: SocketAddr,
        timeout_ms: i32,
        resume: Option<(i64, Bytes, i64)>,
        handshake_timeout: Duration,
    ) -> anyhow::Result<Conn> {
        stream.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match TLS.get() {
            None => Box::new(stream),
            Some(config) => {
                let name = rustls_pki_types::ServerName::from(addr.ip());
                let tls = tokio::time::timeout(
                    handshake_timeout,
                    tokio_rustls::TlsConnector::from(config.clone()).connect(name, stream),
                )
                .await
                .with_context(|| format!("TLS handshake with {addr}: timed out"))?
                .with_context(|| format!("TLS handshake with {addr}"))?;
                Box::new(tls)
            }
        };
        let mut c = Conn {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::with_capacity(16 * 1024),
            read_chunk: 64 * 1024,
            next_xid: 1,
            session_id: 0,
            timeout_ms: 0,
            passwd: Bytes::new(),
            last_zxid: 0,
            events: Vec::new(),
        };
        let (session_id, passwd, last_zxid) =
            resume.unwrap_or((0, Bytes::from_static(&[0u8; 16]), 0));
        c.last_zxid = last_zxid;
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: last_zxid,
            timeout: timeout_ms,
            session_id,
            passwd,
            read_only: Some(false),
        };
        write_frame(&mut c.wbuf, |o| req.encode(o));
        c.flush().await?;
        let body = tokio::time::timeout(handshake_timeout, c.read_frame())
            .await
            .with_context(|| format!("handshake with {addr}: timed out"))??;
        let resp = ConnectResponse::decode(&mut &body[..]).context("handshake reply")?;
        if resp.timeout <= 0 || resp.session_id == 0 {
            bail!(
                "{addr} refused the session (timeout {}, session {:#x})",
                resp.timeout,
                resp.session_id
            );
        }
        c.session_id = resp.session_id;
        c.timeout_ms = resp.timeout;
        c.passwd = resp.passwd;
        Ok(c)
    }

    /// Encodes a request into the write buffer and returns its xid; `flush` sends it.
    pub fn queue(&mut self, req: &Request) -> i32 {
        let xid = match req {
            Request::Ping => xid::PING,
            _ => {
                let x = self.next_xid;
                self.next_xid = self.next_xid.wrapping_add(1).max(1);
                x
            }
        };
        let header = RequestHeader {
            xid,
            op_type: req.op_code().code(),
        };
        write_frame(&mut self.wbuf, |o| {
            header.encode(o);
            req.encode_body(o);
        });
        xid
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await.context("send")?;
            self.wbuf.clear();
        }
        Ok(())
    }

    async fn read_frame(&mut self) -> anyhow::Result<Bytes> {
        loop {
            if let Some(b) = self.take_frame()? {
                return Ok(b);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.rbuf.capacity() - self.rbuf.len() < self.read_chunk / 4 {
            self.rbuf.reserve(self.read_chunk);
        }
        let n = self
            .stream
            .read_buf(&mut self.rbuf)
            .await
            .context("receive")?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }

    fn take_frame(&mut self) -> anyhow::Result<Option<Bytes>> {
        match parse_frame(&self.rbuf, MAX_REPLY, false)? {
            None => Ok(None),
            Some((Frame::Packet(_), used)) => {
                let mut f = self.rbuf.split_to(used);
                let _ = f.split_to(4);
                Ok(Some(f.freeze()))
            }
            Some((Frame::FourLetterWord(w), _)) => bail!("unexpected four-letter word {w}"),
        }
    }

    /// The next frame already buffered, if any (no I/O).
    pub fn try_next(&mut self) -> anyhow::Result<Option<Incoming>> {
        let Some(body) = self.take_frame()? else {
            return Ok(None);
        };
        let mut b = &body[..];
        let h = ReplyHeader::decode(&mut b).context("reply header")?;
        if h.xid == xid::NOTIFICATION {
            let ev = WatcherEvent::decode(&mut b).context("watch event")?;
            return Ok(Some(Incoming::Event(ev)));
        }
        if h.zxid > self.last_zxid {
            self.last_zxid = h.zxid;
        }
        let rest = body.slice(body.len() - b.len()..);
        Ok(Some(Incoming::Reply(h, rest)))
    }

    /// The next frame, reading from the socket as needed.
    pub async fn next(&mut self) -> anyhow::Result<Incoming> {
        loop {
            if let Some(i) = self.try_next()? {
                return Ok(i);
            }
            self.fill().await?;
        }
    }

    /// Sends one request and waits for its reply; notifications that arrive first go to `events`.
    /// Returns the header (check `err`) and the undecoded body.
    pub async fn call(&mut self, req: &Request) -> anyhow::Result<(ReplyHeader, Bytes)> {
        let want = self.queue(req);
        self.flush().await?;
        loop {
            match self.next().await? {
                Incoming::Event(e) => self.events.push(e),
                Incoming::Reply(h, body) if h.xid == want => return Ok((h, body)),
                Incoming::Reply(h, _) if h.xid == xid::PING => {}
                Incoming::Reply(h, _) => bail!("reply for xid {} while waiting for {want}", h.xid),
            }
        }
    }

    /// `call` that fails on a non-zero error code other than those in `allowed`.
    pub async fn call_ok(
        &mut self,
        req: &Request,
        allowed: &[i32],
    ) -> anyhow::Result<(ReplyHeader, Bytes)> {
        let op = req.op_code();
        let r = self.call(req).await?;
        if r.0.err != 0 && !allowed.contains(&r.0.err) {
            bail!(
                "{op:?} {:?} failed with error {}",
                req.path().unwrap_or(""),
                err_name(r.0.err)
            );
        }
        Ok(r)
    }

    /// Waits for the next notification (buffered ones first), answering nothing else.
    pub async fn next_event(&mut self) -> anyhow::Result<WatcherEvent> {
        if !self.events.is_empty() {
            return Ok(self.events.remove(0));
        }
        loop {
            match self.next().await? {
                Incoming::Event(e) => return Ok(e),
                Incoming::Reply(h, _) if h.xid == xid::PING => {}
                Incoming::Reply(h, _) => bail!(
                    "unexpected reply for xid {} while waiting for an event",
                    h.xid
                ),
            }
        }
    }

    /// Sends a ping without waiting for its reply (`call` and `next_event` skip ping replies): keeps an
    /// otherwise idle session alive.
    pub async fn ping(&mut self) -> anyhow::Result<()> {
        self.queue(&Request::Ping);
        self.flush().await
    }

    /// Ends the session politely (closeSession, bounded wait) and drops the connection.
    pub async fn close(mut self) {
        let _ =
            tokio::time::timeout(Duration::from_secs(5), self.call(&Request::CloseSession)).await;
    }
}

/// A persistent (or other `flags`) create request with an open ACL.
pub fn create_req(path: String, data: Bytes, flags: i32) -> Request {
    Request::Create(CreateRequest {
        path,
        data: Some(data),
        acl: Acl::open_unsafe(),
        flags,
    })
}

/// A delete of any version.
pub fn delete_req(path: String) -> Request {
    Request::Delete(DeleteRequest { path, version: -1 })
}

/// ZooKeeper's name for an error code.
pub fn err_name(code: i32) -> String {
    match roster_proto::ErrorCode::from_i32(code) {
        Some(c) => format!("{} ({code})", c.name()),
        None => format!("{code}"),
    }
}

/// Creates `path` and its missing ancestors as persistent nodes (existing ones are fine).
pub async fn ensure_path(c: &mut Conn, path: &str) -> anyhow::Result<()> {
    let mut cur = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cur.push('/');
        cur.push_str(part);
        c.call_ok(
            &create_req(cur.clone(), Bytes::new(), 0),
            &[ERR_NODE_EXISTS],
        )
        .await?;
    }
    Ok(())
}
