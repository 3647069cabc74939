//! Rolling upgrades across a format change, with real `roster` processes on 127.0.0.1: this build
//! (format version 2) and the next one (the same source built with `--features format-next`, format
//! version 3: docs/operations.md, "Upgrading").
//!
//! - A 3-node cluster of this build, under a bounded write load from two `roster-client` sessions that
//!   know all three addresses, is upgraded one node at a time (graceful stop, the next binary on the
//!   same data directory, caught up and serving), followers first and the leader last. Every
//!   acknowledged write is there at the end (count and values), both sessions lived through it (never
//!   expired, their ephemerals remain), and the cluster format version stays 2 until all three run
//!   the next build, then becomes 3. Then this build refuses the upgraded data directory, naming both
//!   versions.
//! - A node of the next build joins a cluster of this build, leads it, and serves.
//!
//! The next binary comes from `ROSTER_NEXT_BIN` (scripts/test builds it) or is built here into
//! `<target>/format-next` (`cargo build -p roster --features format-next`, without debug info: only
//! roster-state, roster-server and roster are compiled once the dependencies are there). Cost: about
//! 20 s of clusters (some 1,000 writes), plus that build: every dependency once (several minutes),
//! then one to a few minutes for the three crates.
//!
//! Left out: upgrades across TLS peers (the hello is the same under TLS), and a rollback after the
//! cluster version rose (refused by design: restore the backup).

mod support;

use roster_client::{Client, ClientOptions, CreateOptions, Error, SessionEvent};
use roster_proto::ErrorCode;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// The `roster` binary of format version 3, built once per test process.
fn next_bin() -> PathBuf {
    static BIN: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut slot = BIN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = slot.as_ref() {
        return b.clone();
    }
    let bin = match std::env::var_os("ROSTER_NEXT_BIN") {
        Some(b) => PathBuf::from(b),
        None => {
            let this = PathBuf::from(env!("CARGO_BIN_EXE_roster"));
            // <target>/debug/roster -> <target>/format-next
            let target = this.parent().unwrap().parent().unwrap().join("format-next");
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let out = std::process::Command::new(cargo)
                .current_dir(&root)
                .args([
                    "build",
                    "-p",
                    "roster",
                    "--bin",
                    "roster",
                    "--features",
                    "format-next",
                ])
                .env("CARGO_TARGET_DIR", &target)
                .env("CARGO_PROFILE_DEV_DEBUG", "0")
                .output()
                .expect("cargo runs");
            assert!(
                out.status.success(),
                "building the format-next binary failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            target.join("debug/roster")
        }
    };
    assert!(bin.exists(), "no next-format binary at {}", bin.display());
    *slot = Some(bin.clone());
    bin
}

/// A `mntr` value of the node at `addr`.
fn mntr(addr: SocketAddr, key: &str) -> Option<String> {
    let text = four_letter(addr, "mntr").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('\t'))
        .map(str::to_string)
}

/// (format version of the binary, cluster format version) as the node reports them.
fn formats(n: &Roster) -> (Option<String>, Option<String>) {
    (
        mntr(n.addr, "zk_roster_format_version"),
        mntr(n.addr, "zk_roster_cluster_format_version"),
    )
}

