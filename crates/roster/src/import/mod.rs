//! `roster import`: a new Roster data directory from an Apache ZooKeeper (3.4-3.9) data directory.
//!
//! Reads the newest snapshot that decodes with valid checksums (older ones are tried when the newest
//! is damaged, as ZooKeeper does), then the transaction logs from the one that holds the snapshot's
//! zxid onwards, every record's checksum verified, and replays them (`replay.rs`) into ZooKeeper's
//! tree as it was when ZooKeeper stopped: every znode with its data, ACL and persisted stat, and the
//! live sessions. Ephemerals whose session is gone are dropped and listed. The result is written as
//! the Raft snapshot of a fresh one-node cluster (`roster_server::node::seed_data_dir`) at the last
//! imported zxid, so `roster serve --data-dir NEW` starts with the tree and its zxids continue above
//! ZooKeeper's. Imported sessions keep their ids, timeouts and passwords: their clients may reconnect
//! to Roster, and those that do not expire after their timeout, as on a restarted ZooKeeper.
//!
//! The import may read the files of a ZooKeeper that still serves (phase 1 of the cut-over in
//! docs/operations.md): snapshots are never changed once written (one still being written fails its
//! checksum and the one before it is used) and logs are only appended to (a record cut short at the
//! end of the newest is ignored). `roster import --update` (`update.rs`) then catches the directory
//! up with the txns ZooKeeper logged since. For it the import leaves a record in the directory
//! (`meta/zk-import.meta`, [`Marker`]): the last imported zxid, the txn logged at it, and the nodes
//! it dropped.
//!
//! Left out: snappy-compressed snapshots (`zk.rs` says what to do), and importing into a directory
//! that holds anything (refused).

mod replay;
mod update;
mod zk;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use roster_server::storage::meta::MetaStore;
use roster_state::ImportedNode;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `roster import` arguments.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// ZooKeeper's data directory: its `version-2` directory or the directory holding it (ZooKeeper's
    /// `dataDir`). ZooKeeper should be stopped, or the files copied while it ran.
    #[arg(long)]
    zk_data_dir: PathBuf,
    /// ZooKeeper's transaction log directory (`dataLogDir`), if it is not the data directory.
    #[arg(long)]
    zk_log_dir: Option<PathBuf>,
    /// The new Roster data directory; must not exist or be empty (with --update: the directory an
    /// earlier import made).
    #[arg(long)]
    data_dir: PathBuf,
    /// Catch up a directory an earlier import made (and nothing has served since) with the txns
    /// ZooKeeper logged after it: replays only those, from ZooKeeper's transaction logs. Refuses a
    /// directory Roster has served, and logs that do not continue the imported history.
    #[arg(long)]
    update: bool,
    /// With --update: keep replaying ZooKeeper's logs as they grow while ZooKeeper accepts
    /// connections on this address (its client port, e.g. 127.0.0.1:2181); once it refuses them
    /// (ZooKeeper stopped), replay the rest, write the directory and exit. Stop ZooKeeper to finish.
    #[arg(long, value_name = "ZK_CLIENT_ADDR", requires = "update")]
    follow: Option<std::net::SocketAddr>,
    /// The peer address the node will announce (`roster serve --peer-addr`; corrected at start if it
    /// differs).
    #[arg(long, default_value = "127.0.0.1:2888")]
    peer_addr: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug)]
struct LogReport {
    file: String,
    records: usize,
    first_zxid: Option<String>,
    last_zxid: Option<String>,
    /// A record cut short at the end of the file (ZooKeeper stopped mid-write), ignored as
    /// ZooKeeper ignores it: its offset.
    torn_tail_at: Option<usize>,
}

#[derive(Serialize, Debug)]
struct SessionReport {
    id: String,
    timeout_ms: i32,
    ephemerals: usize,
}

#[derive(Serialize, Debug)]
struct DroppedReport {
    session: String,
    paths: Vec<String>,
}

#[derive(Serialize, Debug)]
struct Report {
    zk_data_dir: String,
    data_dir: String,
    snapshot: String,
    snapshot_zxid: String,
    /// Newer snapshots that did not decode, with why.
    skipped_snapshots: Vec<(String, String)>,
    logs: Vec<LogReport>,
    /// Checksums verified: snapshot seals plus log records.
    checksums_verified: u64,
    txns_applied: u64,
    txns_already_in_snapshot: u64,
    unknown_txn_types: Vec<(String, i32)>,
    first_zxid: String,
    last_zxid: String,
    znodes: usize,
    acl_lists: usize,
    sessions: Vec<SessionReport>,
    dropped_ephemerals: Vec<DroppedReport>,
    /// Containers that had children and have none: ZooKeeper's container manager would delete them.
    dropped_empty_containers: Vec<String>,
    cluster_id: String,
    elapsed_ms: u64,
}

