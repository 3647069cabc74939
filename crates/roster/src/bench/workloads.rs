//! The workloads. Each takes the run context and a progress bar and returns its measurements; the caller
//! adds CPU and memory of the server processes around it.

use super::conn::{create_req, delete_req, ensure_path, err_name, Conn, ERR_NODE_EXISTS};
use super::load::{self, LoadSpec};
use super::procfs;
use super::report::{new_hist, Latency, WorkloadResult};
use anyhow::{bail, Context};
use bytes::Bytes;
use indicatif::ProgressBar;
use roster_proto::{
    CreateMode, EventType, ExistsRequest, GetChildrenRequest, GetDataRequest, Request,
    SetDataRequest,
};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Settings and state shared by the workloads of one run.
pub struct Ctx {
    /// Server addresses.
    pub addrs: Vec<SocketAddr>,
    /// Server process ids (may be empty).
    pub pids: Vec<u32>,
    /// Sessions for the load workloads.
    pub sessions: usize,
    /// Requests in flight per session.
    pub depth: usize,
    /// Cap on operations (cycles, trials) per workload.
    pub ops: u64,
    /// Cap on the measured time of each workload.
    pub duration: Duration,
    /// Unmeasured warm-up of the throughput workloads.
    pub warmup: Duration,
    /// Payload size.
    pub payload: Bytes,
    /// Keys for setData/getData/mix.
    pub keys: u64,
    /// Read fraction of the mix.
    pub read_fraction: f64,
    /// Session churn workers.
    pub churn_workers: usize,
    /// Watch notification trials.
    pub watch_trials: u64,
    /// Concurrent ephemeral holders killed in the expiry workload.
    pub expiry_trials: usize,
    /// Session timeout the holders ask for, ms.
    pub expiry_timeout_ms: i32,
    /// Znodes loaded by the memory workload.
    pub znodes: u64,
    /// Time cap of the memory workload's load.
    pub memory_timeout: Duration,
    /// Session timeout of ordinary bench sessions, ms.
    pub session_timeout_ms: i32,
    /// Root of every node the bench creates.
    pub root: String,
    /// Unique per run, so runs never collide.
    pub run_id: String,
    /// Whether the setData/getData keys exist.
    pub keys_loaded: bool,
    /// Leader kills of the failover workload.
    pub failover_trials: usize,
    /// Shell command that kills the leader (failover); else `kill -9` of its pid.
    pub leader_kill_cmd: Option<String>,
    /// Shell command that restarts the killed node and prints its pid (failover).
    pub restart_cmd: Option<String>,
    /// Shell command that snapshots the first server and prints `SECONDS BYTES` (size).
    pub snapshot_cmd: Option<String>,
    /// Shell command that starts a new server joining the cluster and prints `ADDRESS PID` (size).
    pub join_cmd: Option<String>,
    /// Cap on each wait of the failover workload.
    pub failover_timeout: Duration,
    /// Sessions held by the sessions workload.
    pub hold_sessions: usize,
    /// How long the sessions workload holds them.
    pub hold: Duration,
    /// Share of held sessions dropped at once.
    pub kill_fraction: f64,
    /// Session timeout of the held sessions, ms.
    pub hold_timeout_ms: i32,
    /// Sessions: processes holding them (1: this one; more: children of this binary).
    pub hold_procs: usize,
    /// The `--tls-ca` file, passed on to holder processes.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Watcher sessions of the fanout workload.
    pub fanout_watchers: usize,
    /// Trials of the fanout workload.
    pub fanout_trials: u64,
    /// Znodes under the persistent recursive watch (0: skip).
    pub fanout_subtree: u64,
    /// Value sizes of the values workload, bytes.
    pub value_sizes: Vec<usize>,
}

impl Ctx {
    fn keys_dir(&self) -> String {
        format!("{}/keys-{}", self.root, self.payload.len())
    }

    pub(super) fn spec(&self, generator: Arc<load::Generator>) -> LoadSpec {
        LoadSpec {
            addrs: self.addrs.clone(),
            sessions: self.sessions,
            depth: self.depth,
            ops: self.ops,
            duration: self.duration,
            warmup: self.warmup,
            session_timeout_ms: self.session_timeout_ms,
            ignore_errors: vec![],
            generator,
        }
    }

    pub(super) async fn admin(&self) -> anyhow::Result<Conn> {
        Conn::connect(self.addrs[0], self.session_timeout_ms).await
    }

