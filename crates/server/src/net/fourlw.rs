//! Four-letter words on the client port, in ZooKeeper 3.8's output formats so that existing monitoring
//! tools (and kazoo's `server_version()`, which parses `envi`) read them unchanged.
//!
//! Each command is answered from counters and a short lock on the shared state, then the connection
//! closes. Words not in the `four-letter-words` setting get ZooKeeper's "not in the whitelist" line.
//!
//! Left out: `crst`, `srst`, `gtmk`, `stmk` and `hash` answer as ZooKeeper does for a standalone server
//! with nothing to report, or reset counters.

use crate::cluster::ctx::NodeCtx;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// The ZooKeeper version Roster reports: the protocol level it implements, then Roster's own version.
pub const ZK_VERSION: &str = concat!("3.9.3-roster-", env!("CARGO_PKG_VERSION"));
/// What Roster reports as its build.
pub const BUILT_ON: &str = "roster";

/// Answers one four-letter word.
pub fn run(word: &str, ctx: &NodeCtx) -> String {
    let shared = &ctx.shared;
    if !shared.config.four_letter_word_allowed(word) {
        return format!("{word} is not executed because it is not in the whitelist.\n");
    }
    match word {
        // ZooKeeper answers nothing to ruok when it is not running.
        "ruok" if ctx.cluster.storage_failure().is_some() => String::new(),
        "ruok" => "imok".to_string(),
        "mntr" if ctx.cluster.storage_failure().is_some() => NOT_SERVING.to_string(),
        "isro" => "rw".to_string(),
        "srvr" => server_summary(ctx, false),
        "stat" => server_summary(ctx, true),
        "mntr" => mntr(ctx),
        "conf" => conf(ctx),
        "envi" => envi(ctx),
        "cons" => {
            let mut s = clients(ctx, true);
            s.push('\n');
            s
        }
        "crst" => "Connection stats reset.\n".to_string(),
        "srst" => {
            shared.stats.reset();
            "Server stats reset.\n".to_string()
        }
        "wchs" => {
            let (conns, paths, total) = shared.db.lock().watches.summary();
            format!("{conns} connections watching {paths} paths\nTotal watches:{total}\n")
        }
        "wchc" => {
            let by_watcher = shared.db.lock().watches.by_watcher();
            let sessions = session_of_conns(ctx);
            let mut s = String::new();
            for (conn, paths) in by_watcher {
                let _ = writeln!(s, "0x{:x}", sessions.get(&conn).copied().unwrap_or(0));
                for p in paths {
                    let _ = writeln!(s, "\t{p}");
                }
            }
            s.push('\n');
            s
        }
        "wchp" => {
            let by_path = shared.watches_by_path();
            let sessions = session_of_conns(ctx);
            let mut s = String::new();
            for (path, conns) in by_path {
                let _ = writeln!(s, "{path}");
                for c in conns {
                    let _ = writeln!(s, "\t0x{:x}", sessions.get(&c).copied().unwrap_or(0));
                }
            }
            s.push('\n');
            s
        }
        "dump" => dump(ctx),
        "dirs" => {
            let (log, snap) = dir_sizes(ctx);
            format!("datadir_size: {snap}\nlogdir_size: {log}\n")
        }
        "gtmk" => "0\n".to_string(),
        "stmk" => "0\n".to_string(),
        "hash" => String::new(),
        _ => format!("{word} is not executed because it is not in the whitelist.\n"),
    }
}

/// ZooKeeper's node count includes the root twice (it is also stored under the key ""); tools
/// compare against that number, so Roster reports it the same way.
pub fn znode_count(nodes: usize) -> usize {
    nodes + 1
}

/// Connection id → its session id (0 before the handshake).
pub fn session_of_conns(ctx: &NodeCtx) -> std::collections::HashMap<u64, i64> {
    let conns = ctx.shared.conns.lock();
    conns
        .by_id
        .iter()
        .map(|(id, c)| (*id, c.session_id.unwrap_or(0)))
        .collect()
}

