//! One client connection: the handshake (new session, resume, or refusal), then requests in, replies and
//! watch notifications out.
//!
//! Ordering rules, all ZooKeeper's:
//! - Replies leave in request order. Writes are proposed to Raft in arrival order and their results come
//!   back in that order; a read that arrives while earlier writes of this connection are pending waits for
//!   them (per-session FIFO); a read with nothing pending is answered at once.
//! - A watch notification leaves before any reply that reveals the change: the state machine hands events
//!   to this task before it answers the proposer, and this task drains its event queue before writing
//!   any reply.
//! - `sync` is a read barrier through the same queue: its reply leaves once this node applied everything
//!   the leader had committed when the sync reached it (see `peer::forward`).
//! - On a follower, writes go to the leader over one ordered stream and are answered only once this
//!   node applied them, so the two rules above hold on every node.
//! - During a failover, a write with nothing else of its connection in flight waits (up to a third of
//!   the session timeout, 0.5–1 s) for a leader it can reach rather than closing the connection; a write
//!   behind in-flight writes is never sent to another leader than theirs (the connection closes
//!   instead), so no write commits after an earlier one of the session was lost (`peer::forward`).
//! - Pings and auth packets are answered here at once, never queued behind writes, fsyncs or snapshots;
//!   every packet touches the session. Stock clients match ping replies out of band (xid -2).
//!
//! Bad input: an unknown opcode is answered `Unimplemented` and the connection closed (ZooKeeper's
//! UnimplementedRequestProcessor); a body that does not decode is answered `MarshallingError`; a frame
//! over the limit or a broken handshake closes the connection. Each is logged with the reason and touches
//! nothing else.

use crate::fourlw;
use crate::node::NodeCtx;
use crate::peer::forward::{self, Proposal};
use crate::raft::types::{Outcome, WriteReply};
use crate::shared::{now_ms, ConnInfo, ConnMsg, ConnStats};
use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use roster_proto::{
    jute::Jute, parse_frame, write_frame, write_reply, xid, AddWatchMode, ClientInfo,
    ConnectRequest, ConnectResponse, ErrorCode, ErrorResponse, Frame, FrameError, Id, OpCode,
    ReplyHeader, Request, RequestHeader, Response, SetWatches2, SyncResponse, WatcherEvent,
    WatcherType, WhoAmIResponse,
};
use roster_state::{State, Txn, TxnOp, WatchTable};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("client closed the connection")]
    Eof,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Closed(String),
}

type WriteRx = forward::Pending;

/// Bounds of how long a proposal with nothing else of its connection in flight may wait for a
/// reachable leader (a third of the session timeout, clamped to these).
const HOLD_MIN_MS: u64 = 500;
const HOLD_MAX_MS: u64 = 1_000;

/// A request waiting for its turn to be answered.
enum Pending {
    /// A write or a `sync`. `txn` is `Some` while it waits, unproposed, behind a local request that
    /// arrived before it (so that the earlier read cannot observe it); once proposed, its result arrives
    /// through `writes` in proposal order.
    Write {
        xid: i32,
        op: OpCode,
        started: Instant,
        txn: Option<Proposal>,
        view: bool,
        /// For a linearizable read: the read to answer once this `sync` barrier passed.
        then: Option<Request>,
    },
    /// A request answered locally once every earlier request is answered (or an error code decided
    /// on arrival, which must still leave in order).
    Local {
        xid: i32,
        req: Result<Request, ErrorCode>,
        started: Instant,
    },
}

struct Conn {
    ctx: Arc<NodeCtx>,
    id: u64,
    peer: SocketAddr,
    stats: Arc<ConnStats>,
    session_id: i64,
    timeout_ms: i32,
    auth: Vec<Id>,
    pending: VecDeque<Pending>,
    out: BytesMut,
    close_requested: bool,
    close_after_flush: bool,
    /// Whether this session's writes carry state views (registered in `Shared::view_sessions` once
    /// the connection pipelines a read behind a write).
    wants_views: bool,
    /// The state as of the last answered write, for the reads queued right behind it.
    view: Option<State>,
    /// Watch events held back while reads answered from an older view are queued (see the module doc).
    deferred: VecDeque<(WatcherEvent, i64)>,
    /// The route of the last proposal (while proposals are in flight, the next must take the same one;
    /// see `peer::forward`).
    route: Option<forward::Route>,
}