    /// Creates the `keys` nodes used by setData/getData/mix (once per run; existing ones are kept).
    async fn ensure_keys(&mut self, pb: &ProgressBar) -> anyhow::Result<()> {
        if self.keys_loaded {
            return Ok(());
        }
        pb.set_message(format!("creating {} keys", self.keys));
        let mut a = self.admin().await?;
        ensure_path(&mut a, &self.keys_dir()).await?;
        a.close().await;
        let dir = self.keys_dir();
        let payload = self.payload.clone();
        let mut spec = self.spec(Arc::new(move |seq, _| {
            (
                create_req(format!("{dir}/k{seq:07}"), payload.clone(), 0),
                0,
            )
        }));
        spec.ops = self.keys;
        spec.warmup = Duration::ZERO;
        spec.duration = Duration::from_secs(600);
        spec.ignore_errors = vec![ERR_NODE_EXISTS];
        let out = load::run(spec, &ProgressBar::hidden())
            .await
            .context("creating the keys")?;
        if out.ops < self.keys || !out.errors.is_empty() {
            bail!(
                "creating the keys: {} of {} done, errors {:?}",
                out.ops,
                self.keys,
                out.errors
            );
        }
        self.keys_loaded = true;
        Ok(())
    }
}

pub(super) fn load_result(
    name: &str,
    description: String,
    out: &load::LoadOutcome,
) -> WorkloadResult {
    let mut all = new_hist();
    for h in &out.hist {
        let _ = all.add(h);
    }
    let secs = out.elapsed.as_secs_f64();
    let mut r = WorkloadResult {
        workload: name.into(),
        description,
        elapsed_s: secs,
        ops: out.ops,
        errors: out.errors.values().sum(),
        throughput: (secs > 0.0).then(|| out.ops as f64 / secs),
        unit: "ops".into(),
        latency: Latency::of(&all),
        ..Default::default()
    };
    if !out.errors.is_empty() {
        let e: Vec<String> = out
            .errors
            .iter()
            .map(|(k, v)| format!("{v} x {}", err_name(*k)))
            .collect();
        r.error = Some(format!("error replies: {}", e.join(", ")));
    }
    r
}

/// Persistent creates of fresh nodes with the payload.
pub async fn create(ctx: &mut Ctx, pb: &ProgressBar) -> anyhow::Result<WorkloadResult> {
    let dir = format!("{}/create-{}", ctx.root, ctx.run_id);
    let mut a = ctx.admin().await?;
    ensure_path(&mut a, &dir).await?;
    a.close().await;
    let payload = ctx.payload.clone();
    let spec = ctx.spec(Arc::new(move |seq, _| {
        (
            create_req(format!("{dir}/n{seq:09}"), payload.clone(), 0),
            0,
        )
    }));
    let out = load::run(spec, pb).await?;
    Ok(load_result(
        "create",
        format!(
            "create (persistent, {} B), {} sessions x {} in flight",
            ctx.payload.len(),
            ctx.sessions,
            ctx.depth
        ),
        &out,
    ))
}

fn set_req(path: String, data: Bytes) -> Request {
    Request::SetData(SetDataRequest {
        path,
        data: Some(data),
        version: -1,
    })
}

fn get_req(path: String) -> Request {
    Request::GetData(GetDataRequest { path, watch: false })
}

/// setData on random keys.
pub async fn set(ctx: &mut Ctx, pb: &ProgressBar) -> anyhow::Result<WorkloadResult> {
    ctx.ensure_keys(pb).await?;
    let (dir, keys, payload) = (ctx.keys_dir(), ctx.keys, ctx.payload.clone());
    let spec = ctx.spec(Arc::new(move |_, rng| {
        (
            set_req(format!("{dir}/k{:07}", rng.below(keys)), payload.clone()),
            0,
        )
    }));
    let out = load::run(spec, pb).await?;
    Ok(load_result(
        "set",
        format!(
            "setData ({} B) on random keys of {}",
            ctx.payload.len(),
            ctx.keys
        ),
        &out,
    ))
}