/// The key of the import's record in the data directory's `meta/` ([`Marker`]).
const MARKER_KEY: &str = "zk-import";

/// The txn ZooKeeper logged at the last imported zxid, as `--update` recognises it in the logs
/// again: the same zxid with another time, session, type or body means another history.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Anchor {
    zxid: i64,
    time: i64,
    session_id: i64,
    op: i32,
    body_len: usize,
    body_adler32: u32,
}

impl Anchor {
    fn of(rec: &zk::LogRecord) -> Anchor {
        Anchor {
            zxid: rec.zxid,
            time: rec.time,
            session_id: rec.session_id,
            op: rec.op,
            body_len: rec.body.len(),
            body_adler32: zk::adler32(&rec.body),
        }
    }
}

/// What an import leaves in the data directory for `--update` (JSON in `meta/zk-import.meta`).
#[derive(Serialize, Deserialize, Debug)]
struct Marker {
    /// The ZooKeeper directory it was read from (for messages only).
    zk_data_dir: String,
    /// The zxid the directory's state is at.
    last_zxid: i64,
    /// The txn logged at `last_zxid`; `None` if no log held it (nothing after a snapshot).
    anchor: Option<Anchor>,
    /// Nodes of ZooKeeper's tree the import dropped (see `replay::Dropped`), with their stats as
    /// ZooKeeper kept them.
    dropped: Vec<ImportedNode>,
}

fn save_marker(data_dir: &Path, marker: &Marker) -> Result<()> {
    let meta = MetaStore::open(data_dir.join("meta"))?;
    meta.put(MARKER_KEY, &serde_json::to_vec(marker)?)
        .with_context(|| format!("cannot write the import record in {}", data_dir.display()))
}

/// What replaying logs found.
struct Replayed {
    logs: Vec<LogReport>,
    checksums: u64,
    /// The logged txn with the highest zxid.
    newest: Option<Anchor>,
    /// Whether the expected anchor was found (and matched).
    anchor_seen: bool,
}

/// Replays `logs` (oldest first) onto `tree`: txns at or below `base` are skipped (the tree holds
/// them). With `expect`, the txn at its zxid must be that one, and found before any later txn.
fn replay_logs(
    tree: &mut replay::Tree,
    logs: &[(i64, PathBuf)],
    base: i64,
    expect: Option<&Anchor>,
    pb: &ProgressBar,
) -> Result<Replayed> {
    let mut out = Replayed {
        logs: Vec::new(),
        checksums: 0,
        newest: None,
        anchor_seen: false,
    };
    let mut prev_zxid = base;
    let mut ended_torn: Option<PathBuf> = None;
    for (_, path) in logs {
        pb.set_message(format!("replaying {}", path.display()));
        if let Some(torn) = &ended_torn {
            bail!(
                "{} ends with a record cut short, yet a later log {} follows: the logs are not \
                 one history; import from a consistent copy of ZooKeeper's data directory",
                torn.display(),
                path.display()
            );
        }
        let log = zk::read_log(path)?;
        out.checksums += log.records.len() as u64;
        for rec in &log.records {
            if let Some(a) = expect {
                if rec.zxid == a.zxid {
                    if Anchor::of(rec) != *a {
                        bail!(
                            "{}: the txn at the imported zxid {} is not the one imported (time, \
                             session, type or content differ): this ZooKeeper data directory is not \
                             the one the import read, or its history was rewritten; run a full \
                             roster import into a new directory",
                            path.display(),
                            hex(a.zxid)
                        );
                    }
                    out.anchor_seen = true;
                } else if rec.zxid > a.zxid && !out.anchor_seen {
                    bail!(
                        "{}: ZooKeeper's logs go from below to {} without the imported last txn \
                         (zxid {}): this is not the history the import read (another ZooKeeper, or a \
                         new epoch that dropped it); run a full roster import into a new directory",
                        path.display(),
                        hex(rec.zxid),
                        hex(a.zxid)
                    );
                }
            }
            if rec.zxid > base && rec.zxid <= prev_zxid {
                bail!(
                    "{}: record at byte {} has zxid {} after zxid {}: the logs are out of order; \
                     import from a consistent copy of ZooKeeper's data directory",
                    path.display(),
                    rec.offset,
                    hex(rec.zxid),
                    hex(prev_zxid)
                );
            }
            prev_zxid = prev_zxid.max(rec.zxid);
            if out.newest.as_ref().is_none_or(|n| rec.zxid > n.zxid) {
                out.newest = Some(Anchor::of(rec));
            }
            tree.apply(rec, base).map_err(|e| {
                anyhow::anyhow!(
                    "{}: the txn at byte {} (zxid {}) does not decode: {} (at byte {} of the \
                     txn); ZooKeeper would refuse it too",
                    path.display(),
                    e.offset,
                    hex(e.zxid),
                    e.error.reason,
                    e.error.offset
                )
            })?;
        }
        if let Some(at) = log.torn_tail {
            tracing::warn!(file = %path.display(), offset = at, "the log ends with a record cut short; ignored, as ZooKeeper does");
            ended_torn = Some(path.clone());
        }
        out.logs.push(LogReport {
            file: path.display().to_string(),
            records: log.records.len(),
            first_zxid: log.records.first().map(|r| hex(r.zxid)),
            last_zxid: log.records.last().map(|r| hex(r.zxid)),
            torn_tail_at: log.torn_tail,
        });
        pb.inc(file_size(path));
    }
    Ok(out)
}

