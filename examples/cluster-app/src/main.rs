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
//!
//! Embedded mode (`--embedded`): no servers at all. Each instance runs a Roster node inside itself
//! (`roster-embed`): the first bootstraps the cluster, the others join it by its peer address, and the
//! application's recipes talk to their own node in process. The instances ARE the cluster: killing the
//! leader instance kills a Raft voter too, and the cluster and the application fail over together.
//! With `--client-addr` each instance also opens a ZooKeeper port for outside tools (`roster members`,
//! zkCli, kazoo). `demo --embedded` also restarts the killed instance (it rejoins as itself) and shows
//! the membership through every instance's client port.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
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
use roster_embed::Embedded;
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

/// Embedded mode: the instance runs a Roster node of its own.
#[derive(clap::Args, Clone)]
struct Embed {
    /// Run a Roster node inside this instance instead of using --servers.
    #[arg(long)]
    embedded: bool,
    /// Embedded: the node's data directory.
    #[arg(long, default_value = "cluster-app-data")]
    data_dir: PathBuf,
    /// Embedded: the node's peer address (Raft between instances).
    #[arg(long, default_value = "127.0.0.1:2888")]
    peer_addr: SocketAddr,
    /// Embedded: the peer address of a running instance to join; none bootstraps a new cluster.
    #[arg(long)]
    join: Option<String>,
    /// Embedded: a ZooKeeper client port for outside tools (none: in-process clients only).
    #[arg(long)]
    client_addr: Option<SocketAddr>,
    /// Embedded: on SIGTERM/Ctrl-C, leave the cluster instead of staying a (down) member.
    #[arg(long)]
    leave_cluster: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run one instance until interrupted.
    Run {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        embed: Embed,
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
        /// The instances are the cluster: each embeds a Roster node (no --servers).
        #[arg(long)]
        embedded: bool,
        /// Embedded: where the instances' data directories go (default: a new temporary directory).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Run {
            common,
            embed,
            name,
            port,
        } => rt.block_on(run(common, embed, name, port)),
        Command::Demo {
            common,
            instances,
            kill_after_secs,
            run_for_secs,
            embedded,
            work_dir,
        } => {
            let demo = Demo {
                common,
                instances,
                kill_after_secs,
                run_for_secs,
            };
            if embedded {
                rt.block_on(demo_embedded(demo, work_dir))
            } else {
                rt.block_on(demo_servers(demo))
            }
        }
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

/// What the instance prints of its embedded node's Raft view when it changes.
fn raft_view(node: &Embedded) -> String {
    let s = node.status();
    let role = |voter: bool| if voter { "voter" } else { "learner" };
    let members: Vec<String> = s
        .members
        .iter()
        .map(|m| format!("{}:{}", m.node_id, role(m.voter)))
        .collect();
    format!(
        "roster node {} is {}; raft leader: {}; members {}",
        s.node_id,
        s.state,
        s.leader
            .map(|l| format!("node {l}"))
            .unwrap_or_else(|| "none".into()),
        members.join(",")
    )
}

async fn run(common: Common, embed: Embed, name: String, port: u16) -> anyhow::Result<()> {
    let root = common.root.trim_end_matches('/').to_string();
    // Embedded: start this instance's own Roster node, and talk to it in process.
    let node = if embed.embedded {
        let node = Embedded::builder(&embed.data_dir)
            .peer_addr(embed.peer_addr)
            .join(embed.join.clone())
            .client_addr(embed.client_addr)
            .leave_on_shutdown(embed.leave_cluster)
            .configure(|c| c.min_session_timeout_ms = 1_000)
            .start()
            .await
            .context("starting the embedded roster node")?;
        say!(
            name,
            "embedded roster node {} started (peer {}, client port {})",
            node.node_id(),
            embed.peer_addr,
            node.client_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "none".into())
        );
        Some(node)
    } else {
        None
    };
    let servers = match &node {
        Some(n) => n.connect_string(),
        None => common.servers.clone(),
    };
    let conn = Connector::connect(&servers, options(&common))
        .await
        .with_context(|| format!("connecting to {servers}"))?;
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
    let mut raft_tick = tokio::time::interval(Duration::from_millis(200));
    let mut last_view = String::new();
    let mut failed = Box::pin(async {
        match &node {
            Some(n) => n.failed().await,
            None => std::future::pending().await,
        }
    });

