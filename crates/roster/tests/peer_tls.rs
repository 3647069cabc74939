//! Peer TLS end to end on loopback: three real `roster serve` processes with certificates from
//! `roster tls init`. The cluster forms and replicates; then the attacks of issue 10 item 4 must fail
//! while it keeps serving: a node without a certificate, with one from another CA, or with a node
//! certificate for another address cannot join; `roster cluster status/remove` without the
//! administrator certificate fail (and work with it); forged vote requests (plain TCP, another CA's
//! certificate, the administrator's certificate) are refused and move neither the term nor the leader.

mod support;

use roster_server::cluster::admin;
use roster_server::raft::rpc::{self, RaftRequest};
use roster_server::raft::types::TypeConfig;
use roster_server::transport::link::Link;
use roster_server::transport::tls::PeerTls;
use roster_server::transport::wire::{Hello, LinkKind, PeerRequest, PeerResponse, StatusInfo};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn roster() -> Command {
    Command::new(env!("CARGO_BIN_EXE_roster"))
}

/// `roster tls init --dir DIR --nodes NODES`.
fn tls_init(dir: &Path, nodes: &str) {
    let out = roster()
        .args(["tls", "init", "--dir"])
        .arg(dir)
        .args(["--nodes", nodes])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tls init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn flags(dir: &Path, node: &str) -> Vec<String> {
    let f = |n: &str| dir.join(n).display().to_string();
    vec![
        "--peer-tls-cert".into(),
        f(&format!("{node}.pem")),
        "--peer-tls-key".into(),
        f(&format!("{node}-key.pem")),
        "--peer-tls-ca".into(),
        f("ca.pem"),
    ]
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn admin_tls(dir: &Path) -> PeerTls {
    PeerTls::load_client(
        &dir.join("admin.pem"),
        &dir.join("admin-key.pem"),
        &dir.join("ca.pem"),
    )
    .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn status(peer: &str, tls: &PeerTls) -> StatusInfo {
    rt().block_on(admin::status(peer, Some(tls))).unwrap()
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A node process that tries to join `seed` with `extra` flags; not waited for (it never serves).
struct Rogue {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Rogue {
    fn start(seed: &str, extra: &[String]) -> Rogue {
        let dir = tempfile::tempdir().unwrap();
        let child = roster()
            .args([
                "serve",
                "--client-addr",
                &free_addr(),
                "--admin-addr",
                "off",
            ])
            .args(["--peer-addr", &free_addr(), "--join", seed, "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        Rogue { child, _dir: dir }
    }

    /// Waits up to `limit` for the process to exit; its status and what it printed.
    fn exit_within(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, String)> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                let err =
                    std::fs::read_to_string(self._dir.path().join("stderr")).unwrap_or_default();
                return Some((st, err));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `a`'s log has `needle` (the node saw and refused the attempt).
fn wait_log(a: &Roster, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !a.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `/k` through `a` and reads it back through `c` (after a sync).
fn write_and_read(a: &Roster, c: &Roster, k: &str) {
    let mut w = connect_retry(a.addr, 10_000, Duration::from_secs(30));
    let r = w.create(&format!("/{k}"), k.as_bytes(), 0);
    assert_eq!(r.err, 0, "create /{k}");
    let got = subtree(c.addr, "");
    assert_eq!(
        got.get(&format!("/{k}")).map(Vec::as_slice),
        Some(k.as_bytes())
    );
}

/// A vote request from a made-up node 99 for a term far ahead, as a leadership transfer (what moved
/// the leader within 2 s on a plain-text peer port).
fn forged_vote(term: u64) -> PeerRequest {
    let mut req =
        openraft::raft::VoteRequest::<TypeConfig>::new(openraft::Vote::new(term, 99), None);
    req.leadership_transfer = true;
    PeerRequest::Raft(rpc::encode(&RaftRequest::Vote(req)).unwrap())
}

fn hello(cluster_id: &str) -> Hello {
    Hello {
        cluster_id: Some(cluster_id.to_string()),
        from: 99,
        to: None,
        kind: LinkKind::Raft,
    }
}

#[test]
fn tls_peers_form_a_cluster_and_refuse_every_peer_port_attack() {
    let _serial = serial();
    let certs = tempfile::tempdir().unwrap();
    let dir: PathBuf = certs.path().join("cluster");
    tls_init(&dir, "n1=127.0.0.1,n2=127.0.0.1,n3=127.0.0.1");
    let other = certs.path().join("other");
    tls_init(&other, "r=127.0.0.1");
    // A second run on the same directory keeps the CA: n4 is a valid node, but for another address.
    tls_init(&dir, "n4=127.0.0.9");

    let a = Roster::start(&as_strs(&flags(&dir, "n1")));
    let b = Roster::join(&a, &as_strs(&flags(&dir, "n2")));
    // Through a follower: the leader accepts a join forwarded with a member's certificate.
    let c = Roster::join(&b, &as_strs(&flags(&dir, "n3")));
    let admin_tls = admin_tls(&dir);
    let seed = a.peer.to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let s = status(&seed, &admin_tls);
        if s.members.iter().filter(|m| m.voter).count() == 3 && s.leader.is_some() {
            break s;
        }
        assert!(Instant::now() < deadline, "no 3-voter cluster: {s:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    write_and_read(&a, &c, "before");

    // Nodes without a certificate, with another CA's, or with a node certificate for another address.
    {
        let _plain = Rogue::start(&seed, &[]);
        wait_log(&a, "peer connection refused");
        let mut wrong_ca = Rogue::start(&seed, &flags(&other, "r"));
        let _wrong_addr = Rogue::start(&seed, &flags(&dir, "n4"));
        wait_log(&a, "is not valid for 127.0.0.1");
        // A certificate failure is permanent: the node stops at once with the reason, instead of
        // retrying its join for a minute.
        let (st, err) = wrong_ca
            .exit_within(Duration::from_secs(20))
            .expect("a node with another CA's certificate still runs after 20 s");
        assert!(!st.success(), "it exited with success: {err}");
        assert!(
            err.contains("certificate refused") && err.contains("docs/security.md"),
            "the error names the certificate and where to read: {err}"
        );
        std::thread::sleep(Duration::from_secs(3));
        let s = status(&seed, &admin_tls);
        assert_eq!(s.members.len(), 3, "a rogue node was admitted: {s:?}");
    }

    // `roster cluster` without the administrator certificate fails, with it works.
    let out = roster()
        .args(["cluster", "status", "--server", &seed])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tls-dir"),
        "the error says what to do: {err}"
    );
    let out = roster()
        .args(["cluster", "--tls-dir"])
        .arg(&dir)
        .args(["status", "--server", &seed])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&before.cluster_id));
    let victim = status(&c.peer.to_string(), &admin_tls).node_id;
    let out = roster()
        .args(["cluster", "remove", &victim.to_string(), "--server", &seed])
        .output()
        .unwrap();
    assert!(!out.status.success(), "unauthenticated remove succeeded");
    let out = roster()
        .args(["cluster", "remove", &victim.to_string(), "--server", &seed])
        .arg("--tls-dir")
        .arg(&other)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "remove with another CA's certificate succeeded"
    );
    assert_eq!(status(&seed, &admin_tls).members.len(), 3);

    // Forged votes: plain TCP and another CA's certificate never get past the handshake; the
    // administrator's certificate gets a connection but no Raft request through.
    let term = before.term;
    rt().block_on(async {
        let cid = &before.cluster_id;
        let other_node = PeerTls::load_node(
            &other.join("r.pem"),
            &other.join("r-key.pem"),
            &other.join("ca.pem"),
        )
        .unwrap();
        for tls in [None, Some(&other_node)] {
            match Link::connect(&seed, hello(cid), Duration::from_secs(5), tls).await {
                Err(_) => {}
                Ok(l) => {
                    let r = l
                        .call(forged_vote(term + 100), Duration::from_secs(5))
                        .await;
                    assert!(
                        !matches!(r, Ok(PeerResponse::Raft(_))),
                        "a forged vote was answered: {r:?}"
                    );
                }
            }
        }
        let l = Link::connect(&seed, hello(cid), Duration::from_secs(5), Some(&admin_tls))
            .await
            .unwrap();
        for _ in 0..20 {
            match l
                .call(forged_vote(term + 100), Duration::from_secs(5))
                .await
            {
                Ok(PeerResponse::Err(e)) => {
                    assert!(e.to_string().contains("administrator"), "{e}")
                }
                other => panic!("a forged vote was not refused: {other:?}"),
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    for n in [&a, &b, &c] {
        let s = status(&n.peer.to_string(), &admin_tls);
        assert_eq!(
            (s.term, s.leader),
            (before.term, before.leader),
            "term or leader moved on node {}",
            s.node_id
        );
    }
    write_and_read(&a, &c, "after");

    // The administrator removes a follower.
    let out = roster()
        .args(["cluster", "remove", &victim.to_string(), "--server", &seed])
        .arg("--tls-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status(&seed, &admin_tls).members.len(), 2);
    drop(b);
}

/// The bytes of a forged vote, as tests/faults/test_peer_security.py writes them by hand (so that
/// its attacker sends what a node would): variant, term, Some(candidate), committed, no last log
/// id, leadership transfer.
#[test]
fn forged_vote_layout_matches_the_python_attacker() {
    match forged_vote(5) {
        PeerRequest::Raft(blob) => assert_eq!(blob.0, [1, 5, 1, 99, 0, 0, 1]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn plain_peers_off_loopback_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = roster()
        .args(["serve", "--peer-addr", "10.254.254.1:2888", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("roster tls init") && err.contains("--insecure-peers"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
}
