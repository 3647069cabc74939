//! `roster bench`: workloads against any ZooKeeper-protocol server (Roster, Apache ZooKeeper, Keeper…) at
//! a list of addresses, through a pipelined raw-protocol client of its own (`conn`, `load`), so the
//! client is never the bottleneck: every session is one task with `--depth` requests in flight.
//!
//! Workloads (`--workload`, default all): create, set, get, mix (throughput and p50/p99/p99.9 latency),
//! latency (one request in flight: create, setData, getData, delete), churn (connect + ephemeral + close),
//! watch (create → child-watch notification), expiry (SIGKILL of a session holder → NodeDeleted), memory
//! (server RSS idle and after loading `--znodes` nodes). Each is bounded by `--ops` and `--duration`.
//! Scale workloads, only when named (`scale.rs`): sessions (many held sessions: memory, ping CPU, write
//! p99, expiry accuracy), fanout (one znode watched by many sessions; a recursive watch over a subtree),
//! size (znodes in a registry-like tree: bytes per znode), values (large setData).
//! `failover` (only when named) kills the leader of a cluster with kill -9 and measures the time to a new
//! leader, to the next write of an existing session and of a new one (see `failover.rs`).
//! With `--server-pids`, every workload also reports the servers' CPU time and resident memory.
//!
//! `--compare` renders saved `--json` outputs side by side (used by `scripts/bench`).

mod conn;
mod failover;
mod holders;
mod load;
mod procfs;
mod report;
mod scale;
mod workloads;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use report::{Report, WorkloadResult};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use workloads::Ctx;

/// Every workload, in the order `all` runs them.
const WORKLOADS: &[&str] = &[
    "create", "set", "get", "mix", "latency", "churn", "watch", "expiry", "memory",
];
/// Workloads that kill servers: run only when named, never by `all`.
const DESTRUCTIVE: &[&str] = &["failover"];
/// Scale workloads (many sockets, long holds): run only when named, never by `all`.
const SCALE: &[&str] = &["sessions", "fanout", "size", "values"];

/// Options of `roster bench` (the many workload settings are boxed to keep the command enum small).
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Servers to drive, comma-separated host:port. Sessions are spread over them round-robin.
    #[arg(long, default_value = "127.0.0.1:2181")]
    pub servers: String,
    /// Everything else.
    #[command(flatten)]
    pub opts: Box<BenchOpts>,
}

