//! The failover workload: kill -9 the leader of a cluster and measure how long the survivors take to
//!
//! - elect a new leader (`failover-leader`: kill to the first survivor whose `srvr` says `Mode: leader`),
//! - let a session that existed before the kill, connected to a survivor, write again
//!   (`failover-session-write`: kill to the reply of the first setData *sent after* the kill; the session
//!   reconnects with its id and password to any server when its connection drops, as a ZooKeeper client
//!   does),
//! - let a brand-new session write (`failover-new-session`: kill to the reply of a create on a session
//!   opened after the kill, servers tried round-robin),
//!
//! and then, with `--restart-cmd`, how long the restarted node takes to be back in a cluster where every
//! node serves (`failover-rejoin`). Each trial is one kill; with several trials the killed node must be
//! restarted between them.
//!
//! Finding the leader: every server is asked `srvr` and the one answering `Mode: leader` leads (Roster
//! and ZooKeeper both answer this way). Killing it: `--leader-kill-cmd` (run with `sh -c`, environment
//! `ROSTER_BENCH_LEADER_INDEX`, `_ADDR`, `_PID`), or else `kill -9` of its pid from `--server-pids`
//! (which must then list one pid per address, in the same order).
//!
//! The servers of the cluster must all be in `--servers`, and the cluster must be healthy at the start.

use super::conn::{create_req, ensure_path, err_name, Conn};
use super::report::{new_hist, Latency, WorkloadResult};
use super::workloads::Ctx;
use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use roster_proto::{CreateMode, Request, SetDataRequest};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounds of one connection attempt while the cluster is failing over.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between attempts (reconnects, retried writes, `srvr` polls).
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// The `Mode:` line of the server's `srvr` answer (`leader`, `follower`, `observer`, `standalone`), or
/// None when it does not answer or does not serve.
pub async fn srvr_mode(addr: SocketAddr) -> Option<String> {
    let ask = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"srvr").await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        out.lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(|m| m.trim().to_string())
    };
    tokio::time::timeout(Duration::from_secs(1), ask)
        .await
        .ok()
        .flatten()
}