/// Request latency (min, avg, max), ms.
pub fn latency(ctx: &NodeCtx) -> (u64, f64, u64) {
    let st = &ctx.shared.stats;
    let n = st.requests.load(Ordering::Relaxed);
    let min = st.latency_min_us.load(Ordering::Relaxed);
    let max = st.latency_max_us.load(Ordering::Relaxed);
    let sum = st.latency_sum_us.load(Ordering::Relaxed);
    if n == 0 {
        (0, 0.0, 0)
    } else {
        (min / 1000, sum as f64 / n as f64 / 1000.0, max / 1000)
    }
}

/// ZooKeeper's answer to `srvr`, `stat` (and `cons`-like words) on a server that serves no client.
pub const NOT_SERVING: &str = "This ZooKeeper instance is not currently serving requests\n";

fn server_summary(ctx: &NodeCtx, with_clients: bool) -> String {
    let shared = &ctx.shared;
    let Some(mode) = mode(ctx) else {
        return NOT_SERVING.to_string();
    };
    let mut s = format!("Zookeeper version: {ZK_VERSION}, built on {BUILT_ON}\n");
    if with_clients {
        s.push_str("Clients:\n");
        s.push_str(&clients(ctx, false));
        s.push('\n');
    }
    let (min, avg, max) = latency(ctx);
    let (zxid, nodes) = {
        let db = shared.db.lock();
        (db.state.last_zxid(), znode_count(db.state.node_count()))
    };
    let connections = shared.conns.lock().by_id.len();
    let _ = write!(
        s,
        "Latency min/avg/max: {min}/{avg:.4}/{max}\nReceived: {}\nSent: {}\nConnections: {connections}\nOutstanding: {}\nZxid: 0x{zxid:x}\nMode: {mode}\nNode count: {nodes}\n",
        shared.stats.packets_received.load(Ordering::Relaxed),
        shared.stats.packets_sent.load(Ordering::Relaxed),
        shared.stats.outstanding.load(Ordering::Relaxed),
    );
    s
}

/// `standalone` for a one-node cluster, else this node's role (`leader`, `follower`, `observer`);
/// `None` while it serves no client (no working leader, see `cluster::status::zk_mode`).
fn mode(ctx: &NodeCtx) -> Option<&'static str> {
    if ctx.cluster.storage_failure().is_some() {
        return None;
    }
    crate::cluster::status::zk_mode(ctx)
}

/// `mntr`'s `zk_server_state`: the mode, or `looking` (ZooKeeper's state for a server without a
/// leader, which serves nothing) while the node serves no client.
pub fn server_state(ctx: &NodeCtx) -> &'static str {
    mode(ctx).unwrap_or("looking")
}

/// One line per connection: the short form of `stat`, or `cons`'s detailed form.
fn clients(ctx: &NodeCtx, detailed: bool) -> String {
    let conns = ctx.shared.conns.lock();
    let mut rows: Vec<_> = conns.by_id.iter().collect();
    rows.sort_by_key(|(id, _)| **id);
    let mut s = String::new();
    for (_, c) in rows {
        let st = &c.stats;
        let recved = st.received.load(Ordering::Relaxed);
        let sent = st.sent.load(Ordering::Relaxed);
        let queued = st.outstanding.load(Ordering::Relaxed);
        let established = u8::from(c.session_id.is_some());
        let _ = write!(
            s,
            " /{}[{established}](queued={queued},recved={recved},sent={sent}",
            c.peer
        );
        if let (true, Some(sid)) = (detailed, c.session_id) {
            let completed = st.completed.load(Ordering::Relaxed);
            let avg = st
                .latency_total_ms
                .load(Ordering::Relaxed)
                .checked_div(completed)
                .unwrap_or(0);
            let _ = write!(
                s,
                ",sid=0x{sid:x},lop=NA,est={},to={},lcxid=0x{:x},lzxid=0x{:x},lresp=0,llat=0,minlat=0,avglat={avg},maxlat={}",
                c.since.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0),
                c.timeout_ms,
                st.last_cxid.load(Ordering::Relaxed),
                st.last_zxid.load(Ordering::Relaxed),
                st.latency_max_ms.load(Ordering::Relaxed),
            );
        }
        s.push_str(")\n");
    }
    s
}

