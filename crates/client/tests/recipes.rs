//! The recipes (membership, election, discovery, lock, owned names) against real servers: every test
//! runs against each target of `ROSTER_CLIENT_TEST_TARGETS` (`zookeeper`, `roster`, `embedded`: a node
//! in this process, reached by the in-process client; default `zookeeper`), on a path of its own.
//!
//! Processes killed with `kill -9` are this test binary itself, re-executed as a helper
//! (`recipe_helper` below, selected by `RECIPE_HELPER_ROLE`), which joins a group, enters an election,
//! registers an instance or claims a name, prints `READY`, and waits to be killed. Session expiry is
//! forced the way a server does it: the client's connection is dropped (and kept down for a while),
//! and a second connection with the same session id and password closes the session; the first client
//! then learns on reconnection that its session is gone.
//!
//! ```text
//! ROSTER_CLIENT_TEST_TARGETS=zookeeper,roster cargo test -p roster-client --test recipes
//! ```

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roster_client::recipes::discovery::{ServiceDiscovery, ServiceInstance, Strategy};
use roster_client::recipes::election::{
    self, LeaderElection, Leadership, LeadershipEvent, LossReason,
};
use roster_client::recipes::lock::{LockLoss, Mutex};
use roster_client::recipes::membership::{Group, GroupEvent, MemberInfo, NodeEvent, RecreateCause};
use roster_client::recipes::names::{NameEvent, NameRegistry};
use roster_client::recipes::Connector;
use roster_client::{Client, ClientOptions, CreateOptions, Op};
use support::{each_target, unique_root, ServerProcess, TestServer};

/// The longest any single step of a test may take.
const STEP: Duration = Duration::from_secs(20);

fn options(session_timeout: Duration) -> ClientOptions {
    ClientOptions {
        session_timeout,
        connect_timeout: Some(STEP),
        request_timeout: Some(STEP),
        ..Default::default()
    }
}

async fn client(server: &ServerProcess) -> Client {
    Client::connect(&server.addr(), options(Duration::from_secs(6)))
        .await
        .expect("connect")
}

