//! An independent write load through the `zookeeper-client` crate (not Roster's own bench client): the
//! shape of issue 15 item 5. `--sessions` sessions, each pinned to one server of `--servers` round-robin
//! (its connect string names that server alone), each keeping `--depth` requests in flight, 100-byte
//! values, creates of new nodes or setData on random keys out of `--keys`. Prints a JSON report in the
//! shape `roster bench --json` writes (so `roster bench --compare` puts it beside the others): ops/s,
//! latency percentiles, errors, the servers' CPU per operation (`--server-pids`) and this process's own
//! CPU seconds (the load generator's cost, read beside the servers'). One workload per run; everything
//! else `roster bench` measures is left out. `scripts/bench` runs it as the `pinned-create` and
//! `pinned-set` phases.
//!
//! Run: `cargo run --release --example zkc_load -- --servers A,B,C --op set --duration 10`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

/// The `/proc` readings `roster bench` takes (CPU seconds of a process), shared rather than repeated;
/// the load itself goes through `zookeeper-client` only.
#[allow(dead_code)]
#[path = "../src/bench/procfs.rs"]
mod procfs;

struct Args {
    servers: Vec<String>,
    sessions: usize,
    depth: usize,
    keys: u64,
    op: String,
    duration: Duration,
    warmup: Duration,
    root: String,
    pids: Vec<u32>,
    label: String,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        servers: vec![],
        sessions: 16,
        depth: 32,
        keys: 10_000,
        op: "set".into(),
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        root: "/zkc".into(),
        pids: vec![],
        label: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--servers" => a.servers = v.split(',').map(str::to_string).collect(),
            "--sessions" => a.sessions = num(&v)? as usize,
            "--depth" => a.depth = num(&v)? as usize,
            "--keys" => a.keys = num(&v)?,
            "--op" => a.op = v,
            "--duration" => a.duration = Duration::from_secs_f64(num(&v)? as f64),
            "--warmup" => a.warmup = Duration::from_secs_f64(num(&v)? as f64),
            "--root" => a.root = v,
            "--label" => a.label = v,
            "--server-pids" => {
                a.pids = v
                    .split(',')
                    .map(|p| {
                        p.parse::<u32>()
                            .map_err(|e| format!("--server-pids {p}: {e}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.servers.is_empty() {
        return Err("--servers HOST:PORT[,HOST:PORT...] is required".into());
    }
    if a.op != "set" && a.op != "create" {
        return Err("--op is set or create".into());
    }
    Ok(a)
}

#[tokio::main]
async fn main() {
    let args = match parse() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("zkc_load: {e}");
            std::process::exit(2);
        }
    };
    let value = vec![b'v'; 100];
    let persistent =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());

    // Setup through the first server: the root and, for set, the keys.
    let setup = zookeeper_client::Client::connect(&args.servers[0])
        .await
        .expect("connect for setup");
    match setup.create(&args.root, b"", &persistent).await {
        Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
        Err(e) => panic!("create {}: {e}", args.root),
    }
    if args.op == "set" {
        let mut pending = FuturesUnordered::new();
        for k in 0..args.keys {
            let path = format!("{}/k{k}", args.root);
            let (setup, value, persistent) = (&setup, &value, &persistent);
            pending.push(async move { setup.create(&path, value, persistent).await });
            if pending.len() >= 256 {
                if let Some(Err(e)) = pending.next().await {
                    assert!(
                        matches!(e, zookeeper_client::Error::NodeExists),
                        "setup create: {e}"
                    );
                }
            }
        }
        while let Some(r) = pending.next().await {
            if let Err(e) = r {
                assert!(
                    matches!(e, zookeeper_client::Error::NodeExists),
                    "setup create: {e}"
                );
            }
        }
    }

    let mut clients = Vec::new();
    for s in 0..args.sessions {
        let server = &args.servers[s % args.servers.len()];
        clients.push(
            zookeeper_client::Client::connect(server)
                .await
                .expect("connect"),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (s, client) in clients.into_iter().enumerate() {
        let (args, stop, measuring, done, errors, value) = (
            args.clone(),
            stop.clone(),
            measuring.clone(),
            done.clone(),
            errors.clone(),
            value.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).unwrap();
            let persistent = zookeeper_client::CreateMode::Persistent
                .with_acls(zookeeper_client::Acls::anyone_all());
            let mut seq = 0u64;
            let mut rng = (s as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut inflight = FuturesUnordered::new();
            loop {
                while inflight.len() < args.depth && !stop.load(Ordering::Relaxed) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let path = if args.op == "create" {
                        seq += 1;
                        format!("{}/c{s}-{seq}", args.root)
                    } else {
                        format!("{}/k{}", args.root, rng % args.keys)
                    };
                    let t0 = Instant::now();
                    let (c, value, persistent) = (&client, &value, &persistent);
                    let fut: std::pin::Pin<
                        Box<dyn std::future::Future<Output = bool> + Send + '_>,
                    > = if args.op == "create" {
                        Box::pin(async move { c.create(&path, value, persistent).await.is_ok() })
                    } else {
                        Box::pin(async move { c.set_data(&path, value, None).await.is_ok() })
                    };
                    inflight.push(async move { (fut.await, t0) });
                }
                match inflight.next().await {
                    Some((ok, t0)) => {
                        if measuring.load(Ordering::Relaxed) {
                            done.fetch_add(1, Ordering::Relaxed);
                            if !ok {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                            let _ = hist.record(t0.elapsed().as_nanos() as u64);
                        }
                    }
                    None => break,
                }
            }
            hist
        }));
    }
    tokio::time::sleep(args.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let servers_cpu =
        |pids: &[u32]| -> Vec<Option<f64>> { pids.iter().map(|&p| procfs::cpu_secs(p)).collect() };
    let (t0, c0, s0) = (
        Instant::now(),
        procfs::self_cpu_secs(),
        servers_cpu(&args.pids),
    );
    tokio::time::sleep(args.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let (secs, cpu, s1) = (
        t0.elapsed().as_secs_f64(),
        procfs::self_cpu_secs() - c0,
        servers_cpu(&args.pids),
    );
    let n = done.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut all = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).unwrap();
    for t in tasks {
        all.add(t.await.expect("session task")).unwrap();
    }
    let errs = errors.load(Ordering::Relaxed);
    let ms = |ns: u64| ns as f64 / 1e6;
    let usage: Vec<serde_json::Value> = args
        .pids
        .iter()
        .zip(s0.iter().zip(&s1))
        .map(|(pid, (a, b))| {
            serde_json::json!({"pid": pid, "cpu_s": a.zip(*b).map(|(a, b)| b - a),
                "rss_before_mib": null, "rss_after_mib": null})
        })
        .collect();
    let server_cpu: Option<f64> = s0
        .iter()
        .zip(&s1)
        .map(|(a, b)| a.zip(*b).map(|(a, b)| b - a))
        .sum();
    let workload = format!("pinned-{}", args.op);
    let description = format!(
        "{} (100 B) through the zookeeper-client crate, {} sessions x {} in flight, each pinned to one server",
        if args.op == "create" { "create of new nodes" } else { "setData on random keys" },
        args.sessions,
        args.depth
    );
    let report = serde_json::json!({
        "label": args.label,
        "bench_version": "zkc_load",
        "servers": args.servers,
        "server_pids": args.pids,
        "sessions": args.sessions,
        "depth": args.depth,
        "payload_bytes": 100,
        "started_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "results": [{
            "workload": workload,
            "description": description,
            "error": if n == 0 { Some("no operation completed") } else { None },
            "elapsed_s": secs,
            "ops": n,
            "errors": errs,
            "throughput": n as f64 / secs,
            "unit": "ops",
            "latency": if all.is_empty() { serde_json::Value::Null } else { serde_json::json!({
                "count": all.len(),
                "mean_ms": all.mean() / 1e6,
                "p50_ms": ms(all.value_at_quantile(0.5)),
                "p99_ms": ms(all.value_at_quantile(0.99)),
                "p999_ms": ms(all.value_at_quantile(0.999)),
                "max_ms": ms(all.max()),
            })},
            "extras": [],
            "servers": usage,
            "server_cpu_us_per_op": server_cpu.filter(|_| n > 0).map(|c| c * 1e6 / n as f64),
            "client_cpu_s": cpu,
        }],
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("a JSON value serializes")
    );
    eprintln!(
        "{workload}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {errs} errors, client CPU {cpu:.2} s",
        n as f64 / secs,
        ms(all.value_at_quantile(0.5)),
        ms(all.value_at_quantile(0.99))
    );
}