/// The settings of `roster bench` other than `--servers`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
roster bench --servers 127.0.0.1:2181\n  \
roster bench --servers 127.0.0.1:2181 --workload get,mix --sessions 32 --depth 64 --duration 20s\n  \
roster bench --servers 127.0.0.1:2181 --server-pids $(pgrep -n roster) --workload memory --znodes 1000000\n  \
roster bench --servers 127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183 --server-pids P1,P2,P3 --workload failover\n  \
roster bench --compare roster.json zookeeper.json --compare-labels roster,zookeeper")]
pub struct BenchOpts {
    /// Workloads, comma-separated: all, create, set, get, mix, latency, churn, watch, expiry, memory,
    /// failover (kills servers: never part of all), sessions, fanout, size, values (scale: never part
    /// of all; size loads --znodes znodes).
    #[arg(long, default_value = "all")]
    pub workload: String,
    /// Sessions of the throughput workloads.
    #[arg(long, default_value_t = 16)]
    pub sessions: usize,
    /// Requests in flight per session.
    #[arg(long, default_value_t = 32)]
    pub depth: usize,
    /// Time cap of each workload's measured part (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before each throughput workload.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Count cap of each workload: operations (per operation type for latency), churn cycles.
    #[arg(long, default_value_t = 5_000_000)]
    pub ops: u64,
    /// Payload bytes of create and setData.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Keys for setData, getData and mix.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Fraction of reads in the mix workload.
    #[arg(long, default_value_t = 0.9)]
    pub read_fraction: f64,
    /// Concurrent connect/create/close loops of the churn workload.
    #[arg(long, default_value_t = 8)]
    pub churn_workers: usize,
    /// Trials of the watch workload (also capped by --ops and --duration).
    #[arg(long, default_value_t = 200)]
    pub watch_trials: u64,
    /// Session holders killed at once by the expiry workload.
    #[arg(long, default_value_t = 5)]
    pub expiry_trials: usize,
    /// Session timeout the expiry holders ask for, ms (the server must allow it).
    #[arg(long, default_value_t = 2000)]
    pub expiry_timeout_ms: i32,
    /// Znodes loaded by the memory and size workloads.
    #[arg(long, default_value_t = 100_000)]
    pub znodes: u64,
    /// Time cap of the memory workload's load.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub memory_timeout: Duration,
    /// Leader kills of the failover workload (more than one needs --restart-cmd).
    #[arg(long, default_value_t = 1)]
    pub failover_trials: usize,
    /// Failover: shell command that kills the leader, run with ROSTER_BENCH_LEADER_INDEX (0-based,
    /// into --servers), ROSTER_BENCH_LEADER_ADDR and ROSTER_BENCH_LEADER_PID set. Without it the
    /// leader's pid from --server-pids (one per address, same order) gets kill -9.
    #[arg(long)]
    pub leader_kill_cmd: Option<String>,
    /// Failover and size: shell command that restarts the killed node, run with ROSTER_BENCH_KILLED_INDEX,
    /// _ADDR and _PID set; it must not leave the server attached to its stdout, and may print the new
    /// pid as its last line. The bench then waits for every node to serve again.
    #[arg(long)]
    pub restart_cmd: Option<String>,
    /// Size: shell command run after the load (and the restart, if any) that makes the first server
    /// write a snapshot of its whole tree, or reports the last one it wrote; its last line must be
    /// `SECONDS BYTES` (build time and size). `scripts/bench` writes one per system.
    #[arg(long)]
    pub snapshot_cmd: Option<String>,
    /// Size: shell command, run last, that starts a new server joining the first server's cluster
    /// (it catches up from a snapshot); its last line must be `ADDRESS PID` (the new server's client
    /// address and pid), optionally followed by a file the command creates once the new server is a
    /// full member (`ADDRESS PID FILE`: ZooKeeper's `reconfig -add` done; the file holds `ok`, or what
    /// failed). The bench times it until a session there reads the last loaded znode, and, with a
    /// FILE, until that file says `ok`; the caller stops the new server.
    #[arg(long)]
    pub join_cmd: Option<String>,
    /// Failover and size: cap on each wait (new leader, writes, rejoin; size: the restart).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub failover_timeout: Duration,
    /// Session timeout of the bench sessions, ms.
    #[arg(long, default_value_t = 30_000)]
    pub session_timeout_ms: i32,
    /// Sessions: how many to hold, each with an ephemeral znode and a data watch (e.g. 1000, 10000,
    /// 50000; past 20,000 to one server they are spread over source addresses 127.0.0.2, .3… on
    /// loopback; past one process's file limit, over --hold-procs processes).
    #[arg(long, default_value_t = 1000)]
    pub hold_sessions: usize,
    /// Sessions: how long to hold them (half idle, half under a one-session write load).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Sessions: share dropped at once (sockets closed without closeSession) to time their expiry.
    #[arg(long, default_value_t = 0.1)]
    pub kill_fraction: f64,
    /// Sessions: session timeout the held sessions ask for, ms.
    #[arg(long, default_value_t = 10_000)]
    pub hold_timeout_ms: i32,
    /// Sessions: processes holding them (children of this binary, each holding every P-th session;
    /// each process needs a descriptor per session it holds, so more processes hold more sessions).
    #[arg(long, default_value_t = 1)]
    pub hold_procs: usize,
    /// Fanout: sessions watching the one znode.
    #[arg(long, default_value_t = 1000)]
    pub fanout_watchers: usize,
    /// Fanout: write-to-last-notification trials (also capped by --ops and --duration).
    #[arg(long, default_value_t = 20)]
    pub fanout_trials: u64,
    /// Fanout: znodes under one persistent recursive watch (0 skips that part).
    #[arg(long, default_value_t = 100_000)]
    pub fanout_subtree: u64,
    /// Values: value sizes in bytes, comma-separated (1 MB is 10^6 so it fits ZooKeeper's 1 MiB frame).
    #[arg(long, value_delimiter = ',', default_value = "1024,102400,1000000")]
    pub value_sizes: Vec<usize>,
    /// Server process ids, comma-separated, for CPU time and resident memory (Linux /proc).
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Name of the system under test in the output (e.g. roster, zookeeper).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Parent of every node the bench creates.
    #[arg(long, default_value = "/roster-bench")]
    pub root: String,
    /// Print the results as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Connect with TLS (to secure client ports), trusting the CAs of this PEM file.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Instead of running: print a Markdown table comparing saved --json outputs.
    #[arg(long, num_args = 1.., value_name = "JSON")]
    pub compare: Vec<PathBuf>,
    /// The two labels to put side by side with --compare (ratio first / second).
    #[arg(long, default_value = "roster,zookeeper")]
    pub compare_labels: String,
    /// Internal: hold an ephemeral node for the expiry workload until killed.
    #[arg(long, hide = true)]
    pub internal_ephemeral_holder: bool,
    /// Internal: the holder's node (session holders: the parent of their ephemerals).
    #[arg(long, hide = true, default_value = "")]
    pub holder_path: String,
    /// Internal: hold share --holder-index of --hold-sessions for the sessions workload.
    #[arg(long, hide = true)]
    pub internal_session_holder: bool,
    /// Internal: which share (0-based, below --hold-procs).
    #[arg(long, hide = true, default_value_t = 0)]
    pub holder_index: usize,
    /// Internal: every this many sessions one is dropped at the kill.
    #[arg(long, hide = true, default_value_t = 10)]
    pub holder_step: usize,
}

