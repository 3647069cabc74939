//! The scale workloads of issue 15: `sessions` (many sessions held, each with an ephemeral znode and a
//! data watch: memory and ping CPU per session, write p99 under them, expiry accuracy when 10 % are
//! dropped at once), `fanout` (one znode watched by many sessions: write to last notification, memory per
//! watch; and a persistent recursive watch over a subtree), `size` (znodes in a registry-like tree:
//! RSS and bytes per znode) and `values` (setData of large values:
//! throughput and p99 per size). Every wait is bounded; every count comes from a flag.
//!
//! The size workload also times, through shell commands the caller gives (so it stays server-neutral),
//! a snapshot of the whole tree (`--snapshot-cmd`) and a new node joining and catching up
//! (`--join-cmd`).
//!
//! The sessions workload can hold its sessions in several processes (`--hold-procs`, see `holders`),
//! so more sessions than one process's descriptors allow fit.
//!
//! Left out: holders on other machines; the fan-out watchers are held in this one process.

use super::conn::{create_req, ensure_path, err_name, Conn, Incoming, ERR_NODE_EXISTS};
use super::holders::{self, source_for};
use super::load;
use super::procfs;
use super::report::{new_hist, Latency, WorkloadResult};
use super::workloads::Ctx;
use anyhow::{bail, Context};
use bytes::Bytes;
use indicatif::ProgressBar;
use roster_proto::{
    AddWatchMode, AddWatchRequest, EventType, ExistsRequest, GetChildrenRequest, GetDataRequest,
    Request, SetDataRequest,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

/// Watchers being opened at once.
const OPENING: usize = 256;

/// Allowed lateness of an expiry (the issue's criterion), ms.
const EXPIRY_SLACK_MS: f64 = 100.0;
/// Descriptors a holding process keeps beyond its sessions (runtime, control sessions, stdio).
const FD_MARGIN: u64 = 500;

fn exists_watch(path: String) -> Request {
    Request::Exists(ExistsRequest { path, watch: true })
}

/// The sessions held for the workload: in this process, or in holder processes.
enum Holders {
    Local(holders::Local),
    Remote(holders::Remote),
}

impl Holders {
    async fn wait_ready(&mut self, cap: Duration, pb: &ProgressBar) -> anyhow::Result<()> {
        let local = match self {
            Holders::Remote(r) => return r.wait_ready(cap, pb).await,
            Holders::Local(l) => l,
        };
        let start = Instant::now();
        while local.ready() < local.len() {
            if let Some(e) = local.failed() {
                bail!(e.context(format!(
                    "opening session {} of {}",
                    local.ready() + 1,
                    local.len()
                )));
            }
            if start.elapsed() > cap {
                bail!(
                    "only {} of {} sessions open after {cap:?} (raise --memory-timeout)",
                    local.ready(),
                    local.len()
                );
            }
            pb.set_position(local.ready() as u64);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn kill(&mut self) -> anyhow::Result<Vec<holders::Victim>> {
        match self {
            Holders::Local(l) => l.kill().await,
            Holders::Remote(r) => r.kill().await,
        }
    }

    async fn close(self) -> Vec<String> {
        match self {
            Holders::Local(l) => l.close().await,
            Holders::Remote(r) => r.close().await,
        }
    }
}

/// This process's soft descriptor limit (None when unreadable or unlimited).
fn fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    (ok && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Sessions held: `hold_sessions` sessions, each with an ephemeral znode and an exists watch on it, held
/// for `hold` (first half idle: ping CPU; second half under a one-session write load: its p99), then
/// `kill_fraction` of them dropped at once; an observer's watches time each ephemeral's deletion. With
/// `hold_procs` > 1 the sessions are held by that many child processes (see `holders`).
pub async fn sessions(ctx: &mut Ctx, pb: &ProgressBar) -> anyhow::Result<WorkloadResult> {
    let n = ctx.hold_sessions.max(1);
    let procs = ctx.hold_procs.clamp(1, n);
    let share = n.div_ceil(procs) as u64;
    if let Some(limit) = fd_limit() {
        if share + FD_MARGIN > limit {
            bail!(
                "{share} sessions per process do not fit this process's file limit {limit} (they need \
                 {} descriptors): raise --hold-procs (or the limit, ulimit -n)",
                share + FD_MARGIN
            );
        }
    }
    let dir = format!("{}/sessions-{}", ctx.root, ctx.run_id);
    // Control sessions are opened only around their use: an idle one would expire during a long hold.
    let mut setup = ctx.admin().await?;
    ensure_path(&mut setup, &dir).await?;
    setup.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = procfs::Snapshot::take(&ctx.pids).rss_mib();
    pb.set_length(n as u64);
    pb.set_message("opening sessions");
    // Every tenth (or the --kill-fraction share) is a victim.
    let step = (1.0 / ctx.kill_fraction.clamp(0.001, 1.0)).round().max(1.0) as usize;
    let plan = holders::Plan {
        addrs: ctx.addrs.clone(),
        dir: dir.clone(),
        n,
        timeout_ms: ctx.hold_timeout_ms,
        step,
        procs,
    };
    let open_start = Instant::now();
    let mut held = if procs > 1 {
        Holders::Remote(holders::Remote::spawn(&plan, procs, ctx.tls_ca.as_ref())?)
    } else {
        Holders::Local(holders::Local::open(&plan, 0..n))
    };
    if let Err(e) = held.wait_ready(ctx.memory_timeout, pb).await {
        held.close().await;
        return Err(e);
    }
    let open_s = open_start.elapsed().as_secs_f64();
    // Settle, then memory and an idle half of the hold: the server only answers pings.
    pb.set_message("held, idle");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held_snap = procfs::Snapshot::take(&ctx.pids);
    let half = ctx.hold / 2;
    tokio::time::sleep(half).await;
    let idle_snap = procfs::Snapshot::take(&ctx.pids);
    let ping_cpu = cpu_delta(&held_snap, &idle_snap);
    // The other half under a small write load: one session, one write in flight.
    pb.set_message("held, under writes");
    let key = format!("{dir}/write-key");
    let mut setup = ctx.admin().await?;
    setup
        .call_ok(
            &create_req(key.clone(), Bytes::new(), 0),
            &[ERR_NODE_EXISTS],
        )
        .await?;
    setup.close().await;
    let payload = ctx.payload.clone();
    let mut spec = ctx.spec(Arc::new(move |_, _| {
        (
            Request::SetData(SetDataRequest {
                path: key.clone(),
                data: Some(payload.clone()),
                version: -1,
            }),
            0,
        )
    }));
    spec.sessions = 1;
    spec.depth = 1;
    spec.warmup = Duration::ZERO;
    spec.duration = half.max(Duration::from_millis(200));
    let writes = load::run(spec, &ProgressBar::hidden()).await?;
    let mut wh = new_hist();
    for h in &writes.hist {
        let _ = wh.add(h);
    }
    // The kill: the observer watches the victims' ephemerals first.
    let victims: Vec<usize> = (0..n).filter(|i| plan.is_victim(*i)).collect();
    pb.set_message(format!("killing {}", victims.len()));
    let mut observer = ctx.admin().await?;
    for &i in &victims {
        observer
            .call_ok(&exists_watch(holders::session_path(&dir, i)), &[])
            .await?;
    }
    observer.events.clear();
    let killed = match held.kill().await {
        Ok(k) => k,
        Err(e) => {
            held.close().await;
            return Err(e);
        }
    };
    if killed.len() != victims.len() {
        held.close().await;
        bail!(
            "{} sessions dropped at the kill, {} expected",
            killed.len(),
            victims.len()
        );
    }
    let max_t = killed.iter().map(|k| k.timeout_ms).max().unwrap_or(0) as u64;
    let limit = Duration::from_millis(4 * max_t) + Duration::from_secs(10);
    let wait_start = Instant::now();
    let mut lateness = Vec::new();
    let mut pending: std::collections::HashMap<String, Instant> = killed
        .iter()
        .map(|v| {
            let due = holders::instant_of(v.sent_mono_ns)
                + Duration::from_millis(v.timeout_ms.max(0) as u64);
            (holders::session_path(&dir, v.i), due)
        })
        .collect();
    while !pending.is_empty() {
        let left = limit.saturating_sub(wait_start.elapsed());
        let ev = match tokio::time::timeout(left, observer.next_event()).await {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => {
                held.close().await;
                return Err(e);
            }
            Err(_) => {
                held.close().await;
                bail!(
                    "{} ephemerals of killed sessions still present {limit:?} after the kill",
                    pending.len()
                )
            }
        };
        if ev.event_type == EventType::NodeDeleted.code() {
            if let Some(due) = pending.remove(&ev.path) {
                let now = Instant::now();
                let late_ms = if now >= due {
                    (now - due).as_secs_f64() * 1e3
                } else {
                    -(due - now).as_secs_f64() * 1e3
                };
                lateness.push(late_ms);
            }
        }
    }
    // The healthy ones: their ephemerals all there, and none saw an event.
    let (hd, body) = observer
        .call(&Request::GetChildren(GetChildrenRequest {
            path: dir.clone(),
            watch: false,
        }))
        .await?;
    if hd.err != 0 {
        held.close().await;
        bail!("getChildren {dir}: {}", err_name(hd.err));
    }
    let children = count_children(&body).context("decoding getChildren")?;
    let healthy_expected = n - victims.len();
    let healthy_present = children.saturating_sub(1); // minus write-key
    pb.set_message("closing");
    let surprises = held.close().await;
    observer.close().await;
    lateness.sort_by(f64::total_cmp);
    let mut r = WorkloadResult {
        workload: format!("sessions-{}", super::workloads::human_count(n as u64)),
        description: format!(
            "{n} sessions held (ephemeral + data watch each, timeout {} ms{}), {} killed at once",
            ctx.hold_timeout_ms,
            if procs > 1 {
                format!(", {procs} holder processes")
            } else {
                String::new()
            },
            victims.len()
        ),
        elapsed_s: open_s + ctx.hold.as_secs_f64(),
        ops: n as u64,
        unit: "sessions".into(),
        throughput: (open_s > 0.0).then(|| n as f64 / open_s),
        latency: Latency::of(&wh),
        ..Default::default()
    };
    r.extra("write_ops_under_hold", writes.ops as f64, "ops", None);
    r.extra("holder_procs", procs as f64, "processes", None);
    if let (Some(a), Some(b)) = (rss0, held_snap.rss_mib()) {
        r.extra("rss_held", b, "MiB", Some(true));
        r.extra(
            "rss_per_session",
            (b - a) * 1024.0 * 1024.0 / n as f64,
            "B",
            Some(true),
        );
    }
    if let Some(c) = ping_cpu {
        r.extra(
            "ping_cpu_per_s",
            c / half.as_secs_f64().max(1e-3),
            "cpu-s/s",
            Some(true),
        );
    }
    r.extra("killed", lateness.len() as f64, "sessions", None);
    if let (Some(first), Some(last)) = (lateness.first(), lateness.last()) {
        let p99 = lateness[((lateness.len() - 1) as f64 * 0.99) as usize];
        r.extra("expiry_lateness_min", *first, "ms", None);
        r.extra("expiry_lateness_p99", p99, "ms", Some(true));
        r.extra("expiry_lateness_max", *last, "ms", Some(true));
        let late = lateness.iter().filter(|l| **l > EXPIRY_SLACK_MS).count();
        r.extra(
            "expired_over_100ms_late",
            late as f64,
            "sessions",
            Some(true),
        );
    }
    r.extra(
        "healthy_expired",
        healthy_expected.saturating_sub(healthy_present) as f64,
        "sessions",
        Some(true),
    );
    if healthy_present != healthy_expected || !surprises.is_empty() {
        r.error = Some(format!(
            "{healthy_present} of {healthy_expected} healthy sessions' ephemerals present; {} surprises{}",
            surprises.len(),
            surprises
                .first()
                .map(|s| format!(", first: {s}"))
                .unwrap_or_default()
        ));
    }
    Ok(r)
}

fn cpu_delta(a: &procfs::Snapshot, b: &procfs::Snapshot) -> Option<f64> {
    if a.procs.is_empty() {
        return None;
    }
    let mut t = 0.0;
    for (x, y) in a.procs.iter().zip(&b.procs) {
        t += y.1? - x.1?;
    }
    Some(t)
}

/// Number of names in a getChildren reply body (a jute vector of strings).
fn count_children(body: &[u8]) -> anyhow::Result<usize> {
    let n = i32::from_be_bytes(body.get(..4).context("short reply")?.try_into()?);
    Ok(n.max(0) as usize)
}

/// What the fan-out driver tells its watchers.
#[derive(Clone, Copy, PartialEq)]
enum Round {
    /// Before the first trial.
    Start,
    /// Set the watch for trial k.
    Arm(u64),
    /// Close and go.
    Stop,
}

/// Watch fan-out: `fanout_watchers` sessions each set a data watch on one znode; a writer's setData then
/// fires them all. Per trial: time from sending the write to the last notification received. Memory per
/// watch from the RSS before and after the first arming. With `fanout_subtree`, also a persistent
/// recursive watch over a subtree of that many znodes (`fanout-recursive`).
pub async fn fanout(ctx: &mut Ctx, pb: &ProgressBar) -> anyhow::Result<Vec<WorkloadResult>> {
    let n = ctx.fanout_watchers.max(1);
    let dir = format!("{}/fanout-{}", ctx.root, ctx.run_id);
    let target = format!("{dir}/target");
    let mut writer = ctx.admin().await?;
    ensure_path(&mut writer, &dir).await?;
    writer
        .call_ok(&create_req(target.clone(), Bytes::new(), 0), &[])
        .await?;
    // Reopened once every watcher is connected: idle meanwhile, it would expire.
    writer.close().await;
    let trials = ctx.fanout_trials.min(ctx.ops).max(1);
    pb.set_length(trials);
    pb.set_message(format!("opening {n} watchers"));
    let (round_tx, round_rx) = tokio::sync::watch::channel(Round::Start);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<anyhow::Result<(u64, Option<Instant>)>>();
    let gate = Arc::new(Semaphore::new(OPENING));
    let mut tasks = Vec::new();
    let servers = ctx.addrs.len();
    for i in 0..n {
        let addr = ctx.addrs[i % ctx.addrs.len()];
        let (mut round_rx, ev_tx, gate, target) = (
            round_rx.clone(),
            ev_tx.clone(),
            gate.clone(),
            target.clone(),
        );
        let t = ctx.session_timeout_ms;
        tasks.push(tokio::spawn(async move {
            let run = async {
                let mut c = {
                    let _p = gate.acquire().await?;
                    Conn::connect_held(addr, source_for(addr, i, servers), t).await?
                };
                let _ = ev_tx.send(Ok((0, None)));
                let every = Duration::from_millis((c.timeout_ms as u64 / 3).max(50));
                loop {
                    // Idle between rounds (all the others opening, the driver measuring): ping.
                    tokio::select! {
                        changed = round_rx.changed() => changed?,
                        _ = tokio::time::sleep(every) => {
                            c.ping().await?;
                            continue;
                        }
                    }
                    let r = *round_rx.borrow_and_update();
                    match r {
                        Round::Start => {}
                        Round::Stop => {
                            c.close().await;
                            return anyhow::Ok(());
                        }
                        Round::Arm(k) => {
                            c.call_ok(
                                &Request::GetData(GetDataRequest {
                                    path: target.clone(),
                                    watch: true,
                                }),
                                &[],
                            )
                            .await?;
                            let _ = ev_tx.send(Ok((k, None)));
                            let ev = tokio::time::timeout(Duration::from_secs(60), c.next_event())
                                .await
                                .context("no notification within 60 s")??;
                            if ev.event_type != EventType::NodeDataChanged.code() {
                                bail!("unexpected event {ev:?}");
                            }
                            let _ = ev_tx.send(Ok((k, Some(Instant::now()))));
                        }
                    }
                }
            };
            if let Err(e) = run.await {
                let _ = ev_tx.send(Err(e));
            }
        }));
    }
    drop(ev_tx);
    // Every watcher connected, then each trial: arm all, write, wait for all.
    let cap = ctx.memory_timeout;
    let result = async {
        wait_for(n, 0, false, &mut ev_rx, cap).await?;
        let mut writer = ctx.admin().await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss_connected = procfs::Snapshot::take(&ctx.pids).rss_mib();
        let mut rss_armed = None;
        let mut h = new_hist();
        let start = Instant::now();
        for k in 1..=trials {
            if start.elapsed() >= ctx.duration && k > 1 {
                break;
            }
            round_tx.send_replace(Round::Arm(k));
            wait_for(n, k, false, &mut ev_rx, cap).await?;
            if k == 1 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                rss_armed = procfs::Snapshot::take(&ctx.pids).rss_mib();
            }
            let t0 = Instant::now();
            writer
                .call_ok(
                    &Request::SetData(SetDataRequest {
                        path: target.clone(),
                        data: Some(ctx.payload.clone()),
                        version: -1,
                    }),
                    &[],
                )
                .await?;
            let last = wait_for(n, k, true, &mut ev_rx, cap).await?;
            let dt = last
                .map(|l| l.saturating_duration_since(t0))
                .unwrap_or_default();
            h.saturating_record((dt.as_nanos() as u64).max(1));
            pb.inc(1);
        }
        let mut r = WorkloadResult {
            workload: format!("fanout-{}", super::workloads::human_count(n as u64)),
            description: format!(
                "setData to the last of {n} data-watch notifications (one per session)"
            ),
            elapsed_s: start.elapsed().as_secs_f64(),
            ops: h.len(),
            unit: "trials".into(),
            latency: Latency::of(&h),
            ..Default::default()
        };
        if let (Some(a), Some(b)) = (rss_connected, rss_armed) {
            r.extra(
                "rss_per_watch",
                (b - a) * 1024.0 * 1024.0 / n as f64,
                "B",
                Some(true),
            );
        }
        writer.close().await;
        anyhow::Ok(r)
    }
    .await;
    round_tx.send_replace(Round::Stop);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let mut out = vec![result?];
    if ctx.fanout_subtree > 0 {
        out.push(recursive(ctx, &dir, pb).await?);
    }
    Ok(out)
}

/// Waits for `want` watcher reports of round `k` (armed, or `fired` with the notification's arrival);
/// returns the latest arrival.
async fn wait_for(
    want: usize,
    k: u64,
    fired: bool,
    rx: &mut mpsc::UnboundedReceiver<anyhow::Result<(u64, Option<Instant>)>>,
    cap: Duration,
) -> anyhow::Result<Option<Instant>> {
    let deadline = Instant::now() + cap;
    let mut got = 0usize;
    let mut last = None;
    while got < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, rx.recv())
            .await
            .with_context(|| format!("{got} of {want} watchers after {cap:?}"))?;
        let (rk, at) = m.context("every watcher stopped")??;
        if rk == k && at.is_some() == fired {
            got += 1;
            last = last.max(at);
        }
    }
    Ok(last)
}

/// A persistent recursive watch over `fanout_subtree` znodes (parents of 1,000): one watcher, setData on
/// random members one at a time, write to notification.
async fn recursive(ctx: &Ctx, dir: &str, pb: &ProgressBar) -> anyhow::Result<WorkloadResult> {
    let tree = format!("{dir}/tree");
    let m = ctx.fanout_subtree;
    pb.set_message(format!("creating {m} znodes"));
    let mut setup = ctx.admin().await?;
    setup
        .call_ok(&create_req(tree.clone(), Bytes::new(), 0), &[])
        .await?;
    setup.close().await;
    let per = 1000u64;
    let t2 = tree.clone();
    let mut spec = ctx.spec(Arc::new(move |seq, _| {
        (create_req(format!("{t2}/p{seq:05}"), Bytes::new(), 0), 0)
    }));
    spec.ops = m.div_ceil(per);
    spec.warmup = Duration::ZERO;
    spec.duration = ctx.memory_timeout;
    load::run(spec, &ProgressBar::hidden()).await?;
    let (t2, payload) = (tree.clone(), ctx.payload.clone());
    let mut spec = ctx.spec(Arc::new(move |seq, _| {
        (
            create_req(
                format!("{t2}/p{:05}/n{:03}", seq / per, seq % per),
                payload.clone(),
                0,
            ),
            0,
        )
    }));
    spec.ops = m;
    spec.warmup = Duration::ZERO;
    spec.duration = ctx.memory_timeout;
    let out = load::run(spec, &ProgressBar::hidden()).await?;
    if out.ops < m || !out.errors.is_empty() {
        bail!(
            "created {} of {m} subtree znodes ({:?})",
            out.ops,
            out.errors
        );
    }
    let mut writer = ctx.admin().await?;
    let mut watcher = ctx.admin().await?;
    watcher
        .call_ok(
            &Request::AddWatch(AddWatchRequest {
                path: tree.clone(),
                mode: AddWatchMode::PersistentRecursive.code(),
            }),
            &[],
        )
        .await?;
    let mut rng = load::Rng::new(m);
    let mut h = new_hist();
    let trials = ctx.fanout_trials.min(ctx.ops).max(1);
    let start = Instant::now();
    for _ in 0..trials {
        if start.elapsed() >= ctx.duration && !h.is_empty() {
            break;
        }
        let k = rng.below(m);
        let path = format!("{tree}/p{:05}/n{:03}", k / per, k % per);
        let x = writer.queue(&Request::SetData(SetDataRequest {
            path: path.clone(),
            data: Some(ctx.payload.clone()),
            version: -1,
        }));
        let t0 = Instant::now();
        writer.flush().await?;
        let ev = tokio::time::timeout(Duration::from_secs(30), watcher.next_event())
            .await
            .context("no recursive-watch notification within 30 s")??;
        let dt = t0.elapsed();
        if ev.event_type != EventType::NodeDataChanged.code() || ev.path != path {
            bail!("unexpected event {ev:?} for a write to {path}");
        }
        loop {
            if let Incoming::Reply(hd, _) = writer.next().await? {
                if hd.xid == x {
                    if hd.err != 0 {
                        bail!("setData {path}: {}", err_name(hd.err));
                    }
                    break;
                }
            }
        }
        h.saturating_record((dt.as_nanos() as u64).max(1));
    }
    watcher.close().await;
    writer.close().await;
    Ok(WorkloadResult {
        workload: format!("fanout-recursive-{}", super::workloads::human_count(m)),
        description: format!(
            "persistent recursive watch over {m} znodes: setData of a random one to its notification"
        ),
        elapsed_s: start.elapsed().as_secs_f64(),
        ops: h.len(),
        unit: "trials".into(),
        latency: Latency::of(&h),
        ..Default::default()
    })
}

/// Instances per service in the size workload's registry-like tree.
const PER_SERVICE: u64 = 100;

/// The path of member `i` of the size workload: a service registry's
/// `services/svc-NNNNN/instances/10.a.b.c:8080`.
fn registry_member(dir: &str, i: u64) -> String {
    format!(
        "{dir}/services/svc-{:05}/instances/10.{}.{}.{}:8080",
        i / PER_SERVICE,
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255
    )
}

/// Size: `znodes` znodes of the payload in a registry-like tree (services of 100 instances): the load
/// rate, the servers' RSS idle and loaded, bytes per znode. With `--restart-cmd`, then kill -9 of the
/// first server and its restart: seconds until it serves a read and accepts a write. With
/// `--snapshot-cmd`, the snapshot's build time and size; with `--join-cmd`, last, the seconds until a
/// newly started node joining the cluster serves a read of the last znode (and, when the command names
/// a membership file, until the new node is a full member).
pub async fn size(ctx: &mut Ctx, pb: &ProgressBar) -> anyhow::Result<WorkloadResult> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = procfs::Snapshot::take(&ctx.pids).rss_mib();
    let dir = format!("{}/size-{}", ctx.root, ctx.run_id);
    let mut a = ctx.admin().await?;
    ensure_path(&mut a, &format!("{dir}/services")).await?;
    a.close().await;
    let services = ctx.znodes.div_ceil(PER_SERVICE);
    pb.set_message("creating services");
    for suffix in ["", "/instances"] {
        let d = dir.clone();
        let mut spec = ctx.spec(Arc::new(move |seq, _| {
            (
                create_req(
                    format!("{d}/services/svc-{seq:05}{suffix}"),
                    Bytes::new(),
                    0,
                ),
                0,
            )
        }));
        spec.ops = services;
        spec.warmup = Duration::ZERO;
        spec.duration = ctx.memory_timeout;
        let out = load::run(spec, &ProgressBar::hidden()).await?;
        if out.ops < services || !out.errors.is_empty() {
            bail!(
                "created {} of {services} service nodes ({:?})",
                out.ops,
                out.errors
            );
        }
    }
    let (d, payload) = (dir.clone(), ctx.payload.clone());
    let mut spec = ctx.spec(Arc::new(move |seq, _| {
        (create_req(registry_member(&d, seq), payload.clone(), 0), 0)
    }));
    spec.ops = ctx.znodes;
    spec.warmup = Duration::ZERO;
    spec.duration = ctx.memory_timeout;
    let out = load::run(spec, pb).await?;
    pb.set_message("settling");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = procfs::Snapshot::take(&ctx.pids).rss_mib();
    let mut r = super::workloads::load_result(
        &format!("size-{}", super::workloads::human_count(ctx.znodes)),
        format!(
            "load {} znodes of {} B, registry-like paths ({} services of {PER_SERVICE})",
            ctx.znodes,
            ctx.payload.len(),
            services
        ),
        &out,
    );
    r.unit = "znodes".into();
    if out.ops < ctx.znodes && r.error.is_none() {
        r.error = Some(format!(
            "only {} of {} znodes loaded within {:?} (raise --memory-timeout)",
            out.ops, ctx.znodes, ctx.memory_timeout
        ));
    }
    if let (Some(i), Some(l)) = (idle, loaded) {
        r.extra("rss_idle", i, "MiB", Some(true));
        r.extra("rss_loaded", l, "MiB", Some(true));
        let total = out.ops + 2 * services;
        if total > 0 {
            r.extra(
                "rss_per_znode",
                (l - i) * 1024.0 * 1024.0 / total as f64,
                "B",
                Some(true),
            );
        }
    }
    if ctx.restart_cmd.is_some() && out.ops > 0 {
        pb.set_message("kill -9 and restart");
        let (read_s, write_s) = restart_after_kill(ctx, &registry_member(&dir, out.ops - 1))
            .await
            .context("restart after kill -9")?;
        r.extra("restart_to_read", read_s, "s", Some(true));
        r.extra("restart_to_write", write_s, "s", Some(true));
    }
    if let Some(cmd) = ctx.snapshot_cmd.clone() {
        pb.set_message("snapshot");
        let printed = super::failover::shell(&cmd, &[], ctx.failover_timeout)
            .await
            .context("--snapshot-cmd")?;
        let (secs, bytes) = parse_snapshot_line(&printed).with_context(|| {
            format!("--snapshot-cmd printed {printed:?}; its last line must be `SECONDS BYTES`")
        })?;
        r.extra("snapshot_build", secs, "s", Some(true));
        r.extra("snapshot_size", bytes / 1048576.0, "MiB", Some(true));
        let total = out_total(out.ops, services);
        r.extra("snapshot_bytes_per_znode", bytes / total, "B", Some(true));
    }
    if let (Some(cmd), true) = (ctx.join_cmd.clone(), out.ops > 0) {
        pb.set_message("a new node joins");
        let joined = join_and_read(ctx, &cmd, &registry_member(&dir, out.ops - 1))
            .await
            .context("a new node joining (--join-cmd)")?;
        r.extra("join_to_read", joined.read_s, "s", Some(true));
        if let Some(m) = joined.rss {
            r.extra("rss_joined", m, "MiB", Some(true));
        }
        match joined.member {
            Some(Ok(s)) => r.extra("join_to_member", s, "s", Some(true)),
            Some(Err(e)) if r.error.is_none() => r.error = Some(format!("join: {e}")),
            _ => {}
        }
    }
    Ok(r)
}