/// getData on random keys.
pub async fn get(ctx: &mut Ctx, pb: &ProgressBar) -> anyhow::Result<WorkloadResult> {
    ctx.ensure_keys(pb).await?;
    let (dir, keys) = (ctx.keys_dir(), ctx.keys);
    let spec = ctx.spec(Arc::new(move |_, rng| {
        (get_req(format!("{dir}/k{:07}", rng.below(keys))), 0)
    }));
    let out = load::run(spec, pb).await?;
    Ok(load_result(
        "get",
        format!("getData on random keys of {}", ctx.keys),
        &out,
    ))
}

/// Reads and writes mixed on random keys.
pub async fn mix(ctx: &mut Ctx, pb: &ProgressBar) -> anyhow::Result<WorkloadResult> {
    ctx.ensure_keys(pb).await?;
    let (dir, keys, payload) = (ctx.keys_dir(), ctx.keys, ctx.payload.clone());
    let threshold = (ctx.read_fraction.clamp(0.0, 1.0) * u32::MAX as f64) as u64;
    let spec = ctx.spec(Arc::new(move |_, rng| {
        let path = format!("{dir}/k{:07}", rng.below(keys));
        if (rng.next_u64() >> 32) < threshold {
            (get_req(path), 0)
        } else {
            (set_req(path, payload.clone()), 1)
        }
    }));
    let out = load::run(spec, pb).await?;
    let pct = (ctx.read_fraction * 100.0).round();
    let mut r = load_result(
        "mix",
        format!("{pct}% getData / {}% setData on random keys", 100.0 - pct),
        &out,
    );
    if let Some(l) = Latency::of(&out.hist[0]) {
        r.extra("read_p99", l.p99_ms, "ms", Some(true));
    }
    if let Some(l) = Latency::of(&out.hist[1]) {
        r.extra("write_p99", l.p99_ms, "ms", Some(true));
    }
    Ok(r)
}

/// Unloaded latency: one session, one request in flight, create then setData, getData and delete of the
/// created nodes. Returns one result per operation.
pub async fn latency(ctx: &mut Ctx, pb: &ProgressBar) -> anyhow::Result<Vec<WorkloadResult>> {
    let dir = format!("{}/latency-{}", ctx.root, ctx.run_id);
    let mut c = ctx.admin().await?;
    ensure_path(&mut c, &dir).await?;
    let mut results = Vec::new();
    let mut created = 0u64;
    pb.set_length(4 * ctx.ops);
    for (i, op) in ["create", "set", "get", "delete"].into_iter().enumerate() {
        pb.set_position(i as u64 * ctx.ops);
        pb.set_message(op);
        let n = if op == "create" { ctx.ops } else { created };
        let mut h = new_hist();
        let mut errors = 0u64;
        let start = Instant::now();
        let mut done = 0u64;
        while done < n && start.elapsed() < ctx.duration {
            let path = format!("{dir}/n{done:07}");
            let req = match op {
                "create" => create_req(path, ctx.payload.clone(), 0),
                "set" => set_req(path, ctx.payload.clone()),
                "get" => get_req(path),
                _ => delete_req(path),
            };
            let t = Instant::now();
            let (hd, _) = c.call(&req).await?;
            h.saturating_record((t.elapsed().as_nanos() as u64).max(1));
            if hd.err != 0 {
                errors += 1;
            }
            done += 1;
            if done.is_multiple_of(64) {
                pb.set_position(i as u64 * ctx.ops + done);
            }
        }
        if op == "create" {
            created = done;
        }
        let secs = start.elapsed().as_secs_f64();
        results.push(WorkloadResult {
            workload: format!("latency-{op}"),
            description: format!("{op}, one session, one request in flight"),
            elapsed_s: secs,
            ops: done,
            errors,
            throughput: (secs > 0.0).then(|| done as f64 / secs),
            unit: "ops".into(),
            latency: Latency::of(&h),
            error: (errors > 0).then(|| format!("{errors} error replies")),
            ..Default::default()
        });
    }
    c.close().await;
    Ok(results)
}

