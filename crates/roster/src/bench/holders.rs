//! The held sessions of the `sessions` workload, in this process or spread over holder processes.
//!
//! Session `i` of `n` connects to server `i mod servers`, creates the ephemeral `DIR/sNNNNNN` and sets an
//! exists watch on it, then pings at a third of its timeout until told to stop. A victim (every
//! `step`-th session) is dropped at the kill: its socket closed without closeSession, as a crashed
//! client's would be; each victim reports when it last sent anything (its server-side deadline runs from
//! there) on the `CLOCK_MONOTONIC` clock, which every process of the machine shares, so a holder process
//! can report it to the parent exactly. Healthy sessions close politely at the end and report whatever
//! notification or unexpected reply they saw (a healthy one sees none).
//!
//! With `--hold-procs P > 1` the parent spawns P children of this binary (`bench
//! --internal-session-holder --holder-index K`); child K holds the sessions with `i mod P == K`, so each
//! child spreads its share over every server and holds a tenth of victims like the others. One process
//! cannot hold more sessions than its descriptor limit allows; P of them can. They talk in lines:
//!
//! ```text
//! child → parent   OPEN <count>            progress while opening (every 500)
//!                  READY <count>           all of its share open and watched
//!                  ERROR <message>         it failed (then it exits)
//! parent → child   KILL                    drop the victims now
//! child → parent   V <i> <sent_ns> <ms>    per victim: last send (CLOCK_MONOTONIC ns), timeout
//!                  KILLED                  every victim dropped
//! parent → child   CLOSE (or end of input) close the healthy ones politely
//! child → parent   S <text>                a surprise (at most 20 printed)
//!                  DONE <surprises>        then it exits
//! ```
//!
//! Left out: holders on other machines (the children share the parent's loopback); the parent SIGKILLs
//! a child that stops answering, whose sessions then expire on their own.

use super::conn::{create_req, Conn, Incoming};
use anyhow::{bail, Context};
use bytes::Bytes;
use indicatif::ProgressBar;
use roster_proto::{xid, CreateMode, ExistsRequest, Request};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

/// Sessions opened to one server from one loopback source address before moving to the next (one
/// address has about 28,000 ephemeral ports per destination).
const PER_SOURCE: usize = 20_000;
/// Sessions being opened at once, in all (each of P holder processes opens a P-th of them at once, so
/// the servers see the same opening load whatever P is).
const OPENING: usize = 256;
/// Surprises a holder process prints (it counts them all).
const SURPRISES_SHOWN: usize = 20;

/// The source address of held session `i` of sessions spread round-robin over `servers` servers: the
/// default while fewer than `PER_SOURCE` go to its server, then 127.0.0.2, 127.0.0.3… when the server is
/// on IPv4 loopback.
pub fn source_for(addr: SocketAddr, i: usize, servers: usize) -> Option<IpAddr> {
    let n = (i / servers.max(1)) / PER_SOURCE;
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() && n > 0 => {
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + n.min(250) as u8)))
        }
        _ => None,
    }
}

/// The ephemeral of held session `i`.
pub fn session_path(dir: &str, i: usize) -> String {
    format!("{dir}/s{i:06}")
}

/// Now on `CLOCK_MONOTONIC`, ns (the clock behind `Instant` on Linux, shared by every process).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct passed; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The `Instant` of a `CLOCK_MONOTONIC` reading (from any process of this machine).
pub fn instant_of(mono: u64) -> Instant {
    let now_mono = mono_ns();
    let now = Instant::now();
    if mono <= now_mono {
        now.checked_sub(Duration::from_nanos(now_mono - mono))
            .unwrap_or(now)
    } else {
        now + Duration::from_nanos(mono - now_mono)
    }
}

/// A victim as it was dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Victim {
    /// Its session index.
    pub i: usize,
    /// When it last sent anything, `CLOCK_MONOTONIC` ns.
    pub sent_mono_ns: u64,
    /// Its negotiated timeout, ms.
    pub timeout_ms: i32,
}

/// What the holder tells a held session.
enum Cmd {
    /// Drop the socket without closeSession (a crashed client).
    Kill,
    /// closeSession, then go.
    Close,
}

/// What a held session reports when it stops.
struct Held {
    last_sent: Instant,
    timeout_ms: i32,
    surprises: Vec<String>,
}

