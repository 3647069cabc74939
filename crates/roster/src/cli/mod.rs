//! The client subcommands: `roster ls | get | set | create | delete | stat | watch | status`, and the
//! recipe views `roster members | leader | services | resolve` (see [`recipes`]).
//!
//! Each subcommand opens one session with `roster-client` on the servers of `--server` (a ZooKeeper
//! connect string, so a chroot suffix works: `--server 10.0.0.1:2181,10.0.0.2:2181/app`), does its
//! work, and closes the session. They talk to Roster and to Apache ZooKeeper alike. `status` does not
//! open a session: it sends the `srvr` and `mntr` four-letter words to every server of the list.
//!
//! Output is a readable table by default and one JSON document with `--json` (one JSON object per line
//! for `watch`), for scripts. The exit code says what kind of failure happened:
//!
//! | code | meaning |
//! |---:|---|
//! | 0 | success |
//! | 1 | ZooKeeper said no: `NoNode`, `NodeExists`, `BadVersion`, `NoAuth`... (the code's name is in the message), or bad arguments |
//! | 2 | connection problem: no server reachable, timeout, session expired |
//! | 3 | empty answer (`leader`, `services SERVICE`, `resolve`): no leader, no live instance |
//!
//! The options are clap *global* arguments, accepted before or after the subcommand. A global argument
//! shares its id with any subcommand argument of the same name: `roster bench --json` and
//! `roster cluster status --server` keep their own meaning, but `roster --server X cluster status`
//! would hand X to the cluster command. That is why `--server` has no clap default or `env`: see
//! [`GlobalClientOpts::servers`].
//!
//! Wiring (in `main.rs`): flatten [`ClientCommand`] into the top-level subcommands and
//! [`GlobalClientOpts`] into the top-level arguments, then call [`run`] inside a tokio runtime
//! (a current-thread one is enough):
//!
//! ```ignore
//! #[derive(Parser)]
//! struct Cli { #[command(subcommand)] command: Command, #[command(flatten)] client: cli::GlobalClientOpts }
//! #[derive(Subcommand)]
//! enum Command { Serve(..), #[command(flatten)] Client(cli::ClientCommand) }
//! // ...
//! Command::Client(cmd) => rt.block_on(cli::run(cmd, &cli.client)).unwrap_or_else(|e| { eprintln!("error: {e:#}"); ExitCode::from(2) }),
//! ```

mod http;
mod output;
mod recipes;
mod status;
mod top;

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use roster_client::{
    AddWatchMode, Client, ClientOptions, CreateMode, CreateOptions, Error, EventType, SessionEvent,
    Stat,
};
use serde_json::json;

use output::{print_json, stat_json, stat_rows, Table};

/// Exit code for a ZooKeeper error (NoNode...) or bad arguments.
const EXIT_ZK_ERROR: u8 = 1;
/// Exit code for a connection problem.
const EXIT_CONNECTION: u8 = 2;

/// The connect string used when neither `--server` nor `ROSTER_SERVERS` gives one.
pub const DEFAULT_SERVERS: &str = "127.0.0.1:2181";

