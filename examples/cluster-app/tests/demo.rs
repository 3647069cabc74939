//! The example end to end: `cluster-app demo` against a real server (ZooKeeper by default, Roster with
//! `ROSTER_CLIENT_TEST_TARGETS=roster`): three instances, the leader killed with kill -9, and the
//! terminal output shows the member leaving, a new leader, and the scheduler service moving.

#[path = "../../../crates/client/tests/support/mod.rs"]
mod support;

use std::process::Command;

#[test]
fn kill_9_the_leader_and_watch_the_cluster_recover() {
    for target in support::targets() {
        let server = support::shared(target);
        let root = support::unique_root("cluster-app");
        let out = Command::new(env!("CARGO_BIN_EXE_cluster-app"))
            .args(["demo", "--servers", &server.tcp_addr(), "--root", &root])
            .args([
                "--instances",
                "3",
                "--kill-after-secs",
                "3",
                "--run-for-secs",
                "10",
            ])
            .args(["--session-timeout-ms", "2000"])
            .output()
            .expect("cluster-app runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kill = stdout
            .lines()
            .position(|l| l.starts_with("=== kill -9 node-1"))
            .unwrap_or_else(|| panic!("node-1 leads first and is killed:\n{stdout}"));
        let after: Vec<&str> = stdout.lines().skip(kill).collect();
        let seen = |needle: &str| after.iter().any(|l| l.contains(needle));
        assert!(seen("member LEFT    node-1"), "{stdout}");
        assert!(
            after
                .iter()
                .any(|l| l.starts_with("[node-2] *** I am the LEADER")),
            "{stdout}"
        );
        assert!(seen("scheduler service is at node-2"), "{stdout}");
        let summary = after
            .iter()
            .find(|l| l.starts_with("=== SUMMARY"))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert_eq!(
            *summary,
            "=== SUMMARY killed=node-1 members=node-2,node-3 leader=node-2 scheduler=node-2"
        );
    }
}
