//! The node's Prometheus metrics: one [`Registry`] per node (no global recorder, so several nodes in
//! one process keep separate numbers) and the handles every layer records into.
//!
//! Two kinds of metric:
//! - recorded where the thing happens (requests by opcode, rejections, bytes, sessions, elections,
//!   snapshots, log fsyncs and group-commit batches): atomic counters and histograms whose handles
//!   are created here once, per label value, so the hot path neither allocates nor hashes a label;
//! - sampled when Prometheus scrapes (znodes, watches, connections, Raft progress...): the admin
//!   route reads the node and hands a [`Sample`] to [`Metrics::render`], which sets the gauges and
//!   encodes the text.
//!
//! Where ZooKeeper's Prometheus provider has a metric with the same meaning, it has the same name
//! (`znode_count`, `readlatency`, `fsynctime`, ...) and ZooKeeper's unit (ms), so its Grafana
//! dashboards work; ZooKeeper's summaries are histograms here (`_sum` and `_count` match, quantiles
//! come from `histogram_quantile` over `_bucket`). Everything else is `roster_*`, in seconds and bytes.
//!
//! With `metrics = false` (setting) nothing is recorded: every `record` returns at its first test.
//!
//! Left out: process metrics beyond file descriptors and memory (no JVM here), exemplars.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use roster_proto::OpCode;
use std::time::Duration;

pub mod hist;

use hist::{AtomicHistogram, HistSum, Scale, REQUEST_BOUNDS_NS};

/// Opcode label values (ZooKeeper's request names), in the order of [`op_slot`]; the last is for
/// requests whose opcode is unknown.
pub const OPS: [&str; 31] = [
    "create",
    "delete",
    "exists",
    "getData",
    "setData",
    "getACL",
    "setACL",
    "getChildren",
    "sync",
    "ping",
    "getChildren2",
    "check",
    "multi",
    "create2",
    "reconfig",
    "checkWatches",
    "removeWatches",
    "createContainer",
    "deleteContainer",
    "createTTL",
    "multiRead",
    "auth",
    "setWatches",
    "sasl",
    "getEphemerals",
    "getAllChildrenNumber",
    "setWatches2",
    "addWatch",
    "whoAmI",
    "closeSession",
    "unknown",
];

/// The index of an opcode in [`OPS`].
pub fn op_slot(op: Option<OpCode>) -> usize {
    use OpCode::*;
    match op {
        Some(Create) => 0,
        Some(Delete) => 1,
        Some(Exists) => 2,
        Some(GetData) => 3,
        Some(SetData) => 4,
        Some(GetAcl) => 5,
        Some(SetAcl) => 6,
        Some(GetChildren) => 7,
        Some(Sync) => 8,
        Some(Ping) => 9,
        Some(GetChildren2) => 10,
        Some(Check) => 11,
        Some(Multi) => 12,
        Some(Create2) => 13,
        Some(Reconfig) => 14,
        Some(CheckWatches) => 15,
        Some(RemoveWatches) => 16,
        Some(CreateContainer) => 17,
        Some(DeleteContainer) => 18,
        Some(CreateTtl) => 19,
        Some(MultiRead) => 20,
        Some(Auth) => 21,
        Some(SetWatches) => 22,
        Some(Sasl) => 23,
        Some(GetEphemerals) => 24,
        Some(GetAllChildrenNumber) => 25,
        Some(SetWatches2) => 26,
        Some(AddWatch) => 27,
        Some(WhoAmI) => 28,
        Some(CloseSession) => 29,
        _ => 30,
    }
}

/// Whether the opcode changes the tree (ZooKeeper's `updatelatency`) or reads it (`readlatency`).
fn op_kind(slot: usize) -> Option<bool> {
    match slot {
        0 | 1 | 4 | 6 | 11 | 12 | 13 | 14 | 17 | 18 | 19 | 29 => Some(true),
        2 | 3 | 5 | 7 | 10 | 20 | 24 | 25 => Some(false),
        _ => None,
    }
}

