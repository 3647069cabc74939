//! The connection task: drives a `Session` over TCP, TLS over TCP ([`crate::ClientOptions::tls`]),
//! or an in-process stream (see [`crate::local`]).
//!
//! One tokio task per client owns the session, the socket and the timers; [`crate::Client`] handles
//! talk to it through a channel of `Command`s and get their answers on oneshot channels. The task is a
//! loop of two phases:
//!
//! - **establish**: pick the next server of the shuffled list, wait a little (a random delay of up to
//!   a second after a disconnect, as the Java client does, so a server restart is not met by every client
//!   at once; a fixed delay once a whole round of servers has failed), open TCP, send the handshake and
//!   read its reply, all within `timeout / #servers`. Commands keep arriving meanwhile (they are queued
//!   by the session) and the client-side expiry timer keeps running.
//! - **serve**: select over reading frames, writing the session's outbox, commands, and the session's
//!   next deadline (ping, read timeout, close timeout). Frames are handed to the session in the order
//!   they arrive, which is what makes a watch notification reach its watchers before any later reply.
//!
//! Each step ends with `Driver::publish`, which copies the session's state into a `watch` channel
//! (read by [`crate::Client::state`]) and its events into a `broadcast` channel
//! ([`crate::Client::state_events`]). When the session reaches a terminal state the task ends; dropping
//! the command receiver fails any call still in the channel, and the client maps that to the terminal
//! state's error. When every `Client` handle is dropped the task closes the session (closeSession if
//! connected) and ends.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rand::Rng;
use roster_proto::{
    decode_exact, parse_frame, write_frame, AuthPacket, ConnectRequest, ConnectResponse, Frame,
    Jute, Request,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::local::BoxStream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use crate::hosts::{HostAddr, HostList};
use crate::session::{AuthTx, Effect, ReplyTx, Session, SessionEvent, SessionState};

/// The longest pause between two connection attempts (`StaticHostProvider`'s spin delay).
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// A call from a [`crate::Client`] handle to the connection task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send a request.
    Request {
        request: Request,
        effect: Effect,
        reply: ReplyTx,
    },
    /// Add credentials.
    Auth { packet: AuthPacket, reply: AuthTx },
    /// Close the session.
    Close { reply: ReplyTx },
    /// Test hook: drop the connection and stay offline for `pause`.
    DropConnection { pause: Duration },
}

/// What the handles can read of the session without asking the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub state: SessionState,
    pub session_id: i64,
    pub password: bytes::Bytes,
    pub timeout: Duration,
    pub last_zxid: i64,
    pub server: Option<HostAddr>,
}

/// The connection task.
pub(crate) struct Driver {
    pub session: Session,
    pub hosts: HostList,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub status: watch::Sender<Status>,
    pub events: broadcast::Sender<SessionEvent>,
    pub max_frame: usize,
    /// TLS configuration, when connecting to secure client ports.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// False once every handle is gone.
    pub commands_open: bool,
    /// Test hook: no connection attempt before this instant.
    pub offline_until: Option<Instant>,
    /// Test hook: drop the current connection.
    pub drop_requested: bool,
    /// Connection attempts that failed since the last handshake; `None` before the first attempt.
    pub failures: Option<usize>,
    pub server: Option<HostAddr>,
}

impl Driver {
    /// Runs until the session ends.
    pub(crate) async fn run(mut self) {
        while !self.session.state().is_terminal() {
            if let Some((stream, resp, rbuf, addr)) = self.establish().await {
                self.session.on_connected(&resp, Instant::now());
                self.server = Some(addr);
                self.publish();
                self.serve(stream, rbuf).await;
                self.server = None;
                self.publish();
            }
        }
        self.publish();
        tracing::debug!(state = ?self.session.state(), "connection task done");
    }

    /// Tries servers until a handshake succeeds, or the session ends.
    async fn establish(&mut self) -> Option<(BoxStream, ConnectResponse, BytesMut, HostAddr)> {
        loop {
            if self.session.state().is_terminal() {
                return None;
            }
            self.drop_requested = false;
            let (addr, new_round) = self.hosts.next();
            let start = self.next_attempt_at(new_round);
            let req = self.session.connect_request();
            let limit = self.session.connect_timeout(self.hosts.len());
            let max = self.max_frame;
            let target = addr.clone();
            let tls = self.tls.clone();
            let attempt = async move {
                tokio::time::sleep_until(start).await;
                tokio::time::timeout(limit, handshake(&target, req, max, tls)).await
            };
            tokio::pin!(attempt);
            loop {
                let deadline = self.session.poll_timeout();
                tokio::select! {
                    res = &mut attempt => {
                        match res {
                            Ok(Ok((stream, resp, rbuf))) => {
                                self.failures = Some(0);
                                return Some((stream, resp, rbuf, addr));
                            }
                            Ok(Err(e)) => tracing::debug!(server = %addr, error = %e, "connection attempt failed"),
                            Err(_) => tracing::debug!(server = %addr, ?limit, "connection attempt timed out"),
                        }
                        self.failures = Some(self.failures.unwrap_or(0) + 1);
                        break;
                    }
                    cmd = self.commands.recv(), if self.commands_open => self.on_command(cmd),
                    _ = sleep_until_opt(deadline) => self.session.on_timeout(Instant::now()),
                }
                self.publish();
                if self.session.state().is_terminal() {
                    return None;
                }
            }
        }
    }

