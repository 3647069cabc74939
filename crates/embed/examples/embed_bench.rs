//! The numbers of docs/embedding.md: in-process client against the TCP client on loopback, on one
//! embedded node and on a three-node embedded cluster in this process, and the memory an embedded
//! node adds to a process.
//!
//! ```text
//! cargo run --release -p roster-embed --example embed_bench            # 2000 ops per measurement
//! cargo run --release -p roster-embed --example embed_bench -- 5000    # another count
//! ```
//!
//! Each measurement is `count` sequential calls from one session (one outstanding request): writes
//! are `set_data` of 100 bytes (a Raft entry, fsynced, before the answer), reads `get_data` of the
//! same node, in three rounds alternating the two transports. Reported: p50 and p99 in microseconds
//! (the median of the rounds), and the in-process/TCP ratio. Memory: the
//! process's resident set (`/proc/self/statm`) before the first node starts, after it started, and
//! after 10 000 znodes of 100 bytes were written. Bounded: a few counts of sequential calls, then it
//! exits. Nothing here asserts a timing; it prints what it measured.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use roster_client::{Client, ClientOptions, CreateOptions};
use roster_embed::Embedded;

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free port")
}

/// Resident set size of this process, MiB.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// (p50, p99) in µs of `count` sequential writes and reads through `c`.
async fn measure(c: &Client, path: &str, count: usize) -> ((f64, f64), (f64, f64)) {
    let _ = c.create(path, b"", &CreateOptions::default()).await;
    let data = vec![b'x'; 100];
    for _ in 0..50 {
        c.set_data(path, &data, None).await.expect("warm-up write");
        c.get_data(path).await.expect("warm-up read");
    }
    let mut writes = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        c.set_data(path, &data, None).await.expect("write");
        writes.push(t.elapsed());
    }
    let mut reads = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        c.get_data(path).await.expect("read");
        reads.push(t.elapsed());
    }
    writes.sort();
    reads.sort();
    (
        (percentile(&writes, 0.5), percentile(&writes, 0.99)),
        (percentile(&reads, 0.5), percentile(&reads, 0.99)),
    )
}

fn options() -> ClientOptions {
    ClientOptions {
        session_timeout: Duration::from_secs(10),
        request_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    }
}

async fn compare(what: &str, node: &Embedded, count: usize) {
    let inproc = node.client(options()).await.expect("in-process client");
    let tcp = Client::connect(&node.client_addr().unwrap().to_string(), options())
        .await
        .expect("tcp client");
    // Three rounds, alternating the transports so neither always runs on a warmer node; each row is
    // the median of the three rounds' percentiles.
    let (mut wi, mut ri, mut wt, mut rt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        let (w, r) = measure(&inproc, &format!("/bench-inproc-{round}"), count).await;
        wi.push(w);
        ri.push(r);
        let (w, r) = measure(&tcp, &format!("/bench-tcp-{round}"), count).await;
        wt.push(w);
        rt.push(r);
    }
    let median = |v: &Vec<(f64, f64)>| {
        let mut a: Vec<f64> = v.iter().map(|x| x.0).collect();
        let mut b: Vec<f64> = v.iter().map(|x| x.1).collect();
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        (a[a.len() / 2], b[b.len() / 2])
    };
    let (wi, ri, wt, rt) = (median(&wi), median(&ri), median(&wt), median(&rt));
    println!("{what}: {count} sequential ops per row, µs");
    println!("  write  in-process p50 {:>8.1} p99 {:>8.1}", wi.0, wi.1);
    println!("  write  tcp        p50 {:>8.1} p99 {:>8.1}", wt.0, wt.1);
    println!(
        "  write  in-process/tcp p50 {:.2} p99 {:.2}",
        wi.0 / wt.0,
        wi.1 / wt.1
    );
    println!("  read   in-process p50 {:>8.1} p99 {:>8.1}", ri.0, ri.1);
    println!("  read   tcp        p50 {:>8.1} p99 {:>8.1}", rt.0, rt.1);
    println!(
        "  read   in-process/tcp p50 {:.2} p99 {:.2}",
        ri.0 / rt.0,
        ri.1 / rt.1
    );
    inproc.close().await.ok();
    tcp.close().await.ok();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let work = tempfile::tempdir().expect("temporary directory");

    let before = rss_mib();
    let single = Embedded::builder(work.path().join("single"))
        .peer_addr(free_addr())
        .client_addr(Some(free_addr()))
        .start()
        .await
        .expect("single node starts");
    let started = rss_mib();
    {
        let c = single.client(options()).await.expect("client");
        c.create("/mem", b"", &CreateOptions::default())
            .await
            .expect("create");
        let data = vec![b'm'; 100];
        for i in 0..10_000 {
            c.create(&format!("/mem/n{i:05}"), &data, &CreateOptions::default())
                .await
                .expect("create");
        }
        c.close().await.ok();
    }
    let loaded = rss_mib();
    println!(
        "memory: process RSS {before:.1} MiB before the node, {started:.1} MiB with it started (+{:.1}), {loaded:.1} MiB after 10 000 znodes of 100 bytes (+{:.1})",
        started - before,
        loaded - before
    );
    compare("one embedded node", &single, count).await;
    single.shutdown().await;

    let peers: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let mut nodes = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let n = Embedded::builder(work.path().join(format!("n{i}")))
            .peer_addr(*peer)
            .join((i > 0).then(|| peers[0].to_string()))
            .client_addr(Some(free_addr()))
            .start()
            .await
            .expect("node starts");
        nodes.push(n);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes
        .iter()
        .all(|n| n.status().members.iter().filter(|m| m.voter).count() == 3)
    {
        assert!(Instant::now() < deadline, "the cluster did not form");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = nodes[0].status().leader.expect("a leader");
    let on_leader = nodes.iter().find(|n| n.node_id() == leader).unwrap();
    compare("3 embedded nodes, client on the leader", on_leader, count).await;
    let on_follower = nodes.iter().find(|n| n.node_id() != leader).unwrap();
    compare("3 embedded nodes, client on a follower", on_follower, count).await;
    for n in nodes {
        n.shutdown().await;
    }
}