/// Parses `10s`, `500ms`, `2m`, `1.5s` or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 10s, 500ms, 2m)"))?;
    if !(0.0..=86_400.0 * 7.0).contains(&(v * mul)) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(v * mul))
}

fn parse_addrs(s: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let a = part
            .to_socket_addrs()
            .with_context(|| format!("bad server address {part:?}"))?
            .next()
            .with_context(|| format!("{part:?} resolves to nothing"))?;
        out.push(a);
    }
    if out.is_empty() {
        bail!("no server address given");
    }
    Ok(out)
}

fn selected(list: &str) -> anyhow::Result<Vec<&'static str>> {
    let mut out = Vec::new();
    for w in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if w == "all" {
            for x in WORKLOADS {
                if !out.contains(x) {
                    out.push(*x);
                }
            }
            continue;
        }
        match WORKLOADS
            .iter()
            .chain(DESTRUCTIVE)
            .chain(SCALE)
            .find(|x| **x == w)
        {
            Some(x) if !out.contains(x) => out.push(*x),
            Some(_) => {}
            None => bail!(
                "unknown workload {w:?} (known: all, {}, {}, {})",
                WORKLOADS.join(", "),
                DESTRUCTIVE.join(", "),
                SCALE.join(", ")
            ),
        }
    }
    Ok(out)
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let (servers, args) = (args.servers, *args.opts);
    if !args.compare.is_empty() {
        return compare(&args);
    }
    let addrs = parse_addrs(&servers)?;
    if let Some(ca) = &args.tls_ca {
        conn::set_tls(roster_client::tls_config(ca, None)?);
    }
    if args.internal_ephemeral_holder {
        workloads::hold_ephemeral(addrs[0], &args.holder_path, args.expiry_timeout_ms).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.internal_session_holder {
        if args.holder_index >= args.hold_procs || args.holder_path.is_empty() {
            bail!("--internal-session-holder needs --holder-path and --holder-index below --hold-procs");
        }
        let plan = holders::Plan {
            addrs: addrs.clone(),
            dir: args.holder_path.clone(),
            n: args.hold_sessions,
            timeout_ms: args.hold_timeout_ms,
            step: args.holder_step.max(1),
            procs: args.hold_procs,
        };
        holders::run_child(plan, args.holder_index).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let list = selected(&args.workload)?;
    let run_id = format!(
        "{:x}{:04x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        rand::random::<u16>()
    );
    let mut ctx = Ctx {
        addrs: addrs.clone(),
        pids: args.server_pids.clone(),
        sessions: args.sessions.max(1),
        depth: args.depth.max(1),
        ops: args.ops.max(1),
        duration: args.duration,
        warmup: args.warmup,
        payload: Bytes::from(vec![b'x'; args.payload]),
        keys: args.keys.max(1),
        read_fraction: args.read_fraction,
        churn_workers: args.churn_workers,
        watch_trials: args.watch_trials,
        expiry_trials: args.expiry_trials,
        expiry_timeout_ms: args.expiry_timeout_ms,
        znodes: args.znodes.max(1),
        memory_timeout: args.memory_timeout,
        session_timeout_ms: args.session_timeout_ms,
        root: args.root.trim_end_matches('/').to_string(),
        run_id,
        keys_loaded: false,
        failover_trials: args.failover_trials,
        leader_kill_cmd: args.leader_kill_cmd.clone(),
        restart_cmd: args.restart_cmd.clone(),
        snapshot_cmd: args.snapshot_cmd.clone(),
        join_cmd: args.join_cmd.clone(),
        failover_timeout: args.failover_timeout,
        hold_sessions: args.hold_sessions,
        hold: args.hold,
        kill_fraction: args.kill_fraction,
        hold_timeout_ms: args.hold_timeout_ms,
        hold_procs: args.hold_procs.max(1),
        tls_ca: args.tls_ca.clone(),
        fanout_watchers: args.fanout_watchers,
        fanout_trials: args.fanout_trials,
        fanout_subtree: args.fanout_subtree,
        value_sizes: args.value_sizes.clone(),
    };
    let mut report = Report {
        label: args.label.clone(),
        bench_version: env!("CARGO_PKG_VERSION").into(),
        servers: addrs.iter().map(|a| a.to_string()).collect(),
        server_pids: args.server_pids.clone(),
        sessions: ctx.sessions,
        depth: ctx.depth,
        payload_bytes: args.payload,
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        results: vec![],
    };
    let style = ProgressStyle::with_template("{prefix:>10} [{elapsed_precise}] {wide_bar} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    for (i, w) in list.iter().enumerate() {
        let pb = if args.no_progress {
            ProgressBar::hidden()
        } else {
            let pb = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
            pb.set_style(style.clone());
            pb.set_prefix(w.to_string());
            pb.set_message(format!("({}/{})", i + 1, list.len()));
            pb
        };
        let before = procfs::Snapshot::take(&ctx.pids);
        let t0 = Instant::now();
        let res: anyhow::Result<Vec<WorkloadResult>> = match *w {
            "create" => workloads::create(&mut ctx, &pb).await.map(|r| vec![r]),
            "set" => workloads::set(&mut ctx, &pb).await.map(|r| vec![r]),
            "get" => workloads::get(&mut ctx, &pb).await.map(|r| vec![r]),
            "mix" => workloads::mix(&mut ctx, &pb).await.map(|r| vec![r]),
            "latency" => workloads::latency(&mut ctx, &pb).await,
            "churn" => workloads::churn(&mut ctx, &pb).await.map(|r| vec![r]),
            "watch" => workloads::watch(&mut ctx, &pb).await.map(|r| vec![r]),
            "expiry" => workloads::expiry(&mut ctx, &pb).await.map(|r| vec![r]),
            "memory" => workloads::memory(&mut ctx, &pb).await.map(|r| vec![r]),
            "failover" => failover::failover(&mut ctx, &pb).await,
            "sessions" => scale::sessions(&mut ctx, &pb).await.map(|r| vec![r]),
            "fanout" => scale::fanout(&mut ctx, &pb).await,
            "size" => scale::size(&mut ctx, &pb).await.map(|r| vec![r]),
            "values" => scale::values(&mut ctx, &pb).await,
            _ => unreachable!("workload names are checked"),
        };
        pb.finish_and_clear();
        let after = procfs::Snapshot::take(&ctx.pids);
        let mut results = match res {
            Ok(r) => r,
            Err(e) => vec![WorkloadResult {
                workload: w.to_string(),
                error: Some(format!("{e:#}")),
                elapsed_s: t0.elapsed().as_secs_f64(),
                unit: "ops".into(),
                ..Default::default()
            }],
        };
        // CPU and memory cover the whole workload (for latency: its four parts together).
        let usage: Vec<report::ServerUsage> = before
            .procs
            .iter()
            .zip(after.procs.iter())
            .map(|(b, a)| report::ServerUsage {
                pid: b.0,
                // A server restarted during the workload (failover) is another process: no CPU figure.
                cpu_s: a.1.zip(b.1).filter(|_| a.0 == b.0).map(|(a, b)| a - b),
                rss_before_mib: b.2.map(|k| k as f64 / 1024.0),
                rss_after_mib: a.2.map(|k| k as f64 / 1024.0),
            })
            .collect();
        let total_ops: u64 = results.iter().map(|r| r.ops).sum();
        let cpu: Option<f64> = if usage.is_empty() {
            None
        } else {
            usage.iter().map(|u| u.cpu_s).sum()
        };
        for (n, r) in results.iter_mut().enumerate() {
            r.servers = usage.clone();
            // Several results of one workload (latency) share one CPU figure: it goes on the first.
            if n == 0 {
                r.client_cpu_s = after.client_cpu - before.client_cpu;
                // Not for failover (restarts) nor sessions (mostly time spent holding, reported as
                // ping CPU per second instead).
                if total_ops > 0
                    && !r.workload.starts_with("failover")
                    && !r.workload.starts_with("sessions")
                {
                    r.server_cpu_us_per_op = cpu.map(|c| c * 1e6 / total_ops as f64);
                }
            }
            if args.no_progress || args.json {
                let l = r.latency.as_ref();
                eprintln!(
                    "{:>16}: {} {}{}{}{}",
                    r.workload,
                    r.ops,
                    r.unit,
                    r.throughput
                        .map(|t| format!(", {t:.0}/s"))
                        .unwrap_or_default(),
                    l.map(|l| format!(", p50 {:.3} ms, p99 {:.3} ms", l.p50_ms, l.p99_ms))
                        .unwrap_or_default(),
                    r.error
                        .as_ref()
                        .map(|e| format!(", ERROR {e}"))
                        .unwrap_or_default()
                );
            }
        }
        report.results.extend(results);
    }
    let failed = report.results.iter().any(|r| r.error.is_some());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        eprint!("{}", report::table(&report));
    } else {
        print!("{}", report::table(&report));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn compare(args: &BenchOpts) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::new();
    for p in &args.compare {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let r: Report =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        reports.push(r);
    }
    let labels: Vec<&str> = args.compare_labels.split(',').map(str::trim).collect();
    let [a, b] = labels[..] else {
        bail!("--compare-labels takes two labels, e.g. roster,zookeeper")
    };
    print!("{}", report::compare(&reports, a, b));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_workload_lists() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert_eq!(selected("all").unwrap().len(), WORKLOADS.len());
        assert_eq!(selected("get,mix,get").unwrap(), vec!["get", "mix"]);
        assert!(selected("nope").is_err());
        assert!(!selected("all").unwrap().contains(&"failover"));
        assert_eq!(selected("failover").unwrap(), vec!["failover"]);
        assert!(!selected("all").unwrap().contains(&"sessions"));
        assert_eq!(
            selected("sessions,fanout,size,values").unwrap(),
            vec!["sessions", "fanout", "size", "values"]
        );
        assert_eq!(parse_addrs("127.0.0.1:1,127.0.0.1:2").unwrap().len(), 2);
    }
}
