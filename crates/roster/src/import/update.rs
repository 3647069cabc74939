//! `roster import --update`: catches a data directory that an earlier `roster import` made up with
//! the txns ZooKeeper logged since, for the cut-over of docs/operations.md (import the whole tree
//! while ZooKeeper serves, stop ZooKeeper, update, serve).
//!
//! It reads the directory's state back as ZooKeeper's tree (plus the nodes the import dropped, from
//! the import's record), replays ZooKeeper's transaction logs from the one holding the imported
//! zxid, skipping what the tree holds, with the same rules and checksums as the import, and writes
//! the result as the directory's new seed. Every Stat stays ZooKeeper's because the txns are
//! ZooKeeper's own log records (the client protocol could not reproduce their zxids and versions).
//!
//! It refuses, saying why: a directory without the import's record (not made by `roster import`), a
//! directory Roster has served since (`node::open_unserved_seed`: Roster's own writes would
//! diverge), an update that did not finish, logs whose txn at the imported zxid is not the imported
//! one or missing (another ZooKeeper, or a history that forked), and logs purged since the import.
//!
//! With `--follow ADDR` it keeps replaying the logs as ZooKeeper appends to them, holding the tree
//! in memory, until ZooKeeper refuses connections on ADDR (stopped); then only the last txns are
//! left to replay before the directory is written.
//!
//! Left out: catching up from a newer ZooKeeper snapshot when the logs holding the imported zxid
//! were purged (a full import does that).

use super::{
    file_size, files_of, hex, print_dropped, print_logs, progress, replay, replay_logs,
    save_marker, version_dir, ImportArgs, LogReport, Marker, MARKER_KEY,
};
use anyhow::{bail, Context, Result};
use roster_server::storage::meta::MetaStore;
use serde::Serialize;
use std::time::Instant;

#[derive(Serialize, Debug)]
struct UpdateReport {
    zk_data_dir: String,
    data_dir: String,
    /// The zxid the directory was at.
    from_zxid: String,
    /// The zxid it is at now.
    last_zxid: String,
    logs: Vec<LogReport>,
    checksums_verified: u64,
    txns_applied: u64,
    txns_already_imported: u64,
    unknown_txn_types: Vec<(String, i32)>,
    znodes: usize,
    sessions: usize,
    /// Ephemerals of sessions that are gone, by session.
    dropped_ephemerals: Vec<super::DroppedReport>,
    dropped_empty_containers: Vec<String>,
    /// Whether the directory was rewritten (false: nothing new in ZooKeeper's logs).
    rewritten: bool,
    /// Milliseconds of each step: reading the directory back as ZooKeeper's tree, replaying the
    /// logs (with `--follow`: following while ZooKeeper ran, then the rest) and listing the
    /// resulting nodes, encoding them as Roster's state, writing it.
    steps_ms: Steps,
    elapsed_ms: u64,
}

#[derive(Serialize, Debug, Default)]
struct Steps {
    read_dir: u64,
    /// `--follow`: replaying while ZooKeeper ran (the replay step is from its stop on).
    followed: u64,
    replay: u64,
    build_state: u64,
    write: u64,
}

fn lap(t: &mut Instant) -> u64 {
    let ms = t.elapsed().as_millis() as u64;
    *t = Instant::now();
    ms
}

