//! Embedded clusters in one test process: three (or four) `Embedded` nodes on loopback peer ports,
//! each with its own in-process client, joining a group and an election as an application would.
//!
//! An instance "dies" here by [`Embedded::shutdown_leaving`]`(false)`: its node stops without leaving
//! the cluster, so the others see a voter down and its sessions expire after their timeout, as after a
//! crash. Real `kill -9` of instance processes is in examples/cluster-app/tests/embedded.rs.
//!
//! ```text
//! cargo test -p roster-embed --test cluster
//! ```

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use roster_client::recipes::election::LeaderElection;
use roster_client::recipes::membership::{Group, MemberInfo};
use roster_client::{Client, ClientOptions, CreateOptions};
use roster_embed::{Builder, Embedded};

/// The longest any single step may take.
const STEP: Duration = Duration::from_secs(30);

/// `ROSTER_TEST_LOG=roster_server=debug` shows the nodes' logs (through this process's subscriber,
/// as in an application).
fn init_log() {
    if let Ok(filter) = std::env::var("ROSTER_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// `n` distinct free loopback addresses: every listener is held until all ports are known (a port
/// released before the next `bind(0)` can be handed out again).
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("no free port"))
        .collect();
    held.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn builder(dir: &Path, peer: SocketAddr, seed: Option<SocketAddr>) -> Builder {
    init_log();
    Embedded::builder(dir)
        .peer_addr(peer)
        .join(seed.map(|s| s.to_string()))
        // Sessions as short as 1 s, so a dead instance's ephemerals go quickly.
        .configure(|c| c.min_session_timeout_ms = 1_000)
}

fn options() -> ClientOptions {
    ClientOptions {
        session_timeout: Duration::from_secs(2),
        connect_timeout: Some(STEP),
        request_timeout: Some(STEP),
        ..Default::default()
    }
}

/// Polls `f` until it is true, or panics saying what did not happen.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn members(c: &Client, path: &str) -> BTreeSet<String> {
    Group::new(c, path)
        .members()
        .await
        .expect("group members")
        .ids()
        .into_iter()
        .collect()
}