fn wait_cluster_format(nodes: &[&Roster], want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let all: Vec<_> = nodes.iter().map(|n| formats(n).1).collect();
        if all.iter().all(|v| v.as_deref() == Some(want)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cluster format version not {want} on every node within {within:?}: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The bounded write load: each writer has its own session (all three addresses), an ephemeral
/// node, and creates `/upgrade/w<k>-<i>` with data `v<k>-<i>` one after the other, up to `MAX_WRITES`,
/// until told to stop. A write whose connection was lost is retried on the same path; `NodeExists`
/// then means the lost one was applied (both acknowledge the same value).
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<Vec<WriterReport>>>,
}

#[derive(Debug)]
struct WriterReport {
    session_id: i64,
    ephemeral: String,
    /// Paths created, all acknowledged, with their data.
    written: Vec<(String, String)>,
    expired: bool,
    error: Option<String>,
    /// Writes whose connection was lost and were retried on the same path.
    retried: usize,
}

const WRITERS: usize = 2;
const MAX_WRITES: usize = 3_000;
const LOAD_MAX: Duration = Duration::from_secs(240);

impl Load {
    fn start(hosts: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let (s, a) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let opts = ClientOptions {
                    session_timeout: Duration::from_secs(20),
                    ..ClientOptions::default()
                };
                let setup = Client::connect(&hosts, opts.clone())
                    .await
                    .expect("connect");
                match setup
                    .create("/upgrade", b"", &CreateOptions::default())
                    .await
                {
                    Ok(_) | Err(Error::Code(ErrorCode::NodeExists)) => {}
                    Err(e) => panic!("create /upgrade: {e}"),
                }
                let _ = setup.close().await;
                let mut tasks = Vec::new();
                for k in 0..WRITERS {
                    let (s, a, hosts, opts) = (s.clone(), a.clone(), hosts.clone(), opts.clone());
                    tasks.push(tokio::spawn(writer(k, hosts, opts, s, a)));
                }
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.expect("writer task"));
                }
                out
            })
        });
        Load {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` further writes were acknowledged (the load goes on), at most 60 s.
    fn wait_progress(&self, more: usize, what: &str) {
        let from = self.acked();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acked() < from + more {
            assert!(
                Instant::now() < deadline,
                "the load made no progress {what}: {} of {more} writes in 60 s",
                self.acked() - from
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn finish(mut self) -> Vec<WriterReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("load thread")
    }
}

async fn writer(
    k: usize,
    hosts: String,
    opts: ClientOptions,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> WriterReport {
    let zk = Client::connect(&hosts, opts).await.expect("connect");
    let mut events = zk.state_events();
    let ephemeral = format!("/upgrade/eph-{k}");
    zk.create(&ephemeral, b"alive", &CreateOptions::ephemeral())
        .await
        .expect("create the ephemeral");
    let mut report = WriterReport {
        session_id: zk.session_id(),
        ephemeral,
        written: Vec::new(),
        expired: false,
        error: None,
        retried: 0,
    };
    let started = Instant::now();
    'load: for i in 0..MAX_WRITES {
        if stop.load(Ordering::Relaxed) || started.elapsed() > LOAD_MAX {
            break;
        }
        let path = format!("/upgrade/w{k}-{i:05}");
        let data = format!("v{k}-{i}");
        let mut lost = false;
        let mut tries = 0;
        loop {
            tries += 1;
            match zk
                .create(&path, data.as_bytes(), &CreateOptions::default())
                .await
            {
                Ok(_) => break,
                // The earlier attempt whose connection was lost was applied.
                Err(Error::Code(ErrorCode::NodeExists)) if lost => break,
                Err(Error::SessionExpired) => {
                    report.expired = true;
                    break 'load;
                }
                // Outcome unknown: retried on the same path.
                Err(Error::ConnectionLoss | Error::Timeout) if tries < 100 => {
                    if !lost {
                        report.retried += 1;
                    }
                    lost = true;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // Not applied (a node without a leader for a moment): retried.
                Err(Error::Code(code)) if code != ErrorCode::NodeExists && tries < 100 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    report.error = Some(format!("create {path}: {e} after {tries} tries"));
                    break 'load;
                }
            }
        }
        report.written.push((path, data));
        acked.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while let Ok(ev) = events.try_recv() {
        if matches!(ev, SessionEvent::Expired) {
            report.expired = true;
        }
    }
    // The session stays open (its ephemeral is checked by the test); dropping the client without
    // closing leaves it to expire later, after the test's checks.
    std::mem::forget(zk);
    report
}

/// A graceful replacement: SIGTERM, then `bin` on the same data directory, ports and flags.
fn replace(n: &mut Roster, bin: Option<PathBuf>) {
    let st = n.stop();
    assert!(
        st.is_some_and(|s| s.success()),
        "graceful stop exited {st:?}; log:\n{}",
        n.log_text()
    );
    n.bin = bin;
    if let Err(status) = n.try_spawn() {
        panic!(
            "the replaced node exited with {status} at start; log:\n{}",
            n.log_text()
        );
    }
}

/// Waits until `n` serves under a leader and has applied everything the leader had applied when it
/// was asked (at most 60 s).
fn wait_caught_up(n: &Roster) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut target = None;
    loop {
        if let Ok(st) = peer_status(n.peer) {
            if target.is_none() && st.serving {
                let leader = st.members.iter().find(|m| Some(m.node_id) == st.leader);
                target = leader
                    .and_then(|m| peer_status(m.peer_addr.parse().ok()?).ok())
                    .map(|l| l.applied);
            }
            if target.is_some_and(|t| st.serving && st.applied >= t) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {} did not catch up within 60 s: {:?}",
            n.addr,
            peer_status(n.peer)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The layout versions of a node's snapshot files (header bytes 8..12), newest (highest index) last.
fn snapshot_layouts(n: &Roster) -> Vec<u32> {
    let dir = n.dir.path().join("data/snapshots");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "snap"));
    files.sort();
    files
        .iter()
        .filter_map(|p| {
            let b = std::fs::read(p).ok()?;
            Some(u32::from_be_bytes(b.get(8..12)?.try_into().ok()?))
        })
        .collect()
}

fn hosts(nodes: &[&Roster]) -> String {
    nodes
        .iter()
        .map(|n| n.addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn rolling_upgrade_under_load_loses_nothing_and_keeps_sessions() {
    let next = next_bin();
    let _g = serial();
    // Snapshots during the load, and a log kept no longer than the snapshot: a node that was down
    // catches up from a snapshot, in the cluster's format.
    let (mut a, mut b, mut c) =
        three_with(&["--snapshot-every", "300", "--snapshot-log-keep", "0"]);
    for n in [&a, &b, &c] {
        assert_eq!(
            formats(n),
            (Some("2".into()), Some("2".into())),
            "this build is format 2"
        );
    }
    let load = Load::start(hosts(&[&a, &b, &c]));
    // Enough for a snapshot (every 300 entries) before the upgrade.
    load.wait_progress(300, "before the upgrade");

    // Followers first, the leader last.
    let leader = wait_formed(&[&a, &b, &c], 3, 0);
    let mut order: Vec<&mut Roster> = vec![&mut a, &mut b, &mut c];
    order.sort_by_key(|n| node_id(n) == leader);
    let total = order.len();
    let mut before = Vec::new();
    for (step, n) in order.into_iter().enumerate() {
        replace(n, Some(next.clone()));
        assert_eq!(formats(n).0.as_deref(), Some("3"), "the next build runs");
        wait_caught_up(n);
        // Caught up and serving: the replaced node applies writes made after its return.
        load.wait_progress(50, &format!("after replacing node {}", step + 1));
        if step + 1 < total {
            // Some member still runs format 2: the cluster stays at 2 on every node.
            std::thread::sleep(Duration::from_secs(2));
            assert_eq!(
                formats(n).1.as_deref(),
                Some("2"),
                "the cluster format rose while a member still runs format 2"
            );
            // Every snapshot so far is in the format-2 layout.
            before.extend(snapshot_layouts(n));
        }
    }
    wait_formed(&[&a, &b, &c], 3, 0);
    wait_cluster_format(&[&a, &b, &c], "3", Duration::from_secs(30));
    assert!(
        !before.is_empty() && before.iter().all(|l| *l == 1),
        "snapshots of the replaced nodes before the cluster format rose: layouts {before:?}"
    );
    // The next snapshot of every node is in the new layout (it carries the cluster format).
    let deadline = Instant::now() + Duration::from_secs(90);
    while ![&a, &b, &c]
        .iter()
        .all(|n| snapshot_layouts(n).last() == Some(&2))
    {
        assert!(
            Instant::now() < deadline,
            "no format-3 snapshot within 90 s: {:?}",
            [&a, &b, &c].map(snapshot_layouts)
        );
        load.wait_progress(20, "after the cluster format rose");
    }
    let reports = load.finish();

    // Every acknowledged write, with its value, on every node; nothing else under /upgrade.
    let mut expected = std::collections::BTreeMap::new();
    for r in &reports {
        assert!(r.error.is_none(), "writer failed: {:?}", r.error);
        assert!(
            !r.expired,
            "session {:#x} expired during the upgrade",
            r.session_id
        );
        for (p, d) in &r.written {
            expected.insert(p.clone(), d.as_bytes().to_vec());
        }
    }
    assert!(expected.len() >= 200, "too little load: {}", expected.len());
    eprintln!(
        "rolling upgrade: {} writes acknowledged, {} retried after a lost connection",
        expected.len(),
        reports.iter().map(|r| r.retried).sum::<usize>()
    );
    for n in [&a, &b, &c] {
        let mut found = subtree(n.addr, "/upgrade");
        for r in &reports {
            // The ephemeral is still there, owned by the same session.
            let mut raw = connect_retry(n.addr, 10_000, Duration::from_secs(30));
            let st = raw.exists(&r.ephemeral, false);
            assert_eq!(st.err, 0, "{} is gone on {}", r.ephemeral, n.addr);
            assert_eq!(stat_of(&st).ephemeral_owner, r.session_id);
            found.remove(&r.ephemeral);
        }
        assert_eq!(
            found.len(),
            expected.len(),
            "node {} holds {} writes, {} were acknowledged",
            n.addr,
            found.len(),
            expected.len()
        );
        assert!(found == expected, "the values differ on {}", n.addr);
    }

    // This build refuses the upgraded data directory, naming both versions.
    let st = a.stop();
    assert!(st.is_some_and(|s| s.success()));
    a.bin = None;
    let status = a
        .try_spawn()
        .expect_err("this build must refuse a format-3 directory");
    assert!(!status.success());
    let log = a.log_text();
    assert!(
        log.contains("is in format version 3") && log.contains("reads format versions 2 to 2"),
        "{log}"
    );
    assert!(
        log.contains("Run the newer binary") && log.contains("restore the backup"),
        "{log}"
    );
    // And the next build takes it back.
    a.bin = Some(next);
    a.try_spawn().expect("the next build starts again");
    wait_formed(&[&a, &b, &c], 3, 0);
}

#[test]
fn a_next_version_node_joins_leads_and_serves_a_cluster_of_this_version() {
    let next = next_bin();
    let _g = serial();
    // Node ids are allocated in join order: the next build is node 2, so after its leader (node 1)
    // stops it campaigns first (failover campaigns in node-id order).
    let mut a = Roster::start(&[]);
    let seed = a.peer.to_string();
    let n = Roster::start_bin(Some(next), &[], &["--join", &seed]);
    wait_formed(&[&a, &n], 2, 0);
    let mut b = Roster::join(&a, &[]);
    let mut leader = wait_formed(&[&a, &n, &b], 3, 0);
    let new_id = node_id(&n);
    for _ in 0..4 {
        if leader == new_id {
            break;
        }
        let old = if node_id(&a) == leader {
            &mut a
        } else {
            &mut b
        };
        let st = old.stop();
        assert!(st.is_some_and(|s| s.success()));
        wait_new_leader(&n, leader);
        old.try_spawn().expect("restarts");
        leader = wait_formed(&[&a, &n, &b], 3, 0);
    }
    assert_eq!(leader, new_id, "the next build's node did not come to lead");

    // Writes through the older followers are replicated by the newer leader, and the other way.
    let mut ca = connect_retry(a.addr, 10_000, Duration::from_secs(30));
    let mut cn = connect_retry(n.addr, 10_000, Duration::from_secs(30));
    assert_eq!(ca.create("/mixed", b"", 0).err, 0);
    for i in 0..20 {
        assert_eq!(ca.create(&format!("/mixed/a{i}"), b"from-a", 0).err, 0);
        assert_eq!(cn.create(&format!("/mixed/n{i}"), b"from-n", 0).err, 0);
    }
    let want = subtree(n.addr, "/mixed");
    assert_eq!(want.len(), 40);
    for node in [&a, &b] {
        assert_eq!(subtree(node.addr, "/mixed"), want, "on {}", node.addr);
    }
    // Older members remain: the cluster stays at format 2 on every node, the newer node at 3 itself.
    std::thread::sleep(Duration::from_secs(2));
    for node in [&a, &b, &n] {
        assert_eq!(formats(node).1.as_deref(), Some("2"), "on {}", node.addr);
    }
    assert_eq!(formats(&n).0.as_deref(), Some("3"));
}