/// Runs `roster import --update`; prints the report.
pub fn run(args: ImportArgs) -> Result<()> {
    let started = Instant::now();
    let mut t = started;
    let mut steps = Steps::default();
    let dir = &args.data_dir;
    let marker_file = dir.join("meta").join(format!("{MARKER_KEY}.meta"));
    if !marker_file.is_file() {
        bail!(
            "cannot update {}: it was not made by roster import (no {}); run a full roster import \
             into a new directory",
            dir.display(),
            marker_file.display()
        );
    }
    let (_, seed) = roster_server::node::open_unserved_seed(dir)?;
    let meta = MetaStore::open(dir.join("meta"))?;
    let bytes = meta
        .get(MARKER_KEY)?
        .with_context(|| format!("{} vanished while it was read", marker_file.display()))?;
    let marker: Marker = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} does not decode: run a full roster import into a new directory",
            marker_file.display()
        )
    })?;
    let (base, mut nodes, sessions) = roster_state::imported_parts(&seed.body).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; run a full roster import into a new directory",
            seed.path.display()
        )
    })?;
    if base != marker.last_zxid || seed.index != base.max(1) as u64 {
        bail!(
            "cannot update {}: its state is at zxid {} (snapshot index {}) but the import's record \
             says {}: an earlier update did not finish; run a full roster import into a new directory",
            dir.display(),
            hex(base),
            seed.index,
            hex(marker.last_zxid)
        );
    }

    if marker.anchor.is_none() && base != 0 {
        bail!(
            "cannot update {}: the import found no logged txn at its zxid {} (it read a snapshot \
             whose logs were gone), so it cannot check that ZooKeeper's logs continue that \
             history; run a full roster import into a new directory",
            dir.display(),
            hex(base)
        );
    }
    let snap_dir = version_dir(&args.zk_data_dir)?;
    let log_dir = match &args.zk_log_dir {
        Some(d) => version_dir(d)?,
        None => snap_dir.clone(),
    };
    let logs_all = files_of(&log_dir, "log")?;
    let Some(first_log) = logs_all.iter().rposition(|(z, _)| *z <= base) else {
        let oldest = logs_all.first().map_or("none".to_string(), |(z, _)| {
            format!("the oldest starts at {}", hex(*z))
        });
        bail!(
            "no ZooKeeper log in {} holds the imported zxid {} ({oldest}): ZooKeeper purged the logs \
             since the import (or this is another ZooKeeper); run a full roster import into a new \
             directory",
            log_dir.display(),
            hex(base)
        );
    };
    let logs = &logs_all[first_log..];
    let pb = progress(logs.iter().map(|(_, p)| file_size(p)).sum(), args.json);

    nodes.extend(marker.dropped);
    let mut tree = replay::Tree::from_imported(base, nodes, sessions)
        .map_err(|e| anyhow::anyhow!("{}: {e}; run a full roster import", seed.path.display()))?;
    steps.read_dir = lap(&mut t);
    let mut replayed = replay_logs(&mut tree, logs, base, marker.anchor.as_ref(), &pb)?;
    if let Some(a) = &marker.anchor {
        if !replayed.anchor_seen {
            bail!(
                "ZooKeeper's logs in {} hold no txn at the imported zxid {}: this is not the history \
                 the import read (another ZooKeeper data directory?); run a full roster import into \
                 a new directory",
                log_dir.display(),
                hex(a.zxid)
            );
        }
    }
    if let Some(addr) = args.follow {
        let covered = tree.covered;
        let stopped;
        (replayed, stopped) = follow(&mut tree, &log_dir, addr, replayed, &pb)?;
        tree.covered = covered; // the records read again while following are not counted
                                // The replay step from ZooKeeper's stop on, not the time spent following.
        steps.followed = stopped.duration_since(t).as_millis() as u64;
        t = stopped;
    }

    let last_zxid = tree.last_zxid;
    let (applied, covered) = (tree.applied, tree.covered);
    let unknown: Vec<(String, i32)> = tree.unknown.iter().map(|(z, t)| (hex(*z), *t)).collect();
    let session_count = tree.sessions().len();
    let (nodes, imported_sessions, dropped) = tree.into_imported();
    let znodes = nodes.len();
    let rewritten = last_zxid != base;
    steps.replay = lap(&mut t);
    let dropped_ephemerals = dropped
        .ephemerals
        .into_iter()
        .map(|(s, paths)| super::DroppedReport {
            session: hex(s),
            paths,
        })
        .collect();
    if rewritten {
        pb.set_message("building the state");
        // Encoded without building (and checking) a State: the tree is a checked one plus
        // ZooKeeper's replay rules, and roster serve checks it all when it loads the snapshot.
        let body = roster_state::imported_snapshot(last_zxid, nodes, imported_sessions)
            .map_err(|e| anyhow::anyhow!("the updated tree does not encode: {e}"))?;
        steps.build_state = lap(&mut t);
        pb.set_message(format!("writing {}", dir.display()));
        // The new seed first, then the record: a crash between leaves them disagreeing, which the
        // next update refuses (above) rather than replaying txns twice.
        roster_server::node::reseed_data_dir(dir, &seed, last_zxid, &body)?;
        save_marker(
            dir,
            &Marker {
                zk_data_dir: snap_dir.display().to_string(),
                last_zxid,
                anchor: replayed.newest.filter(|a| a.zxid == last_zxid),
                dropped: dropped.nodes,
            },
        )?;
        steps.write = lap(&mut t);
    }
    pb.finish_and_clear();

    let report = UpdateReport {
        zk_data_dir: snap_dir.display().to_string(),
        data_dir: dir.display().to_string(),
        from_zxid: hex(base),
        last_zxid: hex(last_zxid),
        logs: replayed.logs,
        checksums_verified: replayed.checksums,
        txns_applied: applied,
        txns_already_imported: covered,
        unknown_txn_types: unknown,
        znodes,
        sessions: session_count,
        dropped_ephemerals,
        dropped_empty_containers: dropped.empty_containers,
        rewritten,
        steps_ms: steps,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// How often `--follow` looks at ZooKeeper's port and logs.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Whether ZooKeeper still takes connections at `addr` (a refused connection: it stopped; a slow
/// or failed dial for any other reason counts as running, to be asked again).
fn zookeeper_runs(addr: std::net::SocketAddr) -> bool {
    match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::ConnectionRefused,
    }
}

