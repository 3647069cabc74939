//! One client connection: the handshake (new session, resume, or refusal), then requests in, replies and
//! watch notifications out.
//!
//! This task is the I/O driver of the connection's [`Pipeline`]: it decodes frames into pipeline
//! requests, feeds it proposal results, watch events, route changes ([`super::routing`]) and time, and
//! carries out the actions it emits: proposing, executing reads against the local state (or a view of
//! it), encoding replies and events, closing. Every ordering rule (replies in request order, events
//! before the replies that show their change, barriers, what a failed or orphaned write does to the
//! requests behind it) is the pipeline's; see [`super::pipeline`].
//!
//! One rule is kept here: the state machine hands a write's watch events to this task before it answers
//! the proposer, so before a proposal result is fed to the pipeline, every event already delivered is fed
//! first.
//!
//! Pings, auth and sasl packets are answered here at once, never queued behind writes, fsyncs or snapshots;
//! every packet touches the session. Stock clients match ping replies out of band (xid -2).
//!
//! Bad input: an unknown opcode (or 0, -1) is answered `Unimplemented` (in order) and the connection
//! closed (ZooKeeper's UnimplementedRequestProcessor); a body that does not decode is answered
//! `MarshallingError` (an auth or sasl packet closes the connection), bytes after it are ignored; a
//! frame over the limit or a broken handshake closes the connection. Each is logged
//! with the reason and touches nothing else.
//!
//! Hostile clients: a connection that sends no first frame within `handshake-timeout-ms` is closed
//! (reason `handshake_timeout`) and its first frame may not pass 64 KiB; the input buffer grows only
//! as bytes arrive (from 512 bytes), never to a frame's declared length, and all connections
//! together hold at most
//! 256 MiB (or four frames of `max-frame-bytes`) of half-sent frames: past it, a connection holding
//! more than 64 KiB of one is closed (reason `partial_frames`). Replies and events leave through a queue bounded by `max-outgoing-bytes`: a
//! client that does not read past it is closed as a slow reader (reason `slow_reader`; its session
//! lives on until its timeout, as after a connection loss). A closing connection (session expired,
//! closed by the node) gets at most one second to take what is queued, then is closed. No reply
//! passes `max-frame-bytes` (plus a header's slack): a multiRead's reply size is counted before it
//! is built, and such a request (or any oversized reply) is answered MarshallingError.

mod reads;

use super::ctx::ClientCtx;
use super::ctx::Route;
use super::forward::{Proposal, WriteInFlight};
use super::fourlw;
use super::pipeline::{self, Action, Done, Pipeline, PropKind, Target};
use super::routing;
use crate::error::{ClientAnswer, Error};
use crate::metrics::Rejection;
use crate::reply::{Outcome, WriteReply};
use crate::shared::{now_ms, ClientAddr, ConnInfo, ConnMsg, ConnStats};
use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use roster_proto::{
    jute::Jute, parse_frame, write_frame, write_reply, xid, AddWatchMode, ClientInfo,
    ConnectRequest, ConnectResponse, ErrorCode, ErrorResponse, Frame, FrameError, Id, OpCode,
    ReplyHeader, Request, RequestHeader, Response, SetWatches2, SyncResponse, WatcherEvent,
    WatcherType, WhoAmIResponse,
};
use roster_state::{State, Txn, TxnOp, WatchTable};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};

/// A client's byte stream, whatever carries it: a TCP stream, an in-process duplex pipe (an embedded
/// node's own clients), or anything else that reads and writes.
pub trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ClientStream for T {}

/// A boxed [`ClientStream`], what [`run`] serves.
pub type BoxStream = Box<dyn ClientStream>;

type Rd = ReadHalf<BoxStream>;
type Wr = WriteHalf<BoxStream>;

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
    #[error("no handshake within handshake-timeout-ms")]
    HandshakeTimeout,
    #[error("slow reader: more than max-outgoing-bytes queued")]
    SlowReader,
}

/// How far a reply may pass `max-frame-bytes`: a node whose create request just fit must stay
/// readable with its reply header and stat around its data.
pub(super) const REPLY_SLACK: usize = 1024;

