//! The node-local shared state every task reaches: the replicated [`State`] and the node-local
//! [`WatchTable`] under one lock (so applying a write, firing its watches and serving a read are atomic
//! with respect to each other), the registry of open connections, the leader's session expiry tracker,
//! and the counters the four-letter words report.
//!
//! Lock order, always: `db` before `conns` before `tracker`; `last_seen_on` alone or after `db`. Nothing
//! awaits while holding any of them.
//!
//! Left out: anything that touches the network or the disk.

use crate::config::Config;
use parking_lot::Mutex;
use roster_proto::WatcherEvent;
use roster_state::{ExpiryTracker, State, WatchTable};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// The replicated state and the watches registered against it.
pub struct Db {
    /// The replicated state machine.
    pub state: State,
    /// Watches of this node's connections (not replicated).
    pub watches: WatchTable,
}

/// A message from the node to one connection task.
#[derive(Debug)]
pub enum ConnMsg {
    /// A watch fired: send a notification (xid -1) carrying this zxid.
    Event(WatcherEvent, i64),
    /// The session ended (expired, closed elsewhere or moved): close the connection.
    Close(&'static str),
}

/// Where a client connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    /// A TCP client.
    Tcp(SocketAddr),
    /// A client in the same process (an embedded node's in-process client): no socket, no port.
    InProcess,
}

impl ClientAddr {
    /// The IP address ZooKeeper's `ip` ACL scheme and the per-address limit see: the client's, or
    /// 127.0.0.1 for an in-process client (it runs on this host).
    pub fn ip(&self) -> std::net::IpAddr {
        match self {
            ClientAddr::Tcp(a) => a.ip(),
            ClientAddr::InProcess => std::net::IpAddr::from([127, 0, 0, 1]),
        }
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAddr::Tcp(a) => a.fmt(f),
            ClientAddr::InProcess => f.write_str("in-process"),
        }
    }
}

/// What the registry knows of one open connection.
pub struct ConnInfo {
    /// Where to send events and close requests.
    pub tx: mpsc::UnboundedSender<ConnMsg>,
    /// The client's address.
    pub peer: ClientAddr,
    /// The session, once the handshake is done.
    pub session_id: Option<i64>,
    /// Negotiated timeout.
    pub timeout_ms: i32,
    /// When the connection was accepted.
    pub since: SystemTime,
    /// Counters for `cons`.
    pub stats: std::sync::Arc<ConnStats>,
}

/// Per-connection counters.
#[derive(Default)]
pub struct ConnStats {
    /// Packets received.
    pub received: AtomicU64,
    /// Packets sent.
    pub sent: AtomicU64,
    /// Requests in flight.
    pub outstanding: AtomicU64,
    /// Last zxid sent.
    pub last_zxid: AtomicU64,
    /// Last client xid received.
    pub last_cxid: AtomicU64,
    /// Total latency, ms, and the request count it covers.
    pub latency_total_ms: AtomicU64,
    /// Requests completed.
    pub completed: AtomicU64,
    /// Max latency, ms.
    pub latency_max_ms: AtomicU64,
}

/// Open connections, by connection id, and which connection holds each session.
#[derive(Default)]
pub struct Conns {
    /// All open connections.
    pub by_id: HashMap<u64, ConnInfo>,
    /// The connection currently holding each session.
    pub by_session: HashMap<i64, u64>,
    /// Sessions whose connection here closed since the follower's last touch batch, with their
    /// timeouts: their last packets must still reach the leader (`net::forward::touch_loop`).
    pub departed: HashMap<i64, i32>,
    /// Open connections per client IP, for the per-address limit.
    pub per_ip: HashMap<std::net::IpAddr, usize>,
}

impl Conns {
    /// Sends a message to a connection; a closed one is ignored (it is going away).
    pub fn send(&self, conn: u64, msg: ConnMsg) {
        if let Some(c) = self.by_id.get(&conn) {
            let _ = c.tx.send(msg);
        }
    }
    /// Closes whichever connection holds a session.
    pub fn close_session(&self, session_id: i64, reason: &'static str) {
        if let Some(conn) = self.by_session.get(&session_id) {
            self.send(*conn, ConnMsg::Close(reason));
        }
    }
}

/// Server-wide counters (`srvr`, `mntr`).
#[derive(Default)]
pub struct Stats {
    /// Packets received from clients.
    pub packets_received: AtomicU64,
    /// Packets sent to clients.
    pub packets_sent: AtomicU64,
    /// Requests answered, and their summed and max latency in microseconds.
    pub requests: AtomicU64,
    /// Summed latency, µs.
    pub latency_sum_us: AtomicU64,
    /// Min latency, µs (u64::MAX when none).
    pub latency_min_us: AtomicU64,
    /// Max latency, µs.
    pub latency_max_us: AtomicU64,
    /// Requests in flight.
    pub outstanding: AtomicU64,
    /// Connections refused by a limit.
    pub connections_refused: AtomicU64,
    /// Bad frames or requests that closed a connection.
    pub protocol_errors: AtomicU64,
    /// Sessions expired by the tracker.
    pub sessions_expired: AtomicU64,
    /// Watch events sent.
    pub watch_events: AtomicU64,
    /// Connections dialed to peers for Raft traffic (not reset by `srst`).
    pub peer_dials: AtomicU64,
    /// Of those, the ones that failed (not reset by `srst`).
    pub peer_dials_failed: AtomicU64,
}