/// Serves one accepted connection until it closes.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<NodeCtx>,
    shutdown: watch::Receiver<bool>,
) {
    let id = ctx.shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(ConnStats::default());
    ctx.shared.conns.lock().by_id.insert(
        id,
        ConnInfo {
            tx,
            peer,
            session_id: None,
            timeout_ms: 0,
            since: SystemTime::now(),
            stats: stats.clone(),
        },
    );
    let mut conn = Conn {
        ctx: ctx.clone(),
        id,
        peer,
        stats,
        session_id: 0,
        timeout_ms: 0,
        auth: vec![Id::new("ip", &peer.ip().to_string())],
        pending: VecDeque::new(),
        out: BytesMut::with_capacity(4096),
        close_requested: false,
        close_after_flush: false,
        wants_views: false,
        view: None,
        deferred: VecDeque::new(),
        route: None,
    };
    let (rd, wr) = stream.into_split();
    match conn.serve(rd, wr, rx, shutdown).await {
        Ok(()) | Err(ConnError::Eof) => {
            tracing::debug!(conn = id, %peer, session = format_args!("{:#x}", conn.session_id), "connection closed")
        }
        Err(e) => {
            tracing::info!(conn = id, %peer, session = format_args!("{:#x}", conn.session_id), reason = %e, "connection closed")
        }
    }
    ctx.shared.db.lock().watches.remove_watcher(id);
    if conn.wants_views {
        let mut vs = ctx.shared.view_sessions.lock();
        if let Some(n) = vs.get_mut(&conn.session_id) {
            *n -= 1;
            if *n == 0 {
                vs.remove(&conn.session_id);
            }
        }
    }
    let mut conns = ctx.shared.conns.lock();
    conns.by_id.remove(&id);
    if conns.by_session.get(&conn.session_id) == Some(&id) {
        conns.by_session.remove(&conn.session_id);
    }
}

/// Reads one frame, buffering as needed.
async fn read_frame(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max: usize,
    first: bool,
) -> Result<Frame2, ConnError> {
    loop {
        if let Some((frame, used)) = parse_frame(buf, max, first)? {
            let f = match frame {
                Frame::FourLetterWord(w) => Frame2::Word(w),
                Frame::Packet(p) => Frame2::Packet(Bytes::copy_from_slice(p)),
            };
            let _ = buf.split_to(used);
            return Ok(f);
        }
        if rd.read_buf(buf).await? == 0 {
            return Err(ConnError::Eof);
        }
    }
}