/// Keeps `c` alive: a ping every third of the timeout, until told to stop.
async fn hold(mut c: Conn, mut rx: oneshot::Receiver<Cmd>) -> anyhow::Result<Held> {
    let every = Duration::from_millis((c.timeout_ms as u64 / 3).max(50));
    let mut last_sent = Instant::now();
    let mut surprises = Vec::new();
    loop {
        let next_ping = tokio::time::Instant::from_std(last_sent + every);
        tokio::select! {
            // A session told to stop does so before anything else (no ping after the kill).
            biased;
            cmd = &mut rx => {
                let timeout_ms = c.timeout_ms;
                match cmd {
                    Ok(Cmd::Kill) => drop(c),
                    Ok(Cmd::Close) | Err(_) => c.close().await,
                }
                return Ok(Held { last_sent, timeout_ms, surprises });
            }
            _ = tokio::time::sleep_until(next_ping) => {
                c.queue(&Request::Ping);
                c.flush().await?;
                last_sent = Instant::now();
            }
            inc = c.next() => match inc? {
                Incoming::Reply(h, _) if h.xid == xid::PING => {}
                Incoming::Reply(h, _) => surprises.push(format!("reply xid {} err {}", h.xid, h.err)),
                Incoming::Event(e) => surprises.push(format!("{e:?}")),
            }
        }
    }
}

/// What the sessions are and where they go.
#[derive(Clone)]
pub struct Plan {
    /// Servers, round-robin by session index.
    pub addrs: Vec<SocketAddr>,
    /// Parent of the ephemerals.
    pub dir: String,
    /// Sessions in all.
    pub n: usize,
    /// Session timeout asked for, ms.
    pub timeout_ms: i32,
    /// Every `step`-th session (index multiple of it) is a victim.
    pub step: usize,
    /// Processes holding them.
    pub procs: usize,
}

impl Plan {
    /// Whether session `i` is dropped at the kill.
    pub fn is_victim(&self, i: usize) -> bool {
        i.is_multiple_of(self.step.max(1))
    }
}

/// One held session: its index, the channel that stops it, and its task.
struct Slot {
    i: usize,
    cmd: Option<oneshot::Sender<Cmd>>,
    task: JoinHandle<Option<anyhow::Result<Held>>>,
}

/// The sessions of this process's share, each held by a task.
pub struct Local {
    sessions: Vec<Slot>,
    ready: Arc<AtomicUsize>,
    errors: mpsc::Receiver<anyhow::Error>,
    plan: Plan,
}

