//! The client session as a state machine without I/O.
//!
//! A ZooKeeper session outlives TCP connections: it is created by the first handshake, identified by a
//! session id and a 16-byte password, and kept alive by traffic (pings when idle). If the connection
//! drops, the client reconnects, to the same server or another, and resumes the session by sending the id
//! and password in the next `ConnectRequest`; the server keeps the session, with its ephemerals, until
//! it has heard nothing from it for the negotiated timeout. `Session` holds everything that must
//! survive from one connection to the next, and decides everything that does not need a socket or a
//! clock: time comes in as an argument, bytes come in as frames, and bytes go out through an outbox.
//!
//! # Inputs and outputs
//!
//! - `Session::connect_request` builds the handshake for the next connection (`lastZxidSeen` is the
//!   largest zxid of any reply, so the server can refuse the client if it is behind what the client saw).
//! - `Session::on_connected` takes the handshake reply. A timeout of 0 means the server no longer
//!   knows the session: it expired. Otherwise the session is (re)connected and the outbox is *primed*
//!   in the Java client's order (`ClientCnxn.primeConnection`): every `auth` packet again (xid -4), then
//!   `SetWatches`/`SetWatches2` (xid -8) re-registering every watch relative to the last zxid seen, then
//!   the requests that were submitted while disconnected.
//! - `Session::submit` writes a request (connected) or queues it (disconnected).
//! - `Session::on_frame` takes one reply frame. Replies come back in request order, so the oldest
//!   pending request must carry the reply's xid, or the connection is dropped ("Xid out of order").
//!   Three xids are out of band: -2 (ping), -4 (auth, answered as soon as the server reads it, ahead of
//!   earlier requests still in its pipeline) and -1 (a watch notification, delivered to the watchers at
//!   once, that is before any reply that follows it, so nobody sees new data before the event saying it
//!   changed). A watch asked for by a read is registered when that read's reply arrives, only if the read
//!   succeeded (or, for `exists`, found no node), and before the reply is handed to the caller.
//! - `Session::on_timeout` advances time, and `Session::poll_timeout` says when it next must.
//! - `Session::take_events` drains the [`SessionEvent`]s; `Session::outbox` holds the bytes to send.
//!
//! # States and timers
//!
//! ```text
//!   Connecting ──handshake──▶ Connected ◀──handshake (same session)── Suspended
//!                                 │  ──────────connection lost───────────▶ │
//!                                 │                                        │ handshake says timeout 0,
//!                                 ▼                                        ▼ or no contact for the timeout
//!                     Closed / AuthFailed                               Expired
//! ```
//!
//! - Connected: a ping (xid -2) goes out when nothing was sent for `readTimeout/2` (at most every 10 s),
//!   where `readTimeout = timeout * 2/3`; if nothing at all is received for `readTimeout`, the connection
//!   is declared lost and the requests in flight fail with `ConnectionLoss`.
//! - Suspended: the session may still be alive on the servers. If no server has been heard from for the
//!   whole negotiated timeout, the server has expired the session by now, so the client declares it
//!   expired itself, without waiting to reach a server that would say so.
//! - Expired, Closed and AuthFailed are terminal: everything pending fails, every watch receives a final
//!   session event, and nothing more is sent.
//!
//! # Left out
//!
//! Read-only mode (`ConnectedReadOnly`) and SASL are not implemented: the client always asks for a
//! read-write session. The Java client's per-request timeout that tears the connection down is replaced
//! by per-call timeouts in [`crate::Client`], which abandon the reply without touching the connection.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use roster_proto::{
    write_frame, xid, AddWatchMode, AuthPacket, ConnectRequest, ConnectResponse, ErrorCode,
    EventType, Jute, KeeperState, OpCode, ReplyHeader, Request, RequestHeader, Response,
    WatcherEvent, WatcherType,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::path::Chroot;
use crate::watch::{OneShotKind, WatchRegistry, WatchedEvent};

