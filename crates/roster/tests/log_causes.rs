//! The log says why: membership, leadership, serving and session events are logged once each, with
//! their cause (`roster_server::events`), by real nodes on loopback.

mod support;

use std::time::{Duration, Instant};
use support::*;

/// Waits until `node`'s log has a line containing every one of `parts`; returns that line.
fn wait_line(node: &Roster, parts: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = node.log_text();
        if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?}; log tail:\n{}",
            text.lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_session_expiry_is_logged_once_with_how_long_it_was_silent_and_where_it_was_connected() {
    let _serial = serial();
    let node = Roster::start(&[]);
    let mut c = connect_retry(node.addr, 4_000, Duration::from_secs(10));
    assert_eq!(c.create("/eph", b"", 1).err, 0, "an ephemeral node");
    let session = format!("{:#x}", c.session_id);
    // The client vanishes without closing its session: no request or ping from now on.
    drop(c);
    let line = wait_line(
        &node,
        &[
            &format!("session {session} expired"),
            "no request or ping for",
        ],
        Duration::from_secs(15),
    );
    assert!(line.contains("timeout 4000 ms"), "{line}");
    assert!(
        line.contains("last connected to node 1 (this node)"),
        "{line}"
    );
    assert!(line.contains("1 ephemeral node(s) go with it"), "{line}");
    let silent: i64 = line
        .split("no request or ping for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a silence in ms");
    assert!(silent >= 4_000, "expired only after its timeout: {line}");
    let text = node.log_text();
    assert_eq!(
        text.matches(&format!("session {session} expired")).count(),
        1,
        "logged once"
    );
}

#[test]
fn joins_and_a_dead_leader_are_logged_with_their_causes_on_the_nodes_that_saw_them() {
    let _serial = serial();
    let (a, b, c) = three();
    let leader = peer_status(a.peer).unwrap().leader.unwrap();
    let mut nodes = [a, b, c];
    let li = nodes.iter().position(|n| node_id(n) == leader).unwrap();
    // The leader carried out the joins: it names the request that did each.
    for other in nodes.iter().filter(|n| node_id(n) != leader) {
        let id = node_id(other);
        wait_line(
            &nodes[li],
            &[
                &format!("node {id} joined as"),
                &format!("join request from node {id} at"),
            ],
            Duration::from_secs(10),
        );
    }
    nodes[li].kill9();
    let survivor = &nodes[(li + 1) % 3];
    wait_new_leader(survivor, leader);
    // One of the two causes, whichever this survivor saw: fast failover found the process gone, or
    // the election timers ran out after its silence.
    let gone = format!("node {leader}'s process is gone (its peer port refuses connections)");
    let silent = format!("no AppendEntries from node {leader} for");
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = survivor.log_text();
        let found = text.lines().find(|l| {
            l.contains("leader changed to node") && (l.contains(&gone) || l.contains(&silent))
        });
        if let Some(l) = found {
            break l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no leader change naming node {leader} and why it is taken as gone; events:\n{}",
            text.lines()
                .filter(|l| l.contains("roster_server::events"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !line.contains(&format!("leader changed to node {leader}:")),
        "{line}"
    );
}
