//! The example in embedded mode, as real processes: the instances are the Roster cluster themselves
//! (`cluster-app run --embedded`), no server is started by the test.
//!
//! - `demo --embedded`: three instances, the leader instance killed with kill -9 (a Raft voter and the
//!   application's elected leader at once), the survivors' client ports agreeing on the state, and the
//!   killed instance restarted on its data directory, rejoining as itself.
//! - instances driven one by one, checked from outside with the `roster` CLI through their client
//!   ports: kill -9 and restart of a joined instance, then a graceful leave (`--leave-cluster`) that
//!   removes the instance from the cluster's membership (`/zookeeper/config`).
//!
//! ```text
//! cargo build -p roster && cargo test -p cluster-app --test embedded
//! ```

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The longest any single step may take.
const STEP: Duration = Duration::from_secs(30);

#[test]
fn embedded_demo_kill_9_the_leader_instance_and_restart_it() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cluster-app"))
        .args(["demo", "--embedded", "--instances", "3"])
        .args(["--kill-after-secs", "2", "--run-for-secs", "8"])
        .args(["--session-timeout-ms", "2000"])
        .arg("--work-dir")
        .arg(work.path().join("demo"))
        .output()
        .expect("cluster-app runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // node-1 bootstrapped the cluster, so it leads Raft and the application's election: killing it
    // kills both leaders.
    assert!(
        stdout.contains("[node-1] roster node 1 is Leader"),
        "{stdout}"
    );
    let kill = stdout
        .lines()
        .position(|l| l.starts_with("=== kill -9 node-1"))
        .unwrap_or_else(|| panic!("node-1 leads first and is killed:\n{stdout}"));
    let after: Vec<&str> = stdout.lines().skip(kill).collect();
    // The cluster fails over: a surviving instance's node becomes the Raft leader...
    assert!(
        after
            .iter()
            .any(|l| l.starts_with("[node-2] roster node 2 is Leader")
                || l.starts_with("[node-3] roster node 3 is Leader")),
        "{stdout}"
    );
    // ... and so does the application.
    assert!(
        after.iter().any(|l| l.contains("member LEFT    node-1")),
        "{stdout}"
    );
    assert!(
        after
            .iter()
            .any(|l| l.starts_with("[node-2] *** I am the LEADER")),
        "{stdout}"
    );
    // Both survivors' client ports show the same state to an outside client.
    let via: Vec<&str> = after
        .iter()
        .filter(|l| l.starts_with("=== via "))
        .map(|l| l.split_once(": ").unwrap().1)
        .collect();
    assert_eq!(via.len(), 2, "{stdout}");
    assert!(via.iter().all(|v| *v == via[0]), "{stdout}");
    assert_eq!(
        via[0],
        "members=node-2,node-3 leader=node-2 cluster=1:participant,2:participant,3:participant"
    );
    let summary = after
        .iter()
        .find(|l| l.starts_with("=== SUMMARY"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(
        *summary,
        "=== SUMMARY killed=node-1 members=node-2,node-3 leader=node-2 scheduler=node-2"
    );
    // The killed instance restarts on its data directory and is node 1 again.
    assert!(
        after
            .iter()
            .any(|l| l.starts_with("[node-1] embedded roster node 1 started")),
        "{stdout}"
    );
    assert!(
        after.contains(
            &"=== RESTARTED node-1 members=node-1,node-2,node-3 cluster=1:participant,2:participant,3:participant"
        ),
        "{stdout}"
    );
}

/// One `cluster-app run --embedded` process, killed when dropped.
struct Instance {
    child: Child,
    lines: mpsc::Receiver<String>,
    argv: Vec<String>,
}

impl Instance {
    fn start(argv: Vec<String>) -> Instance {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cluster-app"))
            .args(&argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn cluster-app");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Instance { child, lines, argv }
    }

    /// Waits for an output line containing `needle`.
    fn expect(&self, needle: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?} from {:?}: {e}", self.argv),
            }
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and waits for the process to end.
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "{:?} exited with {status}", self.argv);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{:?} did not stop on SIGTERM", self.argv);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free port")
}