/// Session churn: connect, create one ephemeral node, close; `churn_workers` loops at once.
pub async fn churn(ctx: &mut Ctx, pb: &ProgressBar) -> anyhow::Result<WorkloadResult> {
    let dir = format!("{}/churn-{}", ctx.root, ctx.run_id);
    let mut a = ctx.admin().await?;
    ensure_path(&mut a, &dir).await?;
    a.close().await;
    let start = Instant::now();
    let deadline = start + ctx.duration;
    let issued = Arc::new(std::sync::atomic::AtomicU64::new(0));
    pb.set_length(ctx.ops);
    let mut tasks = Vec::new();
    for w in 0..ctx.churn_workers.max(1) {
        let addr = ctx.addrs[w % ctx.addrs.len()];
        let (dir, issued, cap, t, pb) = (
            dir.clone(),
            issued.clone(),
            ctx.ops,
            ctx.session_timeout_ms,
            pb.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut h = new_hist();
            let mut last = Instant::now();
            loop {
                let now = Instant::now();
                if now >= deadline
                    || issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= cap
                {
                    break;
                }
                let mut c = Conn::connect(addr, t).await?;
                let path = format!("{dir}/w{w}-{:x}", c.session_id);
                c.call_ok(
                    &create_req(path, Bytes::new(), CreateMode::Ephemeral.code()),
                    &[],
                )
                .await?;
                let (hd, _) = c.call(&Request::CloseSession).await?;
                if hd.err != 0 {
                    bail!("closeSession failed: {}", err_name(hd.err));
                }
                drop(c);
                last = Instant::now();
                h.saturating_record((last - now).as_nanos() as u64);
                pb.inc(1);
            }
            Ok::<_, anyhow::Error>((h, last))
        }));
    }
    let mut h = new_hist();
    let mut end = start;
    for t in tasks {
        let (th, last) = t.await??;
        h.add(&th)?;
        end = end.max(last);
    }
    let secs = (end - start).as_secs_f64();
    Ok(WorkloadResult {
        workload: "churn".into(),
        description: format!(
            "connect + create ephemeral + closeSession, {} loops at once",
            ctx.churn_workers.max(1)
        ),
        elapsed_s: secs,
        ops: h.len(),
        throughput: (secs > 0.0).then(|| h.len() as f64 / secs),
        unit: "cycles".into(),
        latency: Latency::of(&h),
        ..Default::default()
    })
}

/// Watch notification latency: one session watches a parent's children, another (on the next server
/// when there are several) creates an ephemeral child; time from sending the create to the event.
pub async fn watch(ctx: &mut Ctx, pb: &ProgressBar) -> anyhow::Result<WorkloadResult> {
    let parent = format!("{}/watch-{}", ctx.root, ctx.run_id);
    let mut watcher = ctx.admin().await?;
    ensure_path(&mut watcher, &parent).await?;
    let mut writer = Conn::connect(ctx.addrs[1 % ctx.addrs.len()], ctx.session_timeout_ms).await?;
    let trials = ctx.watch_trials.min(ctx.ops).max(1);
    pb.set_length(trials);
    let mut h = new_hist();
    let start = Instant::now();
    for i in 0..trials {
        if start.elapsed() >= ctx.duration {
            break;
        }
        watcher
            .call_ok(
                &Request::GetChildren(GetChildrenRequest {
                    path: parent.clone(),
                    watch: true,
                }),
                &[],
            )
            .await?;
        watcher.events.clear();
        let req = create_req(
            format!("{parent}/c{i:06}"),
            Bytes::new(),
            CreateMode::Ephemeral.code(),
        );
        let x = writer.queue(&req);
        let t0 = Instant::now();
        writer.flush().await?;
        let ev = tokio::time::timeout(Duration::from_secs(30), watcher.next_event())
            .await
            .context("no watch notification within 30 s")??;
        let dt = t0.elapsed();
        if ev.event_type != EventType::NodeChildrenChanged.code() || ev.path != parent {
            bail!("unexpected event {ev:?}");
        }
        loop {
            match writer.next().await? {
                super::conn::Incoming::Reply(hd, _) if hd.xid == x => {
                    if hd.err != 0 {
                        bail!("create failed: {}", err_name(hd.err));
                    }
                    break;
                }
                _ => continue,
            }
        }
        h.saturating_record((dt.as_nanos() as u64).max(1));
        pb.inc(1);
    }
    writer.close().await;
    watcher.close().await;
    Ok(WorkloadResult {
        workload: "watch".into(),
        description: format!(
            "child watch: create on {} to NodeChildrenChanged on {}",
            ctx.addrs[1 % ctx.addrs.len()],
            ctx.addrs[0]
        ),
        elapsed_s: start.elapsed().as_secs_f64(),
        ops: h.len(),
        unit: "trials".into(),
        latency: Latency::of(&h),
        ..Default::default()
    })
}