/// Why a connection or session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Rejection {
    /// `max-connections-per-ip` reached.
    per_ip_limit,
    /// The node has no working leader.
    no_leader,
    /// The client has seen a later zxid than this node.
    zxid_ahead,
    /// A resumed session is expired or its password is wrong.
    session_expired,
    /// The handshake did not decode.
    bad_handshake,
    /// Open file descriptors reached the limit minus `fd-reserve`.
    descriptors,
    /// No handshake within `handshake-timeout-ms`.
    handshake_timeout,
    /// More than `max-outgoing-bytes` queued for a client that does not read.
    slow_reader,
    /// Half-sent frames of all connections held more than their overall budget.
    partial_frames,
}

const REJECTIONS: [Rejection; 9] = [
    Rejection::per_ip_limit,
    Rejection::no_leader,
    Rejection::zxid_ahead,
    Rejection::session_expired,
    Rejection::bad_handshake,
    Rejection::descriptors,
    Rejection::handshake_timeout,
    Rejection::slow_reader,
    Rejection::partial_frames,
];

/// Why this node started an election.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ElectionCause {
    /// No heartbeat from a leader within the election timeout.
    timeout,
    /// Fast failover: the leader's process was seen gone, the node asked for a leadership transfer.
    leader_gone,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: Rejection,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabel {
    cause: ElectionCause,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FollowerLabel {
    follower: u64,
}

/// Latency buckets in milliseconds (ZooKeeper's unit for its latency metrics).
const MS_BUCKETS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    10000.0,
];

fn ms_histogram() -> Histogram {
    Histogram::new(MS_BUCKETS)
}

fn seconds_histogram() -> Histogram {
    Histogram::new(MS_BUCKETS.iter().map(|b| b / 1000.0))
}

fn count_histogram() -> Histogram {
    Histogram::new([
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
    ])
}

fn bytes_histogram() -> Histogram {
    Histogram::new((0..12).map(|i| 1024.0 * 4f64.powi(i)))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The write-ahead log's handles (held by the flusher thread).
#[derive(Clone, Debug)]
pub struct WalMetrics {
    enabled: bool,
    fsynctime: Histogram,
    batch: Histogram,
}

impl WalMetrics {
    /// One fdatasync of a log segment that made `records` records durable.
    pub fn fsync(&self, took: Duration, records: u64) {
        if !self.enabled {
            return;
        }
        self.fsynctime.observe(ms(took));
        self.batch.observe(records as f64);
    }
}

/// Gauges set from a [`Sample`] at each scrape.
struct Gauges {
    znode_count: Gauge,
    watch_count: Gauge,
    ephemerals_count: Gauge,
    approximate_data_size: Gauge,
    num_alive_connections: Gauge,
    outstanding_requests: Gauge,
    packets_received: Gauge,
    packets_sent: Gauge,
    global_sessions: Gauge,
    uptime: Gauge,
    open_file_descriptor_count: Gauge,
    max_file_descriptor_count: Gauge,
    connection_rejected: Gauge,
    bytes_received_count: Gauge,
    leader_uptime: Gauge,
    quorum_size: Gauge,
    synced_followers: Gauge,
    learners: Gauge,
    watches: Family<KindLabel, Gauge>,
    rss: Gauge,
    serving: Gauge,
    term: Gauge,
    role: Family<RoleLabel, Gauge>,
    leader: Gauge,
    last_log: Gauge,
    committed: Gauge,
    applied: Gauge,
    snapshot_index: Gauge,
    lag_entries: Family<FollowerLabel, Gauge>,
    lag_seconds: Family<FollowerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    wal_bytes: Gauge,
}

/// One follower's replication progress, as the leader sees it.
#[derive(Debug, Clone, Default)]
pub struct FollowerSample {
    /// Its node id.
    pub id: u64,
    /// Entries it lacks (leader's last log index minus its matched index).
    pub lag_entries: u64,
    /// Seconds since it last acknowledged anything (`None`: never).
    pub lag_seconds: Option<f64>,
}

/// What the admin route reads from the node at a scrape.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Znodes, counted as ZooKeeper counts them.
    pub znode_count: u64,
    /// Watch registrations: (data, child, persistent, persistent-recursive).
    pub watches: [u64; 4],
    /// Ephemeral znodes.
    pub ephemerals_count: u64,
    /// Bytes of paths and data.
    pub approximate_data_size: u64,
    /// Open client connections.
    pub num_alive_connections: u64,
    /// Requests in flight.
    pub outstanding_requests: u64,
    /// Packets received from clients.
    pub packets_received: u64,
    /// Packets sent to clients.
    pub packets_sent: u64,
    /// Open sessions.
    pub global_sessions: u64,
    /// Ms since the node started.
    pub uptime_ms: u64,
    /// Open file descriptors and their limit.
    pub fds: (u64, u64),
    /// Connections refused by a limit (ZooKeeper's `connection_rejected`).
    pub connection_rejected: u64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Whether the node serves clients.
    pub serving: bool,
    /// Raft role: `leader`, `candidate`, `follower`, `learner` or `shutdown`.
    pub role: &'static str,
    /// Raft term.
    pub term: u64,
    /// The leader's id (0: none known).
    pub leader: u64,
    /// Ms since this node became leader (0 unless it leads).
    pub leader_uptime_ms: u64,
    /// Voters.
    pub quorum_size: u64,
    /// Learners.
    pub learners: u64,
    /// Last log index, commit index, applied index, last snapshot index.
    pub last_log: u64,
    /// The cluster's commit index.
    pub committed: u64,
    /// The applied index.
    pub applied: u64,
    /// The last snapshot's index.
    pub snapshot_index: u64,
    /// As leader: each other member's progress.
    pub followers: Vec<FollowerSample>,
    /// Bytes written to the log since start.
    pub wal_bytes: u64,
}