/// The largest first frame (a ConnectRequest or a four-letter word) accepted, bytes.
const FIRST_FRAME_MAX: usize = 64 << 10;

/// Bytes all connections together may hold in frames not yet complete (at least four frames of
/// `max-frame-bytes`); past it, a connection holding more than [`FIRST_FRAME_MAX`] of one is closed.
const PARTIAL_BUDGET: usize = 256 << 20;

/// How long a closing connection's queued replies may take to leave.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// What a connection's input buffer starts with: a ConnectRequest, a ping or a small request fits,
/// and it grows with the traffic (the reply buffers start empty and grow the same way), so
/// thousands of mostly idle sessions do not each hold 8 KiB they never use. A connection keeps
/// the largest buffers it needed: giving them back whenever it goes idle cost one to three
/// allocations per request (+9 % instructions per one-at-a-time read under callgrind).
const INBUF_START: usize = 512;

/// Bounds of how long a proposal with nothing else of its connection in flight may wait for a
/// reachable leader (a third of the session timeout, clamped to these).
const HOLD_MIN: Duration = Duration::from_millis(500);
const HOLD_MAX: Duration = Duration::from_millis(1_000);

/// The types this connection's pipeline carries.
struct ConnTypes;

/// What a reply needs: the client's xid and when the request arrived.
struct Meta {
    xid: i32,
    started: Instant,
    /// The opcode's metrics slot (`metrics::op_slot`).
    slot: usize,
}

impl pipeline::Types for ConnTypes {
    type Meta = Meta;
    type Prop = Proposal;
    type Read = Result<Request, ErrorCode>;
    type Reply = Outcome;
    type View = State;
    type Event = WatcherEvent;
}