impl Stats {
    /// Records one request's latency.
    pub fn record_latency(&self, took: Duration) {
        let us = took.as_micros() as u64;
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
        self.latency_min_us.fetch_min(us, Ordering::Relaxed);
    }
    /// Resets latency and packet counters (`srst`).
    pub fn reset(&self) {
        for a in [
            &self.packets_received,
            &self.packets_sent,
            &self.requests,
            &self.latency_sum_us,
            &self.latency_max_us,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        self.latency_min_us.store(u64::MAX, Ordering::Relaxed);
    }
}

/// Everything shared between the Raft state machine, the connection tasks and the session ticker.
pub struct Shared {
    /// The replicated state and the watches (one lock; see the module doc).
    pub db: Mutex<Db>,
    /// Open connections.
    pub conns: Mutex<Conns>,
    /// Session deadlines (driven by this node while it leads).
    pub tracker: Mutex<ExpiryTracker>,
    /// Sessions whose close has been proposed and not yet applied: not touched any more.
    pub closing: Mutex<HashSet<i64>>,
    /// The configuration.
    pub config: Config,
    /// Counters.
    pub stats: Stats,
    /// When the node started.
    pub started: Instant,
    /// Source of connection ids.
    pub next_conn: AtomicU64,
    /// Sessions (with a count of their connections) whose writes carry a state view for reads they
    /// pipeline behind them. Locked alone or after `db`.
    pub view_sessions: Mutex<HashMap<i64, usize>>,
    /// The journal of membership, leadership, session and serving events (logged with their causes).
    pub events: crate::events::Events,
    /// The node a session was last heard from through, when that was not a connection open here now:
    /// the follower whose touch batch carried it, or this node when its connection here closed. For
    /// the cause of an expiry ("last connected to node 2"). Pruned by the session ticker.
    pub last_seen_on: Mutex<HashMap<i64, u64>>,
    /// Prometheus metrics (recorded by every layer, rendered by the admin port's `/metrics`).
    pub metrics: crate::metrics::Metrics,
    /// Format versions: the cluster's, and what each peer announced (`crate::format`).
    pub formats: Arc<crate::format::Formats>,
}

impl Shared {
    /// A fresh shared state around a recovered (or empty) `State`.
    pub fn new(config: Config, state: State) -> Shared {
        let metrics = crate::metrics::Metrics::new(config.metrics);
        let stats = Stats::default();
        stats.latency_min_us.store(u64::MAX, Ordering::Relaxed);
        Shared {
            db: Mutex::new(Db {
                state,
                watches: WatchTable::new(),
            }),
            conns: Mutex::new(Conns::default()),
            tracker: Mutex::new(ExpiryTracker::new()),
            closing: Mutex::new(HashSet::new()),
            config,
            stats,
            started: Instant::now(),
            next_conn: AtomicU64::new(1),
            view_sessions: Mutex::new(HashMap::new()),
            events: crate::events::Events::new(),
            last_seen_on: Mutex::new(HashMap::new()),
            metrics,
            formats: Arc::new(crate::format::Formats::default()),
        }
    }

    /// Pushes a session's deadline to `now + timeout` (on every packet and ping of its connection).
    pub fn touch(&self, session_id: i64, timeout_ms: i32) {
        if self.closing.lock().contains(&session_id) {
            return;
        }
        self.tracker.lock().touch(session_id, timeout_ms, now_ms());
    }

    /// On the leader: a follower reports sessions of its connections, each with the time it had left
    /// before its deadline there when the report was sent; each deadline here moves to `received_ms`
    /// plus that, never earlier. One arrival time for the whole report and one lock of each table:
    /// with a time read per session, a report of thousands of sessions, handled while thousands of
    /// connections take the same locks for their pings, pushed its last sessions' deadlines up to
    /// 80 ms late (50,000 sessions on three nodes).
    pub fn touch_from_peer(&self, reports: &[(i64, i32)], received_ms: i64) {
        let closing = self.closing.lock();
        let mut tracker = self.tracker.lock();
        for &(session_id, remaining_ms) in reports {
            if !closing.contains(&session_id) {
                tracker.extend(session_id, remaining_ms, received_ms);
            }
        }
    }

    /// A snapshot of the watches by path (`wchp`).
    pub fn watches_by_path(&self) -> BTreeMap<String, Vec<u64>> {
        self.db.lock().watches.by_path()
    }
}

/// Wall-clock time in ms since the Unix epoch (stamped into transactions by the leader).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_report_counts_every_session_from_its_arrival_and_skips_closing_ones() {
        let shared = Shared::new(Config::default(), State::new());
        // Session 3 was already heard from here until later than the report says.
        shared.tracker.lock().touch(3, 10_000, 5_000);
        shared.closing.lock().insert(2);
        let report: Vec<(i64, i32)> = vec![(1, 9_000), (2, 9_000), (3, 1_000), (4, 0)];
        shared.touch_from_peer(&report, 1_000);
        let tracker = shared.tracker.lock();
        // Arrival + time left, for the first entry and the last alike.
        assert_eq!(tracker.deadline(1), Some(10_000));
        assert_eq!(tracker.deadline(4), Some(1_000));
        // Being closed: not brought back.
        assert_eq!(tracker.deadline(2), None);
        // Never earlier than what this node knew.
        assert_eq!(tracker.deadline(3), Some(15_000));
    }
}
