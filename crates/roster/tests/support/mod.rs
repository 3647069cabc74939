//! Test support: start the real `roster` binary on a free loopback port with a temporary data
//! directory, kill it with SIGKILL, restart it on the same directory; and a small blocking raw-protocol
//! client built on `roster-proto`, for exact byte-level checks (handshake refusals, bad input, ordering).
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use roster_proto::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `roster serve` process.
pub struct Roster {
    pub addr: SocketAddr,
    /// The peer port (`--peer-addr`), free-picked like the client port.
    pub peer: SocketAddr,
    /// The admin HTTP port (`--admin-addr`), free-picked like the client port.
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub extra: Vec<String>,
    /// Extra environment variables of the process (for example `ROSTER_PEER_LISTEN`).
    pub env: Vec<(String, String)>,
    /// A command the binary runs under (for example `prlimit --nofile=1024:1024 --`).
    pub wrap: Vec<String>,
    /// Another `roster` binary to run (the upgrade test's next-format build); `None`: this build's.
    pub bin: Option<PathBuf>,
    child: Option<Child>,
    log: PathBuf,
}

/// `N` distinct free loopback addresses. The listeners are all held until every port is known: a port
/// released before the next `bind(0)` may be handed out again, and a node then got the same port for
/// its client and peer addresses ("Address already in use" at its start, once in CI).
fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap())
}

impl Roster {
    /// Starts a node with extra `serve` flags.
    pub fn start(extra: &[&str]) -> Roster {
        Roster::start_wrapped(&[], extra)
    }

    /// Starts a node run under the command `wrap` (which execs its arguments), with extra flags.
    pub fn start_wrapped(wrap: &[&str], extra: &[&str]) -> Roster {
        Roster::start_bin(None, wrap, extra)
    }

    /// Starts the `roster` binary `bin` (`None`: this build's) under `wrap`, with extra flags.
    pub fn start_bin(bin: Option<PathBuf>, wrap: &[&str], extra: &[&str]) -> Roster {
        let dir = tempfile::tempdir().unwrap();
        let [addr, peer, admin] = free_addrs();
        let log = dir.path().join("server.log");
        let mut r = Roster {
            addr,
            peer,
            admin,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            wrap: wrap.iter().map(|s| s.to_string()).collect(),
            bin,
            child: None,
            log,
        };
        r.spawn();
        r
    }

