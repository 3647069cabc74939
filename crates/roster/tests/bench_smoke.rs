//! `roster bench` end to end on a tiny scale: a real `roster serve` (free loopback port, temporary data
//! directory, killed at the end) driven by the real binary with `--json`. Checks that every workload
//! reports sane numbers; no timing assertions (measured figures belong in BENCHMARKS.md).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ruok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut out = String::new();
    s.write_all(b"ruok").is_ok() && s.read_to_string(&mut out).is_ok() && out == "imok"
}

fn free_addr() -> SocketAddr {
    free_addrs::<1>()[0]
}

/// `N` distinct free loopback addresses: every listener is held until all ports are known (a port
/// released before the next `bind(0)` can be handed out again).
fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap())
}

fn start_server() -> Server {
    start_server_with(&[])
}

/// A `roster serve` on a free client port with `extra` flags (e.g. its peer and admin addresses).
fn start_server_with(extra: &[String]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args([
            "serve",
            "--client-addr",
            &addr.to_string(),
            "--min-session-timeout-ms",
            "2000",
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("ROSTER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("roster binary runs");
    let mut s = Server {
        child,
        addr,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ruok(addr) {
        assert!(
            s.child.try_wait().unwrap().is_none(),
            "roster serve exited while starting"
        );
        assert!(Instant::now() < deadline, "roster serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn bench_runs_every_workload_against_a_real_server() {
    let srv = start_server();
    let out = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args([
            "bench",
            "--json",
            "--no-progress",
            "--label",
            "smoke",
            "--servers",
        ])
        .arg(srv.addr.to_string())
        .arg("--server-pids")
        .arg(srv.child.id().to_string())
        .args([
            "--sessions",
            "2",
            "--depth",
            "4",
            "--duration",
            "3s",
            "--warmup",
            "0s",
            "--ops",
            "300",
        ])
        .args([
            "--keys",
            "50",
            "--churn-workers",
            "2",
            "--watch-trials",
            "10",
            "--expiry-trials",
            "2",
        ])
        .args(["--znodes", "1500", "--memory-timeout", "60s"])
        .stdin(Stdio::null())
        .output()
        .expect("roster bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "roster bench failed: {}\n{stderr}",
        out.status
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(report["label"], "smoke");
    let results = report["results"].as_array().expect("results");
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["workload"].as_str().unwrap())
        .collect();
    for w in [
        "create",
        "set",
        "get",
        "mix",
        "latency-create",
        "latency-set",
        "latency-get",
        "latency-delete",
        "churn",
        "watch",
        "expiry",
        "memory-1500",
    ] {
        assert!(names.contains(&w), "{w} missing from {names:?}");
    }
    for r in results {
        let name = r["workload"].as_str().unwrap();
        assert!(r["error"].is_null(), "{name}: {}", r["error"]);
        assert_eq!(f(r, "errors"), 0.0, "{name}");
        assert!(f(r, "ops") > 0.0, "{name}: no ops");
        let l = &r["latency"];
        let (p50, p99, p999, max) = (
            f(l, "p50_ms"),
            f(l, "p99_ms"),
            f(l, "p999_ms"),
            f(l, "max_ms"),
        );
        assert!(p50 > 0.0, "{name}: p50 {p50}");
        assert!(p50 <= p99 && p99 <= p999 && p999 <= max, "{name}: {l}");
        if !["watch", "expiry"].contains(&name) {
            assert!(f(r, "throughput") > 0.0, "{name}: throughput");
        }
        let servers = r["servers"].as_array().unwrap();
        assert_eq!(servers.len(), 1, "{name}");
        assert!(f(&servers[0], "rss_after_mib") > 0.0, "{name}");
        assert!(f(&servers[0], "cpu_s") >= 0.0, "{name}");
    }
    let expiry = results.iter().find(|r| r["workload"] == "expiry").unwrap();
    let extras = expiry["extras"].as_array().unwrap();
    let timeout = extras
        .iter()
        .find(|e| e["name"] == "negotiated_timeout")
        .unwrap();
    assert_eq!(f(timeout, "value"), 2000.0);
    let memory = results
        .iter()
        .find(|r| r["workload"] == "memory-1500")
        .unwrap();
    assert_eq!(f(memory, "ops"), 1500.0);
    let names: Vec<&str> = memory["extras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"rss_idle") && names.contains(&"rss_loaded"),
        "{names:?}"
    );
    let create = results.iter().find(|r| r["workload"] == "create").unwrap();
    assert_eq!(f(create, "ops"), 300.0);

    // The comparison renders a saved report against itself.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smoke.json");
    std::fs::write(&path, &out.stdout).unwrap();
    let cmp = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["bench", "--compare"])
        .arg(&path)
        .arg(&path)
        .args(["--compare-labels", "smoke,smoke"])
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stderr)
    );
    let md = String::from_utf8_lossy(&cmp.stdout);
    assert!(
        md.contains("| create | ops/s |") && md.contains("| 1.00 |"),
        "{md}"
    );
}

fn extra(r: &serde_json::Value, name: &str) -> f64 {
    let e = r["extras"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing in {}", r["extras"]));
    f(e, "value")
}

#[test]
fn bench_runs_the_scale_workloads_at_tiny_scale() {
    let srv = start_server();
    let out = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["bench", "--json", "--no-progress", "--servers"])
        .arg(srv.addr.to_string())
        .arg("--server-pids")
        .arg(srv.child.id().to_string())
        .args([
            "--workload",
            "sessions,fanout,size,values",
            "--znodes",
            "500",
        ])
        .args([
            "--hold-sessions",
            "40",
            "--hold",
            "2s",
            "--hold-timeout-ms",
            "2000",
        ])
        .args(["--fanout-watchers", "20", "--fanout-trials", "3"])
        .args(["--fanout-subtree", "300", "--value-sizes", "1024,102400"])
        .args(["--sessions", "2", "--depth", "2", "--duration", "3s"])
        .args(["--warmup", "0s", "--ops", "100", "--memory-timeout", "60s"])
        .stdin(Stdio::null())
        .output()
        .expect("roster bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "roster bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let results = report["results"].as_array().expect("results");
    let get = |name: &str| {
        results
            .iter()
            .find(|r| r["workload"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {stderr}"))
    };
    for r in results {
        assert!(r["error"].is_null(), "{}: {}", r["workload"], r["error"]);
    }

    // Sessions: all 40 held, every tenth dropped; each of those expired (not before its timeout), and
    // none of the healthy ones.
    let s = get("sessions-40");
    assert_eq!(f(s, "ops"), 40.0);
    assert_eq!(extra(s, "killed"), 4.0);
    assert_eq!(extra(s, "healthy_expired"), 0.0);
    assert!(
        extra(s, "expiry_lateness_min") > -500.0,
        "expired early: {s}"
    );
    assert!(extra(s, "expiry_lateness_max") >= extra(s, "expiry_lateness_min"));
    assert!(extra(s, "rss_held") > 0.0);
    assert!(extra(s, "ping_cpu_per_s") >= 0.0);
    assert!(extra(s, "write_ops_under_hold") > 0.0);
    assert!(f(&s["latency"], "p99_ms") > 0.0);

    // Fan-out: every trial saw all 20 notifications; memory per watch reported.
    let fo = get("fanout-20");
    assert_eq!(f(fo, "ops"), 3.0);
    assert!(f(&fo["latency"], "max_ms") > 0.0);
    extra(fo, "rss_per_watch");
    let rec = get("fanout-recursive-300");
    assert_eq!(f(rec, "ops"), 3.0);

    // Size: all 500 members loaded in the registry-like tree, memory per znode reported.
    let sz = get("size-500");
    assert_eq!(f(sz, "ops"), 500.0);
    assert!(extra(sz, "rss_loaded") > 0.0);
    extra(sz, "rss_per_znode");

    // Values: one result per size, with bytes per second.
    for name in ["values-1KiB", "values-100KiB"] {
        let v = get(name);
        assert_eq!(f(v, "ops"), 100.0, "{name}");
        assert!(extra(v, "mib_per_s") > 0.0, "{name}");
    }
}

/// Runs `roster bench --workload sessions` under a file limit of `limit` descriptors (soft and hard,
/// so the bench cannot raise it), with `procs` holder processes.
fn sessions_under_limit(
    srv: &Server,
    limit: u32,
    sessions: u32,
    procs: u32,
) -> std::process::Output {
    Command::new("sh")
        .args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\"")])
        .arg(env!("CARGO_BIN_EXE_roster"))
        .args(["bench", "--json", "--no-progress", "--servers"])
        .arg(srv.addr.to_string())
        .arg("--server-pids")
        .arg(srv.child.id().to_string())
        .args(["--workload", "sessions", "--hold-sessions"])
        .arg(sessions.to_string())
        .arg("--hold-procs")
        .arg(procs.to_string())
        .args(["--hold", "2s", "--hold-timeout-ms", "2000"])
        .args(["--memory-timeout", "60s"])
        .stdin(Stdio::null())
        .output()
        .expect("roster bench runs")
}

#[test]
fn sessions_spread_over_holder_processes_hold_more_than_one_process_can() {
    let srv = start_server();
    // 1,200 sessions do not fit one process limited to 1,000 descriptors: refused, saying what to do.
    let one = sessions_under_limit(&srv, 1000, 1200, 1);
    let report: serde_json::Value = serde_json::from_slice(&one.stdout).expect("JSON on stdout");
    let err = report["results"][0]["error"].as_str().unwrap_or_default();
    assert!(err.contains("--hold-procs"), "{report}");

    // Three holder processes of 400 each do: every session opened and held, every tenth dropped at
    // once in its own process and expired (not before its timeout), none of the healthy ones.
    let out = sessions_under_limit(&srv, 1000, 1200, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "roster bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let s = &report["results"][0];
    assert!(s["error"].is_null(), "{s}");
    assert_eq!(s["workload"], "sessions-1200");
    assert_eq!(f(s, "ops"), 1200.0);
    assert_eq!(extra(s, "holder_procs"), 3.0);
    assert_eq!(extra(s, "killed"), 120.0);
    assert_eq!(extra(s, "healthy_expired"), 0.0);
    assert!(
        extra(s, "expiry_lateness_min") > -500.0,
        "expired early: {s}"
    );
    assert!(extra(s, "rss_per_session") > 0.0, "{s}");
    assert!(extra(s, "write_ops_under_hold") > 0.0);
}

/// Kills the process whose pid is the first word of the file's last line (a node a command started).
fn kill_pid_in(file: &std::path::Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(file)
        .ok()?
        .lines()
        .last()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let _ = Command::new("kill").arg(pid.to_string()).status();
    Some(pid)
}

#[test]
fn size_workload_times_restart_snapshot_and_join() {
    let [peer, admin] = free_addrs();
    let flags = format!("--peer-addr {peer} --admin-addr {admin}");
    let srv = start_server_with(&flags.split(' ').map(String::from).collect::<Vec<_>>());
    let data = srv._dir.path().join("data");
    let pidfile = srv._dir.path().join("restarted.pid");
    let joinfile = srv._dir.path().join("joined.pid");
    let bin = env!("CARGO_BIN_EXE_roster");
    // Restart the same node on the same address and data directory; its pid goes to a file (for the
    // clean-up below) and to stdout (for the bench).
    let restart = format!(
        "ROSTER_LOG=warn '{bin}' serve --client-addr {} --min-session-timeout-ms 2000 {flags} \
         --data-dir '{}' </dev/null >/dev/null 2>&1 & echo $! > '{}'; echo $!",
        srv.addr,
        data.display(),
        pidfile.display()
    );
    // The snapshot through the admin API, as scripts/bench does it.
    let snapshot = format!(
        "python3 '{}/../../scripts/bench-snapshot' roster {admin} '{}'",
        env!("CARGO_MANIFEST_DIR"),
        data.display()
    );
    // A new node joining the restarted one: prints its client address, pid and a membership file,
    // which a background shell writes a second later (as scripts/bench's ZooKeeper join does once
    // its `reconfig -add` is committed).
    let (jaddr, jpeer) = (free_addr(), free_addr());
    let member = srv._dir.path().join("member");
    let join = format!(
        "ROSTER_LOG=warn '{bin}' serve --client-addr {jaddr} --peer-addr {jpeer} --admin-addr off \
         --min-session-timeout-ms 2000 --join {peer} --data-dir '{}' </dev/null >/dev/null 2>&1 & \
         p=$!; echo $p > '{}'; (sleep 1; echo ok > '{m}.tmp'; mv '{m}.tmp' '{m}') </dev/null >/dev/null 2>&1 & \
         echo {jaddr} $p '{m}'",
        srv._dir.path().join("joined").display(),
        joinfile.display(),
        m = member.display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["bench", "--json", "--no-progress", "--servers"])
        .arg(srv.addr.to_string())
        .arg("--server-pids")
        .arg(srv.child.id().to_string())
        .args(["--workload", "size", "--znodes", "300", "--sessions", "2"])
        .args(["--depth", "4", "--memory-timeout", "60s"])
        .args(["--failover-timeout", "60s", "--restart-cmd", &restart])
        .args(["--snapshot-cmd", &snapshot, "--join-cmd", &join])
        .stdin(Stdio::null())
        .output()
        .expect("roster bench runs");
    let restarted = kill_pid_in(&pidfile);
    let joined = kill_pid_in(&joinfile);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "roster bench failed: {stderr}");
    assert!(restarted.is_some(), "the restart command never ran");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let r = &report["results"][0];
    assert_eq!(r["workload"], "size-300");
    assert!(r["error"].is_null(), "{}", r["error"]);
    assert_eq!(f(r, "ops"), 300.0);
    let (read, write) = (extra(r, "restart_to_read"), extra(r, "restart_to_write"));
    assert!(
        read > 0.0 && read <= write,
        "read {read} s, write {write} s"
    );
    // The snapshot holds the whole tree: at least the 300 values of 100 bytes.
    let (build, size) = (extra(r, "snapshot_build"), extra(r, "snapshot_size"));
    assert!(build > 0.0, "snapshot build {build} s");
    assert!(size * 1048576.0 >= 30_000.0, "snapshot of {size} MiB");
    assert!(extra(r, "snapshot_bytes_per_znode") >= 100.0);
    // The new node caught up: it served the last znode, after its command ran.
    assert!(joined.is_some(), "the join command never ran");
    assert!(extra(r, "join_to_read") > 0.0);
    assert!(extra(r, "rss_joined") > 0.0);
    // The bench waited for the membership file, written a second after the command.
    assert!(
        extra(r, "join_to_member") >= 1.0,
        "member after {} s",
        extra(r, "join_to_member")
    );
}

/// An example binary that `cargo test` builds next to this test's own binary.
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join(name))
        .unwrap();
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// `scripts/bench --ceiling`'s null ZooKeeper (`examples/null_zk.rs`) takes the loads it is there for
/// (session churn through `roster bench`, pinned setData through `zkc_load` over two of its ports)
/// without an error, and keeps nothing: a node just created reads back empty.
#[test]
fn null_zookeeper_answers_the_ceiling_loads_and_keeps_nothing() {
    let addrs = free_addrs::<2>();
    let listen = format!("{},{}", addrs[0], addrs[1]);
    let mut child = Command::new(example("null_zk"))
        .args(["--listen", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("null_zk runs");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id().to_string();
    let _kill = Kill(&mut child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(ruok(addrs[0]) && ruok(addrs[1])) {
        assert!(Instant::now() < deadline, "null_zk did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Runs a load client to its end and returns its (only) JSON result.
    let result = |cmd: &mut Command, what: &str| -> serde_json::Value {
        let out = cmd.stdin(Stdio::null()).output().expect(what);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what} on null_zk failed: {stderr}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["results"][0].clone()
    };
    let r = result(
        Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["bench", "--json", "--no-progress", "--workload", "churn"])
            .args(["--servers", &addrs[0].to_string(), "--server-pids", &pid])
            .args(["--churn-workers", "2", "--ops", "200", "--duration", "5s"]),
        "churn",
    );
    assert_eq!(r["workload"], "churn", "{r}");
    assert!(f(&r, "ops") > 0.0 && f(&r, "errors") == 0.0, "{r}");
    let r = result(
        Command::new(example("zkc_load"))
            .args(["--servers", &listen, "--server-pids", &pid, "--op", "set"])
            .args(["--sessions", "2", "--depth", "4", "--keys", "20"])
            .args(["--duration", "1", "--warmup", "0", "--label", "ceiling"]),
        "zkc_load",
    );
    assert!(f(&r, "ops") > 0.0 && f(&r, "errors") == 0.0, "{r}");
    // Nothing is kept: what was just written reads back as an empty node.
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(args)
            .args(["--server", &addrs[1].to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("roster CLI runs")
    };
    let set = cli(&["create", "/kept", "value"]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let got = cli(&["get", "/kept"]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&got.stdout).contains("value"),
        "null_zk kept data: {}",
        String::from_utf8_lossy(&got.stdout)
    );
}

/// The `pinned-*` phases' independent client (`examples/zkc_load.rs`, which `cargo test` builds next to
/// this test's own binary), against a real node: a JSON report `roster bench --compare` reads, with
/// the server's CPU, and the writes really made (the created nodes are there afterwards).
#[test]
fn pinned_write_client_reports_and_writes() {
    let zkc = example("zkc_load");
    let srv = start_server();
    let mut reports = Vec::new();
    for op in ["create", "set"] {
        let out = Command::new(&zkc)
            .args(["--servers", &srv.addr.to_string()])
            .args(["--server-pids", &srv.child.id().to_string()])
            .args([
                "--op",
                op,
                "--sessions",
                "2",
                "--depth",
                "4",
                "--keys",
                "20",
            ])
            .args(["--duration", "1", "--warmup", "0", "--label", "smoke"])
            .stdin(Stdio::null())
            .output()
            .expect("zkc_load runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "zkc_load --op {op} failed: {stderr}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("zkc_load --op {op} printed no JSON ({e}): {stderr}"));
        let r = &v["results"][0];
        assert_eq!(r["workload"], format!("pinned-{op}"));
        assert!(f(r, "ops") > 0.0 && f(r, "throughput") > 0.0, "{r}");
        assert_eq!(f(r, "errors"), 0.0, "{r}");
        assert!(f(r, "server_cpu_us_per_op") > 0.0, "{r}");
        assert!(
            f(&r["latency"], "p99_ms") >= f(&r["latency"], "p50_ms"),
            "{r}"
        );
        let path = std::env::temp_dir().join(format!("zkc-{op}-{}.json", std::process::id()));
        std::fs::write(&path, &out.stdout).unwrap();
        reports.push(path);
    }
    // The creates are in the tree: /zkc holds the 20 keys of `set` and every node `create` made.
    let created = reports_ops(&reports[0]);
    let zk = zkcli_children(srv.addr, "/zkc");
    assert!(
        zk as f64 >= created + 20.0,
        "{zk} children under /zkc, {created} creates reported"
    );
    // And `roster bench --compare` reads the reports.
    let out = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["bench", "--compare"])
        .args(&reports)
        .args(["--compare-labels", "smoke,smoke"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("pinned-set"),
        "{table}"
    );
    for p in reports {
        let _ = std::fs::remove_file(p);
    }
}

fn reports_ops(path: &std::path::Path) -> f64 {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f(&v["results"][0], "ops")
}

/// The number of children of `path`, asked through the `roster` CLI.
fn zkcli_children(addr: SocketAddr, path: &str) -> usize {
    let out = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["stat", "--server", &addr.to_string(), path, "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("roster stat: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    v["stat"]["num_children"]
        .as_u64()
        .unwrap_or_else(|| panic!("no child count in {v}")) as usize
}