impl Local {
    /// Starts opening sessions `indices` (at most `OPENING` at a time); returns at once.
    pub fn open(plan: &Plan, indices: impl Iterator<Item = usize>) -> Local {
        let ready = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Semaphore::new(OPENING.div_ceil(plan.procs.max(1))));
        let (err_tx, errors) = mpsc::channel::<anyhow::Error>(16);
        let mut sessions = Vec::new();
        for i in indices {
            let addr = plan.addrs[i % plan.addrs.len()];
            let source = source_for(addr, i, plan.addrs.len());
            let (tx, rx) = oneshot::channel();
            let (gate, ready, err_tx) = (gate.clone(), ready.clone(), err_tx.clone());
            let path = session_path(&plan.dir, i);
            let t = plan.timeout_ms;
            let task = tokio::spawn(async move {
                let opened = async {
                    let _permit = gate.acquire().await?;
                    let mut c = Conn::connect_held(addr, source, t).await?;
                    c.call_ok(
                        &create_req(path.clone(), Bytes::new(), CreateMode::Ephemeral.code()),
                        &[],
                    )
                    .await?;
                    c.call_ok(&Request::Exists(ExistsRequest { path, watch: true }), &[])
                        .await?;
                    anyhow::Ok(c)
                };
                let c = match opened.await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = err_tx.send(e.context(format!("session {i}"))).await;
                        return None;
                    }
                };
                ready.fetch_add(1, Ordering::Relaxed);
                Some(hold(c, rx).await)
            });
            sessions.push(Slot {
                i,
                cmd: Some(tx),
                task,
            });
        }
        Local {
            sessions,
            ready,
            errors,
            plan: plan.clone(),
        }
    }

    /// Sessions of the share.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions open and watched so far.
    pub fn ready(&self) -> usize {
        self.ready.load(Ordering::Relaxed)
    }

    /// The first opening failure, if any came.
    pub fn failed(&mut self) -> Option<anyhow::Error> {
        self.errors.try_recv().ok()
    }

    /// Drops every victim's socket at once; waits (30 s cap) until each has, and reports them.
    pub async fn kill(&mut self) -> anyhow::Result<Vec<Victim>> {
        let mut out = Vec::new();
        for slot in self.sessions.iter_mut() {
            if self.plan.is_victim(slot.i) {
                if let Some(tx) = slot.cmd.take() {
                    let _ = tx.send(Cmd::Kill);
                }
            }
        }
        let now_mono = mono_ns();
        let now = Instant::now();
        for Slot { i, task, .. } in self.sessions.iter_mut() {
            if !self.plan.is_victim(*i) {
                continue;
            }
            let held = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .context("a killed session did not stop within 30 s")??
                .with_context(|| format!("killed session {i} had failed to open"))?
                .with_context(|| format!("session {i} failed while held"))?;
            // A victim may have sent a ping after `now` (it was mid-ping when the kill came): its
            // last send is then later than `now`, and clamping it to `now` made that session look
            // expired late by however long the holder took to reach it (up to 300 ms at 50,000).
            let sent_mono_ns = if held.last_sent >= now {
                now_mono + (held.last_sent - now).as_nanos() as u64
            } else {
                now_mono.saturating_sub((now - held.last_sent).as_nanos() as u64)
            };
            out.push(Victim {
                i: *i,
                sent_mono_ns,
                timeout_ms: held.timeout_ms,
            });
        }
        Ok(out)
    }

    /// Closes every session still held (politely) and returns the surprises the healthy ones saw
    /// (60 s cap per session).
    pub async fn close(self) -> Vec<String> {
        let mut tasks = Vec::new();
        for Slot { i, cmd, task } in self.sessions {
            match cmd {
                Some(tx) => {
                    let _ = tx.send(Cmd::Close);
                    tasks.push((i, task));
                }
                None => task.abort(),
            }
        }
        let mut surprises = Vec::new();
        for (i, t) in tasks {
            match tokio::time::timeout(Duration::from_secs(60), t).await {
                Ok(Ok(Some(Ok(h)))) => surprises.extend(h.surprises),
                Ok(Ok(Some(Err(e)))) => surprises.push(format!("session {i} failed: {e:#}")),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => surprises.push(format!("session {i} task: {e}")),
                Err(_) => surprises.push(format!("session {i} did not close within 60 s")),
            }
        }
        surprises
    }
}