/// `mntr`'s answer: `zk_KEY\tVALUE` lines.
pub fn mntr(ctx: &NodeCtx) -> String {
    let shared = &ctx.shared;
    let st = &shared.stats;
    let (min, avg, max) = latency(ctx);
    let (nodes, watches, ephemerals, data_size, zxid) = {
        let db = shared.db.lock();
        (
            znode_count(db.state.node_count()),
            db.watches.total(),
            db.state.ephemeral_count(),
            db.state.approximate_data_size(),
            db.state.last_zxid(),
        )
    };
    let connections = shared.conns.lock().by_id.len();
    let sessions = shared.tracker.lock().len();
    let fds = open_files();
    let max_fds = max_open_files();
    let wal = ctx.wal.get();
    let raft = ctx.raft.status();
    let rows: Vec<(&str, String)> = vec![
        ("zk_version", format!("{ZK_VERSION}, built on {BUILT_ON}")),
        ("zk_server_state", server_state(ctx).to_string()),
        ("zk_avg_latency", format!("{avg:.4}")),
        ("zk_max_latency", max.to_string()),
        ("zk_min_latency", min.to_string()),
        (
            "zk_packets_received",
            st.packets_received.load(Ordering::Relaxed).to_string(),
        ),
        (
            "zk_packets_sent",
            st.packets_sent.load(Ordering::Relaxed).to_string(),
        ),
        ("zk_num_alive_connections", connections.to_string()),
        (
            "zk_outstanding_requests",
            st.outstanding.load(Ordering::Relaxed).to_string(),
        ),
        ("zk_znode_count", nodes.to_string()),
        ("zk_watch_count", watches.to_string()),
        ("zk_ephemerals_count", ephemerals.to_string()),
        ("zk_approximate_data_size", data_size.to_string()),
        ("zk_open_file_descriptor_count", fds.to_string()),
        ("zk_max_file_descriptor_count", max_fds.to_string()),
        ("zk_global_sessions", sessions.to_string()),
        ("zk_local_sessions", "0".to_string()),
        (
            "zk_uptime",
            shared.started.elapsed().as_millis().to_string(),
        ),
        ("zk_last_zxid", format!("0x{zxid:x}")),
        (
            "zk_connection_rejected",
            st.connections_refused.load(Ordering::Relaxed).to_string(),
        ),
        (
            "zk_protocol_errors",
            st.protocol_errors.load(Ordering::Relaxed).to_string(),
        ),
        (
            "zk_sessions_expired",
            st.sessions_expired.load(Ordering::Relaxed).to_string(),
        ),
        (
            "zk_watch_events_sent",
            st.watch_events.load(Ordering::Relaxed).to_string(),
        ),
        ("zk_rss_bytes", rss_bytes().to_string()),
        // Group commit at a glance: records per fdatasync is records_written / fsync_count.
        ("zk_roster_wal_fsync_count", wal.fsyncs.to_string()),
        ("zk_roster_wal_batch_count", wal.batches.to_string()),
        (
            "zk_roster_wal_records_written",
            wal.records_written.to_string(),
        ),
        ("zk_roster_wal_bytes_written", wal.bytes_written.to_string()),
        // Raft: term, openraft's own state (a leader without a quorum is still `Leader` here),
        // whether clients are served, and the dials to peers (refused dials to a dead peer are paced).
        ("zk_roster_raft_term", raft.term.to_string()),
        ("zk_roster_raft_state", format!("{:?}", raft.role)),
        (
            "zk_roster_serving",
            u8::from(ctx.cluster.is_serving()).to_string(),
        ),
        (
            "zk_roster_peer_dials",
            st.peer_dials.load(Ordering::Relaxed).to_string(),
        ),
        (
            "zk_roster_peer_dials_failed",
            st.peer_dials_failed.load(Ordering::Relaxed).to_string(),
        ),
        // Format versions (docs/operations.md, "Upgrading"): the newest this binary speaks, and the
        // cluster's (the lowest any member runs, as recorded in the log and applied here).
        (
            "zk_roster_format_version",
            crate::format::CURRENT.to_string(),
        ),
        (
            "zk_roster_cluster_format_version",
            shared.formats.cluster().to_string(),
        ),
    ];
    let mut s = String::new();
    for (k, v) in rows {
        let _ = writeln!(s, "{k}\t{v}");
    }
    s
}

