//! `roster status --admin` and `roster top` read a real cluster through one node's admin API.

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

fn roster(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["--timeout", "5s"])
        .args(args)
        .output()
        .expect("roster runs");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn status_and_top_show_the_cluster_its_leader_sessions_rates_and_events() {
    let _serial = serial();
    let (a, b, c) = three();
    let leader = peer_status(a.peer).unwrap().leader.unwrap();
    let admin = a.admin.to_string();
    let mut client = connect_retry(b.addr, 10_000, Duration::from_secs(10));
    assert_eq!(client.create("/top", b"x", 0).err, 0);

    let (code, out, err) = roster(&["--json", "status", "--admin", &admin]);
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["leader"], leader);
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{out}");
    assert_eq!(
        members.iter().filter(|m| m["role"] == "leader").count(),
        1,
        "{out}"
    );

    let (code, out, err) = roster(&["status", "--admin", &admin]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("leader {leader}")), "{out}");
    assert!(out.contains("follower"), "{out}");

    let (code, out, err) = roster(&["top", "--admin", &admin, "--every", "300ms", "--count", "2"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("sessions "), "{out}");
    assert!(
        out.contains("req/s"),
        "the second refresh has a rate: {out}"
    );
    assert!(
        out.contains("recent events:") && out.contains("leader_changed"),
        "events with their causes: {out}"
    );

    // A node without an admin port: a clear error and the connection exit code.
    let (code, _, err) = roster(&["status", "--admin", "127.0.0.1:1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("admin port"), "{err}");
    drop((b, c));
}