    /// When the next attempt may start: at once the very first time, after a random pause of up to
    /// [`MAX_RECONNECT_DELAY`] (at most a tenth of the timeout) otherwise, and after a full
    /// [`MAX_RECONNECT_DELAY`] (at most a quarter of the timeout) when a whole round has failed.
    fn next_attempt_at(&mut self, new_round: bool) -> Instant {
        let now = Instant::now();
        let timeout = self.session.timeout();
        let delay = match self.failures {
            None => Duration::ZERO,
            Some(n) if new_round && n > 0 => MAX_RECONNECT_DELAY.min(timeout / 4),
            Some(_) => {
                let cap = MAX_RECONNECT_DELAY.min(timeout / 10);
                cap.mul_f64(rand::rng().random::<f64>())
            }
        };
        let at = now + delay;
        match self.offline_until.take() {
            Some(until) if until > at => until,
            _ => at,
        }
    }

    /// Serves one established connection until it is lost or the session ends.
    async fn serve(&mut self, stream: BoxStream, mut rbuf: BytesMut) {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut wbuf = BytesMut::new();
        self.read_frames(&mut rbuf);
        loop {
            let out = self.session.outbox().split();
            wbuf.extend_from_slice(&out);
            self.publish();
            if !self.session.is_connected() {
                break;
            }
            if std::mem::take(&mut self.drop_requested) {
                self.session.on_disconnect("dropped by the test hook");
                continue;
            }
            let deadline = self.session.poll_timeout();
            tokio::select! {
                r = rd.read_buf(&mut rbuf) => match r {
                    Ok(0) => self.session.on_disconnect("the server closed the connection"),
                    Ok(_) => self.read_frames(&mut rbuf),
                    Err(e) => self.session.on_disconnect(&format!("read failed: {e}")),
                },
                r = wr.write(&wbuf), if !wbuf.is_empty() => match r {
                    Ok(n) => wbuf.advance(n),
                    Err(e) => self.session.on_disconnect(&format!("write failed: {e}")),
                },
                cmd = self.commands.recv(), if self.commands_open => self.on_command(cmd),
                _ = sleep_until_opt(deadline) => self.session.on_timeout(Instant::now()),
            }
        }
    }

    /// Hands every complete frame in `rbuf` to the session.
    fn read_frames(&mut self, rbuf: &mut BytesMut) {
        let now = Instant::now();
        while self.session.is_connected() {
            match parse_frame(rbuf, self.max_frame, false) {
                Ok(Some((Frame::Packet(body), used))) => {
                    self.session.on_frame(body, now);
                    rbuf.advance(used);
                }
                Ok(Some((Frame::FourLetterWord(_), _))) => {
                    unreachable!("four-letter words are only parsed on a server")
                }
                Ok(None) => break,
                Err(e) => self.session.on_disconnect(&e.to_string()),
            }
        }
    }

    fn on_command(&mut self, cmd: Option<Command>) {
        let now = Instant::now();
        match cmd {
            None => {
                // Every handle is gone: nobody can use the session any more.
                self.commands_open = false;
                self.session.close(None, now);
            }
            Some(Command::Request {
                request,
                effect,
                reply,
            }) => self.session.submit(request, effect, reply, now),
            Some(Command::Auth { packet, reply }) => self.session.submit_auth(packet, reply, now),
            Some(Command::Close { reply }) => self.session.close(Some(reply), now),
            Some(Command::DropConnection { pause }) => {
                self.offline_until = Some(now + pause);
                self.drop_requested = true;
            }
        }
    }

    /// Publishes the session's state and events to the handles.
    fn publish(&mut self) {
        let status = Status {
            state: self.session.state(),
            session_id: self.session.session_id(),
            password: self.session.password().clone(),
            timeout: self.session.timeout(),
            last_zxid: self.session.last_zxid(),
            server: self.server.clone(),
        };
        self.status.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
        for ev in self.session.take_events() {
            tracing::debug!(event = ?ev, "session event");
            let _ = self.events.send(ev);
        }
    }
}

/// Opens TCP to `addr` (then TLS, with `tls`), or an in-process stream for a `.in-process` host, and
/// performs the handshake. Returns the stream, the reply, and any bytes read past it.
async fn handshake(
    addr: &HostAddr,
    req: ConnectRequest,
    max: usize,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> io::Result<(BoxStream, ConnectResponse, BytesMut)> {
    let mut stream: BoxStream = if crate::local::is_local(&addr.host) {
        crate::local::dial(&addr.host)?
    } else {
        let tcp = TcpStream::connect((addr.host.as_str(), addr.port)).await?;
        tcp.set_nodelay(true)?;
        match tls {
            None => Box::new(tcp),
            Some(config) => {
                let name =
                    rustls_pki_types::ServerName::try_from(addr.host.clone()).map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("{} is not a valid TLS server name: {e}", addr.host),
                        )
                    })?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                Box::new(tls)
            }
        }
    };
    let mut out = BytesMut::new();
    write_frame(&mut out, |o| req.encode(o));
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let parsed = parse_frame(&buf, max, false)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Some((Frame::Packet(body), used)) = parsed {
            let resp: ConnectResponse = decode_exact(body).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad handshake reply: {e}"),
                )
            })?;
            buf.advance(used);
            return Ok((stream, resp, buf));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            // ZooKeeper closes without a word when it is not serving or when the client has seen a
            // newer zxid than it has (it is behind): try the next server.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during the handshake",
            ));
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