/// Ephemeral expiry: holder processes (this binary, `--internal-ephemeral-holder`) each open a session
/// with the expiry timeout and create an ephemeral node; each is told to ping (so its session deadline
/// is exactly one timeout away), then killed with SIGKILL. Measured: kill to the watcher's NodeDeleted.
pub async fn expiry(ctx: &mut Ctx, pb: &ProgressBar) -> anyhow::Result<WorkloadResult> {
    let dir = format!("{}/expiry-{}", ctx.root, ctx.run_id);
    // In a cluster the holders sit on a follower (their session lives where the leader, which expires
    // it, only hears of it through that follower) and the watcher on another node.
    let mut hi = 0;
    if ctx.addrs.len() >= 3 {
        for (i, a) in ctx.addrs.iter().enumerate() {
            if super::failover::srvr_mode(*a).await.as_deref() == Some("follower") {
                hi = i;
                break;
            }
        }
    }
    let holder_addr = ctx.addrs[hi];
    let watch_addr = ctx.addrs[(hi + 1) % ctx.addrs.len()];
    let mut watcher = Conn::connect(watch_addr, ctx.session_timeout_ms).await?;
    ensure_path(&mut watcher, &dir).await?;
    let exe = std::env::current_exe().context("locating this binary for the holder process")?;
    let n = ctx.expiry_trials.max(1);
    pb.set_length(n as u64);
    let mut holders = Vec::new();
    let mut negotiated = Vec::new();
    for i in 0..n {
        let path = format!("{dir}/h{i}");
        let mut child = tokio::process::Command::new(&exe)
            .args(["bench", "--internal-ephemeral-holder", "--servers"])
            .arg(holder_addr.to_string())
            .arg("--holder-path")
            .arg(&path)
            .arg("--expiry-timeout-ms")
            .arg(ctx.expiry_timeout_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the holder process")?;
        let stdin = child.stdin.take().context("holder stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("holder stdout")?).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("holder did not report READY within 30 s")??
            .context("holder exited before READY")?;
        let t: i32 = ready
            .strip_prefix("READY ")
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("holder said {ready:?}"))?;
        negotiated.push(t);
        let (hd, _) = watcher
            .call(&Request::Exists(ExistsRequest {
                path: path.clone(),
                watch: true,
            }))
            .await?;
        if hd.err != 0 {
            bail!(
                "the holder's node {path} is not visible: {}",
                err_name(hd.err)
            );
        }
        holders.push((child, stdin, lines, path));
    }
    watcher.events.clear();
    let mut killed: Vec<(String, Instant)> = Vec::new();
    for (child, stdin, lines, path) in holders.iter_mut() {
        stdin.write_all(b"ping\n").await?;
        stdin.flush().await?;
        let pong = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("holder ping")??;
        if pong.as_deref() != Some("PONG") {
            bail!("holder answered {pong:?} to ping");
        }
        child.start_kill().context("SIGKILL the holder")?;
        killed.push((path.clone(), Instant::now()));
    }
    for (child, ..) in holders.iter_mut() {
        let _ = child.wait().await;
    }
    let max_t = *negotiated.iter().max().unwrap_or(&ctx.expiry_timeout_ms);
    let limit = Duration::from_millis(4 * max_t as u64) + Duration::from_secs(10);
    let mut h = new_hist();
    let mut pending = killed.clone();
    let wait_start = Instant::now();
    while !pending.is_empty() {
        let left = limit.saturating_sub(wait_start.elapsed());
        let ev = match tokio::time::timeout(left, watcher.next_event()).await {
            Ok(e) => e?,
            Err(_) => bail!(
                "{} ephemeral nodes still present {limit:?} after the kill",
                pending.len()
            ),
        };
        if ev.event_type == EventType::NodeDeleted.code() {
            if let Some(pos) = pending.iter().position(|(p, _)| *p == ev.path) {
                let (_, t0) = pending.remove(pos);
                h.saturating_record(t0.elapsed().as_nanos() as u64);
                pb.inc(1);
            }
        }
    }
    watcher.close().await;
    let lat = Latency::of(&h);
    let t = negotiated.iter().copied().min().unwrap_or(0) as f64;
    let mut r = WorkloadResult {
        workload: "expiry".into(),
        description: format!(
            "SIGKILL of a session holder (on {holder_addr}) to NodeDeleted of its ephemeral (watcher on {watch_addr}), {n} holders"
        ),
        elapsed_s: wait_start.elapsed().as_secs_f64(),
        ops: h.len(),
        unit: "trials".into(),
        latency: lat.clone(),
        ..Default::default()
    };
    r.extra("negotiated_timeout", t, "ms", None);
    if let Some(l) = lat {
        r.extra("p50_over_timeout", l.p50_ms - t, "ms", Some(true));
    }
    Ok(r)
}

/// Memory: resident memory of the server processes idle (now) and after loading `znodes` nodes of the
/// payload (in parents of 1,000 children), and the load rate.
pub async fn memory(ctx: &mut Ctx, pb: &ProgressBar) -> anyhow::Result<WorkloadResult> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = procfs::Snapshot::take(&ctx.pids).rss_mib();
    let dir = format!("{}/memory-{}", ctx.root, ctx.run_id);
    let mut a = ctx.admin().await?;
    ensure_path(&mut a, &dir).await?;
    a.close().await;
    let per_parent = 1000u64;
    let parents = ctx.znodes.div_ceil(per_parent);
    let pdir = dir.clone();
    let mut spec = ctx.spec(Arc::new(move |seq, _| {
        (create_req(format!("{pdir}/p{seq:05}"), Bytes::new(), 0), 0)
    }));
    spec.ops = parents;
    spec.warmup = Duration::ZERO;
    spec.duration = ctx.memory_timeout;
    pb.set_message("creating parents");
    load::run(spec, &ProgressBar::hidden()).await?;
    let payload = ctx.payload.clone();
    let mut spec = ctx.spec(Arc::new(move |seq, _| {
        (
            create_req(
                format!("{dir}/p{:05}/n{:03}", seq / per_parent, seq % per_parent),
                payload.clone(),
                0,
            ),
            0,
        )
    }));
    spec.ops = ctx.znodes;
    spec.warmup = Duration::ZERO;
    spec.duration = ctx.memory_timeout;
    let out = load::run(spec, pb).await?;
    // Let background work (snapshots, GC) settle before reading memory.
    pb.set_message("settling");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = procfs::Snapshot::take(&ctx.pids).rss_mib();
    let mut r = load_result(
        &format!("memory-{}", human_count(ctx.znodes)),
        format!(
            "load {} znodes of {} B (parents of {per_parent})",
            ctx.znodes,
            ctx.payload.len()
        ),
        &out,
    );
    r.unit = "znodes".into();
    if out.ops < ctx.znodes {
        r.error = Some(format!(
            "only {} of {} znodes loaded within {:?}",
            out.ops, ctx.znodes, ctx.memory_timeout
        ));
    }
    match (idle, loaded) {
        (Some(i), Some(l)) => {
            r.extra("rss_idle", i, "MiB", Some(true));
            r.extra("rss_loaded", l, "MiB", Some(true));
            if out.ops > 0 {
                r.extra(
                    "rss_per_znode",
                    (l - i) * 1024.0 * 1024.0 / out.ops as f64,
                    "B",
                    Some(true),
                );
            }
        }
        _ => r.extra("rss_unavailable_pass_server_pids", 0.0, "", None),
    }
    Ok(r)
}