/// Znodes the size workload creates for `znodes` members: the members plus each service's node and
/// its `instances` node.
fn out_total(znodes: u64, services: u64) -> f64 {
    (znodes + 2 * services).max(1) as f64
}

/// The last non-empty line of a `--snapshot-cmd`'s output as (seconds, bytes).
fn parse_snapshot_line(out: &str) -> Option<(f64, f64)> {
    let line = out.lines().rev().find(|l| !l.trim().is_empty())?;
    let mut it = line.split_whitespace().map(|w| w.parse::<f64>().ok());
    let (secs, bytes) = (it.next()??, it.next()??);
    (secs.is_finite() && secs >= 0.0 && bytes.is_finite() && bytes > 0.0 && it.next().is_none())
        .then_some((secs, bytes))
}

/// The last non-empty line of a `--join-cmd`'s output as (client address, pid, membership file).
fn parse_join_line(out: &str) -> Option<(SocketAddr, u32, Option<PathBuf>)> {
    let line = out.lines().rev().find(|l| !l.trim().is_empty())?;
    let mut it = line.split_whitespace();
    let addr = it.next()?.parse().ok()?;
    let pid = it.next()?.parse().ok()?;
    let file = it.next().map(PathBuf::from);
    it.next().is_none().then_some((addr, pid, file))
}