/// A progress bar over `total` bytes, hidden for JSON output or when stderr is not a terminal.
fn progress(total: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template("{msg:30} [{bar:30}] {bytes}/{total_bytes} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    }
}

/// The `version-2` directory under `dir`, or `dir` itself if it holds ZooKeeper files.
fn version_dir(dir: &Path) -> Result<PathBuf> {
    let v2 = dir.join("version-2");
    if v2.is_dir() {
        return Ok(v2);
    }
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: give ZooKeeper's dataDir (or its version-2 directory)",
            dir.display()
        );
    }
    Ok(dir.to_path_buf())
}

/// (zxid, path) of the files named `<prefix>.<hex zxid>...` in `dir`, oldest first.
fn files_of(dir: &Path, prefix: &str) -> Result<Vec<(i64, PathBuf)>> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let ent = ent.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if let Some(z) = zk::zxid_of_name(&name, prefix) {
            out.push((z, ent.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn hex(z: i64) -> String {
    format!("{z:#x}")
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Runs `roster import`; prints the report.
pub fn run(args: ImportArgs) -> Result<()> {
    if args.update {
        return update::run(args);
    }
    let started = Instant::now();
    if let Ok(mut d) = std::fs::read_dir(&args.data_dir) {
        if d.next().is_some() {
            bail!(
                "{} is not empty: import only into a new or empty directory (a Roster data \
                 directory is never merged with an import)",
                args.data_dir.display()
            );
        }
    }
    let snap_dir = version_dir(&args.zk_data_dir)?;
    let log_dir = match &args.zk_log_dir {
        Some(d) => version_dir(d)?,
        None => snap_dir.clone(),
    };
    let snaps = files_of(&snap_dir, "snapshot")?;
    if snaps.is_empty() {
        bail!(
            "no snapshot.* file in {}: give ZooKeeper's dataDir (ZooKeeper 3.5+ writes a snapshot \
             when it starts; start and stop it once if there is none)",
            snap_dir.display()
        );
    }
    let logs_all = files_of(&log_dir, "log")?;

    let total: u64 = snaps.iter().map(|(_, p)| file_size(p)).max().unwrap_or(0)
        + logs_all.iter().map(|(_, p)| file_size(p)).sum::<u64>();
    let pb = progress(total, args.json);

    // The newest snapshot that decodes; damaged newer ones are reported.
    let mut skipped = Vec::new();
    let mut chosen = None;
    for (_, path) in snaps.iter().rev() {
        pb.set_message(format!("reading {}", path.display()));
        match zk::read_snapshot(path) {
            Ok(s) => {
                chosen = Some((path.clone(), s));
                break;
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping a snapshot that does not decode");
                skipped.push((path.display().to_string(), format!("{e:#}")));
            }
        }
    }
    let Some((snap_path, snap)) = chosen else {
        bail!(
            "no snapshot in {} decodes: {}",
            snap_dir.display(),
            skipped
                .iter()
                .map(|(f, e)| format!("{f}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    };
    pb.inc(file_size(&snap_path));
    let snap_zxid = snap.zxid;
    let mut checksums = snap.seals as u64;
    let mut tree = replay::Tree::from_snapshot(snap)
        .map_err(|e| anyhow::anyhow!("{}: {e}", snap_path.display()))?;

    // Logs: the last one starting at or before the snapshot's zxid, and every later one.
    let first_log = logs_all
        .iter()
        .rposition(|(z, _)| *z <= snap_zxid)
        .unwrap_or(0);
    let replayed = replay_logs(&mut tree, &logs_all[first_log..], snap_zxid, None, &pb)?;
    checksums += replayed.checksums;
    let logs = replayed.logs;

    pb.set_message("building the state");
    let last_zxid = tree.last_zxid;
    let (applied, covered) = (tree.applied, tree.covered);
    let unknown: Vec<(String, i32)> = tree.unknown.iter().map(|(z, t)| (hex(*z), *t)).collect();
    let sessions: Vec<SessionReport> = tree
        .sessions()
        .iter()
        .map(|(&id, &timeout_ms)| SessionReport {
            id: hex(id),
            timeout_ms,
            ephemerals: tree.ephemeral_count(id),
        })
        .collect();
    let (nodes, imported_sessions, dropped) = tree.into_imported();
    // The oldest zxid in the tree: the smallest czxid above 0 (ZooKeeper's own nodes have 0).
    let min_czxid = nodes
        .iter()
        .map(|n| n.czxid)
        .filter(|z| *z > 0)
        .min()
        .unwrap_or(0);
    let state = roster_state::State::from_imported(last_zxid, nodes, imported_sessions)
        .map_err(|e| anyhow::anyhow!("the imported tree is not a valid Roster state: {e}"))?;
    let acl_lists = state.tree().acl_list_count();
    let znodes = state.node_count();

    pb.set_message(format!("writing {}", args.data_dir.display()));
    let id = roster_server::node::seed_data_dir(&args.data_dir, &state, &args.peer_addr)
        .with_context(|| {
            format!(
                "cannot write the new data directory {}",
                args.data_dir.display()
            )
        })?;
    save_marker(
        &args.data_dir,
        &Marker {
            zk_data_dir: snap_dir.display().to_string(),
            last_zxid,
            anchor: replayed.newest.filter(|a| a.zxid == last_zxid),
            dropped: dropped.nodes,
        },
    )?;
    pb.finish_and_clear();

    let report = Report {
        zk_data_dir: snap_dir.display().to_string(),
        data_dir: args.data_dir.display().to_string(),
        snapshot: snap_path.display().to_string(),
        snapshot_zxid: hex(snap_zxid),
        skipped_snapshots: skipped,
        logs,
        checksums_verified: checksums,
        txns_applied: applied,
        txns_already_in_snapshot: covered,
        unknown_txn_types: unknown,
        first_zxid: hex(min_czxid),
        last_zxid: hex(last_zxid),
        znodes,
        acl_lists,
        sessions,
        dropped_empty_containers: dropped.empty_containers,
        dropped_ephemerals: dropped
            .ephemerals
            .into_iter()
            .map(|(s, paths)| DroppedReport {
                session: hex(s),
                paths,
            })
            .collect(),
        cluster_id: id.cluster_id,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!("imported {} into {}", r.zk_data_dir, r.data_dir);
    println!(
        "  snapshot        {} (zxid {})",
        r.snapshot, r.snapshot_zxid
    );
    for (f, e) in &r.skipped_snapshots {
        println!("  skipped         {f}: {e}");
    }
    print_logs(&r.logs);
    println!("  checksums       {} verified", r.checksums_verified);
    println!(
        "  txns            {} replayed, {} already in the snapshot",
        r.txns_applied, r.txns_already_in_snapshot
    );
    for (z, t) in &r.unknown_txn_types {
        println!("  unknown txn     type {t} at zxid {z}, skipped");
    }
    println!("  zxids           {} to {}", r.first_zxid, r.last_zxid);
    println!("  znodes          {}", r.znodes);
    println!("  ACL lists       {}", r.acl_lists);
    println!(
        "  sessions        {} kept (they expire unless their clients reconnect to Roster)",
        r.sessions.len()
    );
    for s in &r.sessions {
        println!(
            "                  {} timeout {} ms, {} ephemerals",
            s.id, s.timeout_ms, s.ephemerals
        );
    }
    print_dropped(&r.dropped_ephemerals, &r.dropped_empty_containers);
    println!("  cluster id      {}", r.cluster_id);
    println!("  took            {} ms", r.elapsed_ms);
    println!("start it with: roster serve --data-dir {}", r.data_dir);
}

/// The report's lines for the transaction logs read (the full import's and the update's).
fn print_logs(logs: &[LogReport]) {
    for l in logs {
        println!(
            "  log             {} ({} records, zxid {} to {}){}",
            l.file,
            l.records,
            l.first_zxid.as_deref().unwrap_or("-"),
            l.last_zxid.as_deref().unwrap_or("-"),
            l.torn_tail_at
                .map(|o| format!(", record cut short at byte {o} ignored"))
                .unwrap_or_default()
        );
    }
}

fn print_dropped(ephemerals: &[DroppedReport], containers: &[String]) {
    let dropped: usize = ephemerals.iter().map(|d| d.paths.len()).sum();
    println!("  dropped         {dropped} ephemerals of sessions that are gone");
    for d in ephemerals {
        println!(
            "                  session {}: {}",
            d.session,
            d.paths.join(" ")
        );
    }
    if !containers.is_empty() {
        println!(
            "  dropped         {} empty containers (ZooKeeper would delete them): {}",
            containers.len(),
            containers.join(" ")
        );
    }
}