/// `--follow`: replays what ZooKeeper logs while it runs, then, once it stopped, the rest. While it
/// runs, a log that fails to read (a record being written as it is read) is read again at the next
/// poll; after the stop, every log must read whole.
fn follow(
    tree: &mut replay::Tree,
    log_dir: &std::path::Path,
    addr: std::net::SocketAddr,
    mut replayed: super::Replayed,
    pb: &indicatif::ProgressBar,
) -> Result<(super::Replayed, Instant)> {
    tracing::info!(%addr, "following ZooKeeper's logs until it stops");
    loop {
        let running = zookeeper_runs(addr);
        let polled = Instant::now();
        let logs_all = files_of(log_dir, "log")?;
        let first = logs_all
            .iter()
            .rposition(|(z, _)| *z <= tree.last_zxid)
            .unwrap_or(0);
        let base = tree.last_zxid;
        match replay_logs(tree, &logs_all[first..], base, None, pb) {
            Ok(more) => {
                replayed.checksums += more.checksums;
                if more.newest.as_ref().is_some_and(|n| n.zxid > base) {
                    replayed.newest = more.newest;
                }
                if !running {
                    replayed.logs.extend(more.logs);
                    tracing::info!(zxid = %hex(tree.last_zxid), "ZooKeeper stopped; its logs are replayed to the end");
                    return Ok((replayed, polled));
                }
            }
            Err(e) if running => {
                tracing::debug!(error = %format!("{e:#}"), "a log did not read whole while ZooKeeper writes it; reading it again");
            }
            Err(e) => return Err(e),
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

fn print_report(r: &UpdateReport) {
    println!("updated {} from {}", r.data_dir, r.zk_data_dir);
    print_logs(&r.logs);
    println!("  checksums       {} verified", r.checksums_verified);
    println!(
        "  txns            {} replayed, {} already imported",
        r.txns_applied, r.txns_already_imported
    );
    for (z, t) in &r.unknown_txn_types {
        println!("  unknown txn     type {t} at zxid {z}, skipped");
    }
    println!("  zxid            {} -> {}", r.from_zxid, r.last_zxid);
    println!("  znodes          {}", r.znodes);
    println!("  sessions        {} kept", r.sessions);
    print_dropped(&r.dropped_ephemerals, &r.dropped_empty_containers);
    if !r.rewritten {
        println!("  nothing new in ZooKeeper's logs: the directory is unchanged");
    }
    println!("  took            {} ms", r.elapsed_ms);
    println!("start it with: roster serve --data-dir {}", r.data_dir);
}