    loop {
        tokio::select! {
            _ = raft_tick.tick(), if node.is_some() => {
                if let Some(n) = &node {
                    let view = raft_view(n);
                    if view != last_view {
                        say!(name, "{view}");
                        last_view = view;
                    }
                }
            }
            reason = &mut failed => bail!("the embedded roster node stopped: {reason}"),
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
    drop(failed);
    candidate.close().await.ok();
    membership.leave().await.ok();
    conn.close().await.ok();
    if let Some(n) = node {
        if embed.leave_cluster {
            say!(name, "leaving the roster cluster");
        }
        n.shutdown().await;
    }
    Ok(())
}

/// The demo's settings.
struct Demo {
    common: Common,
    instances: u16,
    kill_after_secs: u64,
    run_for_secs: u64,
}

/// Prints an instance's output lines as they come.
fn relay(child: &mut tokio::process::Child) {
    let out = child.stdout.take().expect("piped stdout");
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            println!("{l}");
        }
    });
}

/// Waits until the election has at least `n` participants.
async fn wait_participants(observer: &Client, root: &str, n: usize) -> anyhow::Result<()> {
    let election_path = format!("{root}/leader");
    tokio::time::timeout(Duration::from_secs(60), async {
        while !election::participants(observer, &election_path)
            .await
            .is_ok_and(|p| p.len() >= n)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("the instance did not join")
}

/// Sends SIGTERM and waits (5 s at most, then kill -9).
async fn terminate(c: &mut tokio::process::Child) {
    if let Some(pid) = c.id() {
        let _ = tokio::process::Command::new("kill")
            .arg(pid.to_string())
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(10), c.wait())
        .await
        .is_err()
    {
        let _ = c.start_kill();
        let _ = c.wait().await;
    }
}

/// A free port on 127.0.0.1.
fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The cluster members an outside client reads from `/zookeeper/config`: `id:participant|observer`.
/// Prints the demo's `=== SUMMARY` line (the tests read it): who was killed, the group's members, the
/// elected leader and the registered scheduler instances, as `observer` sees them now.
async fn print_summary(observer: &Client, root: &str, killed: &str) -> anyhow::Result<()> {
    let members = Group::new(observer, &format!("{root}/members"))
        .members()
        .await?;
    let now_leader = election::leader(observer, &format!("{root}/leader")).await?;
    let sched = ServiceDiscovery::new(observer, &format!("{root}/services"))
        .instances("scheduler")
        .await?;
    println!(
        "=== SUMMARY killed={} members={} leader={} scheduler={}",
        killed,
        members.ids().join(","),
        now_leader.map(|l| l.id).unwrap_or_else(|| "-".into()),
        sched
            .iter()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>()
            .join(",")
    );
    Ok(())
}

async fn config_members(c: &Client) -> anyhow::Result<String> {
    let (data, _) = c.get_data("/zookeeper/config").await?;
    let text = String::from_utf8_lossy(&data).to_string();
    let mut members = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("server.") {
            let (id, spec) = rest.split_once('=').unwrap_or((rest, ""));
            let role = if spec.contains(":observer") {
                "observer"
            } else {
                "participant"
            };
            members.push(format!("{id}:{role}"));
        }
    }
    Ok(members.join(","))
}

/// Three (or more) instances that are the cluster themselves: see the module docs.
async fn demo_embedded(d: Demo, work_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let common = &d.common;
    let root = common.root.trim_end_matches('/').to_string();
    let exe = std::env::current_exe()?;
    let work = match work_dir {
        Some(w) => w,
        None => std::env::temp_dir().join(format!("cluster-app-demo-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let mut peers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..d.instances {
        peers.push(free_addr()?);
        clients.push(free_addr()?);
    }
    let argv = |i: usize| -> Vec<String> {
        let mut a = vec![
            "run".to_string(),
            "--name".into(),
            format!("node-{}", i + 1),
            "--port".into(),
            (7001 + i).to_string(),
            "--root".into(),
            root.clone(),
            "--session-timeout-ms".into(),
            common.session_timeout_ms.to_string(),
            "--embedded".into(),
            "--data-dir".into(),
            work.join(format!("node-{}", i + 1)).display().to_string(),
            "--peer-addr".into(),
            peers[i].to_string(),
            "--client-addr".into(),
            clients[i].to_string(),
        ];
        if i > 0 {
            // Later instances join the first by address; nothing else is configured anywhere.
            a.extend(["--join".into(), peers[0].to_string()]);
        }
        a
    };
    let spawn = |i: usize| -> anyhow::Result<tokio::process::Child> {
        let mut c = tokio::process::Command::new(&exe)
            .args(argv(i))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        relay(&mut c);
        Ok(c)
    };
    let every_port = clients
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    let mut observer: Option<Client> = None;
    for i in 0..d.instances as usize {
        children.push((format!("node-{}", i + 1), spawn(i)?));
        if observer.is_none() {
            // An outside client, over TCP to every instance's client port.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            observer = loop {
                match Client::connect(&every_port, options(common)).await {
                    Ok(c) => break Some(c),
                    Err(_) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Err(e) => return Err(e).context("no instance answered on its client port"),
                }
            };
        }
        wait_participants(observer.as_ref().unwrap(), &root, i + 1).await?;
    }
    let observer = observer.context("no instances")?;
    tokio::time::sleep(Duration::from_secs(d.kill_after_secs)).await;
    let leader = election::leader(&observer, &format!("{root}/leader"))
        .await?
        .context("no leader")?;
    let killed = children
        .iter()
        .position(|(n, _)| *n == leader.id)
        .context("the leader is not one of ours")?;
    let victim = &mut children[killed].1;
    println!(
        "=== kill -9 {} (pid {}), the leader instance (token {:#x}) and its roster node",
        leader.id,
        victim.id().unwrap_or(0),
        leader.token
    );
    victim.start_kill()?;
    let _ = victim.wait().await;
    let start = tokio::time::Instant::now();
    let deadline = Duration::from_secs(d.run_for_secs.saturating_sub(d.kill_after_secs));
    while start.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The same state through every surviving instance's client port.
    for (i, addr) in clients.iter().enumerate() {
        if i == killed {
            continue;
        }
        let c = Client::connect(&addr.to_string(), options(common)).await?;
        c.sync(&format!("{root}/members")).await?;
        let members = Group::new(&c, &format!("{root}/members")).members().await?;
        let l = election::leader(&c, &format!("{root}/leader")).await?;
        println!(
            "=== via node-{} client port {addr}: members={} leader={} cluster={}",
            i + 1,
            members.ids().join(","),
            l.map(|l| l.id).unwrap_or_else(|| "-".into()),
            config_members(&c).await?
        );
        c.close().await.ok();
    }
    print_summary(&observer, &root, &leader.id).await?;
    // The killed instance restarts on its data directory: it rejoins the cluster as itself.
    println!("=== restart {}", leader.id);
    children[killed].1 = spawn(killed)?;
    wait_participants(&observer, &root, d.instances as usize).await?;
    let members = Group::new(&observer, &format!("{root}/members"))
        .members()
        .await?;
    println!(
        "=== RESTARTED {} members={} cluster={}",
        leader.id,
        members.ids().join(","),
        config_members(&observer).await?
    );
    observer.close().await.ok();
    for (_, c) in children.iter_mut() {
        terminate(c).await;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

async fn demo_servers(d: Demo) -> anyhow::Result<()> {
    let Demo {
        common,
        instances,
        kill_after_secs,
        run_for_secs,
    } = d;
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
    print_summary(&observer, &root, &leader.id).await?;
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