    /// Starts a node whose peer port sits behind `net`'s fault-injecting proxy: the node announces the
    /// proxy's address (`--peer-addr`) and listens on another port (`ROSTER_PEER_LISTEN`).
    pub fn start_behind(net: &FaultNet, extra: &[&str]) -> Roster {
        let dir = tempfile::tempdir().unwrap();
        let [addr, real, admin] = free_addrs();
        let peer = net.proxy(real);
        let log = dir.path().join("server.log");
        let env = vec![("ROSTER_PEER_LISTEN".to_string(), real.to_string())];
        let mut r = Roster {
            addr,
            peer,
            admin,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env,
            wrap: vec![],
            bin: None,
            child: None,
            log,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        if let Err(status) = self.try_spawn() {
            panic!(
                "roster exited with {status} while starting; log:\n{}",
                self.log_text()
            );
        }
    }

    /// Starts the process (again) on its data directory and ports and waits until it answers `ruok`;
    /// `Err` with its exit status if it exits first (panics if it neither answers nor exits in 30 s).
    pub fn try_spawn(&mut self) -> Result<(), std::process::ExitStatus> {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let bin = self
            .bin
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_roster")));
        let mut cmd = match self.wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .arg("serve")
            .arg("--client-addr")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--peer-addr")
            .arg(self.peer.to_string())
            .arg("--admin-addr")
            .arg(self.admin.to_string())
            .args(&self.extra)
            .env("ROSTER_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("roster binary runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if four_letter(self.addr, "ruok")
                .map(|s| s == "imok")
                .unwrap_or(false)
            {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(status);
                }
            }
            assert!(
                Instant::now() < deadline,
                "roster did not start; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (a graceful shutdown), then waits up to 30 s for the process to exit; its status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.signal("TERM");
        let st = self.wait_exit(Duration::from_secs(30));
        self.kill9();
        st
    }

    /// Starts again on the same data directory and port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts a node that joins the cluster of `seed` (its peer address), with extra `serve` flags.
    pub fn join(seed: &Roster, extra: &[&str]) -> Roster {
        let seed = seed.peer.to_string();
        let mut flags = vec!["--join", seed.as_str()];
        flags.extend_from_slice(extra);
        Roster::start(&flags)
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the process with `kill -SIG PID`.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits up to `within` for the process to exit by itself; its status if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Roster {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- roster log ---\n{}", self.log_text());
        }
    }
}

/// Sends a four-letter word and reads the whole answer.
pub fn four_letter(addr: SocketAddr, word: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(word.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A blocking raw ZooKeeper-protocol client.
pub struct Raw {
    pub stream: TcpStream,
    pub session_id: i64,
    pub passwd: Bytes,
    pub timeout: i32,
    pub events: Vec<(i64, WatcherEvent)>,
    pub last_zxid: i64,
    buf: BytesMut,
    xid: i32,
}

/// What a reply carried.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
    pub body: Option<Response>,
}

impl Raw {
    /// Connects and completes a handshake; `Err` carries the refusal (timeout 0) or the I/O error.
    pub fn connect_with(addr: SocketAddr, req: ConnectRequest) -> Result<Raw, String> {
        let stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let mut raw = Raw {
            stream,
            session_id: 0,
            passwd: Bytes::new(),
            timeout: 0,
            events: vec![],
            last_zxid: 0,
            buf: BytesMut::new(),
            xid: 0,
        };
        let mut out = BytesMut::new();
        write_frame(&mut out, |b| req.encode(b));
        raw.stream.write_all(&out).map_err(|e| e.to_string())?;
        let body = raw.read_frame().map_err(|e| format!("handshake: {e}"))?;
        let resp: ConnectResponse = decode_exact(&body).map_err(|e| e.to_string())?;
        if resp.timeout <= 0 {
            return Err(format!("refused: {resp:?}"));
        }
        raw.session_id = resp.session_id;
        raw.passwd = resp.passwd;
        raw.timeout = resp.timeout;
        Ok(raw)
    }

    /// A new session with the given timeout.
    pub fn connect(addr: SocketAddr, timeout: i32) -> Raw {
        Raw::connect_with(
            addr,
            ConnectRequest {
                timeout,
                passwd: Bytes::from(vec![0u8; 16]),
                read_only: Some(false),
                ..Default::default()
            },
        )
        .expect("connects")
    }

    /// Reads one frame body.
    pub fn read_frame(&mut self) -> std::io::Result<Bytes> {
        loop {
            if let Some((Frame::Packet(p), used)) = parse_frame(&self.buf, 1 << 24, false)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?
            {
                let b = Bytes::copy_from_slice(p);
                let _ = self.buf.split_to(used);
                return Ok(b);
            }
            let mut tmp = [0u8; 65536];
            let n = self.stream.read(&mut tmp)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Sends a request without waiting; returns its xid.
    pub fn send(&mut self, req: &Request) -> i32 {
        self.xid += 1;
        let xid = match req {
            Request::Ping => xid::PING,
            Request::Auth(_) => xid::AUTH,
            Request::SetWatches(_) | Request::SetWatches2(_) => xid::SET_WATCHES,
            _ => self.xid,
        };
        let mut out = BytesMut::new();
        write_frame(&mut out, |b| {
            RequestHeader {
                xid,
                op_type: req.op_code().code(),
            }
            .encode(b);
            req.encode_body(b);
        });
        self.stream.write_all(&out).unwrap();
        xid
    }

    /// Sends raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads the next reply (not a notification), recording notifications on the way.
    pub fn recv(&mut self, op: OpCode) -> std::io::Result<Reply> {
        loop {
            let body = self.read_frame()?;
            let mut b: &[u8] = &body;
            let h = ReplyHeader::decode(&mut b).unwrap();
            if h.xid == xid::NOTIFICATION {
                let ev: WatcherEvent = decode_exact(b).unwrap();
                self.events.push((h.zxid, ev));
                continue;
            }
            if h.zxid > self.last_zxid {
                self.last_zxid = h.zxid;
            }
            let body = if h.err == 0 && !b.is_empty() {
                Some(Response::decode(op, b).unwrap())
            } else {
                None
            };
            return Ok(Reply {
                xid: h.xid,
                zxid: h.zxid,
                err: h.err,
                body,
            });
        }
    }

    /// Sends and waits for the reply.
    pub fn call(&mut self, req: Request) -> Reply {
        let op = req.op_code();
        let xid = self.send(&req);
        let r = self.recv(op).expect("reply");
        assert_eq!(r.xid, xid, "reply out of order");
        r
    }

    /// Waits for a notification.
    pub fn next_event(&mut self) -> std::io::Result<WatcherEvent> {
        if !self.events.is_empty() {
            return Ok(self.events.remove(0).1);
        }
        let body = self.read_frame()?;
        let mut b: &[u8] = &body;
        let h = ReplyHeader::decode(&mut b).unwrap();
        assert_eq!(
            h.xid,
            xid::NOTIFICATION,
            "expected a notification, got reply {h:?}"
        );
        Ok(decode_exact(b).unwrap())
    }

    pub fn create(&mut self, path: &str, data: &[u8], flags: i32) -> Reply {
        self.call(Request::Create(CreateRequest {
            path: path.into(),
            data: Some(Bytes::copy_from_slice(data)),
            acl: Acl::open_unsafe(),
            flags,
        }))
    }

    pub fn get(&mut self, path: &str, watch: bool) -> Reply {
        self.call(Request::GetData(GetDataRequest {
            path: path.into(),
            watch,
        }))
    }

    pub fn exists(&mut self, path: &str, watch: bool) -> Reply {
        self.call(Request::Exists(ExistsRequest {
            path: path.into(),
            watch,
        }))
    }

    pub fn set(&mut self, path: &str, data: &[u8], version: i32) -> Reply {
        self.call(Request::SetData(SetDataRequest {
            path: path.into(),
            data: Some(Bytes::copy_from_slice(data)),
            version,
        }))
    }

    pub fn delete(&mut self, path: &str, version: i32) -> Reply {
        self.call(Request::Delete(DeleteRequest {
            path: path.into(),
            version,
        }))
    }

    pub fn children(&mut self, path: &str, watch: bool) -> Reply {
        self.call(Request::GetChildren(GetChildrenRequest {
            path: path.into(),
            watch,
        }))
    }

    /// Closes the session politely.
    pub fn close(mut self) {
        let _ = self.call(Request::CloseSession);
    }

    /// The handshake to resume this session on a new connection.
    pub fn resume_request(&self) -> ConnectRequest {
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: self.last_zxid,
            timeout: self.timeout,
            session_id: self.session_id,
            passwd: self.passwd.clone(),
            read_only: Some(false),
        }
    }
}

/// The data of a getData reply.
pub fn data_of(r: &Reply) -> Vec<u8> {
    match &r.body {
        Some(Response::GetData(g)) => g.data.as_deref().unwrap_or_default().to_vec(),
        other => panic!("not getData: {other:?} (err {})", r.err),
    }
}

/// The stat of a reply that carries one.
pub fn stat_of(r: &Reply) -> Stat {
    match &r.body {
        Some(Response::GetData(g)) => g.stat.clone(),
        Some(Response::Stat(s)) => s.clone(),
        Some(Response::Create2(c)) => c.stat.clone(),
        other => panic!("no stat: {other:?} (err {})", r.err),
    }
}

/// Connects a new session, retrying while the server refuses (for example while it has no leader).
pub fn connect_retry(addr: SocketAddr, timeout: i32, within: Duration) -> Raw {
    let deadline = Instant::now() + within;
    loop {
        match Raw::connect_with(
            addr,
            ConnectRequest {
                timeout,
                passwd: Bytes::from(vec![0u8; 16]),
                read_only: Some(false),
                ..Default::default()
            },
        ) {
            Ok(c) => return c,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {addr}: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A fault-injecting TCP proxy for peer traffic: one listener per node, on the address the node
/// announces, forwarding to the port the node really listens on. The proxy reads the first frame of
/// each connection (the peer protocol's `Hello`) to learn the dialing node's id, so a test can cut any
/// ordered pair of nodes: connections of a cut pair are closed (within 20 ms) and new ones are closed
/// at once. Connections of tools (node id 0, such as the test's own status calls) are never cut.
pub struct FaultNet {
    rt: tokio::runtime::Runtime,
    inner: std::sync::Arc<std::sync::Mutex<NetState>>,
}

#[derive(Default)]
struct NetState {
    /// Proxy listen address → the node id behind it (0 until told).
    ids: std::collections::HashMap<SocketAddr, u64>,
    /// Cut (from, to) pairs.
    cut: std::collections::HashSet<(u64, u64)>,
    /// Black-holed (from, to) pairs: connections stay open but carry nothing (as packets dropped by a
    /// firewall), and are closed at the heal.
    black: std::collections::HashSet<(u64, u64)>,
}

impl NetState {
    fn is_cut(&self, from: u64, me: SocketAddr) -> bool {
        let to = self.ids.get(&me).copied().unwrap_or(0);
        self.cut.contains(&(from, to))
    }
    fn is_black(&self, from: u64, me: SocketAddr) -> bool {
        let to = self.ids.get(&me).copied().unwrap_or(0);
        self.black.contains(&(from, to))
    }
}

impl Default for FaultNet {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultNet {
    pub fn new() -> FaultNet {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        FaultNet {
            rt,
            inner: Default::default(),
        }
    }

    /// Starts a proxy to `upstream`; returns its address.
    pub fn proxy(&self, upstream: SocketAddr) -> SocketAddr {
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let me = listener.local_addr().unwrap();
        self.inner.lock().unwrap().ids.insert(me, 0);
        let inner = self.inner.clone();
        self.rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(proxy_conn(stream, upstream, me, inner.clone()));
            }
        });
        me
    }

    /// Tells the proxy at `proxy` (a node's announced peer address) which node is behind it.
    pub fn set_id(&self, proxy: SocketAddr, node_id: u64) {
        self.inner.lock().unwrap().ids.insert(proxy, node_id);
    }

    /// Cuts `node` off from every other node, both directions.
    pub fn isolate(&self, node: u64) {
        self.separate(node, |st| &mut st.cut);
    }

    /// Black-holes `node` from every other node, both directions: its peer connections stay open but
    /// nothing crosses them, as when a firewall drops the packets (no reset, no close) until [`heal`].
    ///
    /// [`heal`]: FaultNet::heal
    pub fn blackhole(&self, node: u64) {
        self.separate(node, |st| &mut st.black);
    }

    /// Adds every (node, other) and (other, node) pair to the set `pairs` picks.
    fn separate(
        &self,
        node: u64,
        pairs: fn(&mut NetState) -> &mut std::collections::HashSet<(u64, u64)>,
    ) {
        let mut st = self.inner.lock().unwrap();
        let others: Vec<u64> = st
            .ids
            .values()
            .copied()
            .filter(|id| *id != node && *id != 0)
            .collect();
        let set = pairs(&mut st);
        for o in others {
            set.insert((node, o));
            set.insert((o, node));
        }
        drop(st);
        // Live connections notice within 20 ms: once this returns, no byte crosses.
        std::thread::sleep(std::time::Duration::from_millis(60));
    }

    /// Restores every link (black-holed connections are closed, as their TCP sessions would time out).
    pub fn heal(&self) {
        let mut st = self.inner.lock().unwrap();
        st.cut.clear();
        st.black.clear();
    }
}

/// Waits while the pair (from, the node behind `me`) is black-holed.
async fn until_healed(
    inner: &std::sync::Arc<std::sync::Mutex<NetState>>,
    from: u64,
    me: SocketAddr,
) {
    while inner.lock().unwrap().is_black(from, me) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn proxy_conn(
    mut down: tokio::net::TcpStream,
    upstream: SocketAddr,
    me: SocketAddr,
    inner: std::sync::Arc<std::sync::Mutex<NetState>>,
) -> std::io::Result<()> {
    use roster_server::transport::wire::{encode_v, read_frame, PeerMsg, MAX_FRAME};
    use tokio::io::AsyncWriteExt;
    // The hello is passed on in the version it came in (the version the dialer offers).
    let Some((version, hello)) = read_frame(&mut down, MAX_FRAME).await? else {
        return Ok(());
    };
    let from = match &hello {
        PeerMsg::Hello(h) => h.from,
        _ => 0,
    };
    if inner.lock().unwrap().is_cut(from, me) {
        return Ok(());
    }
    if inner.lock().unwrap().is_black(from, me) {
        // Accepted but never connected through: silent until the heal, then closed.
        until_healed(&inner, from, me).await;
        return Ok(());
    }
    let mut up = tokio::net::TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    down.set_nodelay(true)?;
    up.write_all(&encode_v(&hello, version)?).await?;
    // Copy both ways until either side closes or the pair is cut (dropping both sockets closes them).
    let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
    tokio::pin!(copy);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
    loop {
        tokio::select! {
            r = &mut copy => { r?; return Ok(()); }
            _ = tick.tick() => {
                if inner.lock().unwrap().is_cut(from, me) {
                    return Ok(());
                }
                if inner.lock().unwrap().is_black(from, me) {
                    // Stop carrying bytes (the copy is no longer polled) until the heal, then close.
                    until_healed(&inner, from, me).await;
                    return Ok(());
                }
            }
        }
    }
}

// ---------------------------------------------------------------- cluster helpers (cluster_scale.rs)

/// Three voters whose peer traffic goes through `net`, formed, with the proxy told each node's id;
/// returns them and the leader's id.
pub fn three_behind(net: &FaultNet) -> (Roster, Roster, Roster, u64) {
    three_behind_with(net, &[])
}

/// [`three_behind`], every node started with the `extra` flags.
pub fn three_behind_with(net: &FaultNet, extra: &[&str]) -> (Roster, Roster, Roster, u64) {
    let a = Roster::start_behind(net, extra);
    let seed = a.peer.to_string();
    let joined: Vec<&str> = extra
        .iter()
        .copied()
        .chain(["--join", seed.as_str()])
        .collect();
    let b = Roster::start_behind(net, &joined);
    let c = Roster::start_behind(net, &joined);
    let leader = wait_formed(&[&a, &b, &c], 3, 0);
    for n in [&a, &b, &c] {
        net.set_id(n.peer, node_id(n));
    }
    (a, b, c, leader)
}

/// A node's view of the cluster, asked on its peer port (as `roster cluster status` does).
pub fn peer_status(peer: SocketAddr) -> Result<roster_server::transport::wire::StatusInfo, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(roster_server::cluster::admin::status(
        &peer.to_string(),
        None,
    ))
    .map_err(|e| e.to_string())
}

/// Waits until `nodes` agree on one leader, with `voters` voters and `learners` learners, all serving.
/// Returns the leader's node id.
pub fn wait_cluster(nodes: &[&Roster], voters: usize, learners: usize, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let all: Vec<_> = nodes.iter().map(|n| peer_status(n.peer)).collect();
        let leader = all[0].as_ref().ok().and_then(|a| a.leader);
        let ok = all.iter().all(|s| match s {
            Ok(s) => {
                s.serving
                    && s.leader.is_some()
                    && s.leader == leader
                    && s.members.iter().filter(|m| m.voter).count() == voters
                    && s.members.iter().filter(|m| !m.voter).count() == learners
            }
            Err(_) => false,
        });
        if ok {
            return leader.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not form within {within:?}: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `Node count:` of the node's `srvr` answer.
pub fn srvr_node_count(addr: SocketAddr) -> Option<u64> {
    let s = four_letter(addr, "srvr").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Node count: "))
        .and_then(|v| v.trim().parse().ok())
}

/// Creates every (path, data) as a persistent node through one session, keeping up to `window`
/// creates in flight (replies come back in order). Panics on any error reply.
pub fn create_pipelined(
    c: &mut Raw,
    items: impl IntoIterator<Item = (String, Vec<u8>)>,
    window: usize,
) -> usize {
    let mut in_flight: std::collections::VecDeque<(i32, String)> =
        std::collections::VecDeque::new();
    let mut done = 0;
    let recv_one = |c: &mut Raw, q: &mut std::collections::VecDeque<(i32, String)>| {
        let (xid, path) = q.pop_front().unwrap();
        let r = c.recv(OpCode::Create).expect("create reply");
        assert_eq!(r.xid, xid, "reply out of order");
        assert_eq!(r.err, 0, "create {path} failed");
    };
    for (path, data) in items {
        if in_flight.len() >= window {
            recv_one(c, &mut in_flight);
            done += 1;
        }
        let xid = c.send(&Request::Create(CreateRequest {
            path: path.clone(),
            data: Some(Bytes::from(data)),
            acl: Acl::open_unsafe(),
            flags: 0,
        }));
        in_flight.push_back((xid, path));
    }
    while !in_flight.is_empty() {
        recv_one(c, &mut in_flight);
        done += 1;
    }
    done
}

/// Sorted children of `path` (panics on an error reply).
pub fn children_of(c: &mut Raw, path: &str) -> Vec<String> {
    match c.children(path, false).body {
        Some(Response::GetChildren(g)) => {
            let mut v = g.children;
            v.sort();
            v
        }
        other => panic!("getChildren {path}: {other:?}"),
    }
}

// ---- Clusters: shared by the cluster test files. ----

/// Clusters are started one test at a time: several 3-node clusters at once on a 2-core machine would
/// starve heartbeats and turn the tests into election-timeout lotteries.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until `nodes` agree on one leader, with `voters` voters and `learners` learners, all serving.
pub fn wait_formed(nodes: &[&Roster], voters: usize, learners: usize) -> u64 {
    wait_cluster(nodes, voters, learners, Duration::from_secs(60))
}

/// Three nodes: the first started, the other two joined to it, all three voters under one leader.
pub fn three() -> (Roster, Roster, Roster) {
    three_with(&[])
}

/// [`three`], every node started with the `extra` flags.
pub fn three_with(extra: &[&str]) -> (Roster, Roster, Roster) {
    let a = Roster::start(extra);
    let b = Roster::join(&a, extra);
    let c = Roster::join(&a, extra);
    wait_formed(&[&a, &b, &c], 3, 0);
    (a, b, c)
}

/// Waits until `n` knows a leader other than `old`.
pub fn wait_new_leader(n: &Roster, old: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while peer_status(n.peer)
        .ok()
        .and_then(|s| s.leader)
        .is_none_or(|l| l == old)
    {
        assert!(Instant::now() < deadline, "no leader other than {old}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn node_id(n: &Roster) -> u64 {
    peer_status(n.peer).unwrap().node_id
}

pub fn sync(c: &mut Raw, path: &str) {
    let r = c.call(Request::Sync(SyncRequest { path: path.into() }));
    assert_eq!(r.err, 0, "sync failed");
}

/// Children and data of `path`, read after a sync on a fresh session to `addr`.
pub fn subtree(addr: SocketAddr, path: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut c = connect_retry(addr, 10_000, Duration::from_secs(30));
    sync(&mut c, path);
    let mut out = std::collections::BTreeMap::new();
    for child in children_of(&mut c, path) {
        let p = format!("{path}/{child}");
        let g = c.get(&p, false);
        assert_eq!(g.err, 0, "{p} listed but not readable on {addr}");
        out.insert(p, data_of(&g));
    }
    out
}

/// GET `path` on the admin port: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("admin port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_string())
}