/// Options shared by the client subcommands (global: accepted before or after the subcommand).
#[derive(Args, Debug, Clone)]
pub struct GlobalClientOpts {
    /// Servers to talk to: a ZooKeeper connect string, HOST:PORT,HOST:PORT... with an optional /chroot
    /// suffix (env: ROSTER_SERVERS; default: 127.0.0.1:2181).
    //
    // No clap `env`/`default_value` here: a global argument shares its id with any subcommand argument
    // of the same name (`roster cluster status --server` takes a *peer* address), and clap would feed
    // ROSTER_SERVERS or our default into it. [`GlobalClientOpts::servers`] applies them instead.
    #[arg(long, short = 's', global = true, value_name = "SERVERS")]
    pub server: Option<String>,
    /// Print JSON instead of tables (one object per line for `watch`).
    #[arg(long, global = true)]
    pub json: bool,
    /// How long to wait for a server and for each call (e.g. 500ms, 5s, 1m; a bare number is seconds).
    /// Also the session timeout asked for.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Connect with TLS (to the servers' secure client ports), trusting the CAs of this PEM file.
    #[arg(long, global = true, value_name = "PEM")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// With --tls-ca: present this PEM client certificate (its subject is the x509 identity).
    #[arg(long, global = true, value_name = "PEM", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<std::path::PathBuf>,
    /// With --tls-cert: the client certificate's PEM private key.
    #[arg(long, global = true, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl GlobalClientOpts {
    /// The connect string: `--server`, else `ROSTER_SERVERS`, else [`DEFAULT_SERVERS`].
    pub fn servers(&self) -> String {
        self.server
            .clone()
            .or_else(|| {
                std::env::var("ROSTER_SERVERS")
                    .ok()
                    .filter(|s| !s.trim().is_empty())
            })
            .unwrap_or_else(|| DEFAULT_SERVERS.to_string())
    }
}