/// The longest the client stays silent on a healthy connection (`ClientCnxn.MAX_SEND_PING_INTERVAL`).
pub const MAX_PING_INTERVAL: Duration = Duration::from_secs(10);
/// Length of a session password.
pub const PASSWORD_LEN: usize = 16;

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// No session yet: the first handshake has not succeeded.
    Connecting,
    /// Connected to a server; the session is alive.
    Connected,
    /// The connection was lost; the session may still be alive and the client is reconnecting.
    Suspended,
    /// The session has expired (said by a server, or by the client's own timer). Terminal.
    Expired,
    /// A server rejected the credentials of an `auth` packet. Terminal.
    AuthFailed,
    /// The client was closed. Terminal.
    Closed,
}

impl SessionState {
    /// Whether the client can no longer be used.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SessionState::Expired | SessionState::AuthFailed | SessionState::Closed
        )
    }

    /// The error a call gets in this state when it cannot be sent.
    pub(crate) fn error(self) -> Error {
        match self {
            SessionState::Expired => Error::SessionExpired,
            SessionState::AuthFailed => Error::AuthFailed,
            SessionState::Closed => Error::Closed,
            _ => Error::ConnectionLoss,
        }
    }

    fn keeper_state(self) -> KeeperState {
        match self {
            SessionState::Expired => KeeperState::Expired,
            SessionState::AuthFailed => KeeperState::AuthFailed,
            SessionState::Closed => KeeperState::Closed,
            SessionState::Connected => KeeperState::SyncConnected,
            SessionState::Connecting | SessionState::Suspended => KeeperState::Disconnected,
        }
    }
}

/// A change of session state, as published by [`crate::Client::state_events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionEvent {
    /// The session was established (first handshake).
    Connected,
    /// The connection was lost; the session may still be alive. Calls wait for the reconnection.
    Suspended,
    /// The session was resumed on a new connection; its ephemerals and watches are intact.
    Reconnected,
    /// The session is gone: ephemerals deleted, watches dropped. Create a new client.
    Expired,
    /// Authentication failed; the client is dead.
    AuthFailed,
    /// The client was closed.
    Closed,
}

/// Where a reply goes.
pub(crate) type ReplyTx = oneshot::Sender<Result<Response>>;
/// Where an auth reply goes.
pub(crate) type AuthTx = oneshot::Sender<Result<()>>;

/// What a successful reply does to the watch table before it is delivered.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Nothing.
    None,
    /// getData/getChildren with a watch: register on success.
    Watch {
        kind: OneShotKind,
        path: String,
        tx: oneshot::Sender<WatchedEvent>,
    },
    /// exists with a watch: a data watch if the node exists, an exist watch on NoNode.
    ExistsWatch {
        path: String,
        tx: oneshot::Sender<WatchedEvent>,
    },
    /// addWatch: register the persistent watcher on success.
    AddWatch {
        mode: AddWatchMode,
        path: String,
        tx: mpsc::UnboundedSender<WatchedEvent>,
    },
    /// removeWatches: drop (and notify) the local watchers on success.
    RemoveWatches {
        path: String,
        watcher_type: WatcherType,
    },
}

/// A request sent and not yet answered.
#[derive(Debug)]
struct InFlight {
    xid: i32,
    op: OpCode,
    effect: Effect,
    reply: Option<ReplyTx>,
}

/// A call made while disconnected, sent after the next handshake.
#[derive(Debug)]
enum Queued {
    Request {
        request: Request,
        effect: Effect,
        reply: ReplyTx,
    },
    Auth {
        packet: AuthPacket,
        reply: AuthTx,
    },
}

/// What a new session starts from.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    /// The session timeout to ask for.
    pub timeout: Duration,
    /// A session to resume (0 for a new one) and its password.
    pub session_id: i64,
    /// The password of `session_id`.
    pub password: Bytes,
    /// The chroot, for the paths of watch events.
    pub chroot: Chroot,
}