/// Waits until every server answers `srvr` as leader/follower/observer with exactly one leader, and
/// accepts a new session. Returns the leader's index.
async fn wait_ready(addrs: &[SocketAddr], within: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + within;
    loop {
        let mut modes = Vec::new();
        for a in addrs {
            modes.push(srvr_mode(*a).await);
        }
        let leaders: Vec<usize> = (0..modes.len())
            .filter(|&i| modes[i].as_deref() == Some("leader"))
            .collect();
        let all_members = modes.iter().all(|m| {
            matches!(
                m.as_deref(),
                Some("leader") | Some("follower") | Some("observer")
            )
        });
        if all_members && leaders.len() == 1 {
            let mut ok = true;
            for a in addrs {
                match Conn::open(*a, 10_000, None, CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT).await {
                    Ok(c) => c.close().await,
                    Err(_) => ok = false,
                }
            }
            if ok {
                return Ok(leaders[0]);
            }
        }
        if Instant::now() >= deadline {
            bail!("the cluster is not healthy after {within:?} (srvr modes: {modes:?}); failover needs one leader and every server serving");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one session that existed before the kill saw.
struct WriterOut {
    /// Kill to the first successful write sent after it.
    resumed: Option<Duration>,
    /// New connections it needed (0 when its server kept it).
    reconnects: u32,
    /// Why it never wrote again, if it did not.
    error: Option<String>,
}

/// A session on a survivor writing `path` one request at a time, before and after the kill.
#[allow(clippy::too_many_arguments)] // one call site; the arguments are the trial's whole context
async fn existing_writer(
    addrs: Vec<SocketAddr>,
    home: usize,
    mut conn: Conn,
    path: String,
    payload: Bytes,
    killed: Arc<OnceLock<Instant>>,
    warm: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> WriterOut {
    let mut out = WriterOut {
        resumed: None,
        reconnects: 0,
        error: None,
    };
    let (sid, passwd, timeout) = (conn.session_id, conn.passwd.clone(), conn.timeout_ms);
    let mut last_err = String::new();
    let req = Request::SetData(SetDataRequest {
        path,
        data: Some(payload),
        version: -1,
    });
    let mut connected = true;
    let mut next_addr = home;
    while !stop.load(Ordering::Relaxed) {
        if !connected {
            let addr = addrs[next_addr % addrs.len()];
            next_addr += 1;
            match Conn::open(
                addr,
                timeout,
                Some((sid, passwd.clone(), conn.last_zxid)),
                CONNECT_TIMEOUT,
                HANDSHAKE_TIMEOUT,
            )
            .await
            {
                Ok(c) => {
                    conn = c;
                    connected = true;
                    out.reconnects += 1;
                }
                Err(e) => {
                    last_err = format!("reconnect to {addr}: {e:#}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            }
        }
        let sent = Instant::now();
        match tokio::time::timeout(Duration::from_secs(30), conn.call(&req)).await {
            Ok(Ok((h, _))) if h.err == 0 => {
                let done = Instant::now();
                match killed.get() {
                    Some(k) if sent >= *k => {
                        out.resumed = Some(done - *k);
                        return out;
                    }
                    _ => {
                        warm.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(Ok((h, _))) => {
                last_err = format!("setData answered {}", err_name(h.err));
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Ok(Err(e)) => {
                // The server dropped the connection (ZooKeeper does on leader loss, Roster when a
                // write cannot be forwarded): reconnect, after a pause as a real client would.
                last_err = format!("{e:#}");
                connected = false;
                next_addr = home;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(_) => {
                last_err = "no reply to setData within 30 s".into();
                connected = false;
                next_addr = home + 1;
            }
        }
    }
    out.error = Some(if last_err.is_empty() {
        "stopped before writing again".into()
    } else {
        last_err
    });
    out
}

/// New sessions after the kill, round-robin over every server, until one creates a node.
async fn new_session_writer(
    addrs: Vec<SocketAddr>,
    dir: String,
    start_at: usize,
    killed: Instant,
    deadline: Instant,
) -> Result<Duration, String> {
    let mut last_err = String::new();
    let mut i = start_at;
    while Instant::now() < deadline {
        let addr = addrs[i % addrs.len()];
        i += 1;
        match Conn::open(addr, 10_000, None, CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT).await {
            Ok(mut c) => {
                let req = create_req(
                    format!("{dir}/new-{i}-{:x}", c.session_id),
                    Bytes::new(),
                    CreateMode::Ephemeral.code(),
                );
                match tokio::time::timeout(Duration::from_secs(10), c.call(&req)).await {
                    Ok(Ok((h, _))) if h.err == 0 => {
                        let d = killed.elapsed();
                        tokio::spawn(c.close());
                        return Ok(d);
                    }
                    Ok(Ok((h, _))) => last_err = format!("create on {addr}: {}", err_name(h.err)),
                    Ok(Err(e)) => last_err = format!("create on {addr}: {e:#}"),
                    Err(_) => last_err = format!("create on {addr}: no reply in 10 s"),
                }
            }
            Err(e) => last_err = format!("{e:#}"),
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    Err(format!("no new session could write: {last_err}"))
}

/// Polls the survivors' `srvr` until one leads.
async fn new_leader(
    survivors: Vec<SocketAddr>,
    killed: Instant,
    deadline: Instant,
) -> Result<Duration, String> {
    while Instant::now() < deadline {
        for a in &survivors {
            if srvr_mode(*a).await.as_deref() == Some("leader") {
                return Ok(killed.elapsed());
            }
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    Err("no survivor became leader".into())
}

/// Runs `sh -c cmd` with the given environment; returns its stdout.
pub(super) async fn shell(
    cmd: &str,
    env: &[(&str, String)],
    within: Duration,
) -> anyhow::Result<String> {
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c").arg(cmd).stdin(std::process::Stdio::null());
    c.stderr(std::process::Stdio::inherit());
    for (k, v) in env {
        c.env(k, v);
    }
    c.kill_on_drop(true);
    let out = tokio::time::timeout(within, c.output())
        .await
        .with_context(|| format!("{cmd:?} did not finish within {within:?} (does it leave a process holding its stdout?)"))?
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) async fn kill_leader(ctx: &Ctx, idx: usize) -> anyhow::Result<Instant> {
    let pid = ctx
        .pids
        .get(idx)
        .copied()
        .filter(|_| ctx.pids.len() == ctx.addrs.len());
    if let Some(cmd) = &ctx.leader_kill_cmd {
        shell(
            cmd,
            &[
                ("ROSTER_BENCH_LEADER_INDEX", idx.to_string()),
                ("ROSTER_BENCH_LEADER_ADDR", ctx.addrs[idx].to_string()),
                (
                    "ROSTER_BENCH_LEADER_PID",
                    pid.map(|p| p.to_string()).unwrap_or_default(),
                ),
            ],
            Duration::from_secs(30),
        )
        .await?;
    } else if let Some(pid) = pid {
        let st = tokio::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .await
            .context("running kill")?;
        if !st.success() {
            bail!("kill -9 {pid} failed: {st}");
        }
    } else {
        bail!(
            "failover needs --server-pids with one pid per --servers address (same order), or --leader-kill-cmd"
        );
    }
    Ok(Instant::now())
}

fn trials_result(
    name: &str,
    description: String,
    h: &Histogram<u64>,
    failures: &[String],
) -> WorkloadResult {
    let lat = Latency::of(h);
    let mut r = WorkloadResult {
        workload: name.into(),
        description,
        elapsed_s: 0.0,
        ops: h.len(),
        unit: "trials".into(),
        latency: lat.clone(),
        ..Default::default()
    };
    if let Some(l) = lat {
        r.extra("worst", l.max_ms, "ms", Some(true));
    }
    if !failures.is_empty() {
        r.error = Some(failures.join("; "));
    }
    r
}

/// The failover workload; see the module documentation.
pub async fn failover(ctx: &mut Ctx, pb: &ProgressBar) -> anyhow::Result<Vec<WorkloadResult>> {
    if ctx.addrs.len() < 3 {
        bail!(
            "failover needs the addresses of every server of a cluster of at least 3 (got {})",
            ctx.addrs.len()
        );
    }
    let trials = ctx.failover_trials.max(1);
    if trials > 1 && ctx.restart_cmd.is_none() {
        bail!("more than one failover trial needs --restart-cmd to bring the killed node back");
    }
    let within = ctx.failover_timeout;
    pb.set_length(trials as u64);
    let dir = format!("{}/failover-{}", ctx.root, ctx.run_id);
    let (mut h_leader, mut h_session, mut h_new, mut h_rejoin) =
        (new_hist(), new_hist(), new_hist(), new_hist());
    let (mut f_leader, mut f_session, mut f_new, mut f_rejoin) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut reconnects = 0u32;
    let mut sessions = 0u32;
    let started = Instant::now();
    for trial in 0..trials {
        pb.set_message(format!(
            "trial {}: waiting for a healthy cluster",
            trial + 1
        ));
        let leader = wait_ready(&ctx.addrs, within).await?;
        {
            let mut a = Conn::connect(
                ctx.addrs[(leader + 1) % ctx.addrs.len()],
                ctx.session_timeout_ms,
            )
            .await?;
            ensure_path(&mut a, &dir).await?;
            for i in 0..ctx.addrs.len() {
                a.call_ok(
                    &create_req(format!("{dir}/s{i}"), Bytes::new(), 0),
                    &[super::conn::ERR_NODE_EXISTS],
                )
                .await?;
            }
            a.close().await;
        }
        let survivors: Vec<usize> = (0..ctx.addrs.len()).filter(|&i| i != leader).collect();
        let killed = Arc::new(OnceLock::new());
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        let mut warms = Vec::new();
        for &i in &survivors {
            let conn = Conn::connect(ctx.addrs[i], ctx.session_timeout_ms).await?;
            let warm = Arc::new(AtomicU64::new(0));
            warms.push(warm.clone());
            writers.push(tokio::spawn(existing_writer(
                ctx.addrs.clone(),
                i,
                conn,
                format!("{dir}/s{i}"),
                ctx.payload.clone(),
                killed.clone(),
                warm,
                stop.clone(),
            )));
        }
        // Every session writes before the kill: they are live and in steady state.
        let warm_deadline = Instant::now() + Duration::from_secs(30);
        while warms.iter().any(|w| w.load(Ordering::Relaxed) < 20) {
            if Instant::now() > warm_deadline {
                stop.store(true, Ordering::Relaxed);
                bail!("the sessions on the followers could not write before the kill");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pb.set_message(format!(
            "trial {}: killing the leader {}",
            trial + 1,
            ctx.addrs[leader]
        ));
        let t0 = kill_leader(ctx, leader).await?;
        let _ = killed.set(t0);
        let deadline = t0 + within;
        let surv_addrs: Vec<SocketAddr> = survivors.iter().map(|&i| ctx.addrs[i]).collect();
        let leader_task = tokio::spawn(new_leader(surv_addrs, t0, deadline));
        let new_task = tokio::spawn(new_session_writer(
            ctx.addrs.clone(),
            dir.clone(),
            leader + 1 + trial,
            t0,
            deadline,
        ));
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline.into()).await;
                stop.store(true, Ordering::Relaxed);
            })
        };
        match leader_task.await? {
            Ok(d) => h_leader.saturating_record(d.as_nanos() as u64),
            Err(e) => f_leader.push(format!("trial {}: {e}", trial + 1)),
        }
        for w in writers {
            let o = w.await?;
            sessions += 1;
            reconnects += o.reconnects;
            match (o.resumed, o.error) {
                (Some(d), _) => h_session.saturating_record(d.as_nanos() as u64),
                (None, e) => {
                    f_session.push(format!("trial {}: {}", trial + 1, e.unwrap_or_default()))
                }
            }
        }
        match new_task.await? {
            Ok(d) => h_new.saturating_record(d.as_nanos() as u64),
            Err(e) => f_new.push(format!("trial {}: {e}", trial + 1)),
        }
        stopper.abort();
        let measured = t0.elapsed();
        if let Some(cmd) = ctx.restart_cmd.clone() {
            pb.set_message(format!(
                "trial {}: restarting {}",
                trial + 1,
                ctx.addrs[leader]
            ));
            let r0 = Instant::now();
            let out = shell(
                &cmd,
                &[
                    ("ROSTER_BENCH_KILLED_INDEX", leader.to_string()),
                    ("ROSTER_BENCH_KILLED_ADDR", ctx.addrs[leader].to_string()),
                    (
                        "ROSTER_BENCH_KILLED_PID",
                        ctx.pids
                            .get(leader)
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                    ),
                ],
                Duration::from_secs(60),
            )
            .await?;
            // The command prints the restarted server's pid (last line), so later kills and the CPU
            // and memory readings follow the new process.
            if let Some(pid) = out.lines().rev().find_map(|l| l.trim().parse::<u32>().ok()) {
                if ctx.pids.len() == ctx.addrs.len() {
                    ctx.pids[leader] = pid;
                }
            }
            match wait_ready(&ctx.addrs, within).await {
                Ok(_) => h_rejoin.saturating_record(r0.elapsed().as_nanos() as u64),
                Err(e) => {
                    f_rejoin.push(format!("trial {}: {e:#}", trial + 1));
                    break;
                }
            }
        }
        eprintln!(
            "  failover trial {}: killed {} (leader); measured for {:.2} s",
            trial + 1,
            ctx.addrs[leader],
            measured.as_secs_f64()
        );
        pb.inc(1);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut out = vec![
        trials_result(
            "failover-leader",
            "kill -9 of the leader to a survivor answering srvr with Mode: leader".into(),
            &h_leader,
            &f_leader,
        ),
        trials_result(
            "failover-session-write",
            "kill -9 of the leader to the first write (sent after the kill) of a session opened before it on a survivor".into(),
            &h_session,
            &f_session,
        ),
        trials_result(
            "failover-new-session",
            "kill -9 of the leader to the first create of a session opened after it (servers round-robin)".into(),
            &h_new,
            &f_new,
        ),
    ];
    out[1].extra(
        "reconnects_per_session",
        if sessions > 0 {
            reconnects as f64 / sessions as f64
        } else {
            0.0
        },
        "",
        None,
    );
    if ctx.restart_cmd.is_some() {
        out.push(trials_result(
            "failover-rejoin",
            "restart of the killed node to every node serving again under one leader".into(),
            &h_rejoin,
            &f_rejoin,
        ));
    }
    for r in out.iter_mut() {
        r.elapsed_s = elapsed;
    }
    Ok(out)
}