/// The client subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum ClientCommand {
    /// List the children of a node.
    Ls {
        /// The node.
        path: String,
        /// Show each child's version, size, children and owner.
        #[arg(long, short = 'l')]
        long: bool,
    },
    /// Print a node's data.
    Get {
        /// The node.
        path: String,
        /// Print the node's stat after the data.
        #[arg(long)]
        stat: bool,
    },
    /// Set a node's data.
    Set {
        /// The node.
        path: String,
        /// The new data; `-` reads standard input.
        data: String,
        /// Only if the node is at this version (otherwise BadVersion).
        #[arg(long)]
        expected_version: Option<i32>,
    },
    /// Create a node.
    Create {
        /// The node (with --sequential, a prefix completed by the server).
        path: String,
        /// The data; `-` reads standard input.
        #[arg(default_value = "")]
        data: String,
        /// An ephemeral node: it lives as long as this command runs (until interrupted).
        #[arg(long, short = 'e', conflicts_with_all = ["container", "ttl"])]
        ephemeral: bool,
        /// Append a ten-digit sequence number to the name.
        #[arg(long, short = 'S', conflicts_with = "container")]
        sequential: bool,
        /// A container: deleted by the server once its last child is gone.
        #[arg(long, short = 'c')]
        container: bool,
        /// A TTL node: deleted by the server after this many milliseconds without changes or children.
        #[arg(long, value_name = "MS")]
        ttl: Option<u64>,
        /// Create missing parent nodes first.
        #[arg(long, short = 'p')]
        parents: bool,
    },
    /// Delete a node.
    Delete {
        /// The node.
        path: String,
        /// Delete the node's whole subtree, children first.
        #[arg(long, short = 'r')]
        recursive: bool,
        /// Only if the node is at this version (otherwise BadVersion; not with --recursive).
        #[arg(long, conflicts_with = "recursive")]
        expected_version: Option<i32>,
    },
    /// Print a node's stat.
    Stat {
        /// The node.
        path: String,
    },
    /// Print every change to a node as it happens (a persistent watch), until interrupted.
    Watch {
        /// The node (it need not exist yet).
        path: String,
        /// Watch the whole subtree (a persistent recursive watch; child-list changes are not reported).
        #[arg(long, short = 'r')]
        recursive: bool,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Show each server's role, version, zxid, connections and node count (srvr and mntr); with
    /// --admin, the whole cluster as one Roster node's admin API sees it (roles, health, lag).
    Status {
        /// A Roster node's admin HTTP address (its --admin-addr, e.g. 127.0.0.1:8080).
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
    },
    /// A live view of a Roster cluster from one node's admin API: members with role, health and lag,
    /// sessions, request rate, recent events with their causes. Ctrl-C to stop.
    Top {
        /// The node's admin HTTP address (its --admin-addr).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
        admin: String,
        /// How often to refresh (e.g. 500ms, 2s).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        every: Duration,
        /// Stop after this many refreshes.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// List the members of a group (roster-client membership recipe), consistent at one zxid.
    Members {
        /// The group's path.
        group: String,
        /// Then print every Joined / Left / Updated event until interrupted.
        #[arg(long, short = 'w')]
        watch: bool,
        /// With --watch, stop after this many member events.
        #[arg(long, value_name = "N", requires = "watch")]
        count: Option<u64>,
    },
    /// Show the leader of an election (and the candidates in line), with its fencing token.
    /// Exit code 3 if there is no leader.
    Leader {
        /// The election's path.
        election: String,
        /// The candidates' lock name: `latch-` (Curator LeaderLatch, roster-client) or `lock-`
        /// (Curator LeaderSelector).
        #[arg(long, default_value = "latch-")]
        lock_name: String,
    },
    /// List the registered services, or the live instances of one (Curator service-discovery layout).
    /// Exit code 3 if SERVICE has no live instance.
    Services {
        /// A service name; without it, every service with its instance count.
        service: Option<String>,
        /// The discovery base path.
        #[arg(long, default_value = "/services", value_name = "PATH")]
        base: String,
    },
    /// Resolve cluster://service/path to the live instances (or the owner of the owned name
    /// service/path, with --names). Exit code 3 if there is none.
    Resolve {
        /// The name, e.g. cluster://user/victorops/broadcaster.
        uri: String,
        /// The discovery base path.
        #[arg(long, default_value = "/services", value_name = "PATH")]
        base: String,
        /// The root of the owned names, to route a path to its owner.
        #[arg(long, value_name = "ROOT")]
        names: Option<String>,
    },
}

/// Runs one client subcommand; errors from the service become exit codes 1 and 2 with a message on
/// standard error. An `Err` is a local failure (standard output closed, unreadable input).
pub async fn run(cmd: ClientCommand, opts: &GlobalClientOpts) -> anyhow::Result<ExitCode> {
    match &cmd {
        ClientCommand::Status { admin: None } => return status::run(opts).await,
        ClientCommand::Status { admin: Some(a) } => {
            return top::status(a, opts.json, opts.timeout).await
        }
        ClientCommand::Top {
            admin,
            every,
            count,
        } => return top::top(admin, *every, *count, opts.timeout).await,
        _ => {}
    }
    let tls = match &opts.tls_ca {
        None => None,
        Some(ca) => {
            let client = opts.tls_cert.as_deref().zip(opts.tls_key.as_deref());
            match roster_client::tls_config(ca, client) {
                Ok(c) => Some(c),
                Err(e) => return Ok(fail("cannot set up TLS", &e)),
            }
        }
    };
    let options = ClientOptions {
        session_timeout: opts.timeout,
        connect_timeout: Some(opts.timeout),
        request_timeout: Some(opts.timeout),
        tls,
        ..Default::default()
    };
    let servers = opts.servers();
    let client = match Client::connect(&servers, options).await {
        Ok(c) => c,
        Err(Error::ConnectionLoss) => {
            eprintln!(
                "error: cannot connect to {servers}: no server answered within {:?}",
                opts.timeout
            );
            return Ok(ExitCode::from(EXIT_CONNECTION));
        }
        Err(e) => return Ok(fail(&format!("cannot connect to {servers}"), &e)),
    };
    let result = execute(&client, cmd, opts).await;
    let _ = client.close().await;
    match result {
        Ok(code) => Ok(code),
        Err(Failure::Zk(what, e)) => Ok(fail(&what, &e)),
        Err(Failure::Local(e)) => Err(e),
    }
}

/// How a subcommand failed.
enum Failure {
    /// The service refused, with what was being done.
    Zk(String, Error),
    /// Something local (I/O on our side).
    Local(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Local(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::Local(e.into())
    }
}

/// Attaches what was being done to a client error.
trait Context<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, Failure>;
}

impl<T> Context<T> for roster_client::Result<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, Failure> {
        self.map_err(|e| Failure::Zk(what(), e))
    }
}