/// The client side of one ZooKeeper session. See the module docs.
#[derive(Debug)]
pub(crate) struct Session {
    state: SessionState,
    requested_timeout: Duration,
    /// The server's answer to `requested_timeout`; equal to it until the first handshake.
    negotiated_timeout: Duration,
    session_id: i64,
    password: Bytes,
    /// The largest zxid of any reply: `lastZxidSeen` of the next handshake and SetWatches.
    last_zxid: i64,
    next_xid: i32,
    /// Whether a connection is up (handshake done and not lost).
    connected: bool,
    pending: VecDeque<InFlight>,
    queued: VecDeque<Queued>,
    /// Every auth packet sent so far, replayed on each new connection.
    auth: Vec<AuthPacket>,
    /// One entry per auth packet in flight; `None` for replays nobody waits for.
    auth_waiters: VecDeque<Option<AuthTx>>,
    /// Set once closeSession is sent: give up waiting for its reply at this instant.
    closing: Option<Instant>,
    close_waiters: Vec<ReplyTx>,
    watches: WatchRegistry,
    outbox: BytesMut,
    events: VecDeque<SessionEvent>,
    last_send: Instant,
    /// The last time a server was heard from: the base of read timeouts and of client-side expiry.
    last_recv: Instant,
}

impl Session {
    /// A session that has not connected yet.
    pub(crate) fn new(config: SessionConfig, now: Instant) -> Session {
        Session {
            state: SessionState::Connecting,
            requested_timeout: config.timeout,
            negotiated_timeout: config.timeout,
            session_id: config.session_id,
            password: config.password,
            last_zxid: 0,
            next_xid: 1,
            connected: false,
            pending: VecDeque::new(),
            queued: VecDeque::new(),
            auth: Vec::new(),
            auth_waiters: VecDeque::new(),
            closing: None,
            close_waiters: Vec::new(),
            watches: WatchRegistry::new(config.chroot),
            outbox: BytesMut::new(),
            events: VecDeque::new(),
            last_send: now,
            last_recv: now,
        }
    }

    /// The current state.
    pub(crate) fn state(&self) -> SessionState {
        self.state
    }