/// The one Raft leader all running nodes agree on.
fn agreed_leader(nodes: &[&Embedded]) -> Option<u64> {
    let leaders: BTreeSet<Option<u64>> = nodes.iter().map(|n| n.status().leader).collect();
    match leaders.into_iter().collect::<Vec<_>>()[..] {
        [Some(l)] => Some(l),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_fail_over_restart_and_leave() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let peers: Vec<SocketAddr> = free_addrs(3);
    // The first instance bootstraps; the others join it by address, with no other configuration.
    let mut nodes: Vec<Option<Embedded>> = Vec::new();
    for i in 0..3 {
        let seed = (i > 0).then(|| peers[0]);
        let n = builder(dirs[i].path(), peers[i], seed)
            .start()
            .await
            .unwrap_or_else(|e| panic!("instance {i} starts: {e}"));
        nodes.push(Some(n));
    }
    let ids: Vec<u64> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().node_id())
        .collect();
    assert_eq!(ids[0], 1, "the bootstrapping instance is node 1");
    let all = |nodes: &Vec<Option<Embedded>>| -> Vec<u64> {
        nodes.iter().flatten().map(|n| n.node_id()).collect()
    };
    {
        let running: Vec<&Embedded> = nodes.iter().flatten().collect();
        eventually("three voters everywhere", || {
            running.iter().all(|n| {
                let s = n.status();
                s.members.len() == 3 && s.members.iter().all(|m| m.voter)
            })
        })
        .await;
    }

    // Each instance's application: an in-process session, a group member and an election candidate.
    let mut apps = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let n = n.as_ref().unwrap();
        let c = n.client(options()).await.expect("in-process client");
        let m = Group::new(&c, "/app/members")
            .join(
                &format!("app-{i}"),
                MemberInfo::new("127.0.0.1", 8000 + i as u16),
            )
            .await
            .expect("join group");
        let cand = LeaderElection::new(&c, "/app/leader", &format!("app-{i}"))
            .join()
            .await
            .expect("join election");
        apps.push(Some((c, m, cand)));
    }
    let c0 = apps[0].as_ref().unwrap().0.clone();
    assert_eq!(
        members(&c0, "/app/members").await,
        BTreeSet::from(["app-0".into(), "app-1".into(), "app-2".into()])
    );
    // A write through one instance is read through another, in process.
    c0.create("/app/config", b"v1", &CreateOptions::default())
        .await
        .unwrap();
    let c2 = apps[2].as_ref().unwrap().0.clone();
    c2.sync("/app/config").await.unwrap();
    assert_eq!(c2.get_data("/app/config").await.unwrap().0, b"v1".to_vec());

    // The Raft leader's instance dies (without leaving): cluster and application fail over together.
    let leader = {
        let running: Vec<&Embedded> = nodes.iter().flatten().collect();
        let mut l = None;
        eventually("an agreed leader", || {
            l = agreed_leader(&running);
            l.is_some()
        })
        .await;
        l.unwrap()
    };
    let dead = ids.iter().position(|id| *id == leader).unwrap();
    let (dead_client, dead_member, dead_cand) = apps[dead].take().unwrap();
    std::mem::forget((dead_member, dead_cand)); // a crash: nothing is cleaned up by the application
    nodes[dead].take().unwrap().shutdown_leaving(false).await;
    drop(dead_client);
    {
        let running: Vec<&Embedded> = nodes.iter().flatten().collect();
        eventually("a new leader among the survivors", || {
            agreed_leader(&running).is_some_and(|l| l != leader)
        })
        .await;
    }
    let survivor = (0..3).find(|i| *i != dead).unwrap();
    let cs = apps[survivor].as_ref().unwrap().0.clone();
    let gone = format!("app-{dead}");
    let deadline = Instant::now() + STEP;
    while members(&cs, "/app/members").await.contains(&gone) {
        assert!(
            Instant::now() < deadline,
            "{gone}'s membership never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The election moved to a surviving instance.
    let mut elected = None;
    let deadline = Instant::now() + STEP;
    while elected.is_none() {
        elected = apps
            .iter()
            .flatten()
            .find(|(_, _, cand)| cand.is_leader())
            .map(|(_, _, cand)| cand.id().to_string());
        assert!(
            Instant::now() < deadline,
            "no surviving instance was elected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(elected.as_deref(), Some(gone.as_str()));
    // Writes still work with two of three voters.
    cs.set_data("/app/config", b"v2", None).await.unwrap();

    // The dead instance restarts on its data directory: it rejoins as itself (its join address is
    // ignored) and catches up.
    let restarted = builder(dirs[dead].path(), peers[dead], Some(peers[survivor]))
        .start()
        .await
        .expect("restart");
    assert_eq!(
        restarted.node_id(),
        leader,
        "a restarted instance keeps its node id"
    );
    nodes[dead] = Some(restarted);
    let rc = nodes[dead]
        .as_ref()
        .unwrap()
        .client(options())
        .await
        .expect("client after restart");
    rc.sync("/app/config").await.unwrap();
    assert_eq!(rc.get_data("/app/config").await.unwrap().0, b"v2".to_vec());
    {
        let running: Vec<&Embedded> = nodes.iter().flatten().collect();
        eventually("three voters again", || {
            running
                .iter()
                .all(|n| n.status().members.iter().filter(|m| m.voter).count() == 3)
        })
        .await;
    }

    // A graceful leave: the instance is removed from the membership, not counted as a down voter.
    let leaver = (0..3).find(|i| *i != dead && *i != survivor).unwrap();
    let leaver_id = ids[leaver];
    drop(apps[leaver].take());
    nodes[leaver].take().unwrap().shutdown_leaving(true).await;
    {
        let running: Vec<&Embedded> = nodes.iter().flatten().collect();
        eventually("the leaver removed from the membership", || {
            running.iter().all(|n| {
                let s = n.status();
                s.members.len() == 2 && s.members.iter().all(|m| m.node_id != leaver_id)
            })
        })
        .await;
        // A leader that leaves steps down only once its removal is committed, and the two others
        // then elect one: a write sent inside that election may see a connection loss, as with
        // ZooKeeper. Wait for the election, then write.
        eventually("a leader agreed by the two left", || {
            agreed_leader(&running).is_some_and(|l| l != leaver_id)
        })
        .await;
    }
    rc.set_data("/app/config", b"v3", None).await.unwrap();
    assert_eq!(all(&nodes).len(), 2);
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_voter_is_replaced_by_a_learner_when_configured() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let peers: Vec<SocketAddr> = free_addrs(4);
    let mut nodes: Vec<Option<Embedded>> = Vec::new();
    for i in 0..4 {
        let seed = (i > 0).then(|| peers[0]);
        let n = builder(dirs[i].path(), peers[i], seed)
            .replace_dead_voters(Some(Duration::from_secs(2)))
            .start()
            .await
            .unwrap_or_else(|e| panic!("instance {i} starts: {e}"));
        nodes.push(Some(n));
    }
    let ids: Vec<u64> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().node_id())
        .collect();
    let voters_of = |n: &Embedded| -> BTreeSet<u64> {
        n.status()
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.node_id)
            .collect()
    };
    {
        let running: Vec<&Embedded> = nodes.iter().flatten().collect();
        eventually("3 voters and 1 learner", || {
            running.iter().all(|n| {
                let s = n.status();
                s.members.len() == 4 && s.members.iter().filter(|m| m.voter).count() == 3
            })
        })
        .await;
    }
    let learner = {
        let n = nodes[0].as_ref().unwrap();
        let v = voters_of(n);
        *ids.iter().find(|id| !v.contains(id)).unwrap()
    };
    // A voter that is not the leader dies.
    let leader = nodes[0].as_ref().unwrap().status().leader.unwrap();
    let dead = ids
        .iter()
        .position(|id| *id != leader && *id != learner)
        .unwrap();
    let dead_id = ids[dead];
    nodes[dead].take().unwrap().shutdown_leaving(false).await;
    {
        let running: Vec<&Embedded> = nodes.iter().flatten().collect();
        eventually("the learner promoted in the dead voter's place", || {
            running.iter().all(|n| {
                let v = voters_of(n);
                v.len() == 3 && v.contains(&learner) && !v.contains(&dead_id)
            })
        })
        .await;
    }
    // It comes back as a learner, still a member, and catches up.
    let back = builder(dirs[dead].path(), peers[dead], None)
        .replace_dead_voters(Some(Duration::from_secs(2)))
        .start()
        .await
        .expect("restart");
    assert_eq!(back.node_id(), dead_id);
    nodes[dead] = Some(back);
    {
        let running: Vec<&Embedded> = nodes.iter().flatten().collect();
        eventually("the returned instance is a learner", || {
            running.iter().all(|n| {
                let s = n.status();
                s.members.len() == 4 && s.members.iter().any(|m| m.node_id == dead_id && !m.voter)
            })
        })
        .await;
    }
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_instance_without_ports_serves_in_process_and_shows_in_cons() {
    let dir = tempfile::tempdir().unwrap();
    // No client port: in-process clients only.
    let quiet = builder(dir.path(), free_addrs(1)[0], None)
        .start()
        .await
        .unwrap();
    assert_eq!(quiet.client_addr(), None);
    let c = quiet.client(options()).await.unwrap();
    c.create("/x", b"1", &CreateOptions::default())
        .await
        .unwrap();
    let (data, _) = c.get_data("/x").await.unwrap();
    assert_eq!(data, b"1".to_vec());
    // After shutdown the in-process server is gone: a new client cannot connect.
    let cs = quiet.connect_string();
    quiet.shutdown().await;
    let err = Client::connect(
        &cs,
        ClientOptions {
            connect_timeout: Some(Duration::from_secs(1)),
            ..options()
        },
    )
    .await
    .err();
    assert!(err.is_some(), "connected to a node that was shut down");

    // With a client port, outside clients see the in-process connection as "in-process".
    let dir2 = tempfile::tempdir().unwrap();
    let addrs = free_addrs(2);
    let node = builder(dir2.path(), addrs[0], None)
        .client_addr(Some(addrs[1]))
        .start()
        .await
        .unwrap();
    let inproc = node.client(options()).await.unwrap();
    inproc.exists("/").await.unwrap();
    let addr = node.client_addr().unwrap();
    let cons = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"cons").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(cons.contains("/in-process["), "cons: {cons}");
    node.shutdown().await;
}

/// Raft has threads of its own (the node's cluster plane): an application whose runtime stalls (a
/// blocking call in an async task, thousands of busy connections) does not stall its node's
/// heartbeats, so the other members keep it as their leader. Node 1 starts on a runtime of its own
/// with one worker; that worker is then blocked for 3 s, ten times the longest election timeout. On
/// a node whose Raft ran on the caller's runtime, the other two elected a new leader in a higher term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_application_runtime_does_not_stall_its_nodes_raft() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let peers: Vec<SocketAddr> = free_addrs(3);
    let app = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let first = builder(dirs[0].path(), peers[0], None);
    let n1 = app
        .spawn(first.start())
        .await
        .unwrap()
        .expect("node 1 starts on the application's runtime");
    let mut others = Vec::new();
    for i in 1..3 {
        let n = builder(dirs[i].path(), peers[i], Some(peers[0]))
            .start()
            .await
            .unwrap_or_else(|e| panic!("instance {i} starts: {e}"));
        others.push(n);
    }
    eventually("three voters led by node 1", || {
        others.iter().chain([&n1]).all(|n| {
            let s = n.status();
            s.leader == Some(1) && s.members.len() == 3 && s.members.iter().all(|m| m.voter)
        })
    })
    .await;
    let term = n1.status().term;

    // The application's only worker thread blocks for 3 s.
    let stall = Duration::from_secs(3);
    let blocked = app.spawn(async move { std::thread::sleep(stall) });
    let until = Instant::now() + stall;
    while Instant::now() < until {
        for n in &others {
            let s = n.status();
            assert_eq!(
                (s.leader, s.term),
                (Some(1), term),
                "node {} lost node 1 as leader while node 1's application runtime was blocked",
                n.node_id()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blocked.await.unwrap();
    let s = n1.status();
    assert_eq!(
        (s.state.as_str(), s.term),
        ("Leader", term),
        "node 1 after the stall"
    );

    for n in others {
        n.shutdown().await;
    }
    app.spawn(n1.shutdown()).await.unwrap();
    app.shutdown_background();
}