/// Prints `error: <what>: <error>` and picks the exit code.
fn fail(what: &str, e: &Error) -> ExitCode {
    eprintln!("error: {what}: {e}");
    ExitCode::from(exit_code(e))
}

/// 2 for a connection problem, 1 for everything the service said no to.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::ConnectionLoss | Error::Timeout | Error::SessionExpired | Error::Closed => {
            EXIT_CONNECTION
        }
        Error::Code(_) | Error::AuthFailed | Error::BadArguments(_) => EXIT_ZK_ERROR,
    }
}

async fn execute(
    c: &Client,
    cmd: ClientCommand,
    opts: &GlobalClientOpts,
) -> Result<ExitCode, Failure> {
    match cmd {
        ClientCommand::Ls { path, long } => ls(c, &path, long, opts.json).await,
        ClientCommand::Get { path, stat } => get(c, &path, stat, opts.json).await,
        ClientCommand::Set {
            path,
            data,
            expected_version,
        } => {
            let data = read_data(&data)?;
            let stat = c
                .set_data(&path, &data, expected_version)
                .await
                .doing(|| format!("set {path}"))?;
            if opts.json {
                print_json(&json!({ "path": path, "stat": stat_json(&stat) }))?;
            } else {
                println!("{path}: version {}", stat.version);
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Create {
            path,
            data,
            ephemeral,
            sequential,
            container,
            ttl,
            parents,
        } => {
            let mode = match (ephemeral, sequential, container, ttl.is_some()) {
                (true, false, _, _) => CreateMode::Ephemeral,
                (true, true, _, _) => CreateMode::EphemeralSequential,
                (_, _, true, _) => CreateMode::Container,
                (_, false, _, true) => CreateMode::PersistentWithTtl,
                (_, true, _, true) => CreateMode::PersistentSequentialWithTtl,
                (_, true, _, false) => CreateMode::PersistentSequential,
                _ => CreateMode::Persistent,
            };
            let options = CreateOptions {
                ttl: ttl.map(Duration::from_millis),
                ..CreateOptions::new(mode)
            };
            let data = read_data(&data)?;
            if parents {
                create_parents(c, &path).await?;
            }
            let created = c
                .create(&path, &data, &options)
                .await
                .doing(|| format!("create {path}"))?;
            if opts.json {
                print_json(&json!({ "path": created, "mode": format!("{mode:?}") }))?;
            } else {
                println!("{created}");
            }
            if ephemeral {
                hold_ephemeral(c, &created).await
            } else {
                Ok(ExitCode::SUCCESS)
            }
        }
        ClientCommand::Delete {
            path,
            recursive,
            expected_version,
        } => {
            let deleted = if recursive {
                delete_tree(c, &path).await?
            } else {
                c.delete(&path, expected_version)
                    .await
                    .doing(|| format!("delete {path}"))?;
                vec![path.clone()]
            };
            if opts.json {
                print_json(&json!({ "deleted": deleted }))?;
            } else if recursive {
                println!(
                    "deleted {} node{}",
                    deleted.len(),
                    if deleted.len() == 1 { "" } else { "s" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Stat { path } => {
            let stat = c.exists(&path).await.doing(|| format!("stat {path}"))?;
            let Some(stat) = stat else {
                return Err(Failure::Zk(
                    format!("stat {path}"),
                    Error::Code(roster_client::ErrorCode::NoNode),
                ));
            };
            if opts.json {
                print_json(&json!({ "path": path, "stat": stat_json(&stat) }))?;
            } else {
                let mut t = Table::new(&[]);
                for (k, v) in stat_rows(&stat) {
                    t.row(vec![k.to_string(), v]);
                }
                t.print()?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Watch {
            path,
            recursive,
            count,
        } => watch(c, &path, recursive, count, opts.json).await,
        ClientCommand::Status { .. } | ClientCommand::Top { .. } => {
            unreachable!("handled without a session")
        }
        ClientCommand::Members {
            group,
            watch,
            count,
        } => recipes::members(c, &group, watch, count, opts.json).await,
        ClientCommand::Leader {
            election,
            lock_name,
        } => recipes::leader(c, &election, &lock_name, opts.json).await,
        ClientCommand::Services { service, base } => {
            recipes::services(c, &base, service.as_deref(), opts.json).await
        }
        ClientCommand::Resolve { uri, base, names } => {
            recipes::resolve(c, &base, names.as_deref(), &uri, opts.json).await
        }
    }
}

async fn ls(c: &Client, path: &str, long: bool, json_out: bool) -> Result<ExitCode, Failure> {
    let mut children = c.get_children(path).await.doing(|| format!("ls {path}"))?;
    children.sort();
    if !long {
        if json_out {
            print_json(&json!({ "path": path, "children": children }))?;
        } else {
            let mut out = std::io::stdout().lock();
            for child in &children {
                writeln!(out, "{child}")?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    // One exists per child, all in flight at once on the one connection.
    let paths: Vec<String> = children.iter().map(|n| join(path, n)).collect();
    let stats = futures::future::join_all(paths.iter().map(|p| c.exists(p))).await;
    let mut rows: Vec<(String, Stat)> = Vec::new();
    for (name, stat) in children.into_iter().zip(stats) {
        // A child deleted between the listing and its stat is simply gone.
        if let Some(s) = stat.doing(|| format!("stat {}", join(path, &name)))? {
            rows.push((name, s));
        }
    }
    if json_out {
        let items: Vec<_> = rows
            .iter()
            .map(|(n, s)| json!({ "name": n, "stat": stat_json(s) }))
            .collect();
        print_json(&json!({ "path": path, "children": items }))?;
    } else {
        let mut t = Table::new(&[
            "NAME",
            "VERSION",
            "BYTES",
            "CHILDREN",
            "EPHEMERAL_OWNER",
            "MODIFIED",
        ]);
        for (n, s) in rows {
            let owner = if s.ephemeral_owner == 0 {
                "-".to_string()
            } else {
                format!("{:#x}", s.ephemeral_owner)
            };
            t.row(vec![
                n,
                s.version.to_string(),
                s.data_length.to_string(),
                s.num_children.to_string(),
                owner,
                output::format_time(s.mtime),
            ]);
        }
        t.print()?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(c: &Client, path: &str, with_stat: bool, json_out: bool) -> Result<ExitCode, Failure> {
    let (data, stat) = c.get_data(path).await.doing(|| format!("get {path}"))?;
    if json_out {
        let mut v = json!({
            "path": path,
            "data": std::str::from_utf8(&data).ok(),
            "data_base64": output::base64(&data),
        });
        if with_stat {
            v["stat"] = stat_json(&stat);
        }
        print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&data)?;
    if !data.is_empty() && !data.ends_with(b"\n") {
        writeln!(out)?;
    }
    drop(out);
    if with_stat {
        let mut t = Table::new(&[]);
        for (k, v) in stat_rows(&stat) {
            t.row(vec![k.to_string(), v]);
        }
        t.print()?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn watch(
    c: &Client,
    path: &str,
    recursive: bool,
    count: Option<u64>,
    json_out: bool,
) -> Result<ExitCode, Failure> {
    let mode = if recursive {
        AddWatchMode::PersistentRecursive
    } else {
        AddWatchMode::Persistent
    };
    let mut events = c.state_events();
    let mut stream = c
        .add_watch(path, mode)
        .await
        .doing(|| format!("watch {path}"))?;
    // On standard error even with --json, so a script can tell when the watch is in place.
    eprintln!(
        "watching {path}{} (Ctrl-C to stop)",
        if recursive { " and below" } else { "" }
    );
    let mut seen = 0u64;
    if count == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::select! {
            ev = stream.recv() => {
                let Some(ev) = ev else { break };
                if ev.event_type == EventType::None {
                    // The session ended: the stream's last word.
                    return Err(Failure::Zk(format!("watch {path}"), Error::SessionExpired));
                }
                if json_out {
                    print_json(&json!({ "type": format!("{:?}", ev.event_type), "path": ev.path }))?;
                } else {
                    println!("{:<22} {}", format!("{:?}", ev.event_type), ev.path);
                }
                std::io::stdout().flush()?;
                seen += 1;
                if count.is_some_and(|n| seen >= n) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            st = events.recv() => match st {
                Ok(SessionEvent::Suspended) => eprintln!("connection lost; reconnecting (changes made meanwhile are not reported)"),
                Ok(SessionEvent::Reconnected) => eprintln!("reconnected"),
                _ => {}
            },
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Keeps the session (and so the ephemeral node) alive until Ctrl-C or SIGTERM.
async fn hold_ephemeral(c: &Client, path: &str) -> Result<ExitCode, Failure> {
    eprintln!("{path} lives until this command is interrupted");
    let mut events = c.state_events();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            _ = term.recv() => return Ok(ExitCode::SUCCESS),
            ev = events.recv() => match ev {
                Ok(SessionEvent::Expired) => {
                    return Err(Failure::Zk(format!("holding {path}"), Error::SessionExpired))
                }
                Ok(SessionEvent::Suspended) => eprintln!("connection lost; reconnecting"),
                Ok(SessionEvent::Reconnected) => eprintln!("reconnected; {path} is still there"),
                _ => {}
            },
        }
    }
}

/// Creates every missing ancestor of `path` (as persistent nodes); existing ones are fine.
async fn create_parents(c: &Client, path: &str) -> Result<(), Failure> {
    let mut prefix = String::new();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        prefix.push('/');
        prefix.push_str(part);
        match c.create(&prefix, b"", &CreateOptions::default()).await {
            Ok(_) | Err(Error::Code(roster_client::ErrorCode::NodeExists)) => {}
            Err(e) => return Err(Failure::Zk(format!("create {prefix}"), e)),
        }
    }
    Ok(())
}

/// Deletes `path` and everything below it, deepest first; returns what was deleted.
async fn delete_tree(c: &Client, path: &str) -> Result<Vec<String>, Failure> {
    // Collect the subtree breadth-first, then delete in reverse: children before parents.
    let mut order = vec![path.to_string()];
    let mut i = 0;
    while i < order.len() {
        match c.get_children(&order[i]).await {
            Ok(mut kids) => {
                kids.sort();
                let base = order[i].clone();
                order.extend(kids.iter().map(|k| join(&base, k)));
            }
            Err(Error::Code(roster_client::ErrorCode::NoNode)) if i > 0 => {}
            Err(e) => return Err(Failure::Zk(format!("delete {}", order[i]), e)),
        }
        i += 1;
    }
    let mut deleted = Vec::new();
    for p in order.into_iter().rev() {
        match c.delete(&p, None).await {
            Ok(()) => deleted.push(p),
            // Gone already: an ephemeral whose session ended, or another deleter.
            Err(Error::Code(roster_client::ErrorCode::NoNode)) if p != path => {}
            Err(e) => return Err(Failure::Zk(format!("delete {p}"), e)),
        }
    }
    Ok(deleted)
}

fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// The data argument: literal, or `-` for standard input.
fn read_data(arg: &str) -> Result<Vec<u8>, Failure> {
    if arg == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        Ok(buf)
    } else {
        Ok(arg.as_bytes().to_vec())
    }
}

/// Parses `500ms`, `5s`, `2m`, or a bare number of seconds (fractions allowed).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 500ms, 5s, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid unit in {s:?} (use ms, s or m)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&Error::Code(roster_client::ErrorCode::NoNode)), 1);
        assert_eq!(exit_code(&Error::ConnectionLoss), 2);
        assert_eq!(exit_code(&Error::Timeout), 2);
    }

    #[test]
    fn joins_paths() {
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