fn conf(ctx: &NodeCtx) -> String {
    let c = &ctx.shared.config;
    let dir = std::fs::canonicalize(&c.data_dir).unwrap_or_else(|_| c.data_dir.clone());
    format!(
        "clientPort={}\nsecureClientPort=-1\ndataDir={}\ndataDirSize={}\ndataLogDir={}\ndataLogSize={}\ntickTime={}\nmaxClientCnxns={}\nminSessionTimeout={}\nmaxSessionTimeout={}\nclientPortListenBacklog=-1\nserverId={}\n",
        c.client_addr.map(|a| a.port()).unwrap_or(0),
        dir.join("snapshots").display(),
        dir_sizes(ctx).1,
        dir.join("log").display(),
        dir_sizes(ctx).0,
        c.session_tick_ms,
        c.max_connections_per_ip,
        c.min_session_timeout_ms,
        c.max_session_timeout_ms,
        ctx.identity.node_id,
    )
}

/// `envi`'s answer: `Environment:` then `key=value` lines.
pub fn envi(ctx: &NodeCtx) -> String {
    let _ = ctx;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let home = std::env::var("HOME").unwrap_or_default();
    let rss_mb = rss_bytes() / (1024 * 1024);
    // ZooKeeper's keys, in its order, so tools that parse `envi` find them; Roster runs no JVM, so the
    // java.* keys describe the native binary instead.
    format!(
        "Environment:\nzookeeper.version={ZK_VERSION}, built on {BUILT_ON}\nhost.name={}\njava.version=none (native)\n\
         java.vendor=roster\njava.home={exe}\njava.class.path={exe}\njava.library.path=\njava.io.tmpdir={}\n\
         java.compiler=<NA>\nos.name={}\nos.arch={}\nos.version={}\nuser.name={user}\nuser.home={home}\n\
         user.dir={cwd}\nos.memory.free=0MB\nos.memory.max=0MB\nos.memory.total={rss_mb}MB\n",
        host.trim(),
        std::env::temp_dir().display(),
        if std::env::consts::OS == "linux" { "Linux" } else { std::env::consts::OS },
        if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH },
        kernel.trim(),
    )
}

fn dump(ctx: &NodeCtx) -> String {
    let shared = &ctx.shared;
    let db = shared.db.lock();
    let mut s = String::new();
    let sessions: Vec<_> = db.state.sessions().collect();
    let _ = writeln!(s, "SessionTracker dump:");
    let _ = writeln!(s, "Global Sessions({}):", sessions.len());
    for (id, sess) in &sessions {
        let _ = writeln!(s, "0x{id:x}\t{}ms", sess.timeout_ms);
    }
    let with_eph: Vec<_> = sessions
        .iter()
        .filter(|(_, s)| !s.ephemerals.is_empty())
        .collect();
    let _ = writeln!(s, "ephemeral nodes dump:");
    let _ = writeln!(s, "Sessions with Ephemerals ({}):", with_eph.len());
    for (id, sess) in with_eph {
        let _ = writeln!(s, "0x{id:x}:");
        for p in sess.ephemerals.iter() {
            let _ = writeln!(s, "\t{p}");
        }
    }
    s
}

/// Bytes under the log and the snapshot directories.
pub fn dir_sizes(ctx: &NodeCtx) -> (u64, u64) {
    fn size(p: &std::path::Path) -> u64 {
        std::fs::read_dir(p)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => size(&e.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    let d = &ctx.shared.config.data_dir;
    (size(&d.join("log")), size(&d.join("snapshots")))
}

/// Open file descriptors of this process (Linux; 0 if unknown).
pub fn open_files() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// This process's limit of open file descriptors (Linux; 0 if unknown).
pub fn max_open_files() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Resident memory of this process, bytes (Linux).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}