/// A connector that opens a new session after expiry.
async fn renewing(server: &ServerProcess, session_timeout: Duration) -> Connector {
    Connector::connect(&server.addr(), options(session_timeout))
        .await
        .expect("connect")
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Expires `victim`'s session as a server would: its connection is dropped and kept down while a
/// second connection with the same id and password closes the session.
async fn expire(server: &ServerProcess, victim: &Client) {
    let id = victim.session_id();
    let password = victim.session_password();
    victim.inject_connection_loss(Duration::from_millis(1500));
    let other = Client::connect(
        &server.addr(),
        ClientOptions {
            session: Some((id, password)),
            ..options(Duration::from_secs(6))
        },
    )
    .await
    .expect("second connection to the session");
    other.close().await.expect("close the session");
}

async fn next_group_event(w: &mut roster_client::recipes::membership::GroupWatcher) -> GroupEvent {
    within("a group event", w.next())
        .await
        .expect("watcher alive")
}

/// Waits for a group event matching `pred`, skipping connection events; returns it.
async fn group_event_where(
    w: &mut roster_client::recipes::membership::GroupWatcher,
    what: &str,
    pred: impl Fn(&GroupEvent) -> bool,
) -> GroupEvent {
    within(what, async {
        loop {
            let ev = w.next().await.expect("watcher alive");
            if pred(&ev) {
                return ev;
            }
            assert!(
                matches!(ev, GroupEvent::Suspended | GroupEvent::Resynced { .. }),
                "unexpected event while waiting for {what}: {ev:?}"
            );
        }
    })
    .await
}

async fn node_event_where(
    rx: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    what: &str,
    pred: impl Fn(&NodeEvent) -> bool,
) -> NodeEvent {
    within(what, async {
        loop {
            let ev = rx.recv().await.expect("events");
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------------
// The helper process.

/// A child process running this test binary as a recipe participant; killed (SIGKILL) when dropped.
struct Helper {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Helper {
    fn spawn(role: &str, server: &ServerProcess, path: &str, id: &str) -> Helper {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "recipe_helper",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RECIPE_HELPER_ROLE", role)
            .env("RECIPE_HELPER_ADDR", server.tcp_addr())
            .env("RECIPE_HELPER_PATH", path)
            .env("RECIPE_HELPER_ID", id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn helper");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut h = Helper { child, lines: rx };
        h.expect_line("READY");
        h
    }

    /// Waits for an output line starting with `prefix`; returns it.
    fn expect_line(&mut self, prefix: &str) -> String {
        let deadline = std::time::Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                // libtest prints "test recipe_helper ... " without a newline before our output.
                Ok(l) if l.contains(prefix) => return l[l.find(prefix).unwrap()..].to_string(),
                Ok(_) => {}
                Err(e) => panic!("helper: no {prefix:?} line: {e}"),
            }
        }
    }

    /// kill -9.
    fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Not a test: the body of the helper process (a no-op unless `RECIPE_HELPER_ROLE` is set).
#[test]
fn recipe_helper() {
    let Ok(role) = std::env::var("RECIPE_HELPER_ROLE") else {
        return;
    };
    let addr = std::env::var("RECIPE_HELPER_ADDR").unwrap();
    let path = std::env::var("RECIPE_HELPER_PATH").unwrap();
    let id = std::env::var("RECIPE_HELPER_ID").unwrap();
    // Die with the parent: it holds our stdin.
    std::thread::spawn(|| {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
        std::process::exit(0);
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let c = Client::connect(&addr, options(Duration::from_secs(2)))
            .await
            .expect("helper connects");
        let mut keep: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
        match role.as_str() {
            "member" => {
                let m = Group::new(&c, &path)
                    .join(
                        &id,
                        MemberInfo::new("127.0.0.1", 7000).tag("role", "helper"),
                    )
                    .await
                    .unwrap();
                keep.push(Box::new(m));
                println!("READY");
            }
            "candidate" => {
                let cand = LeaderElection::new(&c, &path, &id).join().await.unwrap();
                println!("READY");
                let token = cand.wait_leader().await.unwrap();
                println!("LEADER {token}");
                keep.push(Box::new(cand));
            }
            "instance" => {
                let reg = ServiceDiscovery::new(&c, &path)
                    .register(ServiceInstance::new("user", &id, "127.0.0.1", 7100))
                    .await
                    .unwrap();
                keep.push(Box::new(reg));
                println!("READY");
            }
            "owner" => {
                let names = NameRegistry::new(&c, &path, &id);
                let mut events = names.events().await.unwrap();
                names.claim("user/victorops/broadcaster").await.unwrap();
                println!("READY");
                while let Some(ev) = events.recv().await {
                    if let NameEvent::Acquired { token, .. } = ev {
                        println!("OWNER {token}");
                    }
                }
                keep.push(Box::new(names));
            }
            other => panic!("unknown helper role {other}"),
        }
        std::future::pending::<()>().await;
    });
}

// ---------------------------------------------------------------------------------------------------
// Membership.

#[tokio::test]
async fn membership_view_and_events() {
    each_target("membership_view_and_events", |server| async move {
        let group_path = format!("{}/group", unique_root("members"));
        let observer = client(server).await;
        // A non-member watches first (the group does not exist yet).
        let group = Group::new(&observer, &group_path);
        let mut w = group.watch().await.unwrap();
        assert!(w.view().members.is_empty());

        let a = client(server).await;
        let b = client(server).await;
        let mut ma = Group::new(&a, &group_path)
            .join("a", MemberInfo::new("10.0.0.1", 2552).tag("zone", "x"))
            .await
            .unwrap();
        let ev = next_group_event(&mut w).await;
        let GroupEvent::Joined { member, zxid } = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(member.id, "a");
        assert_eq!(member.info().endpoint(), "10.0.0.1:2552");
        assert_eq!(member.info().tags["zone"], "x");
        assert_eq!(zxid, member.czxid);

        let mb = Group::new(&b, &group_path)
            .join("b", MemberInfo::new("10.0.0.2", 2552))
            .await
            .unwrap();
        let GroupEvent::Joined { member, .. } = next_group_event(&mut w).await else {
            panic!()
        };
        assert_eq!(member.id, "b");
        // A second live member with the same id is refused.
        let dup = Group::new(&observer, &group_path)
            .join("b", MemberInfo::default())
            .await;
        assert_eq!(
            dup.unwrap_err(),
            roster_client::Error::Code(roster_client::ErrorCode::NodeExists)
        );

        ma.update(MemberInfo::new("10.0.0.1", 2553)).await.unwrap();
        let ev = next_group_event(&mut w).await;
        let GroupEvent::Updated { old, new, .. } = ev else {
            panic!("{ev:?}")
        };
        assert_eq!((old.info().port, new.info().port), (2552, 2553));

        // The consistent view.
        let view = group.members().await.unwrap();
        assert_eq!(view.ids(), vec!["a", "b"]);
        assert_eq!(
            view.zxid,
            view.members.iter().map(|m| m.mzxid).max().unwrap()
        );
        assert_eq!(w.view(), view);

        mb.leave().await.unwrap();
        let ev = next_group_event(&mut w).await;
        let GroupEvent::Left { member, zxid } = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(member.id, "b");
        assert!(zxid > view.zxid);
        assert_eq!(group.members().await.unwrap().ids(), vec!["a"]);
        // Closing the session is leaving too.
        a.close().await.unwrap();
        let GroupEvent::Left { member, .. } = next_group_event(&mut w).await else {
            panic!()
        };
        assert_eq!(member.id, "a");
        drop(ma);
        b.close().await.unwrap();
        observer.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn membership_kill9_member_leaves() {
    each_target("membership_kill9_member_leaves", |server| async move {
        let group_path = format!("{}/group", unique_root("kill9"));
        let observer = client(server).await;
        let group = Group::new(&observer, &group_path);
        let mut w = group.watch().await.unwrap();
        let helper = Helper::spawn("member", server, &group_path, "doomed");
        let ev = group_event_where(&mut w, "the helper to join", |e| {
            matches!(e, GroupEvent::Joined { .. })
        })
        .await;
        let GroupEvent::Joined { member, .. } = ev else {
            unreachable!()
        };
        assert_eq!(member.id, "doomed");
        assert_eq!(member.info().tags["role"], "helper");
        helper.kill9();
        let ev = group_event_where(&mut w, "the killed member to leave", |e| {
            matches!(e, GroupEvent::Left { .. })
        })
        .await;
        let GroupEvent::Left { member, .. } = ev else {
            unreachable!()
        };
        assert_eq!(member.id, "doomed");
        assert!(group.members().await.unwrap().members.is_empty());
        observer.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn membership_rejoins_after_expiry_and_watcher_misses_nothing() {
    each_target("membership_rejoins_after_expiry", |server| async move {
        let group_path = format!("{}/group", unique_root("rejoin"));
        // The watcher's own session is interrupted too (dropped connection): its events must still be
        // exactly the differences.
        let observer = renewing(server, Duration::from_secs(6)).await;
        let group = Group::new(&observer, &group_path);
        let mut w = group.watch().await.unwrap();

        let member_conn = renewing(server, Duration::from_secs(4)).await;
        let mut m = Group::new(&member_conn, &group_path)
            .join("m1", MemberInfo::new("10.0.0.9", 1))
            .await
            .unwrap();
        let mut events = m.events();
        assert!(matches!(
            events.recv().await.unwrap(),
            NodeEvent::Created { .. }
        ));
        let GroupEvent::Joined { member: first, .. } = next_group_event(&mut w).await else {
            panic!()
        };
        m.update(MemberInfo::new("10.0.0.9", 2).tag("v", "2"))
            .await
            .unwrap();
        let GroupEvent::Updated { .. } = next_group_event(&mut w).await else {
            panic!()
        };

        // The observer is cut off while the member's session is expired and it re-joins.
        observer
            .client()
            .inject_connection_loss(Duration::from_millis(2500));
        let old_session = member_conn.client().session_id();
        expire(server, &member_conn.client()).await;
        let ev = node_event_where(&mut events, "the member to re-join", |e| {
            matches!(e, NodeEvent::Recreated { .. })
        })
        .await;
        let NodeEvent::Recreated {
            session_id, cause, ..
        } = ev
        else {
            unreachable!()
        };
        assert_eq!(cause, RecreateCause::SessionExpired);
        assert_ne!(session_id, old_session);

        // Re-joined with the current metadata.
        let view = within("the re-joined member", async {
            loop {
                let v = group.members().await.unwrap();
                if v.get("m1").is_some_and(|x| x.czxid != first.czxid) {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let again = view.get("m1").unwrap();
        assert_eq!(again.info().port, 2);
        assert_eq!(again.info().tags["v"], "2");
        assert_eq!(again.session_id, session_id);

        // The watcher reports the replacement exactly once (Left + Joined, or nothing missed if it saw
        // the gap), then is in sync.
        let mut seen = Vec::new();
        within("the watcher to catch up", async {
            loop {
                if w.view().get("m1").is_some_and(|x| x.czxid == again.czxid)
                    && seen.iter().any(|e| matches!(e, GroupEvent::Joined { .. }))
                {
                    return;
                }
                let ev = w.next().await.unwrap();
                seen.push(ev);
            }
        })
        .await;
        let joins = seen
            .iter()
            .filter(|e| matches!(e, GroupEvent::Joined { .. }))
            .count();
        let lefts = seen
            .iter()
            .filter(|e| matches!(e, GroupEvent::Left { .. }))
            .count();
        assert_eq!((lefts, joins), (1, 1), "events: {seen:?}");
        drop(m);
        let _ = member_conn.close().await;
        let _ = observer.close().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------
// Leader election.

/// Samples every candidate's leadership until `stop`: never two leaders at once.
fn overlap_checker(
    candidates: Vec<tokio::sync::watch::Receiver<Leadership>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut samples = 0;
        while !stop.load(Ordering::SeqCst) {
            let leaders: Vec<_> = candidates
                .iter()
                .filter(|c| c.borrow().is_leader())
                .map(|c| c.borrow().clone())
                .collect();
            assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
            samples += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples
    })
}

/// The `wchp` four-letter word's answer, for the paths under `prefix`: path -> watching sessions.
fn watches_by_path(wchp: &str, prefix: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut current: Option<String> = None;
    for line in wchp.lines() {
        if line.starts_with('/') {
            current = Some(line.trim().to_string());
        } else if let Some(p) = &current {
            if !line.trim().is_empty() && (p == prefix || p.starts_with(&format!("{prefix}/"))) {
                out.entry(p.clone())
                    .or_default()
                    .push(line.trim().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn election_concurrent_candidates_fenced() {
    each_target(
        "election_concurrent_candidates_fenced",
        |server| async move {
            let root = unique_root("election");
            let path = format!("{root}/leader");
            let admin = client(server).await;
            let resource = format!("{root}/resource");
            roster_client::recipes::ensure_path(&admin, &root)
                .await
                .unwrap();
            admin
                .create(&resource, b"0", &CreateOptions::default())
                .await
                .unwrap();
            election::participants(&admin, &path).await.unwrap();

            let mut conns = Vec::new();
            let mut cands = Vec::new();
            for i in 0..5 {
                let c = client(server).await;
                let cand = LeaderElection::new(&c, &path, &format!("cand-{i}"))
                    .join()
                    .await
                    .unwrap();
                conns.push(c);
                cands.push(Some(cand));
            }
            let stop = Arc::new(AtomicBool::new(false));
            let checker = overlap_checker(
                cands
                    .iter()
                    .map(|c| c.as_ref().unwrap().subscribe())
                    .collect(),
                stop.clone(),
            );
            // Each candidate watches only its predecessor: positions are 0..5, each once.
            let parts = election::participants(&admin, &path).await.unwrap();
            assert_eq!(parts.len(), 5);
            assert!(parts[0].is_leader && parts.iter().skip(1).all(|p| !p.is_leader));
            assert!(parts.windows(2).all(|w| w[0].token < w[1].token));
            within("every candidate to settle", async {
                for c in cands.iter().flatten() {
                    let mut rx = c.subscribe();
                    rx.wait_for(|l| {
                        matches!(l, Leadership::Leader { .. } | Leadership::Follower { .. })
                    })
                    .await
                    .unwrap();
                }
            })
            .await;
            // No herd: the server's watch table (wchp) has one watcher per candidate node (two on the
            // leader's: itself and the next one), none on the last one, none on the election node.
            let watches = watches_by_path(&server.four_letter("wchp"), &path);
            assert!(!watches.contains_key(&path), "{watches:?}");
            let expected: Vec<usize> = vec![2, 1, 1, 1, 0];
            let got: Vec<usize> = parts
                .iter()
                .map(|p| watches.get(&p.node).map_or(0, |s| s.len()))
                .collect();
            assert_eq!(got, expected, "{watches:?}");

            let mut last_token = 0i64;
            let mut leaders_seen = BTreeSet::new();
            for round in 0..5 {
                // Exactly one leader; it writes the resource, fenced by its node.
                let (idx, token) = within("a leader", async {
                    loop {
                        for (i, c) in cands.iter().enumerate() {
                            if let Some(t) = c.as_ref().and_then(|c| c.fencing_token()) {
                                return (i, t);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await;
                assert!(token > last_token, "fencing tokens must increase");
                let leader = election::leader(&admin, &path).await.unwrap().unwrap();
                assert_eq!(leader.token, token);
                assert_eq!(leader.id, format!("cand-{idx}"));
                let cand = cands[idx].as_ref().unwrap();
                let (data, _) = admin.get_data(&resource).await.unwrap();
                let prev: i64 = std::str::from_utf8(&data).unwrap().parse().unwrap();
                assert!(prev < token);
                cand.fenced_multi(vec![Op::set_data(
                    &resource,
                    token.to_string().as_bytes(),
                    None,
                )])
                .await
                .unwrap();
                last_token = token;
                leaders_seen.insert(idx);
                // Hand over in several ways.
                match round % 3 {
                    0 => cands[idx].take().unwrap().close().await.unwrap(),
                    1 => {
                        let node = match cand.leadership() {
                            Leadership::Leader { node, .. } => node,
                            l => panic!("{l:?}"),
                        };
                        // Its session dies (suspended first, as a partitioned process would be).
                        expire(server, &conns[idx]).await;
                        // The old leader's fenced write is refused now.
                        assert!(election::fenced_multi(
                            &admin,
                            &node,
                            vec![Op::set_data(&resource, b"stale", None)]
                        )
                        .await
                        .is_err());
                        within("the closed candidate to notice", cand.wait_not_leader()).await;
                        cands[idx] = None;
                    }
                    _ => {
                        // Resign: it re-enters at the back and stays a candidate.
                        cand.resign().await.unwrap();
                        assert!(!cand.is_leader());
                    }
                }
            }
            stop.store(true, Ordering::SeqCst);
            assert!(checker.await.unwrap() > 0);
            assert!(leaders_seen.len() >= 4);
            for c in cands.into_iter().flatten() {
                c.close().await.unwrap();
            }
            for c in conns {
                let _ = c.close().await;
            }
            admin.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn election_suspension_counts_as_loss_then_expiry_fails_over() {
    each_target("election_suspension_and_expiry", |server| async move {
        let path = format!("{}/leader", unique_root("suspend"));
        let a_conn = renewing(server, Duration::from_secs(4)).await;
        let mut a = LeaderElection::new(&a_conn, &path, "a")
            .join()
            .await
            .unwrap();
        let mut a_events = a.events();
        let token = within("a to lead", a.wait_leader()).await.unwrap();
        let b_conn = client(server).await;
        let b = LeaderElection::new(&b_conn, &path, "b")
            .join()
            .await
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let checker = overlap_checker(vec![a.subscribe(), b.subscribe()], stop.clone());
        within("b to follow", async {
            let mut rx = b.subscribe();
            rx.wait_for(|l| matches!(l, Leadership::Follower { position: 1 }))
                .await
                .unwrap();
        })
        .await;

        // A short outage: not leader while suspended, leader again (same token) after.
        a_conn
            .client()
            .inject_connection_loss(Duration::from_millis(500));
        let mut got = Vec::new();
        within("a to lose and regain leadership", async {
            loop {
                let ev = a_events.recv().await.unwrap();
                got.push(ev.clone());
                if got.len() >= 3 {
                    return;
                }
            }
        })
        .await;
        assert_eq!(
            got,
            vec![
                LeadershipEvent::Elected {
                    token,
                    node: got_node(&got[0])
                },
                LeadershipEvent::Lost {
                    reason: LossReason::Suspended
                },
                LeadershipEvent::Elected {
                    token,
                    node: got_node(&got[0])
                },
            ]
        );
        assert!(!b.is_leader());

        // Expiry: b takes over with a larger token; a re-enters on a new session, behind b.
        expire(server, &a_conn.client()).await;
        let b_token = within("b to lead", b.wait_leader()).await.unwrap();
        assert!(b_token > token);
        within("a to re-join", async {
            loop {
                if let LeadershipEvent::Rejoined { .. } = a_events.recv().await.unwrap() {
                    return;
                }
            }
        })
        .await;
        within("a to follow again", async {
            let mut rx = a.subscribe();
            rx.wait_for(|l| matches!(l, Leadership::Follower { .. }))
                .await
                .unwrap();
        })
        .await;
        // b resigns: a leads again, with a token larger than b's.
        b.resign().await.unwrap();
        let a_token = within("a to lead again", a.wait_leader()).await.unwrap();
        assert!(a_token > b_token);
        stop.store(true, Ordering::SeqCst);
        checker.await.unwrap();
        a.close().await.unwrap();
        b.close().await.unwrap();
        let _ = a_conn.close().await;
        b_conn.close().await.unwrap();
    })
    .await;
}

fn got_node(ev: &LeadershipEvent) -> String {
    match ev {
        LeadershipEvent::Elected { node, .. } => node.clone(),
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn election_kill9_leader_fails_over() {
    each_target("election_kill9_leader_fails_over", |server| async move {
        let path = format!("{}/leader", unique_root("kill9-election"));
        let mut helper = Helper::spawn("candidate", server, &path, "child");
        let line = helper.expect_line("LEADER");
        let child_token: i64 = line["LEADER ".len()..].parse().unwrap();
        let c = client(server).await;
        let me = LeaderElection::new(&c, &path, "parent")
            .join()
            .await
            .unwrap();
        assert!(!me.is_leader());
        let leader = election::leader(&c, &path).await.unwrap().unwrap();
        assert_eq!((leader.id.as_str(), leader.token), ("child", child_token));
        helper.kill9();
        let token = within("the parent to lead", me.wait_leader())
            .await
            .unwrap();
        assert!(token > child_token);
        me.close().await.unwrap();
        c.close().await.unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------
// Lock.

#[tokio::test]
async fn lock_mutual_exclusion_with_fencing() {
    each_target("lock_mutual_exclusion_with_fencing", |server| async move {
        let path = format!("{}/lock", unique_root("lock"));
        let inside = Arc::new(AtomicBool::new(false));
        let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..4 {
            let c = client(server).await;
            let (inside, tokens, path) = (inside.clone(), tokens.clone(), path.clone());
            tasks.push(tokio::spawn(async move {
                let m = Mutex::new(&c, &path).with_data(format!("worker-{i}").as_bytes());
                for _ in 0..3 {
                    let g = within("the lock", m.acquire()).await.unwrap();
                    assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                    tokens.lock().unwrap().push(g.fencing_token());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    inside.store(false, Ordering::SeqCst);
                    g.release().await.unwrap();
                }
                c.close().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let tokens = tokens.lock().unwrap().clone();
        assert_eq!(tokens.len(), 12);
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens: {tokens:?}");

        // try_acquire times out while held, and leaves no node behind.
        let a = client(server).await;
        let b = client(server).await;
        let held = Mutex::new(&a, &path).acquire().await.unwrap();
        let none = Mutex::new(&b, &path)
            .try_acquire(Duration::from_millis(300))
            .await
            .unwrap();
        assert!(none.is_none());
        assert_eq!(a.get_children(&path).await.unwrap().len(), 1);
        // The holder is told when its session goes; the waiter gets the lock with a larger token.
        let waiter = tokio::spawn({
            let b = b.clone();
            let path = path.clone();
            async move {
                Mutex::new(&b, &path)
                    .acquire()
                    .await
                    .unwrap()
                    .fencing_token()
            }
        });
        let loss = {
            let fut = held.lost();
            tokio::pin!(fut);
            expire(server, &a).await;
            within("the loss", fut).await
        };
        assert!(matches!(loss, LockLoss::Suspended | LockLoss::SessionEnded));
        let t = within("the waiter", waiter).await.unwrap();
        assert!(t > held.fencing_token());
        drop(held);
        b.close().await.unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------
// Service discovery and owned names.

#[tokio::test]
async fn discovery_resolve_provider_and_kill9() {
    each_target(
        "discovery_resolve_provider_and_kill9",
        |server| async move {
            let base = format!("{}/services", unique_root("discovery"));
            let c = client(server).await;
            let sd = ServiceDiscovery::new(&c, &base);
            let mut regs = Vec::new();
            for i in 0..3 {
                let inst = ServiceInstance::new("user", &format!("u{i}"), "127.0.0.1", 9000 + i)
                    .with_payload(serde_json::json!({"zone": format!("z{i}")}));
                regs.push(sd.register(inst).await.unwrap());
            }
            // Curator's JSON on the node.
            let (data, stat) = c.get_data(&format!("{base}/user/u0")).await.unwrap();
            assert_ne!(stat.ephemeral_owner, 0);
            let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
            assert_eq!(v["name"], "user");
            assert_eq!(v["id"], "u0");
            assert_eq!(v["port"], 9000);
            assert_eq!(v["serviceType"], "DYNAMIC");
            assert!(v["registrationTimeUTC"].as_i64().unwrap() > 0);

            assert_eq!(sd.services().await.unwrap(), vec!["user"]);
            let r = sd
                .resolve("cluster://user/victorops/broadcaster")
                .await
                .unwrap();
            assert_eq!(r.uri.path, "victorops/broadcaster");
            let ids: Vec<_> = r.instances.iter().map(|i| i.id.as_str()).collect();
            assert_eq!(ids, vec!["u0", "u1", "u2"]);
            assert!(r.owner.is_none());

            let rr = sd.provider("user", Strategy::RoundRobin).await.unwrap();
            let picks: BTreeSet<_> = (0..3).map(|_| rr.instance().unwrap().id).collect();
            assert_eq!(picks.len(), 3);
            let sticky = sd.provider("user", Strategy::Sticky).await.unwrap();
            let s = sticky.instance().unwrap().id;
            assert!((0..10).all(|_| sticky.instance().unwrap().id == s));
            let mut random = sd.provider("user", Strategy::Random).await.unwrap();
            assert!(random.instance().is_some());

            // A new instance in a process of its own; kill -9 makes it disappear.
            let helper = Helper::spawn("instance", server, &base, "child");
            within(
                "the provider to see the child",
                random.wait_for(|i| i.len() == 4),
            )
            .await
            .unwrap();
            helper.kill9();
            within(
                "the provider to drop the child",
                random.wait_for(|i| i.len() == 3),
            )
            .await
            .unwrap();
            // The sticky provider moves when its instance goes.
            let gone = regs.iter().position(|r| r.instance().id == s).unwrap();
            regs.remove(gone).unregister().await.unwrap();
            let mut sticky = sticky;
            within("sticky to move", sticky.wait_for(|i| i.len() == 2))
                .await
                .unwrap();
            assert_ne!(sticky.instance().unwrap().id, s);
            drop(regs);
            c.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn owned_names_failover_hand_off_and_resolve() {
    each_target(
        "owned_names_failover_hand_off_and_resolve",
        |server| async move {
            let root = unique_root("names");
            let names_root = format!("{root}/names");
            let base = format!("{root}/services");
            let name = "user/victorops/broadcaster";
            let ca = renewing(server, Duration::from_secs(4)).await;
            let cb = client(server).await;
            let sd = ServiceDiscovery::new(&cb, &base).with_names(&names_root);
            let _ra = sd
                .register(ServiceInstance::new("user", "host-a", "10.0.0.1", 1))
                .await
                .unwrap();
            let _rb = ServiceDiscovery::new(&ca, &base)
                .register(ServiceInstance::new("user", "host-b", "10.0.0.2", 1))
                .await;
            let a = NameRegistry::new(&cb, &names_root, "host-a");
            let b = NameRegistry::new(&ca, &names_root, "host-b");
            let mut a_events = a.events().await.unwrap();
            let mut b_events = b.events().await.unwrap();
            a.claim(name).await.unwrap();
            let ev = within("a to own", a_events.recv()).await.unwrap();
            let NameEvent::Acquired { token: t1, .. } = ev else {
                panic!("{ev:?}")
            };
            b.claim(name).await.unwrap();
            assert!(a.owns(name).await && !b.owns(name).await);
            let owner = a.owner(name).await.unwrap().unwrap();
            assert_eq!((owner.host.as_str(), owner.token), ("host-a", t1));
            let r = sd.resolve(&format!("cluster://{name}")).await.unwrap();
            assert_eq!(r.owner.as_ref().unwrap().id, "host-a");
            assert_eq!(r.targets().len(), 1);

            // Explicit hand-off.
            a.hand_off(name).await.unwrap();
            assert_eq!(
                within("a to release", a_events.recv()).await.unwrap(),
                NameEvent::Released {
                    name: name.into(),
                    reason: LossReason::Resigned
                }
            );
            let NameEvent::Acquired { token: t2, .. } =
                within("b to own", b_events.recv()).await.unwrap()
            else {
                panic!()
            };
            assert!(t2 > t1);
            assert!(!a.owns(name).await);
            let r = sd.resolve(&format!("cluster://{name}")).await.unwrap();
            assert_eq!(r.owner.as_ref().unwrap().id, "host-b");

            // Failover: b's session dies; a owns again with a larger token.
            expire(server, &ca.client()).await;
            let NameEvent::Released { reason, .. } =
                within("b to release", b_events.recv()).await.unwrap()
            else {
                panic!()
            };
            assert_eq!(reason, LossReason::Suspended);
            let NameEvent::Acquired { token: t3, .. } =
                within("a to own again", a_events.recv()).await.unwrap()
            else {
                panic!()
            };
            assert!(t3 > t2);
            assert_eq!(a.owned().await, vec![(name.to_string(), t3)]);
            // A killed owner in another process fails over too.
            let other = format!("{root}/names2");
            let mut helper = Helper::spawn("owner", server, &other, "child");
            let child_token: i64 = helper.expect_line("OWNER")["OWNER ".len()..]
                .parse()
                .unwrap();
            let c = NameRegistry::new(&cb, &other, "parent");
            let mut c_events = c.events().await.unwrap();
            c.claim(name).await.unwrap();
            helper.kill9();
            let NameEvent::Acquired { token, .. } =
                within("failover after kill -9", c_events.recv())
                    .await
                    .unwrap()
            else {
                panic!()
            };
            assert!(token > child_token);
            c.release_all().await.unwrap();
            a.release_all().await.unwrap();
            b.release_all().await.unwrap();
            let _ = ca.close().await;
            cb.close().await.unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn owned_names_concurrent_hosts_one_owner_each() {
    each_target("owned_names_concurrent_hosts", |server| async move {
        let root = unique_root("names-concurrent");
        let names = ["a", "b/c", "b/d"];
        let admin = client(server).await;
        let mut conns = Vec::new();
        let mut hosts = Vec::new();
        for h in 0..4 {
            let c = client(server).await;
            let reg = NameRegistry::new(&c, &root, &format!("host-{h}"));
            for n in names {
                reg.claim(n).await.unwrap();
            }
            conns.push(c);
            hosts.push(reg);
        }
        // Never two owners of one name at once, as the hosts themselves see it.
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = tokio::spawn({
            let hosts = hosts.clone();
            let stop = stop.clone();
            async move {
                let mut samples = 0;
                while !stop.load(Ordering::SeqCst) {
                    let mut owners: std::collections::BTreeMap<String, Vec<String>> =
                        Default::default();
                    for h in &hosts {
                        for (n, _) in h.owned().await {
                            owners.entry(n).or_default().push(h.host().to_string());
                        }
                    }
                    for (n, o) in owners {
                        assert!(o.len() <= 1, "{n} owned by {o:?} at once");
                    }
                    samples += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                samples
            }
        });
        let mut last: std::collections::BTreeMap<&str, i64> = Default::default();
        let mut dead = BTreeSet::new();
        for round in 0..6 {
            for n in names {
                // Wait for an owner with a token larger than the previous owner's.
                let owner = within("an owner", async {
                    loop {
                        if let Some(o) = roster_client::recipes::names::owner(&admin, &root, n)
                            .await
                            .unwrap()
                        {
                            if o.token > last.get(n).copied().unwrap_or(0) {
                                return o;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await;
                let h: usize = owner.host["host-".len()..].parse().unwrap();
                // The owner agrees, with the same token.
                within("the owner to know", async {
                    while !hosts[h]
                        .owned()
                        .await
                        .contains(&(n.to_string(), owner.token))
                    {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await;
                last.insert(n, owner.token);
                if round == 3 && n == "a" {
                    // The owner's session dies: every name it owned fails over.
                    expire(server, &conns[h]).await;
                    dead.insert(h);
                } else {
                    hosts[h].hand_off(n).await.unwrap();
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        assert!(sampler.await.unwrap() > 0);
        for (i, h) in hosts.iter().enumerate() {
            if !dead.contains(&i) {
                h.release_all().await.unwrap();
            }
        }
        for c in conns {
            let _ = c.close().await;
        }
        admin.close().await.unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------
// Server restart (Roster, as a process or embedded in this one).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipes_survive_a_server_restart() {
    let kinds: Vec<TestServer> = support::targets()
        .into_iter()
        .filter(|k| matches!(k, TestServer::Roster | TestServer::Embedded))
        .collect();
    if kinds.is_empty() {
        eprintln!("recipes_survive_a_server_restart: needs the roster or embedded target, skipped");
    }
    for kind in kinds {
        eprintln!("recipes_survive_a_server_restart: against {}", kind.name());
        restart_scenario(kind).await;
    }
}

async fn restart_scenario(kind: TestServer) {
    let mut server = ServerProcess::start(kind);
    let root = unique_root("restart");
    let group_path = format!("{root}/group");
    let path = format!("{root}/leader");
    let conn = Connector::connect(&server.addr(), options(Duration::from_secs(8)))
        .await
        .unwrap();
    let observer = Connector::connect(&server.addr(), options(Duration::from_secs(8)))
        .await
        .unwrap();
    let group = Group::new(&observer, &group_path);
    let mut w = group.watch().await.unwrap();
    let _m = Group::new(&conn, &group_path)
        .join("m", MemberInfo::new("10.0.0.1", 1))
        .await
        .unwrap();
    let cand = LeaderElection::new(&conn, &path, "only")
        .join()
        .await
        .unwrap();
    within("leader", cand.wait_leader()).await.unwrap();
    let sd = ServiceDiscovery::new(&conn, &format!("{root}/services"));
    let _reg = sd
        .register(ServiceInstance::new("user", "u1", "10.0.0.1", 1))
        .await
        .unwrap();
    let mut provider = ServiceDiscovery::new(&observer, &format!("{root}/services"))
        .provider("user", Strategy::Random)
        .await
        .unwrap();
    within("the provider", provider.wait_for(|i| i.len() == 1))
        .await
        .unwrap();
    let names = NameRegistry::new(&conn, &format!("{root}/names"), "u1");
    names.claim("user/x").await.unwrap();
    let mutex = Mutex::new(&observer, &format!("{root}/lock"));
    let GroupEvent::Joined { .. } = next_group_event(&mut w).await else {
        panic!()
    };

    tokio::task::block_in_place(|| server.restart(Duration::from_millis(500)));
    // Whether the sessions survived the restart or not, the member is back and there is a leader.
    within("the member after the restart", async {
        loop {
            if let Ok(v) = group.members().await {
                if v.get("m").is_some() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    within("a leader after the restart", cand.wait_leader())
        .await
        .unwrap();
    within("the instance after the restart", async {
        loop {
            if provider.instances().len() == 1
                && sd.instances("user").await.is_ok_and(|i| i.len() == 1)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    within("the owner after the restart", async {
        while !names.owns("user/x").await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let guard = within("the lock after the restart", mutex.acquire())
        .await
        .unwrap();
    guard.release().await.unwrap();
    let leader = election::leader(&observer.client(), &path)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leader.id, "only");
    let view = group.members().await.unwrap();
    within("the watcher to agree", async {
        let mut rx = w.subscribe();
        rx.wait_for(|v| v.ids() == view.ids()).await.unwrap();
    })
    .await;
    cand.close().await.unwrap();
    let _ = conn.close().await;
    let _ = observer.close().await;
}