/// A decoded first frame.
enum FirstFrame {
    Word(&'static str),
    Packet(Bytes),
}

struct Conn {
    ctx: Arc<ClientCtx>,
    id: u64,
    peer: ClientAddr,
    stats: Arc<ConnStats>,
    session_id: i64,
    timeout_ms: i32,
    auth: Vec<Id>,
    out: BytesMut,
    pipe: Pipeline<ConnTypes>,
    /// The route last fed to the pipeline (its link carries forwarded proposals).
    route: Route,
    /// Requests of this connection counted in the `outstanding` statistics.
    outstanding: u64,
    /// Why the pipeline closed the connection, and whether that was an expected end.
    close: Option<(String, bool)>,
    /// The SASL login in progress or done (created by the first `sasl` packet).
    sasl: Option<super::sasl::DigestMd5>,
    /// Whether this session's writes carry state views (registered in `Shared::view_sessions` once
    /// the connection pipelines a read behind a write).
    wants_views: bool,
    /// Bytes of incomplete frames this connection holds, as counted in `ClientCtx::partial_bytes`.
    partial: usize,
}

/// Serves one accepted connection until it closes.
pub async fn run(
    stream: BoxStream,
    peer: ClientAddr,
    ctx: Arc<ClientCtx>,
    shutdown: watch::Receiver<bool>,
) {
    run_with(stream, peer, Vec::new(), ctx, shutdown).await
}

/// [`run`], with identities the transport established (a TLS client certificate's `x509` id).
pub async fn run_with(
    stream: BoxStream,
    peer: ClientAddr,
    transport_auth: Vec<Id>,
    ctx: Arc<ClientCtx>,
    shutdown: watch::Receiver<bool>,
) {
    let id = ctx.node.shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(ConnStats::default());
    ctx.node.shared.conns.lock().by_id.insert(
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
    let route = ctx.routes.borrow().clone();
    let mut conn = Conn {
        ctx: ctx.clone(),
        id,
        peer,
        stats,
        session_id: 0,
        timeout_ms: 0,
        auth: std::iter::once(Id::new("ip", &peer.ip().to_string()))
            .chain(transport_auth)
            .collect(),
        sasl: None,
        out: BytesMut::new(),
        pipe: Pipeline::new(route.target, HOLD_MIN),
        route,
        outstanding: 0,
        close: None,
        wants_views: false,
        partial: 0,
    };
    let (rd, wr) = tokio::io::split(stream);
    match conn.serve(rd, wr, rx, shutdown).await {
        Ok(())
        | Err(ConnError::Eof)
        | Err(ConnError::HandshakeTimeout)
        | Err(ConnError::SlowReader) => {
            tracing::debug!(conn = id, %peer, session = format_args!("{:#x}", conn.session_id), "connection closed")
        }
        Err(e) => {
            tracing::info!(conn = id, %peer, session = format_args!("{:#x}", conn.session_id), reason = %e, "connection closed")
        }
    }
    conn.count_outstanding(0);
    conn.hold_partial(0);
    ctx.node.shared.db.lock().watches.remove_watcher(id);
    if conn.wants_views {
        let mut vs = ctx.node.shared.view_sessions.lock();
        if let Some(n) = vs.get_mut(&conn.session_id) {
            *n -= 1;
            if *n == 0 {
                vs.remove(&conn.session_id);
            }
        }
    }
    if conn.session_id != 0 {
        ctx.node
            .shared
            .last_seen_on
            .lock()
            .insert(conn.session_id, ctx.node.identity.node_id);
    }
    let mut conns = ctx.node.shared.conns.lock();
    let info = conns.by_id.remove(&id);
    if conns.by_session.get(&conn.session_id) == Some(&id) {
        conns.by_session.remove(&conn.session_id);
        if let Some(info) = info {
            conns.departed.insert(conn.session_id, info.timeout_ms);
        }
    }
}

/// Reads one frame, buffering as needed.
async fn read_frame(
    rd: &mut Rd,
    buf: &mut BytesMut,
    max: usize,
    first: bool,
) -> Result<FirstFrame, ConnError> {
    loop {
        if let Some((frame, used)) = parse_frame(buf, max, first)? {
            let f = match frame {
                Frame::FourLetterWord(w) => FirstFrame::Word(w),
                Frame::Packet(p) => FirstFrame::Packet(Bytes::copy_from_slice(p)),
            };
            let _ = buf.split_to(used);
            return Ok(f);
        }
        if rd.read_buf(buf).await? == 0 {
            return Err(ConnError::Eof);
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

impl Conn {
    async fn serve(
        &mut self,
        mut rd: Rd,
        mut wr: Wr,
        mut rx: mpsc::UnboundedReceiver<ConnMsg>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), ConnError> {
        let config = &self.ctx.node.shared.config;
        let max = config.max_frame_bytes;
        // One reply always fits.
        let max_out = config.max_outgoing_bytes.max(2 * max);
        let handshake_timeout = Duration::from_millis(config.handshake_timeout_ms);
        let mut inbuf = BytesMut::with_capacity(INBUF_START);
        // A ConnectRequest is a few dozen bytes: a first frame never needs the full frame limit.
        let first_max = max.min(FIRST_FRAME_MAX);
        let first = tokio::select! {
            f = tokio::time::timeout(handshake_timeout, read_frame(&mut rd, &mut inbuf, first_max, true)) => match f {
                Ok(f) => f?,
                Err(_) => {
                    self.ctx.node.shared.metrics.rejected(Rejection::handshake_timeout);
                    tracing::debug!(conn = self.id, peer = %self.peer, "closing: no handshake within handshake-timeout-ms");
                    return Err(ConnError::HandshakeTimeout);
                }
            },
            _ = shutdown.changed() => return Ok(()),
        };
        let body = match first {
            FirstFrame::Word(w) => {
                let text = fourlw::run(w, &self.ctx.node);
                // A client that does not read the answer does not keep the connection.
                let _ =
                    tokio::time::timeout(handshake_timeout, wr.write_all(text.as_bytes())).await;
                let _ = wr.shutdown().await;
                return Ok(());
            }
            FirstFrame::Packet(b) => b,
        };
        if !self.handshake(&body).await? {
            wr.write_all(&self.out).await?;
            let _ = wr.shutdown().await;
            return Ok(());
        }
        wr.write_all(&self.out).await?;
        self.out.clear();

        let hold =
            Duration::from_millis(self.timeout_ms.max(0) as u64 / 3).clamp(HOLD_MIN, HOLD_MAX);
        let mut routes = self.ctx.routes.clone();
        self.route = routes.borrow_and_update().clone();
        self.pipe = Pipeline::new(self.route.target, hold);
        let mut writes: FuturesOrdered<WriteInFlight> = FuturesOrdered::new();
        // Encoded replies and events not yet written to the socket (bounded by max-outgoing-bytes).
        let mut pending = BytesMut::new();
        loop {
            // Frames already buffered (for example sent right behind the handshake) go first.
            // ... unless the replies already queued pass the outgoing bound (checked below).
            while self.pipe.accepts_requests() && pending.len() + self.out.len() <= max_out {
                let Some((frame, used)) = parse_frame(&inbuf, max, false)? else {
                    break;
                };
                let Frame::Packet(p) = frame else {
                    unreachable!("four-letter words only on the first frame")
                };
                let body = Bytes::copy_from_slice(p);
                let _ = inbuf.split_to(used);
                self.handle_packet(body)?;
                self.carry_out(&mut writes).await;
            }
            // What is left in `inbuf` is a frame not yet complete: counted against the budget of all
            // connections; past it, the connections holding the most of one are closed.
            self.hold_partial(inbuf.len());
            let budget = PARTIAL_BUDGET.max(4 * max);
            if inbuf.len() > FIRST_FRAME_MAX
                && self.ctx.partial_bytes.load(Ordering::Relaxed) > budget
            {
                self.ctx
                    .node
                    .shared
                    .metrics
                    .rejected(Rejection::partial_frames);
                tracing::warn!(
                    conn = self.id, peer = %self.peer, session = format_args!("{:#x}", self.session_id),
                    held = inbuf.len(), budget,
                    "closing: half-sent frames of all connections hold more memory than allowed, and this one holds a large one"
                );
                return Err(ConnError::Closed(
                    "too much memory in half-sent frames".into(),
                ));
            }
            if !self.out.is_empty() {
                self.ctx.node.shared.metrics.bytes_out(self.out.len());
                if pending.is_empty() {
                    // The usual case: nothing waits, so no copy.
                    std::mem::swap(&mut pending, &mut self.out);
                } else {
                    pending.extend_from_slice(&self.out);
                    self.out.clear();
                }
                if pending.len() > max_out {
                    self.ctx
                        .node
                        .shared
                        .metrics
                        .rejected(Rejection::slow_reader);
                    tracing::warn!(
                        conn = self.id, peer = %self.peer, session = format_args!("{:#x}", self.session_id),
                        queued = pending.len(), limit = max_out,
                        "closing a slow reader: more replies and events queued than max-outgoing-bytes; its session lives on until its timeout"
                    );
                    return Err(ConnError::SlowReader);
                }
            }
            if let Some((reason, expected)) = self.close.take() {
                // What is queued leaves if the client reads it soon; a client that does not read
                // does not hold the connection open.
                let _ = tokio::time::timeout(CLOSE_FLUSH, wr.write_all(&pending)).await;
                let _ = wr.shutdown().await;
                return if expected {
                    tracing::debug!(conn = self.id, %reason, "closing connection");
                    Ok(())
                } else {
                    Err(ConnError::Closed(reason))
                };
            }
            let deadline = self.pipe.deadline();
            tokio::select! {
                biased;
                r = wr.write_buf(&mut pending), if !pending.is_empty() => {
                    if r? == 0 {
                        return Err(ConnError::Eof);
                    }
                }
                msg = rx.recv() => match msg {
                    Some(msg) => {
                        // The events queued behind it join it (one socket write for all), up to a
                        // close, which ends the connection before anything after it.
                        let mut closes = matches!(msg, ConnMsg::Close(_));
                        self.node_message(msg);
                        while !closes {
                            let Ok(msg) = rx.try_recv() else { break };
                            closes = matches!(msg, ConnMsg::Close(_));
                            self.node_message(msg);
                        }
                    }
                    None => self.pipe.close_by_node("node shutting down"),
                },
                Some(result) = writes.next(), if !writes.is_empty() => {
                    self.write_done(&mut rx, result);
                    // The writes behind it that are already answered (the state machine applies
                    // entries in batches) are fed now too, each as the loop would, so that their
                    // replies leave in one socket write instead of one each; not past a result
                    // that closes the connection (no reply may follow one that was not sent).
                    self.carry_out(&mut writes).await;
                    while self.close.is_none() {
                        let Some(Some(result)) = writes.next().now_or_never() else {
                            break;
                        };
                        self.write_done(&mut rx, result);
                        self.carry_out(&mut writes).await;
                    }
                }
                r = routes.changed() => {
                    if r.is_err() {
                        self.pipe.close_by_node("node shutting down");
                    } else {
                        self.route = routes.borrow_and_update().clone();
                        self.pipe.route(Instant::now(), self.route.target);
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => self.pipe.tick(Instant::now()),
                r = rd.read_buf(&mut inbuf), if self.pipe.accepts_requests() => {
                    if r? == 0 {
                        return Err(ConnError::Eof);
                    }
                }
                _ = shutdown.changed() => return Ok(()),
            }
            self.carry_out(&mut writes).await;
        }
    }

    /// A message from the node: a watch event, or the end of the session.
    fn node_message(&mut self, msg: ConnMsg) {
        match msg {
            ConnMsg::Event(ev, zxid) => self.pipe.event(ev, zxid),
            ConnMsg::Close(reason) => self.pipe.close_by_node(reason),
        }
    }

    /// A proposal finished: the events of its write reached `rx` before its result, so they are fed
    /// to the pipeline first, then the result.
    fn write_done(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<ConnMsg>,
        result: Result<WriteReply, Error>,
    ) {
        while let Ok(msg) = rx.try_recv() {
            self.node_message(msg);
        }
        self.proposal_result(result);
    }

    /// Feeds a proposal result to the pipeline.
    fn proposal_result(&mut self, result: Result<WriteReply, Error>) {
        match result {
            Ok(WriteReply {
                zxid,
                outcome,
                view,
            }) => {
                let closes = matches!(outcome, Outcome::Closed);
                self.pipe.done(
                    Instant::now(),
                    Done {
                        zxid,
                        reply: outcome,
                        view: view.0,
                        closes,
                    },
                );
            }
            Err(e) => self.fail(&e, ""),
        }
    }

    /// A request failed: what the client is told is [`Error::client_answer`]'s to decide.
    fn fail(&mut self, e: &Error, context: &str) {
        match e.client_answer() {
            ClientAnswer::Close(reason) => self.pipe.failed(format!("{context}{reason}")),
            ClientAnswer::Code(code) => self.pipe.failed(format!("{context}{code:?}")),
        }
    }

    /// Carries out what the pipeline decided, in order.
    async fn carry_out(&mut self, writes: &mut FuturesOrdered<WriteInFlight>) {
        while let Some(action) = self.pipe.next_action() {
            match action {
                Action::Propose { prop, target, .. } => {
                    debug_assert!(target == self.route.target || target == Target::Unordered);
                    match routing::propose(&self.ctx, &self.route, prop).await {
                        Ok(pending) => writes.push_back(pending),
                        Err(e) => self.fail(&e, "not proposed: "),
                    }
                }
                Action::Read { meta, read, view } => {
                    let at = view.as_ref().map(|(_, z)| *z);
                    let (result, later) = self.execute_local(&read, view.as_ref().map(|(v, _)| v));
                    self.reply_now(meta.xid, result, at);
                    self.record_latency(meta.slot, meta.started);
                    self.push_events(later);
                }
                Action::Reply { meta, zxid, reply } => {
                    if matches!(reply, Outcome::Closed) {
                        self.ctx.node.shared.metrics.session_closed();
                    }
                    let (err, body) = match reply {
                        Outcome::Response(Ok(r)) => (0, Some(r)),
                        Outcome::Response(Err(code)) => (code.code(), None),
                        Outcome::Closed | Outcome::Session { .. } | Outcome::None => (0, None),
                    };
                    self.write_header(
                        ReplyHeader {
                            xid: meta.xid,
                            zxid,
                            err,
                        },
                        body.as_ref(),
                    );
                    self.record_latency(meta.slot, meta.started);
                }
                Action::Event(ev, zxid) => self.push_event(&ev, zxid),
                Action::WantViews => {
                    if !self.wants_views && self.session_id != 0 {
                        // From now on this session's writes carry state views, so later writes need
                        // not wait behind its reads.
                        self.wants_views = true;
                        *self
                            .ctx
                            .node
                            .shared
                            .view_sessions
                            .lock()
                            .entry(self.session_id)
                            .or_insert(0) += 1;
                    }
                }
                Action::Close { reason, expected } => {
                    if !expected {
                        tracing::info!(conn = self.id, session = format_args!("{:#x}", self.session_id), %reason, "closing connection");
                    }
                    self.close = Some((reason, expected));
                }
            }
        }
        self.count_outstanding(self.pipe.queued() as u64);
    }

    /// Keeps this connection's share of `ClientCtx::partial_bytes` at `now` bytes.
    fn hold_partial(&mut self, now: usize) {
        let total = &self.ctx.partial_bytes;
        if now > self.partial {
            total.fetch_add(now - self.partial, Ordering::Relaxed);
        } else {
            total.fetch_sub(self.partial - now, Ordering::Relaxed);
        }
        self.partial = now;
    }

    /// Keeps the `outstanding` statistics at `now` requests of this connection.
    fn count_outstanding(&mut self, now: u64) {
        let stats = &self.ctx.node.shared.stats.outstanding;
        if now > self.outstanding {
            stats.fetch_add(now - self.outstanding, Ordering::Relaxed);
            self.stats
                .outstanding
                .fetch_add(now - self.outstanding, Ordering::Relaxed);
        } else if now < self.outstanding {
            stats.fetch_sub(self.outstanding - now, Ordering::Relaxed);
            self.stats
                .outstanding
                .fetch_sub(self.outstanding - now, Ordering::Relaxed);
        }
        self.outstanding = now;
    }

    /// Handles the ConnectRequest. Returns false when the connection must close after `out` is sent.
    async fn handshake(&mut self, body: &[u8]) -> Result<bool, ConnError> {
        let shared = &self.ctx.node.shared;
        let req = match roster_proto::decode_exact::<ConnectRequest>(body) {
            Ok(r) => r,
            Err(e) => {
                shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                shared.metrics.rejected(Rejection::bad_handshake);
                return Err(ConnError::Closed(format!("handshake does not decode: {e}")));
            }
        };
        if !self.ctx.node.cluster.is_serving() {
            shared.metrics.rejected(Rejection::no_leader);
            return Err(ConnError::Closed(
                "refusing session: this server has no leader; client must try another server"
                    .to_string(),
            ));
        }
        let last_zxid = shared.db.lock().state.last_zxid();
        if req.last_zxid_seen > last_zxid {
            shared.metrics.rejected(Rejection::zxid_ahead);
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
            let hold = Duration::from_millis(timeout.max(0) as u64 / 3).clamp(HOLD_MIN, HOLD_MAX);
            let reply = routing::propose_and_wait(&self.ctx, Proposal::Txn(txn), hold)
                .await
                .map_err(|e| ConnError::Closed(format!("session not created: {e}")))?;
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
            shared.metrics.session_created();
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
            shared.metrics.rejected(Rejection::session_expired);
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
        let shared = &self.ctx.node.shared;
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

    /// Decodes one request and hands it to the pipeline (pings and auth are answered at once).
    fn handle_packet(&mut self, body: Bytes) -> Result<(), ConnError> {
        let shared = self.ctx.node.shared.clone();
        shared
            .stats
            .packets_received
            .fetch_add(1, Ordering::Relaxed);
        shared.metrics.bytes_in(body.len() + 4);
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
        let op = match OpCode::of_request(header.op_type) {
            Ok(op) => op,
            Err(_) => {
                shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(conn = self.id, peer = %self.peer, op = header.op_type, "unknown opcode: answering Unimplemented and closing");
                let meta = Meta {
                    xid: header.xid,
                    started,
                    slot: crate::metrics::op_slot(None),
                };
                self.read(meta, Err(ErrorCode::Unimplemented), true);
                return Ok(());
            }
        };
        let meta = Meta {
            xid: header.xid,
            started,
            slot: crate::metrics::op_slot(Some(op)),
        };
        let req = match Request::decode(op, buf) {
            Ok(r) => r,
            // ZooKeeper reads auth and sasl packets before its request pipeline, and closes the
            // connection when they do not decode.
            Err(e) if matches!(op, OpCode::Auth | OpCode::Sasl) => {
                shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                return Err(ConnError::Closed(format!(
                    "{op:?} packet does not decode: {e}"
                )));
            }
            Err(e) => {
                shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(conn = self.id, peer = %self.peer, ?op, error = %e, "request body does not decode: answering MarshallingError");
                self.read(meta, Err(ErrorCode::MarshallingError), false);
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
            Request::Sasl(s) => self.handle_sasl(header.xid, &s.token),

            // reconfig travels the write path, apart from the ordered route (`routing::propose`).
            ref r if r.is_write() => {
                if self.needs_ttl(r) && !shared.config.ttl_nodes {
                    self.read(meta, Err(ErrorCode::Unimplemented), false);
                    return Ok(());
                }
                let (op_txn, kind) = match req {
                    Request::CloseSession => (
                        TxnOp::CloseSession,
                        PropKind::Write {
                            closes_session: true,
                        },
                    ),
                    Request::Reconfig(_) => (
                        TxnOp::Request {
                            request: req,
                            auth: self.auth.clone(),
                        },
                        PropKind::Unordered,
                    ),
                    req => (
                        TxnOp::Request {
                            request: req,
                            auth: self.auth.clone(),
                        },
                        PropKind::Write {
                            closes_session: false,
                        },
                    ),
                };
                let prop = Proposal::Txn(Txn {
                    session_id: self.session_id,
                    time: now_ms(),
                    op: op_txn,
                });
                self.propose(meta, prop, kind, None);
            }
            Request::Sync(r) => self.propose(meta, Proposal::Sync(r.path), PropKind::Barrier, None),
            ref r if shared.config.linearizable_reads && r.is_data_read() => {
                // A read barrier first (as `sync`), then the read, against a state that applied it.
                let p = Proposal::Sync(r.path().unwrap_or("/").to_string());
                self.propose(meta, p, PropKind::Barrier, Some(Ok(req)));
            }
            _ => self.read(meta, Ok(req), false),
        }
        Ok(())
    }

    fn propose(
        &mut self,
        meta: Meta,
        prop: Proposal,
        kind: PropKind,
        then: Option<Result<Request, ErrorCode>>,
    ) {
        self.pipe.request(
            Instant::now(),
            pipeline::Request::Propose {
                meta,
                prop,
                kind,
                then,
            },
        );
    }

    fn read(&mut self, meta: Meta, read: Result<Request, ErrorCode>, last: bool) {
        self.pipe
            .request(Instant::now(), pipeline::Request::Read { meta, read, last });
    }

    fn needs_ttl(&self, r: &Request) -> bool {
        match r {
            Request::CreateTtl(_) => true,
            Request::Multi(ops) => ops.iter().any(|o| matches!(o, Request::CreateTtl(_))),
            _ => false,
        }
    }

    fn handle_auth(&mut self, xid_: i32, a: roster_proto::AuthPacket) {
        let shared = self.ctx.node.shared.clone();
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
            self.pipe
                .close_by_node("authentication failed: unknown scheme or malformed credentials");
        }
    }

    /// One SASL token: answered at once (as ZooKeeper does, outside its request pipeline); a failed
    /// login answers AuthFailed and closes the connection.
    fn handle_sasl(&mut self, xid_: i32, token: &[u8]) {
        let users_file = self.ctx.node.shared.config.sasl_users_file.clone();
        let step = match &users_file {
            None => super::sasl::Step::Failed(
                "SASL is not enabled on this server (set sasl-users-file)".to_string(),
            ),
            Some(path) => self
                .sasl
                .get_or_insert(super::sasl::DigestMd5::Start)
                .step(token, || super::sasl::Users::load(path)),
        };
        let reply = match step {
            super::sasl::Step::Reply(t) => t,
            super::sasl::Step::Authenticated { user, reply } => {
                tracing::info!(conn = self.id, peer = %self.peer, session = format_args!("{:#x}", self.session_id), %user, "SASL DIGEST-MD5 login");
                let id = Id::new("sasl", &user);
                if !self.auth.contains(&id) {
                    self.auth.push(id);
                }
                reply
            }
            super::sasl::Step::Failed(reason) => {
                tracing::info!(conn = self.id, peer = %self.peer, %reason, "SASL login failed: answering AuthFailed and closing");
                // With a null token behind the error header, as ZooKeeper sends it: the Java client
                // reads any reply during its SASL exchange as a token, and fails the login on null.
                self.count_sent();
                write_frame(&mut self.out, |b| {
                    ReplyHeader {
                        xid: xid_,
                        zxid: 0,
                        err: ErrorCode::AuthFailed.code(),
                    }
                    .encode(b);
                    (-1i32).encode(b);
                });
                self.pipe.close_by_node("SASL authentication failed");
                return;
            }
        };
        self.write_header(
            ReplyHeader {
                xid: xid_,
                zxid: 0,
                err: 0,
            },
            Some(&Response::Sasl(roster_proto::SetSaslResponse {
                token: Bytes::from(reply),
            })),
        );
    }

    /// Writes a reply; `at` is the zxid of the view it was answered from (default: the current state).
    fn reply_now(&mut self, xid_: i32, result: Result<Response, ErrorCode>, at: Option<i64>) {
        let zxid = match at {
            Some(z) => z,
            None => self.ctx.node.shared.db.lock().state.last_zxid(),
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
    }

    /// Counts one answered request (`slot` from `metrics::op_slot`) in the server's and this
    /// connection's statistics and in the metrics; the clock is read once.
    fn record_latency(&self, slot: usize, started: Instant) {
        let took = started.elapsed();
        let shared = &self.ctx.node.shared;
        shared.stats.record_latency(took);
        shared.metrics.request(slot, took);
        let ms = took.as_millis() as u64;
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
        self.stats.latency_total_ms.fetch_add(ms, Ordering::Relaxed);
        self.stats.latency_max_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Counts one packet sent, in the server's statistics (`srvr`) and this connection's (`cons`).
    fn count_sent(&self) {
        self.ctx
            .node
            .shared
            .stats
            .packets_sent
            .fetch_add(1, Ordering::Relaxed);
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
    }

    fn write_header(&mut self, h: ReplyHeader, body: Option<&Response>) {
        self.count_sent();
        if h.zxid > 0 {
            self.stats.last_zxid.store(h.zxid as u64, Ordering::Relaxed);
        }
        let start = self.out.len();
        write_reply(&mut self.out, &h, body);
        // No reply larger than a client accepts (ZooKeeper sends it, and the client drops the
        // connection): the request is answered MarshallingError instead.
        let max = self.ctx.node.shared.config.max_frame_bytes + REPLY_SLACK;
        if self.out.len() - start - 4 > max {
            tracing::warn!(
                conn = self.id, peer = %self.peer, session = format_args!("{:#x}", self.session_id),
                size = self.out.len() - start - 4, max,
                "reply exceeds max-frame-bytes: answering MarshallingError instead"
            );
            self.out.truncate(start);
            let h = ReplyHeader {
                err: ErrorCode::MarshallingError.code(),
                ..h
            };
            write_reply(&mut self.out, &h, None);
        }
    }

    fn push_event(&mut self, ev: &WatcherEvent, zxid: i64) {
        self.count_sent();
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
}