/// What [`join_and_read`] measured.
struct Joined {
    /// Seconds from starting the join command until the new node served the read.
    read_s: f64,
    /// The new node's RSS then, MiB.
    rss: Option<f64>,
    /// With a membership file: seconds until it said `ok`, or why not.
    member: Option<Result<f64, String>>,
}

/// Runs `cmd` (which starts a new server joining the cluster), then polls the new server until a
/// session there reads `probe`: seconds from starting the command, and the new server's RSS then
/// (bounded by `--failover-timeout`). When the command named a membership file, then waits (same bound)
/// until the file exists: seconds until then if it holds `ok`, else its text as the failure.
async fn join_and_read(ctx: &Ctx, cmd: &str, probe: &str) -> anyhow::Result<Joined> {
    let t0 = Instant::now();
    let out = super::failover::shell(cmd, &[], ctx.failover_timeout).await?;
    let (addr, pid, file) = parse_join_line(&out).with_context(|| {
        format!("--join-cmd printed {out:?}; its last line must be `ADDRESS PID [FILE]`")
    })?;
    let deadline = t0 + ctx.failover_timeout;
    let mut last_err = None;
    let mut read = None;
    while Instant::now() < deadline {
        let attempt = async {
            let mut c = Conn::open(
                addr,
                ctx.session_timeout_ms,
                None,
                Duration::from_millis(500),
                Duration::from_secs(2),
            )
            .await?;
            c.call_ok(
                &Request::GetData(GetDataRequest {
                    path: probe.to_string(),
                    watch: false,
                }),
                &[],
            )
            .await?;
            c.close().await;
            anyhow::Ok(t0.elapsed().as_secs_f64())
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(s)) => {
                read = Some((s, procfs::Snapshot::take(&[pid]).rss_mib()));
                break;
            }
            Ok(Err(e)) => last_err = Some(format!("{e:#}")),
            Err(_) => last_err = Some("no answer within 5 s".into()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Some((read_s, rss)) = read else {
        bail!(
            "the new node at {addr} did not serve {probe} within {:?} (last attempt: {})",
            ctx.failover_timeout,
            last_err.unwrap_or_default()
        )
    };
    let member = match file {
        None => None,
        Some(f) => Some(loop {
            if let Ok(text) = std::fs::read_to_string(&f) {
                let at = t0.elapsed().as_secs_f64();
                break if text.trim() == "ok" {
                    Ok(at)
                } else {
                    Err(format!("{} says: {}", f.display(), text.trim()))
                };
            }
            if Instant::now() > deadline {
                break Err(format!(
                    "{} not written within {:?} of the start",
                    f.display(),
                    ctx.failover_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }),
    };
    Ok(Joined {
        read_s,
        rss,
        member,
    })
}

/// kill -9 of the first server (`--server-pids`, or `--leader-kill-cmd`), `--restart-cmd`, then the
/// seconds from the kill until a new session reads `probe` and until it creates a znode (bounded by
/// `--failover-timeout`). The restarted server's pid (last line of the command's output) replaces the old.
async fn restart_after_kill(ctx: &mut Ctx, probe: &str) -> anyhow::Result<(f64, f64)> {
    let cmd = ctx.restart_cmd.clone().context("no --restart-cmd")?;
    let t0 = super::failover::kill_leader(ctx, 0).await?;
    let out = super::failover::shell(
        &cmd,
        &[
            ("ROSTER_BENCH_KILLED_INDEX", "0".to_string()),
            ("ROSTER_BENCH_KILLED_ADDR", ctx.addrs[0].to_string()),
            (
                "ROSTER_BENCH_KILLED_PID",
                ctx.pids.first().map(|p| p.to_string()).unwrap_or_default(),
            ),
        ],
        Duration::from_secs(60),
    )
    .await?;
    if let Some(pid) = out.lines().rev().find_map(|l| l.trim().parse::<u32>().ok()) {
        if let Some(p) = ctx.pids.first_mut() {
            *p = pid;
        }
    }
    let deadline = t0 + ctx.failover_timeout;
    let mut read_at = None;
    let mut n = 0u32;
    loop {
        if Instant::now() > deadline {
            bail!(
                "the restarted server did not {} within {:?} of the kill",
                if read_at.is_none() {
                    "serve a read"
                } else {
                    "accept a write"
                },
                ctx.failover_timeout
            );
        }
        let attempt = async {
            let mut c = Conn::open(
                ctx.addrs[0],
                ctx.session_timeout_ms,
                None,
                Duration::from_millis(500),
                Duration::from_secs(2),
            )
            .await?;
            if read_at.is_none() {
                c.call_ok(
                    &Request::GetData(GetDataRequest {
                        path: probe.to_string(),
                        watch: false,
                    }),
                    &[],
                )
                .await?;
                read_at = Some(t0.elapsed().as_secs_f64());
            }
            n += 1;
            c.call_ok(
                &create_req(format!("{probe}-restart-{n}"), Bytes::new(), 0),
                &[],
            )
            .await?;
            c.close().await;
            anyhow::Ok(t0.elapsed().as_secs_f64())
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(write_s)) => return Ok((read_at.unwrap_or(write_s), write_s)),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Large values: for each of `value_sizes`, setData of that many bytes on a few keys (`sessions` x
/// `depth` in flight): throughput, p99 and MiB/s.
pub async fn values(ctx: &mut Ctx, pb: &ProgressBar) -> anyhow::Result<Vec<WorkloadResult>> {
    let mut out = Vec::new();
    for &size in &ctx.value_sizes.clone() {
        let dir = format!("{}/values-{}/{size}", ctx.root, ctx.run_id);
        let mut a = ctx.admin().await?;
        ensure_path(&mut a, &dir).await?;
        let keys = 16u64;
        let data = Bytes::from(vec![b'v'; size]);
        for k in 0..keys {
            a.call_ok(
                &create_req(format!("{dir}/k{k:02}"), Bytes::new(), 0),
                &[ERR_NODE_EXISTS],
            )
            .await?;
        }
        a.close().await;
        pb.set_message(format!("{size} B"));
        let d2 = dir.clone();
        let spec = ctx.spec(Arc::new(move |_, rng| {
            (
                Request::SetData(SetDataRequest {
                    path: format!("{d2}/k{:02}", rng.below(keys)),
                    data: Some(data.clone()),
                    version: -1,
                }),
                0,
            )
        }));
        let lo = load::run(spec, pb).await?;
        let mut r = super::workloads::load_result(
            &format!("values-{}", human_bytes(size)),
            format!(
                "setData of {size} B on {keys} keys, {} sessions x {} in flight",
                ctx.sessions, ctx.depth
            ),
            &lo,
        );
        if let Some(t) = r.throughput {
            r.extra(
                "mib_per_s",
                t * size as f64 / 1048576.0,
                "MiB/s",
                Some(false),
            );
        }
        out.push(r);
    }
    Ok(out)
}

/// 1024 → "1KiB", 102400 → "100KiB", 1000000 → "1000000B".
fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_paths_sizes_and_command_lines() {
        assert_eq!(
            registry_member("/r", 65_793),
            "/r/services/svc-00657/instances/10.1.1.1:8080"
        );
        assert_eq!(human_bytes(1024), "1KiB");
        assert_eq!(human_bytes(1_000_000), "1000000B");
        assert_eq!(count_children(&[0, 0, 0, 3]).unwrap(), 3);
        assert_eq!(
            parse_snapshot_line("x\n0.25 1048576\n\n"),
            Some((0.25, 1048576.0))
        );
        assert_eq!(parse_snapshot_line("0.25"), None);
        assert_eq!(parse_snapshot_line("0.25 0"), None);
        assert_eq!(parse_snapshot_line("0.25 10 x"), None);
        assert_eq!(
            parse_join_line("starting\n127.0.0.1:2182 4242\n"),
            Some(("127.0.0.1:2182".parse().unwrap(), 4242, None))
        );
        assert_eq!(
            parse_join_line("127.0.0.1:2182 4242 /tmp/joined\n"),
            Some((
                "127.0.0.1:2182".parse().unwrap(),
                4242,
                Some(PathBuf::from("/tmp/joined"))
            ))
        );
        assert_eq!(parse_join_line("127.0.0.1:2182 4242 /tmp/joined x"), None);
        assert_eq!(parse_join_line("127.0.0.1:2182"), None);
        assert_eq!(parse_join_line("localhost 12"), None);
        assert!(count_children(&[0]).is_err());
    }
}