/// Child mode (`bench --internal-session-holder`): holds share `index` of `plan.procs`, driven by stdin.
pub async fn run_child(plan: Plan, index: usize) -> anyhow::Result<()> {
    let mut out = tokio::io::stdout();
    let mut local = Local::open(&plan, (index..plan.n).step_by(plan.procs.max(1)));
    let total = local.len();
    let mut shown = 0;
    loop {
        if let Some(e) = local.failed() {
            let msg = format!("{e:#}").replace('\n', " ");
            out.write_all(format!("ERROR {msg}\n").as_bytes()).await?;
            out.flush().await?;
            bail!("{msg}");
        }
        let r = local.ready();
        if r >= total {
            break;
        }
        if r >= shown + 500 {
            shown = r;
            out.write_all(format!("OPEN {r}\n").as_bytes()).await?;
            out.flush().await?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.write_all(format!("READY {total}\n").as_bytes()).await?;
    out.flush().await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await? {
        match line.trim() {
            "KILL" => {
                let victims = local.kill().await?;
                let mut text = String::with_capacity(victims.len() * 32);
                for v in &victims {
                    text.push_str(&format!("V {} {} {}\n", v.i, v.sent_mono_ns, v.timeout_ms));
                }
                text.push_str("KILLED\n");
                out.write_all(text.as_bytes()).await?;
                out.flush().await?;
            }
            "CLOSE" => break,
            other => tracing::warn!(line = other, "session holder: unknown command ignored"),
        }
    }
    let surprises = local.close().await;
    let mut text = String::new();
    for s in surprises.iter().take(SURPRISES_SHOWN) {
        text.push_str(&format!("S {}\n", s.replace('\n', " ")));
    }
    text.push_str(&format!("DONE {}\n", surprises.len()));
    out.write_all(text.as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

/// A line from a holder process, parsed.
#[derive(Debug, PartialEq)]
enum Msg {
    Open(usize),
    Ready(usize),
    Error(String),
    Victim(Victim),
    Killed,
    Surprise(String),
    Done(usize),
    /// Its stdout ended (it exited).
    Eof,
}

fn parse_msg(line: &str) -> Option<Msg> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    Some(match word {
        "OPEN" => Msg::Open(rest.trim().parse().ok()?),
        "READY" => Msg::Ready(rest.trim().parse().ok()?),
        "ERROR" => Msg::Error(rest.to_string()),
        "V" => {
            let mut it = rest.split_whitespace();
            let v = Victim {
                i: it.next()?.parse().ok()?,
                sent_mono_ns: it.next()?.parse().ok()?,
                timeout_ms: it.next()?.parse().ok()?,
            };
            if it.next().is_some() {
                return None;
            }
            Msg::Victim(v)
        }
        "KILLED" => Msg::Killed,
        "S" => Msg::Surprise(rest.to_string()),
        "DONE" => Msg::Done(rest.trim().parse().ok()?),
        _ => return None,
    })
}

/// Holder processes, each holding its share.
pub struct Remote {
    children: Vec<(tokio::process::Child, tokio::process::ChildStdin)>,
    msgs: mpsc::UnboundedReceiver<(usize, Msg)>,
}

impl Remote {
    /// Spawns `procs` holder processes of this binary (killed when dropped).
    pub fn spawn(plan: &Plan, procs: usize, tls_ca: Option<&PathBuf>) -> anyhow::Result<Remote> {
        let exe =
            std::env::current_exe().context("locating this binary for the holder processes")?;
        let servers: Vec<String> = plan.addrs.iter().map(|a| a.to_string()).collect();
        let (tx, msgs) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        for k in 0..procs {
            let mut cmd = tokio::process::Command::new(&exe);
            cmd.args(["bench", "--internal-session-holder", "--servers"])
                .arg(servers.join(","))
                .arg("--holder-path")
                .arg(&plan.dir)
                .arg("--hold-sessions")
                .arg(plan.n.to_string())
                .arg("--hold-procs")
                .arg(procs.to_string())
                .arg("--holder-index")
                .arg(k.to_string())
                .arg("--hold-timeout-ms")
                .arg(plan.timeout_ms.to_string())
                .arg("--holder-step")
                .arg(plan.step.to_string());
            if let Some(ca) = tls_ca {
                cmd.arg("--tls-ca").arg(ca);
            }
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a session holder process")?;
            let stdin = child.stdin.take().context("holder stdin")?;
            let stdout = child.stdout.take().context("holder stdout")?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match parse_msg(&line) {
                        Some(m) => {
                            let _ = tx.send((k, m));
                        }
                        None => tracing::warn!(
                            holder = k,
                            line,
                            "session holder said something unknown"
                        ),
                    }
                }
                let _ = tx.send((k, Msg::Eof));
            });
            children.push((child, stdin));
        }
        Ok(Remote { children, msgs })
    }

    async fn send_all(&mut self, line: &str) -> anyhow::Result<()> {
        for (k, (_, stdin)) in self.children.iter_mut().enumerate() {
            stdin
                .write_all(line.as_bytes())
                .await
                .with_context(|| format!("telling holder process {k} {line:?}"))?;
            stdin.flush().await?;
        }
        Ok(())
    }

    async fn next(&mut self, deadline: Instant, what: &str) -> anyhow::Result<(usize, Msg)> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.msgs.recv()).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => bail!("every holder process is gone ({what})"),
            Err(_) => bail!("holder processes did not finish {what} in time"),
        }
    }

    /// Waits until every holder has its share open (`cap`), moving `pb` along.
    pub async fn wait_ready(&mut self, cap: Duration, pb: &ProgressBar) -> anyhow::Result<()> {
        let deadline = Instant::now() + cap;
        let mut opened = vec![0usize; self.children.len()];
        let mut ready = vec![false; self.children.len()];
        while !ready.iter().all(|r| *r) {
            let (k, m) = self.next(deadline, "opening").await.with_context(|| {
                format!(
                    "only {} sessions open after {cap:?} (raise --memory-timeout)",
                    opened.iter().sum::<usize>()
                )
            })?;
            match m {
                Msg::Open(c) => opened[k] = c,
                Msg::Ready(c) => {
                    opened[k] = c;
                    ready[k] = true;
                }
                Msg::Error(e) => bail!("holder process {k}: {e}"),
                Msg::Eof => bail!("holder process {k} exited while opening (its stderr says why)"),
                other => bail!("holder process {k} said {other:?} while opening"),
            }
            pb.set_position(opened.iter().sum::<usize>() as u64);
        }
        Ok(())
    }

    /// Tells every holder to drop its victims; collects them.
    pub async fn kill(&mut self) -> anyhow::Result<Vec<Victim>> {
        self.send_all("KILL\n").await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut done = vec![false; self.children.len()];
        let mut out = Vec::new();
        while !done.iter().all(|d| *d) {
            match self.next(deadline, "the kill").await? {
                (_, Msg::Victim(v)) => out.push(v),
                (k, Msg::Killed) => done[k] = true,
                (k, Msg::Eof) => bail!("holder process {k} exited during the kill"),
                (k, other) => bail!("holder process {k} said {other:?} during the kill"),
            }
        }
        Ok(out)
    }

    /// Tells every holder to close its sessions; collects their surprises and waits for them to exit.
    pub async fn close(mut self) -> Vec<String> {
        let mut surprises = Vec::new();
        if let Err(e) = self.send_all("CLOSE\n").await {
            surprises.push(format!("{e:#}"));
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut done = vec![false; self.children.len()];
        while !done.iter().all(|d| *d) {
            match self.next(deadline, "closing").await {
                Ok((_, Msg::Surprise(s))) => surprises.push(s),
                Ok((k, Msg::Done(total))) => {
                    done[k] = true;
                    let shown = total.min(SURPRISES_SHOWN);
                    for _ in shown..total {
                        surprises.push(format!("holder process {k}: one more surprise"));
                    }
                }
                Ok((k, Msg::Eof)) if !done[k] => {
                    done[k] = true;
                    surprises.push(format!(
                        "holder process {k} exited before closing its sessions"
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    surprises.push(format!("{e:#}"));
                    break;
                }
            }
        }
        for (mut child, stdin) in self.children {
            drop(stdin);
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
            }
        }
        surprises
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread_per_server_only_on_loopback() {
        let lo: SocketAddr = "127.0.0.1:2181".parse().unwrap();
        assert_eq!(source_for(lo, 0, 1), None);
        assert_eq!(source_for(lo, PER_SOURCE - 1, 1), None);
        assert_eq!(
            source_for(lo, PER_SOURCE, 1),
            Some("127.0.0.2".parse().unwrap())
        );
        assert_eq!(
            source_for(lo, 2 * PER_SOURCE + 5, 1),
            Some("127.0.0.3".parse().unwrap())
        );
        // 50,000 over three servers: under 20,000 to each, all from the default address.
        assert_eq!(source_for(lo, 49_999, 3), None);
        assert_eq!(
            source_for(lo, 3 * PER_SOURCE, 3),
            Some("127.0.0.2".parse().unwrap())
        );
        let other: SocketAddr = "10.0.0.1:2181".parse().unwrap();
        assert_eq!(source_for(other, 3 * PER_SOURCE, 1), None);
    }

    #[test]
    fn holder_lines_parse_and_bad_ones_do_not() {
        assert_eq!(parse_msg("OPEN 500"), Some(Msg::Open(500)));
        assert_eq!(parse_msg("READY 12"), Some(Msg::Ready(12)));
        assert_eq!(
            parse_msg("V 30 123456789 10000"),
            Some(Msg::Victim(Victim {
                i: 30,
                sent_mono_ns: 123456789,
                timeout_ms: 10000
            }))
        );
        assert_eq!(parse_msg("KILLED"), Some(Msg::Killed));
        assert_eq!(parse_msg("DONE 0"), Some(Msg::Done(0)));
        assert_eq!(
            parse_msg("S an event"),
            Some(Msg::Surprise("an event".into()))
        );
        assert_eq!(
            parse_msg("ERROR connect refused"),
            Some(Msg::Error("connect refused".into()))
        );
        assert_eq!(parse_msg("V 30 x 10000"), None);
        assert_eq!(parse_msg("V 30 1 2 3"), None);
        assert_eq!(parse_msg("READY"), None);
        assert_eq!(parse_msg("HELLO"), None);
    }

    #[test]
    fn victims_and_monotonic_instants() {
        let plan = Plan {
            addrs: vec!["127.0.0.1:1".parse().unwrap()],
            dir: "/d".into(),
            n: 25,
            timeout_ms: 1000,
            step: 10,
            procs: 1,
        };
        let v: Vec<usize> = (0..plan.n).filter(|i| plan.is_victim(*i)).collect();
        assert_eq!(v, vec![0, 10, 20]);
        assert_eq!(session_path("/d", 7), "/d/s000007");
        let a = mono_ns();
        let then = instant_of(a);
        let now = Instant::now();
        assert!(then <= now);
        assert!(now - then < Duration::from_secs(1));
        let later = instant_of(a + 5_000_000_000);
        assert!(later > now + Duration::from_secs(4));
    }
}