enum Frame2 {
    Word(&'static str),
    Packet(Bytes),
}

impl Conn {
    async fn serve(
        &mut self,
        mut rd: OwnedReadHalf,
        mut wr: OwnedWriteHalf,
        mut rx: mpsc::UnboundedReceiver<ConnMsg>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), ConnError> {
        let max = self.ctx.shared.config.max_frame_bytes;
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        let first = tokio::select! {
            f = read_frame(&mut rd, &mut inbuf, max, true) => f?,
            _ = shutdown.changed() => return Ok(()),
        };
        let body = match first {
            Frame2::Word(w) => {
                let text = fourlw::run(w, &self.ctx);
                wr.write_all(text.as_bytes()).await?;
                let _ = wr.shutdown().await;
                return Ok(());
            }
            Frame2::Packet(b) => b,
        };
        if !self.handshake(&body).await? {
            wr.write_all(&self.out).await?;
            let _ = wr.shutdown().await;
            return Ok(());
        }
        wr.write_all(&self.out).await?;
        self.out.clear();

        let mut writes: FuturesOrdered<WriteRx> = FuturesOrdered::new();
        loop {
            // Frames already buffered (for example sent right behind the handshake) go first.
            while let Some((frame, used)) = parse_frame(&inbuf, max, false)? {
                let Frame::Packet(p) = frame else {
                    unreachable!("four-letter words only on the first frame")
                };
                let body = Bytes::copy_from_slice(p);
                let _ = inbuf.split_to(used);
                self.handle_packet(body, &mut writes, &mut rx).await?;
                if self.close_after_flush {
                    break;
                }
            }
            if !self.out.is_empty() {
                wr.write_all(&self.out).await?;
                self.out.clear();
            }
            if self.close_after_flush && self.pending.is_empty() {
                let _ = wr.shutdown().await;
                return Ok(());
            }
            tokio::select! {
                biased;
                msg = rx.recv() => match msg {
                    Some(ConnMsg::Event(ev, zxid)) => self.event_arrived(ev, zxid),
                    Some(ConnMsg::Close(reason)) => {
                        if !self.close_requested {
                            return Err(ConnError::Closed(reason.to_string()));
                        }
                    }
                    None => return Err(ConnError::Closed("node shutting down".into())),
                },
                Some(result) = writes.next(), if !writes.is_empty() => {
                    self.finish_write(result, &mut rx);
                    self.answer_ready_locals(&mut rx);
                    self.propose_held_writes(&mut writes).await?;
                }
                r = rd.read_buf(&mut inbuf), if !self.close_after_flush => {
                    if r? == 0 {
                        return Err(ConnError::Eof);
                    }
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    /// Handles the ConnectRequest. Returns false when the connection must close after `out` is sent.
    async fn handshake(&mut self, body: &[u8]) -> Result<bool, ConnError> {
        let shared = &self.ctx.shared;
        let req = match roster_proto::decode_exact::<ConnectRequest>(body) {
            Ok(r) => r,
            Err(e) => {
                shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                return Err(ConnError::Closed(format!("handshake does not decode: {e}")));
            }
        };
        if !self.ctx.cluster.is_serving() {
            return Err(ConnError::Closed(
                "refusing session: this server has no leader; client must try another server"
                    .to_string(),
            ));
        }
        let last_zxid = shared.db.lock().state.last_zxid();
        if req.last_zxid_seen > last_zxid {
            return Err(ConnError::Closed(format!(
                "refusing session: client has seen zxid {:#x}, this server's last zxid is {:#x}; client must try another server",
                req.last_zxid_seen, last_zxid
            )));
        }
        let timeout = shared.config.negotiate_timeout(req.timeout);
        let read_only = req.read_only.map(|_| false);
        if req.session_id == 0 {
            let passwd: [u8; 16] = rand::random();
            let txn = Txn {
                session_id: 0,
                time: now_ms(),
                op: TxnOp::CreateSession {
                    timeout_ms: timeout,
                    passwd: Bytes::copy_from_slice(&passwd),
                },
            };
            let reply = self.propose_and_wait(txn).await?;
            let Outcome::Session {
                session_id,
                timeout_ms,
                passwd,
            } = reply.outcome
            else {
                return Err(ConnError::Closed(format!(
                    "session creation answered {:?}",
                    reply.outcome
                )));
            };
            self.attach(session_id, timeout_ms);
            tracing::info!(conn = self.id, peer = %self.peer, session = format_args!("{session_id:#x}"), timeout_ms, "session created");
            self.write_connect(&ConnectResponse {
                protocol_version: 0,
                timeout: timeout_ms,
                session_id,
                passwd,
                read_only,
            });
            return Ok(true);
        }
        let valid = {
            let db = shared.db.lock();
            db.state
                .session(req.session_id)
                .map(|s| s.passwd == req.passwd)
                .unwrap_or(false)
                && !shared.closing.lock().contains(&req.session_id)
        };
        if !valid {
            tracing::info!(
                conn = self.id, peer = %self.peer, session = format_args!("{:#x}", req.session_id),
                "session resume refused: session expired or password wrong"
            );
            self.write_connect(&ConnectResponse {
                protocol_version: 0,
                timeout: 0,
                session_id: 0,
                passwd: Bytes::from_static(&[0u8; 16]),
                read_only,
            });
            return Ok(false);
        }
        self.attach(req.session_id, timeout);
        tracing::info!(conn = self.id, peer = %self.peer, session = format_args!("{:#x}", req.session_id), timeout_ms = timeout, "session resumed");
        self.write_connect(&ConnectResponse {
            protocol_version: 0,
            timeout,
            session_id: req.session_id,
            passwd: req.passwd,
            read_only,
        });
        Ok(true)
    }

    fn write_connect(&mut self, resp: &ConnectResponse) {
        write_frame(&mut self.out, |b| resp.encode(b));
    }

    /// Binds the session to this connection, closing any other connection that held it.
    fn attach(&mut self, session_id: i64, timeout_ms: i32) {
        self.session_id = session_id;
        self.timeout_ms = timeout_ms;
        let shared = &self.ctx.shared;
        {
            let mut conns = shared.conns.lock();
            if let Some(old) = conns.by_session.insert(session_id, self.id) {
                if old != self.id {
                    conns.send(old, ConnMsg::Close("session moved to another connection"));
                }
            }
            if let Some(info) = conns.by_id.get_mut(&self.id) {
                info.session_id = Some(session_id);
                info.timeout_ms = timeout_ms;
            }
        }
        shared.touch(session_id, timeout_ms);
    }

    async fn propose_and_wait(&mut self, txn: Txn) -> Result<WriteReply, ConnError> {
        let rx = self.propose(Proposal::Txn(txn), true).await?;
        rx.await.map_err(ConnError::Closed)
    }

    /// Proposes now, locally on the leader or forwarded to it; the result comes once this node applied it.
    /// `idle`: no earlier proposal of this connection is in flight, so this one may wait a little for a
    /// reachable leader during a failover (up to a third of the session timeout, at most a second:
    /// the client's pings are not answered meanwhile).
    async fn propose(&mut self, p: Proposal, idle: bool) -> Result<WriteRx, ConnError> {
        let prior = if idle { None } else { self.route.as_ref() };
        let hold = std::time::Duration::from_millis(
            (self.timeout_ms.max(0) as u64 / 3).clamp(HOLD_MIN_MS, HOLD_MAX_MS),
        );
        let (rx, route) = forward::propose(&self.ctx, p, prior, hold)
            .await
            .map_err(|e| ConnError::Closed(format!("write not proposed: {e}")))?;
        self.route = Some(route);
        Ok(rx)
    }

    async fn handle_packet(
        &mut self,
        body: Bytes,
        writes: &mut FuturesOrdered<WriteRx>,
        rx: &mut mpsc::UnboundedReceiver<ConnMsg>,
    ) -> Result<(), ConnError> {
        let shared = self.ctx.shared.clone();
        shared
            .stats
            .packets_received
            .fetch_add(1, Ordering::Relaxed);
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        shared.touch(self.session_id, self.timeout_ms);
        let started = Instant::now();
        let mut buf: &[u8] = &body;
        let header = match RequestHeader::decode(&mut buf) {
            Ok(h) => h,
            Err(e) => {
                shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                return Err(ConnError::Closed(format!(
                    "request header does not decode: {e}"
                )));
            }
        };
        if header.xid > 0 {
            self.stats
                .last_cxid
                .store(header.xid as u64, Ordering::Relaxed);
        }
        let op = match OpCode::from_i32(header.op_type) {
            Ok(op) => op,
            Err(_) => {
                shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(conn = self.id, peer = %self.peer, op = header.op_type, "unknown opcode: answering Unimplemented and closing");
                self.reply_now(header.xid, Err(ErrorCode::Unimplemented), started, None);
                self.close_after_flush = true;
                return Ok(());
            }
        };
        let req = match Request::decode(op, buf) {
            Ok(r) => r,
            Err(e) => {
                shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(conn = self.id, peer = %self.peer, ?op, error = %e, "request body does not decode: answering MarshallingError");
                self.queue_local(header.xid, Err(ErrorCode::MarshallingError), started, rx);
                return Ok(());
            }
        };
        match req {
            Request::Ping => {
                let zxid = shared.db.lock().state.last_zxid();
                self.write_header(
                    ReplyHeader {
                        xid: xid::PING,
                        zxid,
                        err: 0,
                    },
                    None,
                );
            }
            Request::Auth(a) => self.handle_auth(header.xid, a),

            // reconfig travels the write path: `peer::forward::propose` hands it to `peer::reconfig`.
            ref r if r.is_write() => {
                if self.needs_ttl(r) && !shared.config.ttl_nodes {
                    self.queue_local(header.xid, Err(ErrorCode::Unimplemented), started, rx);
                    return Ok(());
                }
                let op_txn = if matches!(req, Request::CloseSession) {
                    self.close_requested = true;
                    TxnOp::CloseSession
                } else {
                    TxnOp::Request {
                        request: req,
                        auth: self.auth.clone(),
                    }
                };
                let txn = Proposal::Txn(Txn {
                    session_id: self.session_id,
                    time: now_ms(),
                    op: op_txn,
                });
                self.queue_proposal(header.xid, op, started, txn, None, writes)
                    .await?;
            }
            Request::Sync(r) => {
                let p = Proposal::Sync(r.path);
                self.queue_proposal(header.xid, op, started, p, None, writes)
                    .await?;
            }
            ref r if shared.config.linearizable_reads && is_data_read(r) => {
                // A read barrier first (as `sync`), then the read, against a state that applied it.
                let p = Proposal::Sync(r.path().unwrap_or("/").to_string());
                self.queue_proposal(header.xid, op, started, p, Some(req), writes)
                    .await?;
            }
            _ => self.queue_local(header.xid, Ok(req), started, rx),
        }
        Ok(())
    }

    /// Proposes a write or sync now, or holds it behind an earlier local request (see [`Pending`]).
    async fn queue_proposal(
        &mut self,
        xid: i32,
        op: OpCode,
        started: Instant,
        txn: Proposal,
        then: Option<Request>,
        writes: &mut FuturesOrdered<WriteRx>,
    ) -> Result<(), ConnError> {
        self.ctx
            .shared
            .stats
            .outstanding
            .fetch_add(1, Ordering::Relaxed);
        self.stats.outstanding.fetch_add(1, Ordering::Relaxed);
        if self.can_propose_now() {
            let view =
                self.wants_views && matches!(txn, Proposal::Txn(_)) && self.ctx.raft.is_leader();
            let idle = writes.is_empty();
            writes.push_back(self.propose(txn, idle).await?);
            self.pending.push_back(Pending::Write {
                xid,
                op,
                started,
                txn: None,
                view,
                then,
            });
        } else {
            self.pending.push_back(Pending::Write {
                xid,
                op,
                started,
                txn: Some(txn),
                view: false,
                then,
            });
        }
        Ok(())
    }

    /// Whether a new write may be proposed before the requests queued ahead of it are answered: when
    /// none is held, and every queued read will be answered from the state view of the write right
    /// before it (on the leader, where views exist), so it cannot observe the new write.
    fn can_propose_now(&self) -> bool {
        let mut view_before = false;
        for p in &self.pending {
            match p {
                // Held writes keep their order; nothing passes a pending linearizable read.
                Pending::Write { txn: Some(_), .. } | Pending::Write { then: Some(_), .. } => {
                    return false
                }
                Pending::Write { view, .. } => view_before = *view,
                Pending::Local { .. } if !view_before => return false,
                Pending::Local { .. } => {}
            }
        }
        true
    }

    fn needs_ttl(&self, r: &Request) -> bool {
        match r {
            Request::CreateTtl(_) => true,
            Request::Multi(ops) => ops.iter().any(|o| matches!(o, Request::CreateTtl(_))),
            _ => false,
        }
    }

    /// Queues a locally answered request, or answers it at once when nothing is pending before it.
    fn queue_local(
        &mut self,
        xid: i32,
        req: Result<Request, ErrorCode>,
        started: Instant,
        rx: &mut mpsc::UnboundedReceiver<ConnMsg>,
    ) {
        if self.pending.is_empty() {
            self.drain_events(rx, None);
            let (result, later) = self.execute_local(&req, None);
            self.reply_now(xid, result, started, None);
            self.push_events(later);
        } else {
            if !self.wants_views && self.session_id != 0 {
                // From now on this session's writes carry state views, so later writes need not wait
                // behind its reads.
                self.wants_views = true;
                *self
                    .ctx
                    .shared
                    .view_sessions
                    .lock()
                    .entry(self.session_id)
                    .or_insert(0) += 1;
            }
            self.pending.push_back(Pending::Local { xid, req, started });
        }
    }

    /// Answers queued local requests at the head of the queue, up to the next pending write.
    fn answer_ready_locals(&mut self, rx: &mut mpsc::UnboundedReceiver<ConnMsg>) {
        let view = self.view.take();
        let at = view.as_ref().map(|v| v.last_zxid());
        while let Some(Pending::Local { .. }) = self.pending.front() {
            let Some(Pending::Local { xid, req, started }) = self.pending.pop_front() else {
                unreachable!()
            };
            self.drain_events(rx, at);
            let (result, later) = self.execute_local(&req, view.as_ref());
            self.reply_now(xid, result, started, at);
            self.push_events(later);
        }
        if !self
            .pending
            .iter()
            .any(|p| matches!(p, Pending::Local { .. }))
        {
            self.drain_events(rx, None);
        }
    }

    /// Proposes, in order, the writes that were held behind local requests now answered.
    async fn propose_held_writes(
        &mut self,
        writes: &mut FuturesOrdered<WriteRx>,
    ) -> Result<(), ConnError> {
        for i in 0..self.pending.len() {
            match &mut self.pending[i] {
                Pending::Local { .. } => break,
                Pending::Write { txn, then, .. } => {
                    let barrier = then.is_some();
                    if let Some(t) = txn.take() {
                        let idle = writes.is_empty();
                        writes.push_back(self.propose(t, idle).await?);
                    }
                    if barrier {
                        // Later writes wait until this linearizable read is answered.
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn finish_write(
        &mut self,
        result: Result<WriteReply, String>,
        rx: &mut mpsc::UnboundedReceiver<ConnMsg>,
    ) {
        let shared = self.ctx.shared.clone();
        shared.stats.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.stats.outstanding.fetch_sub(1, Ordering::Relaxed);
        let Some(Pending::Write {
            xid,
            op,
            started,
            txn: None,
            then,
            ..
        }) = self.pending.pop_front()
        else {
            tracing::error!(
                conn = self.id,
                "write result without a pending write; closing"
            );
            self.close_after_flush = true;
            return;
        };
        match result {
            Ok(_) if then.is_some() => {
                // A linearizable read whose barrier passed: answer it from the current state.
                self.drain_events(rx, None);
                let (result, later) = self.execute_local(&Ok(then.expect("checked")), None);
                self.reply_now(xid, result, started, None);
                self.push_events(later);
            }
            Ok(WriteReply {
                zxid,
                outcome,
                view,
            }) => {
                // Events of later changes wait while reads answered from this write's view follow.
                let reads_follow = matches!(self.pending.front(), Some(Pending::Local { .. }));
                self.view = if reads_follow { view.0 } else { None };
                self.drain_events(rx, self.view.as_ref().map(|_| zxid));
                let (err, body) = match outcome {
                    Outcome::Response(Ok(r)) => (0, Some(r)),
                    Outcome::Response(Err(code)) => (code.code(), None),
                    Outcome::Closed => {
                        self.close_after_flush = true;
                        (0, None)
                    }
                    Outcome::Session { .. } | Outcome::None => (0, None),
                };
                if op == OpCode::CloseSession {
                    self.close_after_flush = true;
                }
                self.write_header(ReplyHeader { xid, zxid, err }, body.as_ref());
                self.record_latency(started);
            }
            Err(e) => {
                self.drain_events(rx, None);
                tracing::warn!(conn = self.id, error = %e, "write not accepted; closing so the client reconnects");
                self.close_after_flush = true;
            }
        }
    }

    /// Runs a non-replicated request against the local state and watch table.
    /// Runs a non-replicated request. With a `view` (the state right after this connection's last
    /// write), data reads answer from it and register their watches against the current state with
    /// setWatches' replay rules relative to the view, so a change made since then fires at once; those
    /// events are returned to be sent after the reply.
    fn execute_local(
        &mut self,
        req: &Result<Request, ErrorCode>,
        view: Option<&State>,
    ) -> (Result<Response, ErrorCode>, Vec<WatcherEvent>) {
        let req = match req {
            Ok(r) => r,
            Err(code) => return (Err(*code), Vec::new()),
        };
        if let Some(view) = view {
            if let Some(answer) = self.read_from_view(req, view) {
                return answer;
            }
        }
        (self.execute_current(req), Vec::new())
    }

    /// A data read answered from `view`, or `None` for requests that must use the current state.
    fn read_from_view(
        &mut self,
        req: &Request,
        view: &State,
    ) -> Option<(Result<Response, ErrorCode>, Vec<WatcherEvent>)> {
        let (path, watch) = match req {
            Request::Exists(r) => (r.path.as_str(), r.watch),
            Request::GetData(r) => (r.path.as_str(), r.watch),
            Request::GetChildren(r) => (r.path.as_str(), r.watch),
            Request::GetChildren2(r) => (r.path.as_str(), r.watch),
            Request::GetAcl(_) | Request::GetAllChildrenNumber(_) | Request::GetEphemerals(_) => {
                ("", false)
            }
            Request::MultiRead(ops) if ops.iter().all(|o| !o.sets_watch()) => ("", false),
            _ => return None,
        };
        let shared = self.ctx.shared.clone();
        let limit = shared.config.max_watches_per_session;
        let mut db = shared.db.lock();
        let db = &mut *db;
        if watch && limit > 0 && db.watches.count_for(self.id) >= limit {
            return None;
        }
        let mut scratch = WatchTable::new();
        let result = roster_state::read(
            view,
            &mut scratch,
            self.id,
            self.session_id,
            req,
            &self.auth,
        );
        let mut later = Vec::new();
        if watch {
            let path = if path.is_empty() { "/" } else { path }.to_string();
            let mut sw = SetWatches2 {
                relative_zxid: view.last_zxid(),
                ..Default::default()
            };
            match (req, &result) {
                (Request::Exists(_), Ok(_)) | (Request::GetData(_), Ok(_)) => {
                    sw.data_watches.push(path)
                }
                (Request::Exists(_), Err(ErrorCode::NoNode)) => sw.exist_watches.push(path),
                (Request::GetChildren(_) | Request::GetChildren2(_), Ok(_)) => {
                    sw.child_watches.push(path)
                }
                _ => {}
            }
            later = db.watches.set_watches(&db.state, self.id, &sw);
        }
        Some((result, later))
    }

    /// Runs a non-replicated request against the current state and watch table.
    fn execute_current(&mut self, req: &Request) -> Result<Response, ErrorCode> {
        let shared = self.ctx.shared.clone();
        let limit = shared.config.max_watches_per_session;
        let mut db = shared.db.lock();
        let db = &mut *db;
        let sets_watch = match req {
            Request::Exists(r) => r.watch,
            Request::GetData(r) => r.watch,
            Request::GetChildren(r) => r.watch,
            Request::GetChildren2(r) => r.watch,
            Request::AddWatch(_) => true,
            _ => false,
        };
        if sets_watch && limit > 0 && db.watches.count_for(self.id) >= limit {
            tracing::warn!(
                conn = self.id, session = format_args!("{:#x}", self.session_id), limit,
                "watch refused: this connection holds the most watches allowed (setting max-watches-per-session)"
            );
            return Err(ErrorCode::QuotaExceeded);
        }
        match req {
            // Not reached: reconfig is a write (see `peer::reconfig`); it cannot wait for a membership change here.
            Request::Reconfig(r) => crate::peer::reconfig::local(r),
            Request::Sync(r) => Ok(Response::Sync(SyncResponse {
                path: r.path.clone(),
            })),
            Request::SetWatches(sw) => {
                let sw2 = SetWatches2 {
                    relative_zxid: sw.relative_zxid,
                    data_watches: sw.data_watches.clone(),
                    exist_watches: sw.exist_watches.clone(),
                    child_watches: sw.child_watches.clone(),
                    persistent_watches: vec![],
                    persistent_recursive_watches: vec![],
                };
                // Replayed events carry zxid -1, as ZooKeeper sends them.
                for e in db.watches.set_watches(&db.state, self.id, &sw2) {
                    self.push_event(&e, -1);
                }
                Ok(Response::Empty)
            }
            Request::SetWatches2(sw) => {
                for e in db.watches.set_watches(&db.state, self.id, sw) {
                    self.push_event(&e, -1);
                }
                Ok(Response::Empty)
            }
            Request::AddWatch(r) => {
                let mode = AddWatchMode::from_i32(r.mode).map_err(|_| ErrorCode::BadArguments)?;
                db.watches.add_watch(self.id, &r.path, mode);
                Ok(Response::Error(ErrorResponse { err: 0 }))
            }
            Request::RemoveWatches(r) => {
                let t =
                    WatcherType::from_i32(r.watcher_type).map_err(|_| ErrorCode::BadArguments)?;
                db.watches
                    .remove_watches(self.id, &r.path, t, false)
                    .map(|_| Response::Empty)
            }
            Request::CheckWatches(r) => {
                let t =
                    WatcherType::from_i32(r.watcher_type).map_err(|_| ErrorCode::BadArguments)?;
                db.watches
                    .check_watches(self.id, &r.path, t)
                    .map(|_| Response::Empty)
            }
            // Like a ZooKeeper with no SASL configured: an empty (null) challenge, nothing authenticated.
            Request::Sasl(_) => Ok(Response::Sasl(roster_proto::SetSaslResponse {
                token: Bytes::new(),
            })),
            Request::WhoAmI => Ok(Response::WhoAmI(WhoAmIResponse {
                client_info: self
                    .auth
                    .iter()
                    .filter(|id| id.scheme != "super")
                    // Like ZooKeeper's DigestAuthenticationProvider.getUserName: the user, not the hash.
                    .map(|id| ClientInfo {
                        auth_scheme: id.scheme.clone(),
                        user: match id.scheme.as_str() {
                            "digest" => id.id.split(':').next().unwrap_or_default().to_string(),
                            _ => id.id.clone(),
                        },
                    })
                    .collect(),
            })),
            other => roster_state::read(
                &db.state,
                &mut db.watches,
                self.id,
                self.session_id,
                other,
                &self.auth,
            ),
        }
    }

    fn handle_auth(&mut self, xid_: i32, a: roster_proto::AuthPacket) {
        let shared = self.ctx.shared.clone();
        let ok = match a.scheme.as_str() {
            // ZooKeeper accepts any digest credentials (`user:password`, or a bare `user`, hashed whole).
            "digest" => match std::str::from_utf8(&a.auth) {
                Ok(up) => {
                    let digest = roster_state::digest(up);
                    if shared.config.super_digest.as_deref() == Some(digest.as_str()) {
                        self.auth.push(Id::new("super", ""));
                    }
                    let id = Id::new("digest", &digest);
                    if !self.auth.contains(&id) {
                        self.auth.push(id);
                    }
                    true
                }
                Err(_) => false,
            },
            "ip" => true,
            _ => false,
        };
        if ok {
            self.write_header(
                ReplyHeader {
                    xid: xid_,
                    zxid: 0,
                    err: 0,
                },
                None,
            );
        } else {
            tracing::info!(conn = self.id, peer = %self.peer, scheme = %a.scheme, "authentication failed: unknown scheme or malformed credentials; closing");
            self.write_header(
                ReplyHeader {
                    xid: xid_,
                    zxid: 0,
                    err: ErrorCode::AuthFailed.code(),
                },
                None,
            );
            self.close_after_flush = true;
        }
    }

    /// Writes a reply; `at` is the zxid of the view it was answered from (default: the current state).
    fn reply_now(
        &mut self,
        xid_: i32,
        result: Result<Response, ErrorCode>,
        started: Instant,
        at: Option<i64>,
    ) {
        let zxid = match at {
            Some(z) => z,
            None => self.ctx.shared.db.lock().state.last_zxid(),
        };
        match result {
            Ok(r) => self.write_header(
                ReplyHeader {
                    xid: xid_,
                    zxid,
                    err: 0,
                },
                Some(&r),
            ),
            Err(code) => self.write_header(
                ReplyHeader {
                    xid: xid_,
                    zxid,
                    err: code.code(),
                },
                None,
            ),
        }
        self.record_latency(started);
    }

    /// Counts one answered request in the server's and this connection's statistics.
    fn record_latency(&self, started: Instant) {
        self.ctx.shared.stats.record_latency(started);
        let ms = started.elapsed().as_millis() as u64;
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
        self.stats.latency_total_ms.fetch_add(ms, Ordering::Relaxed);
        self.stats.latency_max_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn write_header(&mut self, h: ReplyHeader, body: Option<&Response>) {
        self.ctx
            .shared
            .stats
            .packets_sent
            .fetch_add(1, Ordering::Relaxed);
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        if h.zxid > 0 {
            self.stats.last_zxid.store(h.zxid as u64, Ordering::Relaxed);
        }
        write_reply(&mut self.out, &h, body);
    }

    fn push_event(&mut self, ev: &WatcherEvent, zxid: i64) {
        self.ctx
            .shared
            .stats
            .packets_sent
            .fetch_add(1, Ordering::Relaxed);
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        write_frame(&mut self.out, |b| {
            ReplyHeader {
                xid: xid::NOTIFICATION,
                zxid,
                err: 0,
            }
            .encode(b);
            ev.encode(b);
        });
    }

    /// Events generated by this connection's own read (setWatches replay): after its reply.
    fn push_events(&mut self, events: Vec<WatcherEvent>) {
        for e in events {
            self.push_event(&e, -1);
        }
    }

    /// A watch event from the state machine: sent at once, unless reads answered from an older view
    /// are queued (they were issued before it and must not appear to follow it).
    fn event_arrived(&mut self, ev: WatcherEvent, zxid: i64) {
        if self
            .pending
            .iter()
            .any(|p| matches!(p, Pending::Local { .. }))
        {
            self.deferred.push_back((ev, zxid));
        } else {
            while let Some((e, z)) = self.deferred.pop_front() {
                self.push_event(&e, z);
            }
            self.push_event(&ev, zxid);
        }
    }

    /// Sends the events that must precede a reply showing the state as of zxid `upto` (every event
    /// when `None`: the current state), holding back later ones; handles close requests.
    fn drain_events(&mut self, rx: &mut mpsc::UnboundedReceiver<ConnMsg>, upto: Option<i64>) {
        while let Ok(msg) = rx.try_recv() {
            match msg {
                ConnMsg::Event(ev, zxid) => self.deferred.push_back((ev, zxid)),
                ConnMsg::Close(reason) => {
                    if !self.close_requested {
                        tracing::info!(conn = self.id, reason, "closing connection");
                        self.close_after_flush = true;
                    }
                }
            }
        }
        // Events arrive in zxid order, so the ones to send now are a prefix.
        while let Some((_, z)) = self.deferred.front() {
            if upto.is_some_and(|u| *z > u) {
                break;
            }
            let (e, z) = self.deferred.pop_front().expect("front exists");
            self.push_event(&e, z);
        }
    }
}

/// Reads that `linearizable_reads` puts behind a read barrier.
fn is_data_read(r: &Request) -> bool {
    matches!(
        r,
        Request::Exists(_)
            | Request::GetData(_)
            | Request::GetChildren(_)
            | Request::GetChildren2(_)
            | Request::GetAcl(_)
            | Request::GetAllChildrenNumber(_)
            | Request::GetEphemerals(_)
            | Request::MultiRead(_)
    )
}