/// The registry and every handle. Held by [`crate::shared::Shared`].
pub struct Metrics {
    enabled: bool,
    registry: Registry,
    /// Per [`op_slot`]; `readlatency` and `updatelatency` are sums of these, made at scrape.
    requests: Vec<AtomicHistogram>,
    rejections: Vec<Counter>,
    bytes_in: Counter,
    bytes_out: Counter,
    sessions_created: Counter,
    sessions_closed: Counter,
    sessions_expired: Counter,
    elections: Family<CauseLabel, Counter>,
    leader_changes: Counter,
    election_time: Histogram,
    snapshot_build: Histogram,
    snapshottime: Histogram,
    snapshot_build_bytes: Histogram,
    snapshot_install: Histogram,
    snapshot_install_bytes: Histogram,
    wal: WalMetrics,
    gauges: Gauges,
    /// When this node became leader, ms since the epoch (0: it does not lead).
    leader_since_ms: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

fn gauge(r: &mut Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::default();
    r.register(name, help, g.clone());
    g
}

fn counter(r: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    r.register(name, help, c.clone());
    c
}

fn histogram(
    r: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    h: Histogram,
) -> Histogram {
    match unit {
        Some(u) => r.register_with_unit(name, help, u, h.clone()),
        None => r.register(name, help, h.clone()),
    }
    h
}

impl Metrics {
    /// A fresh registry; with `enabled` false nothing is ever recorded and [`Metrics::render`] says so.
    pub fn new(enabled: bool) -> Metrics {
        let mut r = Registry::default();
        let requests_family: Family<OpLabel, AtomicHistogram, fn() -> AtomicHistogram> =
            Family::new_with_constructor(AtomicHistogram::requests);
        r.register_with_unit(
            "roster_request_duration",
            "Client requests answered, by opcode, from decoding to reply",
            Unit::Seconds,
            requests_family.clone(),
        );
        let requests: Vec<AtomicHistogram> = OPS
            .iter()
            .map(|op| requests_family.get_or_create(&OpLabel { op }).clone())
            .collect();
        let of_kind = |write: bool| -> Vec<AtomicHistogram> {
            (0..requests.len())
                .filter(|slot| op_kind(*slot) == Some(write))
                .map(|slot| requests[slot].clone())
                .collect()
        };
        r.register(
            "readlatency",
            "Read request latency, ms (ZooKeeper)",
            HistSum::new(of_kind(false), &REQUEST_BOUNDS_NS, Scale::Millis),
        );
        r.register(
            "updatelatency",
            "Write request latency, ms (ZooKeeper)",
            HistSum::new(of_kind(true), &REQUEST_BOUNDS_NS, Scale::Millis),
        );
        let rej: Family<ReasonLabel, Counter> = Family::default();
        r.register(
            "roster_connections_rejected",
            "Connections or sessions refused, by reason",
            rej.clone(),
        );
        let rejections = REJECTIONS
            .iter()
            .map(|reason| rej.get_or_create(&ReasonLabel { reason: *reason }).clone())
            .collect();
        let bytes_in = Counter::default();
        r.register_with_unit(
            "roster_client_received",
            "Bytes received from clients",
            Unit::Bytes,
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        r.register_with_unit(
            "roster_client_sent",
            "Bytes sent to clients",
            Unit::Bytes,
            bytes_out.clone(),
        );
        let sessions_created = counter(
            &mut r,
            "roster_sessions_created",
            "Sessions created through this node",
        );
        let sessions_closed = counter(
            &mut r,
            "roster_sessions_closed",
            "Sessions closed by their client through this node",
        );
        let sessions_expired = counter(
            &mut r,
            "roster_sessions_expired",
            "Sessions expired by this node while it led",
        );
        let elections: Family<CauseLabel, Counter> = Family::default();
        r.register(
            "roster_raft_elections",
            "Elections this node started, by cause",
            elections.clone(),
        );
        for cause in [ElectionCause::timeout, ElectionCause::leader_gone] {
            let _ = elections.get_or_create(&CauseLabel { cause });
        }
        let leader_changes = counter(
            &mut r,
            "roster_raft_leader_changes",
            "Times this node saw a new leader",
        );
        let election_time = histogram(
            &mut r,
            "election_time",
            "Time without a known leader until one was elected, ms (ZooKeeper)",
            None,
            ms_histogram(),
        );
        let snapshot_build = histogram(
            &mut r,
            "roster_snapshot_build_duration",
            "Snapshot builds",
            Some(Unit::Seconds),
            seconds_histogram(),
        );
        let snapshottime = histogram(
            &mut r,
            "snapshottime",
            "Snapshot build time, ms (ZooKeeper)",
            None,
            ms_histogram(),
        );
        let snapshot_build_bytes = histogram(
            &mut r,
            "roster_snapshot_build_size",
            "Size of built snapshots",
            Some(Unit::Bytes),
            bytes_histogram(),
        );
        let snapshot_install = histogram(
            &mut r,
            "roster_snapshot_install_duration",
            "Snapshots installed from the leader",
            Some(Unit::Seconds),
            seconds_histogram(),
        );
        let snapshot_install_bytes = histogram(
            &mut r,
            "roster_snapshot_install_size",
            "Size of installed snapshots",
            Some(Unit::Bytes),
            bytes_histogram(),
        );
        let wal = WalMetrics {
            enabled,
            fsynctime: histogram(
                &mut r,
                "fsynctime",
                "Write-ahead log fdatasync time, ms (ZooKeeper)",
                None,
                ms_histogram(),
            ),
            batch: histogram(
                &mut r,
                "sync_processor_batch_size",
                "Log records made durable per fdatasync (group commit batch size, ZooKeeper)",
                None,
                count_histogram(),
            ),
        };
        let g = &mut r;
        let watches: Family<KindLabel, Gauge> = Family::default();
        g.register(
            "roster_watches",
            "Watch registrations by kind",
            watches.clone(),
        );
        let role: Family<RoleLabel, Gauge> = Family::default();
        g.register(
            "roster_raft_role",
            "1 for this node's Raft role",
            role.clone(),
        );
        let lag_entries: Family<FollowerLabel, Gauge> = Family::default();
        g.register(
            "roster_raft_follower_lag_entries",
            "As leader: log entries each follower lacks",
            lag_entries.clone(),
        );
        let lag_seconds: Family<FollowerLabel, Gauge<f64, std::sync::atomic::AtomicU64>> =
            Family::default();
        g.register_with_unit(
            "roster_raft_follower_last_ack_age",
            "As leader: time since each follower last acknowledged",
            Unit::Seconds,
            lag_seconds.clone(),
        );
        let gauges = Gauges {
            znode_count: gauge(g, "znode_count", "Znodes (ZooKeeper)"),
            watch_count: gauge(g, "watch_count", "Watch registrations (ZooKeeper)"),
            ephemerals_count: gauge(g, "ephemerals_count", "Ephemeral znodes (ZooKeeper)"),
            approximate_data_size: gauge(
                g,
                "approximate_data_size",
                "Bytes of znode paths and data (ZooKeeper)",
            ),
            num_alive_connections: gauge(
                g,
                "num_alive_connections",
                "Open client connections (ZooKeeper)",
            ),
            outstanding_requests: gauge(
                g,
                "outstanding_requests",
                "Client requests in flight (ZooKeeper)",
            ),
            packets_received: gauge(
                g,
                "packets_received",
                "Packets received from clients (ZooKeeper)",
            ),
            packets_sent: gauge(g, "packets_sent", "Packets sent to clients (ZooKeeper)"),
            global_sessions: gauge(g, "global_sessions", "Open sessions (ZooKeeper)"),
            uptime: gauge(g, "uptime", "Ms since the node started (ZooKeeper)"),
            open_file_descriptor_count: gauge(
                g,
                "open_file_descriptor_count",
                "Open file descriptors (ZooKeeper)",
            ),
            max_file_descriptor_count: gauge(
                g,
                "max_file_descriptor_count",
                "File descriptor limit (ZooKeeper)",
            ),
            connection_rejected: gauge(
                g,
                "connection_rejected",
                "Connections refused by a limit (ZooKeeper)",
            ),
            bytes_received_count: gauge(
                g,
                "bytes_received_count",
                "Bytes received from clients (ZooKeeper)",
            ),
            leader_uptime: gauge(
                g,
                "leader_uptime",
                "Ms since this node became leader, 0 unless it leads (ZooKeeper)",
            ),
            quorum_size: gauge(g, "quorum_size", "Voters (ZooKeeper)"),
            synced_followers: gauge(
                g,
                "synced_followers",
                "As leader: voters other than itself (ZooKeeper)",
            ),
            learners: gauge(g, "learners", "Non-voting members (ZooKeeper's observers)"),
            watches,
            rss: gauge(
                g,
                "roster_resident_memory_bytes",
                "Resident memory of the process, bytes",
            ),
            serving: gauge(g, "roster_serving", "1 while the node serves clients"),
            term: gauge(g, "roster_raft_term", "Raft term"),
            role,
            leader: gauge(
                g,
                "roster_raft_leader",
                "The leader's node id, 0 when none is known",
            ),
            last_log: gauge(g, "roster_raft_last_log_index", "Last log index"),
            committed: gauge(g, "roster_raft_commit_index", "Commit index"),
            applied: gauge(g, "roster_raft_applied_index", "Applied index"),
            snapshot_index: gauge(
                g,
                "roster_raft_snapshot_index",
                "Index of the last snapshot",
            ),
            lag_entries,
            lag_seconds,
            wal_bytes: gauge(
                g,
                "roster_wal_written_bytes",
                "Bytes written to the write-ahead log since start",
            ),
        };
        Metrics {
            enabled,
            registry: r,
            requests,
            rejections,
            bytes_in,
            bytes_out,
            sessions_created,
            sessions_closed,
            sessions_expired,
            elections,
            leader_changes,
            election_time,
            snapshot_build,
            snapshottime,
            snapshot_build_bytes,
            snapshot_install,
            snapshot_install_bytes,
            wal,
            gauges,
            leader_since_ms: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Whether this node leads now (for `leader_uptime`).
    pub fn set_leader(&self, leads: bool) {
        use std::sync::atomic::Ordering;
        if !leads {
            self.leader_since_ms.store(0, Ordering::Relaxed);
        } else if self.leader_since_ms.load(Ordering::Relaxed) == 0 {
            self.leader_since_ms
                .store(now_ms().max(1), Ordering::Relaxed);
        }
    }

    /// Ms since this node became leader; 0 unless it leads.
    pub fn leader_uptime_ms(&self) -> u64 {
        match self
            .leader_since_ms
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => 0,
            since => (now_ms() - since).max(0) as u64,
        }
    }

    /// Whether metrics are recorded (`metrics` setting).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The log flusher's handles.
    pub fn wal(&self) -> WalMetrics {
        self.wal.clone()
    }

    /// One client request answered, `slot` from [`op_slot`], `took` from decoding to reply.
    #[inline]
    pub fn request(&self, slot: usize, took: Duration) {
        if !self.enabled {
            return;
        }
        if let Some(h) = self.requests.get(slot) {
            h.observe(took);
        }
    }

    /// A connection or session refused.
    pub fn rejected(&self, why: Rejection) {
        if !self.enabled {
            return;
        }
        if let Some(c) = REJECTIONS
            .iter()
            .position(|r| *r == why)
            .and_then(|i| self.rejections.get(i))
        {
            c.inc();
        }
    }

    /// Bytes read from a client.
    pub fn bytes_in(&self, n: usize) {
        if self.enabled {
            self.bytes_in.inc_by(n as u64);
        }
    }

    /// Bytes written to a client.
    pub fn bytes_out(&self, n: usize) {
        if self.enabled {
            self.bytes_out.inc_by(n as u64);
        }
    }

    /// A session created through this node.
    pub fn session_created(&self) {
        if self.enabled {
            self.sessions_created.inc();
        }
    }

    /// A session closed by its client through this node.
    pub fn session_closed(&self) {
        if self.enabled {
            self.sessions_closed.inc();
        }
    }

    /// A session expired by this node (as leader).
    pub fn session_expired(&self) {
        if self.enabled {
            self.sessions_expired.inc();
        }
    }

    /// This node started an election.
    pub fn election(&self, cause: ElectionCause) {
        if self.enabled {
            self.elections.get_or_create(&CauseLabel { cause }).inc();
        }
    }

    /// A new leader became known after `leaderless` without one.
    pub fn leader_elected(&self, leaderless: Duration) {
        if self.enabled {
            self.leader_changes.inc();
            self.election_time.observe(ms(leaderless));
        }
    }

    /// A snapshot built.
    pub fn snapshot_built(&self, took: Duration, bytes: usize) {
        if self.enabled {
            self.snapshot_build.observe(secs(took));
            self.snapshottime.observe(ms(took));
            self.snapshot_build_bytes.observe(bytes as f64);
        }
    }

    /// A snapshot received from the leader installed.
    pub fn snapshot_installed(&self, took: Duration, bytes: usize) {
        if self.enabled {
            self.snapshot_install.observe(secs(took));
            self.snapshot_install_bytes.observe(bytes as f64);
        }
    }

    /// The Prometheus text exposition after setting the sampled gauges; `None` when metrics are off.
    pub fn render(&self, s: &Sample) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let g = &self.gauges;
        let set = |gauge: &Gauge, v: u64| {
            gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&g.znode_count, s.znode_count);
        set(&g.watch_count, s.watches.iter().sum());
        for (kind, n) in ["data", "child", "persistent", "persistent_recursive"]
            .iter()
            .zip(s.watches)
        {
            set(&g.watches.get_or_create(&KindLabel { kind }), n);
        }
        set(&g.ephemerals_count, s.ephemerals_count);
        set(&g.approximate_data_size, s.approximate_data_size);
        set(&g.num_alive_connections, s.num_alive_connections);
        set(&g.outstanding_requests, s.outstanding_requests);
        set(&g.packets_received, s.packets_received);
        set(&g.packets_sent, s.packets_sent);
        set(&g.global_sessions, s.global_sessions);
        set(&g.uptime, s.uptime_ms);
        set(&g.open_file_descriptor_count, s.fds.0);
        set(&g.max_file_descriptor_count, s.fds.1);
        set(&g.connection_rejected, s.connection_rejected);
        set(&g.bytes_received_count, self.bytes_in.get());
        set(&g.leader_uptime, s.leader_uptime_ms);
        set(&g.quorum_size, s.quorum_size);
        set(
            &g.synced_followers,
            if s.role == "leader" {
                s.quorum_size.saturating_sub(1)
            } else {
                0
            },
        );
        set(&g.learners, s.learners);
        set(&g.rss, s.rss_bytes);
        set(&g.serving, u64::from(s.serving));
        set(&g.term, s.term);
        for role in ["leader", "candidate", "follower", "learner", "shutdown"] {
            set(
                &g.role.get_or_create(&RoleLabel { role }),
                u64::from(role == s.role),
            );
        }
        set(&g.leader, s.leader);
        set(&g.last_log, s.last_log);
        set(&g.committed, s.committed);
        set(&g.applied, s.applied);
        set(&g.snapshot_index, s.snapshot_index);
        g.lag_entries.clear();
        g.lag_seconds.clear();
        for f in &s.followers {
            let l = FollowerLabel { follower: f.id };
            set(&g.lag_entries.get_or_create(&l), f.lag_entries);
            g.lag_seconds
                .get_or_create(&l)
                .set(f.lag_seconds.unwrap_or(f64::INFINITY));
        }
        set(&g.wal_bytes, s.wal_bytes);
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry).ok()?;
        Some(out)
    }
}