/// 100000 → "100k", 1000000 → "1M", 1500 → "1500".
pub(super) fn human_count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// The hidden holder process: open a session with `timeout_ms`, create the ephemeral `path`, print
/// `READY <negotiated timeout> <session id>`, then ping at a third of the timeout and on every `ping`
/// line of stdin (answering `PONG`), until stdin closes or the process is killed.
pub async fn hold_ephemeral(addr: SocketAddr, path: &str, timeout_ms: i32) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut c = Conn::connect(addr, timeout_ms).await?;
    c.call_ok(
        &create_req(path.to_string(), Bytes::new(), CreateMode::Ephemeral.code()),
        &[],
    )
    .await?;
    let mut out = tokio::io::stdout();
    out.write_all(format!("READY {} {:#x}\n", c.timeout_ms, c.session_id).as_bytes())
        .await?;
    out.flush().await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval(Duration::from_millis((c.timeout_ms / 3).max(50) as u64));
    loop {
        tokio::select! {
            line = stdin.next_line() => match line? {
                None => return Ok(()),
                Some(_) => {
                    c.call(&Request::Ping).await?;
                    out.write_all(b"PONG\n").await?;
                    out.flush().await?;
                }
            },
            _ = tick.tick() => { c.call(&Request::Ping).await?; }
        }
    }
}
