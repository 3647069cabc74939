//! An example cluster application on the `roster-client` recipes.
//!
//! Every instance (`cluster-app run --name node-1 --port 7001`):
//!
//! 1. joins the group `ROOT/members` with its address and port (membership),
//! 2. watches the group and prints every Joined / Left / Updated event,
//! 3. registers itself as an instance of the `worker` service (service discovery),
//! 4. enters the election `ROOT/leader`; the leader registers the singleton `scheduler` service, and
//!    unregisters it the moment it stops being leader (including on connection loss),
//! 5. follows the `scheduler` service with a cached provider and prints where it is.
//!
//! `cluster-app demo` starts several instances as child processes, shows their output, kills the leader
//! with `kill -9` after a while, and shows the member leaving, a new leader, and the `scheduler` service
//! moving to it. Works against Roster and Apache ZooKeeper alike (`--servers` or `ROSTER_SERVERS`).

#![warn(missing_docs)]

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use roster_client::recipes::discovery::{
    Registration, ServiceDiscovery, ServiceInstance, Strategy,
};
use roster_client::recipes::election::{self, LeaderElection, Leadership};
use roster_client::recipes::membership::{Group, GroupEvent, MemberInfo, NodeEvent};
use roster_client::recipes::Connector;
use roster_client::{Client, ClientOptions};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
#[command(about = "Example cluster application: membership, leader election and service discovery")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// ZooKeeper connect string (env: ROSTER_SERVERS).
    #[arg(long, env = "ROSTER_SERVERS", default_value = "127.0.0.1:2181")]
    servers: String,
    /// Root path of the application's nodes.
    #[arg(long, default_value = "/cluster-app")]
    root: String,
    /// Session timeout: how long after a kill -9 the others notice.
    #[arg(long, default_value_t = 4000)]
    session_timeout_ms: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Run one instance until interrupted.
    Run {
        #[command(flatten)]
        common: Common,
        /// The instance name (member id, candidate id, service instance id).
        #[arg(long)]
        name: String,
        /// The port it would serve on (only advertised).
        #[arg(long, default_value_t = 7000)]
        port: u16,
    },
    /// Start several instances, kill -9 the leader, and watch the cluster recover.
    Demo {
        #[command(flatten)]
        common: Common,
        /// How many instances.
        #[arg(long, default_value_t = 3)]
        instances: u16,
        /// Kill the leader this many seconds after the start.
        #[arg(long, default_value_t = 6)]
        kill_after_secs: u64,
        /// Stop everything this many seconds after the start.
        #[arg(long, default_value_t = 20)]
        run_for_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Run { common, name, port } => rt.block_on(run(common, name, port)),
        Command::Demo {
            common,
            instances,
            kill_after_secs,
            run_for_secs,
        } => rt.block_on(demo(common, instances, kill_after_secs, run_for_secs)),
    }
}

fn options(common: &Common) -> ClientOptions {
    ClientOptions {
        session_timeout: Duration::from_millis(common.session_timeout_ms),
        ..Default::default()
    }
}

macro_rules! say {
    ($name:expr, $($arg:tt)*) => {
        println!("[{}] {}", $name, format!($($arg)*))
    };
}