fn roster_bin() -> PathBuf {
    if let Ok(b) = std::env::var("ROSTER_BIN") {
        return PathBuf::from(b);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("debug/roster")
}

/// Runs the roster CLI against `server`; its standard output, or `None` if it failed.
fn roster(server: &SocketAddr, args: &[&str]) -> Option<String> {
    let bin = roster_bin();
    assert!(
        bin.exists(),
        "no roster binary at {}: run `cargo build -p roster` or set ROSTER_BIN",
        bin.display()
    );
    let out = Command::new(bin)
        .args(["--server", &server.to_string(), "--timeout", "5s"])
        .args(args)
        .output()
        .expect("roster runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// Polls `roster ARGS` through `server` until its output satisfies `ok`.
fn roster_until(server: &SocketAddr, args: &[&str], what: &str, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + STEP;
    let mut last = None;
    while Instant::now() < deadline {
        last = roster(server, args);
        if last.as_deref().is_some_and(&ok) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}; last output of roster {args:?}: {last:?}");
}

fn instance_argv(
    dir: &Path,
    i: usize,
    peer: SocketAddr,
    client: SocketAddr,
    join: Option<SocketAddr>,
    leave: bool,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "run".into(),
        "--name".into(),
        format!("node-{i}"),
        "--port".into(),
        (7000 + i).to_string(),
        "--root".into(),
        "/embedded-test".into(),
        "--session-timeout-ms".into(),
        "2000".into(),
        "--embedded".into(),
        "--data-dir".into(),
        dir.join(format!("node-{i}")).display().to_string(),
        "--peer-addr".into(),
        peer.to_string(),
        "--client-addr".into(),
        client.to_string(),
    ];
    if let Some(j) = join {
        a.extend(["--join".into(), j.to_string()]);
    }
    if leave {
        a.push("--leave-cluster".into());
    }
    a
}

#[test]
fn embedded_instances_seen_from_outside_kill_9_restart_and_leave() {
    let work = tempfile::tempdir().unwrap();
    let peers: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let clients: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let argv = |i: usize| {
        let join = (i > 0).then(|| peers[0]);
        // node-3 leaves the cluster when it is stopped; the others stay members.
        instance_argv(work.path(), i + 1, peers[i], clients[i], join, i == 2)
    };
    let mut instances: Vec<Instance> = Vec::new();
    for i in 0..3 {
        let inst = Instance::start(argv(i));
        inst.expect(&format!("embedded roster node {} started", i + 1));
        inst.expect(&format!("joined /embedded-test/members as node-{}", i + 1));
        instances.push(inst);
    }
    // Any instance's client port shows the whole group to an outside tool.
    for c in &clients {
        roster_until(
            c,
            &["members", "/embedded-test/members"],
            "three members",
            |out| {
                ["node-1", "node-2", "node-3"]
                    .iter()
                    .all(|n| out.contains(n))
            },
        );
    }
    roster_until(
        &clients[0],
        &["get", "/zookeeper/config"],
        "three voters",
        |out| (1..=3).all(|i| out.contains(&format!("server.{i}="))) && !out.contains("observer"),
    );

    // kill -9 node-2: its member goes after its session timeout; the cluster keeps serving.
    instances[1].kill9();
    roster_until(
        &clients[2],
        &["members", "/embedded-test/members"],
        "node-2 gone",
        |out| out.contains("node-1") && out.contains("node-3") && !out.contains("node-2"),
    );
    // It restarts on its data directory: the same node id, back in the group.
    let restarted = Instance::start(argv(1));
    restarted.expect("embedded roster node 2 started");
    restarted.expect("joined /embedded-test/members as node-2");
    instances[1] = restarted;
    roster_until(
        &clients[0],
        &["members", "/embedded-test/members"],
        "node-2 back",
        |out| {
            ["node-1", "node-2", "node-3"]
                .iter()
                .all(|n| out.contains(n))
        },
    );

    // A graceful stop of node-3 (started with --leave-cluster) removes it from the membership.
    instances[2].terminate();
    roster_until(
        &clients[1],
        &["get", "/zookeeper/config"],
        "node 3 removed from the membership",
        |out| out.contains("server.1=") && out.contains("server.2=") && !out.contains("server.3="),
    );
    roster_until(
        &clients[0],
        &["members", "/embedded-test/members"],
        "node-3 left the group",
        |out| out.contains("node-1") && out.contains("node-2") && !out.contains("node-3"),
    );
    // The two remaining voters still take writes.
    assert!(
        roster(&clients[1], &["create", "/embedded-test/after-leave"]).is_some(),
        "a write after the leave"
    );
}