    /// Whether a connection is up.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected
    }

    /// The session id (0 before the first handshake).
    pub(crate) fn session_id(&self) -> i64 {
        self.session_id
    }

    /// The session password.
    pub(crate) fn password(&self) -> &Bytes {
        &self.password
    }

    /// The negotiated session timeout (the requested one before the first handshake).
    pub(crate) fn timeout(&self) -> Duration {
        self.negotiated_timeout
    }

    /// The largest zxid seen in a reply.
    pub(crate) fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    /// `readTimeout` of `ClientCnxn`: two thirds of the session timeout.
    pub(crate) fn read_timeout(&self) -> Duration {
        self.negotiated_timeout * 2 / 3
    }

    fn ping_interval(&self) -> Duration {
        (self.read_timeout() / 2).min(MAX_PING_INTERVAL)
    }

    /// How long one connection attempt (TCP connect and handshake) may take: the timeout shared out
    /// among the servers, as the Java client does, so one round over all of them fits in one timeout.
    pub(crate) fn connect_timeout(&self, hosts: usize) -> Duration {
        (self.negotiated_timeout / hosts.max(1) as u32).max(Duration::from_millis(100))
    }

    /// The handshake for the next connection.
    pub(crate) fn connect_request(&self) -> ConnectRequest {
        let passwd = if self.session_id == 0 {
            Bytes::from_static(&[0; PASSWORD_LEN])
        } else {
            self.password.clone()
        };
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: self.last_zxid,
            timeout: self.requested_timeout.as_millis().min(i32::MAX as u128) as i32,
            session_id: self.session_id,
            passwd,
            read_only: Some(false),
        }
    }

    /// The handshake succeeded (at the TCP level) with this reply.
    pub(crate) fn on_connected(&mut self, resp: &ConnectResponse, now: Instant) {
        if self.state.is_terminal() || self.connected {
            return;
        }
        if resp.timeout <= 0 {
            tracing::info!(
                session_id = format_args!("{:#x}", self.session_id),
                "server says the session has expired"
            );
            self.finish(SessionState::Expired);
            return;
        }
        self.session_id = resp.session_id;
        self.password = resp.passwd.clone();
        self.negotiated_timeout = Duration::from_millis(resp.timeout as u64);
        self.connected = true;
        self.last_recv = now;
        self.last_send = now;
        let event = if self.state == SessionState::Connecting {
            SessionEvent::Connected
        } else {
            SessionEvent::Reconnected
        };
        self.state = SessionState::Connected;
        self.events.push_back(event);
        tracing::debug!(
            session_id = format_args!("{:#x}", self.session_id),
            timeout_ms = resp.timeout,
            ?event,
            "session established"
        );
        // Prime the connection: credentials first, so that SetWatches and everything after run with them.
        for packet in self.auth.clone() {
            self.write(xid::AUTH, &Request::Auth(packet), now);
            self.auth_waiters.push_back(None);
        }
        for request in self.watches.set_watches(self.last_zxid) {
            self.write(xid::SET_WATCHES, &request, now);
            self.pending.push_back(InFlight {
                xid: xid::SET_WATCHES,
                op: request.op_code(),
                effect: Effect::None,
                reply: None,
            });
        }
        while let Some(q) = self.queued.pop_front() {
            match q {
                // The caller gave up (its timeout ran out) before the request could even be sent.
                Queued::Request { reply, .. } if reply.is_closed() => {}
                Queued::Request {
                    request,
                    effect,
                    reply,
                } => self.send(request, effect, Some(reply), now),
                Queued::Auth { packet, reply } => self.send_auth(packet, Some(reply), now),
            }
        }
    }

    /// Sends `request` now, or after the next handshake if disconnected.
    pub(crate) fn submit(
        &mut self,
        request: Request,
        effect: Effect,
        reply: ReplyTx,
        now: Instant,
    ) {
        if let Some(err) = self.refusal() {
            let _ = reply.send(Err(err));
        } else if self.connected {
            self.send(request, effect, Some(reply), now);
        } else {
            self.queued.push_back(Queued::Request {
                request,
                effect,
                reply,
            });
        }
    }

    /// Adds credentials to the session; they are replayed on every later connection.
    pub(crate) fn submit_auth(&mut self, packet: AuthPacket, reply: AuthTx, now: Instant) {
        if let Some(err) = self.refusal() {
            let _ = reply.send(Err(err));
        } else if self.connected {
            self.send_auth(packet, Some(reply), now);
        } else {
            self.queued.push_back(Queued::Auth { packet, reply });
        }
    }

    /// Closes the session: closeSession if connected, else at once. `reply` (if any) gets `Ok` once done.
    pub(crate) fn close(&mut self, reply: Option<ReplyTx>, now: Instant) {
        if self.state.is_terminal() {
            if let Some(r) = reply {
                let _ = r.send(Ok(Response::Empty));
            }
            return;
        }
        self.close_waiters.extend(reply);
        if self.closing.is_some() {
            return;
        }
        if self.connected {
            self.closing = Some(now + self.read_timeout());
            self.send(Request::CloseSession, Effect::None, None, now);
        } else {
            self.finish(SessionState::Closed);
        }
    }

    /// One reply frame (the bytes after the length prefix).
    pub(crate) fn on_frame(&mut self, frame: &[u8], now: Instant) {
        if !self.connected {
            return;
        }
        self.last_recv = now;
        let mut body = frame;
        let header = match ReplyHeader::decode(&mut body) {
            Ok(h) => h,
            Err(e) => return self.lose_connection(&format!("malformed reply header: {e}")),
        };
        match header.xid {
            xid::PING => {}
            xid::AUTH => self.on_auth_reply(header.err),
            xid::NOTIFICATION => match WatcherEvent::decode(&mut body) {
                Ok(ev) => match EventType::from_i32(ev.event_type) {
                    Ok(t) => self.watches.dispatch(t, &ev.path),
                    Err(_) => tracing::warn!(
                        event_type = ev.event_type,
                        "ignoring a notification of unknown type"
                    ),
                },
                Err(e) => self.lose_connection(&format!("malformed notification: {e}")),
            },
            _ => self.on_reply(header, body),
        }
    }

    fn on_reply(&mut self, header: ReplyHeader, body: &[u8]) {
        let Some(p) = self.pending.pop_front() else {
            return self.lose_connection(&format!(
                "reply with xid {} but nothing is pending",
                header.xid
            ));
        };
        if p.xid != header.xid {
            if let Some(r) = p.reply {
                let _ = r.send(Err(Error::ConnectionLoss));
            }
            return self.lose_connection(&format!(
                "xid out of order: got {}, expected {}",
                header.xid, p.xid
            ));
        }
        if header.zxid > 0 {
            self.last_zxid = self.last_zxid.max(header.zxid);
        }
        let result = if header.err != 0 {
            Err(Error::from_code(header.err))
        } else {
            match Response::decode(p.op, body) {
                Ok(r) => Ok(r),
                Err(e) => {
                    if let Some(r) = p.reply {
                        let _ = r.send(Err(Error::ConnectionLoss));
                    }
                    return self.lose_connection(&format!("malformed {:?} reply: {e}", p.op));
                }
            }
        };
        let ok = header.err == 0;
        match p.effect {
            Effect::None => {}
            Effect::Watch { kind, path, tx } if ok => self.watches.add_oneshot(kind, path, tx),
            Effect::ExistsWatch { path, tx } if ok => {
                self.watches.add_oneshot(OneShotKind::Data, path, tx)
            }
            Effect::ExistsWatch { path, tx } if header.err == ErrorCode::NoNode.code() => {
                self.watches.add_oneshot(OneShotKind::Exist, path, tx)
            }
            Effect::AddWatch { mode, path, tx } if ok => {
                self.watches.add_persistent(mode, path, tx)
            }
            Effect::RemoveWatches { path, watcher_type } if ok => {
                self.watches.remove(&path, watcher_type)
            }
            _ => {}
        }
        if p.op == OpCode::CloseSession {
            return self.finish(SessionState::Closed);
        }
        if let Some(r) = p.reply {
            let _ = r.send(result);
        }
    }

    fn on_auth_reply(&mut self, err: i32) {
        let waiter = self.auth_waiters.pop_front().flatten();
        if err == ErrorCode::AuthFailed.code() {
            if let Some(w) = waiter {
                let _ = w.send(Err(Error::AuthFailed));
            }
            // The server closes the connection after this; the Java client gives up (AUTH_FAILED).
            return self.finish(SessionState::AuthFailed);
        }
        if let Some(w) = waiter {
            let _ = w.send(if err == 0 {
                Ok(())
            } else {
                Err(Error::from_code(err))
            });
        }
    }

    /// When `Session::on_timeout` must next be called, if ever.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.state.is_terminal() {
            None
        } else if self.connected {
            let d =
                (self.last_recv + self.read_timeout()).min(self.last_send + self.ping_interval());
            Some(self.closing.map_or(d, |c| c.min(d)))
        } else if self.state == SessionState::Suspended {
            Some(self.last_recv + self.negotiated_timeout)
        } else {
            None
        }
    }

    /// Time has advanced to `now`: ping, declare the connection lost, or declare the session expired.
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        if self.state.is_terminal() {
            return;
        }
        if self.connected {
            if self.closing.is_some_and(|c| now >= c) {
                return self.finish(SessionState::Closed);
            }
            if now >= self.last_recv + self.read_timeout() {
                return self
                    .lose_connection(&format!("nothing received for {:?}", now - self.last_recv));
            }
            if now >= self.last_send + self.ping_interval() {
                self.write(xid::PING, &Request::Ping, now);
            }
        } else if self.state == SessionState::Suspended
            && now >= self.last_recv + self.negotiated_timeout
        {
            tracing::info!(
                session_id = format_args!("{:#x}", self.session_id),
                "no server reached within the session timeout: session expired"
            );
            self.finish(SessionState::Expired);
        }
    }

    /// The connection failed (I/O error, end of stream, bad frame).
    pub(crate) fn on_disconnect(&mut self, reason: &str) {
        self.lose_connection(reason);
    }

    /// The bytes waiting to be sent.
    pub(crate) fn outbox(&mut self) -> &mut BytesMut {
        &mut self.outbox
    }

    /// The state changes since the last call.
    pub(crate) fn take_events(&mut self) -> impl Iterator<Item = SessionEvent> + '_ {
        self.events.drain(..)
    }

    fn refusal(&self) -> Option<Error> {
        if self.state.is_terminal() {
            Some(self.state.error())
        } else if self.closing.is_some() {
            Some(Error::Closed)
        } else {
            None
        }
    }

    fn next_xid(&mut self) -> i32 {
        let x = self.next_xid;
        // Wrap to 1, never into the negative xids that mean ping, auth and the like.
        self.next_xid = if x == i32::MAX { 1 } else { x + 1 };
        x
    }

    fn send(&mut self, request: Request, effect: Effect, reply: Option<ReplyTx>, now: Instant) {
        let xid = self.next_xid();
        self.write(xid, &request, now);
        self.pending.push_back(InFlight {
            xid,
            op: request.op_code(),
            effect,
            reply,
        });
    }

    fn send_auth(&mut self, packet: AuthPacket, reply: Option<AuthTx>, now: Instant) {
        self.write(xid::AUTH, &Request::Auth(packet.clone()), now);
        self.auth.push(packet);
        self.auth_waiters.push_back(reply);
    }

    fn write(&mut self, xid: i32, request: &Request, now: Instant) {
        write_frame(&mut self.outbox, |out| {
            RequestHeader {
                xid,
                op_type: request.op_code().code(),
            }
            .encode(out);
            request.encode_body(out);
        });
        self.last_send = now;
    }

    fn lose_connection(&mut self, reason: &str) {
        if !self.connected {
            return;
        }
        tracing::debug!(
            session_id = format_args!("{:#x}", self.session_id),
            reason,
            "connection lost"
        );
        self.connected = false;
        self.outbox.clear();
        for p in self.pending.drain(..) {
            if let Some(r) = p.reply {
                let _ = r.send(Err(Error::ConnectionLoss));
            }
        }
        for w in self.auth_waiters.drain(..).flatten() {
            let _ = w.send(Err(Error::ConnectionLoss));
        }
        if self.closing.is_some() {
            // Closing anyway: the server expires the session if the closeSession did not reach it.
            return self.finish(SessionState::Closed);
        }
        self.state = SessionState::Suspended;
        self.events.push_back(SessionEvent::Suspended);
    }

    /// Enters a terminal state: fail every call, end every watch.
    fn finish(&mut self, state: SessionState) {
        if self.state.is_terminal() {
            return;
        }
        self.state = state;
        self.connected = false;
        self.outbox.clear();
        self.events.push_back(match state {
            SessionState::Expired => SessionEvent::Expired,
            SessionState::AuthFailed => SessionEvent::AuthFailed,
            _ => SessionEvent::Closed,
        });
        let err = state.error();
        for p in self.pending.drain(..) {
            if let Some(r) = p.reply {
                let _ = r.send(Err(err.clone()));
            }
        }
        for q in self.queued.drain(..) {
            match q {
                Queued::Request { reply, .. } => drop(reply.send(Err(err.clone()))),
                Queued::Auth { reply, .. } => drop(reply.send(Err(err.clone()))),
            }
        }
        for w in self.auth_waiters.drain(..).flatten() {
            let _ = w.send(Err(err.clone()));
        }
        for r in self.close_waiters.drain(..) {
            let _ = r.send(Ok(Response::Empty));
        }
        self.watches.terminate(state.keeper_state());
    }
}

#[cfg(test)]
mod tests;