async fn run(common: Common, name: String, port: u16) -> anyhow::Result<()> {
    let root = common.root.trim_end_matches('/').to_string();
    let conn = Connector::connect(&common.servers, options(&common))
        .await
        .with_context(|| format!("connecting to {}", common.servers))?;
    let group = Group::new(&conn, &format!("{root}/members"));
    let mut membership = group
        .join(
            &name,
            MemberInfo::new("127.0.0.1", port).tag("pid", &std::process::id().to_string()),
        )
        .await
        .context("joining the group")?;
    let mut member_events = membership.events();
    say!(
        name,
        "joined {} as {name} (127.0.0.1:{port}, session {:#x})",
        group.path(),
        conn.client().session_id()
    );

    let mut watcher = group.watch().await?;
    say!(name, "members: {}", watcher.view().ids().join(", "));

    let sd = ServiceDiscovery::new(&conn, &format!("{root}/services"));
    let _worker = sd
        .register(ServiceInstance::new("worker", &name, "127.0.0.1", port))
        .await?;
    let mut scheduler = sd.provider("scheduler", Strategy::Sticky).await?;
    let mut scheduler_reg: Option<Registration> = None;

    let candidate = LeaderElection::new(&conn, &format!("{root}/leader"), &name)
        .join()
        .await?;
    let mut leadership = candidate.subscribe();
    let mut last_scheduler: Option<String> = None;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;

    loop {
        tokio::select! {
            ev = watcher.next() => {
                let Some(ev) = ev else { bail!("the group watcher ended") };
                match ev {
                    GroupEvent::Joined { member, zxid } => say!(name, "member JOINED  {} ({}) at zxid {zxid:#x}", member.id, member.info().endpoint()),
                    GroupEvent::Left { member, zxid } => say!(name, "member LEFT    {} ({}) at zxid {zxid:#x}", member.id, member.info().endpoint()),
                    GroupEvent::Updated { new, zxid, .. } => say!(name, "member UPDATED {} at zxid {zxid:#x}", new.id),
                    GroupEvent::Suspended => say!(name, "connection lost; member list may be stale"),
                    GroupEvent::Resynced { zxid } => say!(name, "reconnected; member list in sync at zxid {zxid:#x}"),
                    GroupEvent::Ended => bail!("session ended"),
                }
                if !matches!(watcher.view().members.len(), 0) {
                    say!(name, "members now: {}", watcher.view().ids().join(", "));
                }
            }
            r = leadership.changed() => {
                if r.is_err() { bail!("the election ended") }
                let state = leadership.borrow_and_update().clone();
                match state {
                    Leadership::Leader { token, .. } => {
                        say!(name, "*** I am the LEADER (fencing token {token:#x}); starting the scheduler");
                        if scheduler_reg.is_none() {
                            match sd.register(ServiceInstance::new("scheduler", &name, "127.0.0.1", port)).await {
                                Ok(r) => scheduler_reg = Some(r),
                                Err(e) => say!(name, "cannot register the scheduler: {e}"),
                            }
                        }
                    }
                    other => {
                        if let Some(r) = scheduler_reg.take() {
                            say!(name, "not leader any more ({other:?}); stopping the scheduler");
                            tokio::spawn(r.unregister());
                        }
                        if let Leadership::Follower { position } = other {
                            say!(name, "following ({position} ahead of me)");
                        }
                    }
                }
            }
            r = scheduler.changed() => {
                if r.is_err() { bail!("the service provider ended") }
                let now = scheduler.instance().map(|i| format!("{} ({})", i.id, i.endpoint()));
                if now != last_scheduler {
                    match &now {
                        Some(s) => say!(name, "scheduler service is at {s}"),
                        None => say!(name, "scheduler service: no instance"),
                    }
                    last_scheduler = now;
                }
            }
            ev = member_events.recv() => match ev {
                Ok(NodeEvent::Recreated { session_id, cause, .. }) => say!(name, "re-joined the group on session {session_id:#x} ({cause:?})"),
                Ok(NodeEvent::Ended) => bail!("membership ended"),
                _ => {}
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    say!(name, "leaving");
    candidate.close().await.ok();
    membership.leave().await.ok();
    conn.close().await.ok();
    Ok(())
}

async fn demo(
    common: Common,
    instances: u16,
    kill_after_secs: u64,
    run_for_secs: u64,
) -> anyhow::Result<()> {
    let root = common.root.trim_end_matches('/').to_string();
    let exe = std::env::current_exe()?;
    let observer = Client::connect(&common.servers, options(&common)).await?;
    let mut children = Vec::new();
    for i in 1..=instances {
        let name = format!("node-{i}");
        let mut child = tokio::process::Command::new(&exe)
            .args(["run", "--name", &name, "--port", &(7000 + i).to_string()])
            .args(["--servers", &common.servers, "--root", &root])
            .args([
                "--session-timeout-ms",
                &common.session_timeout_ms.to_string(),
            ])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let out = child.stdout.take().unwrap();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                println!("{l}");
            }
        });
        children.push((name, child));
        // Start them one after the other, so node-1 leads first.
        let election_path = format!("{root}/leader");
        tokio::time::timeout(Duration::from_secs(30), async {
            while !election::participants(&observer, &election_path)
                .await
                .is_ok_and(|p| p.len() >= i as usize)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .context("the instance did not join")?;
    }
    tokio::time::sleep(Duration::from_secs(kill_after_secs)).await;
    let leader = election::leader(&observer, &format!("{root}/leader"))
        .await?
        .context("no leader")?;
    let (_, victim) = children
        .iter_mut()
        .find(|(n, _)| *n == leader.id)
        .context("the leader is not one of ours")?;
    println!(
        "=== kill -9 {} (pid {}), the leader (token {:#x})",
        leader.id,
        victim.id().unwrap_or(0),
        leader.token
    );
    victim.start_kill()?;
    let _ = victim.wait().await;
    let start = tokio::time::Instant::now();
    let deadline = Duration::from_secs(run_for_secs.saturating_sub(kill_after_secs));
    while start.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let members = Group::new(&observer, &format!("{root}/members"))
        .members()
        .await?;
    let now_leader = election::leader(&observer, &format!("{root}/leader")).await?;
    let sched = ServiceDiscovery::new(&observer, &format!("{root}/services"))
        .instances("scheduler")
        .await?;
    println!(
        "=== SUMMARY killed={} members={} leader={} scheduler={}",
        leader.id,
        members.ids().join(","),
        now_leader.map(|l| l.id).unwrap_or_else(|| "-".into()),
        sched
            .iter()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>()
            .join(",")
    );
    // The survivors leave gracefully (SIGTERM).
    for (_, mut c) in children {
        if let Some(pid) = c.id() {
            let _ = tokio::process::Command::new("kill")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(5), c.wait())
            .await
            .is_err()
        {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
    observer.close().await.ok();
    Ok(())
}
