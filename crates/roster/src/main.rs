//! `roster`: the one binary. `roster serve` runs a node; the other subcommands are tools around it.
//!
//! Settings come from flags, then `ROSTER_*` environment variables, then an optional TOML file
//! (`--config`), then built-in defaults, so `roster serve` alone runs a usable single node.

#![warn(missing_docs)]

mod bench;
mod cli;
mod import;
mod tls;

use clap::{Args, Parser, Subcommand};
use roster_server::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc instead of glibc malloc. Under write load glibc's allocator took about a sixth of the
/// server's CPU (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`, `free` in a perf profile of
/// 3-node setData); with jemalloc the same single node served 40-60% more setData per second at
/// 30% less CPU per operation, with the same resident memory after 100,000 znodes (78-79 MiB) and
/// 2 MiB more idle. mimalloc was faster than glibc too but held 50% more memory.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "roster",
    version,
    about = "Roster: a ZooKeeper-compatible coordination service on Raft",
    long_about = "Roster answers who is in the cluster, tells you when members come and go, and who leads.\n\
It speaks the Apache ZooKeeper wire protocol, so kazoo, Curator, zkCli and every other ZooKeeper client\n\
work unchanged, and it replicates every write through Raft (openraft) to disk before acknowledging it.\n\n\
Start a node:      roster serve\n\
Then connect:      zkCli.sh -server 127.0.0.1:2181"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: cli::GlobalClientOpts,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Roster node (defaults: clients on 127.0.0.1:2181, data in ./roster-data).
    Serve(Box<ServeArgs>),
    #[command(flatten)]
    Client(cli::ClientCommand),
    /// Benchmark any ZooKeeper-protocol server (Roster or Apache ZooKeeper): throughput, latency,
    /// sessions, watches, expiry, memory.
    Bench(bench::BenchArgs),
    /// Inspect and change the cluster's membership through any node's peer port (with peer TLS:
    /// --tls-dir DIR of `roster tls init`, for its administrator certificate).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        #[command(flatten)]
        tls: tls::ClusterTlsOpts,
    },
    /// Certificates for authenticated, encrypted peers: `roster tls init --dir DIR --nodes n1=HOST,...`.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// Make a new Roster data directory from an Apache ZooKeeper data directory (snapshot + logs).
    Import(import::ImportArgs),
    /// Print the digest of USER:PASSWORD, for digest ACLs and the --super-digest setting.
    Digest {
        /// The credentials, as user:password.
        user_password: String,
    },
}

/// `roster cluster ...`.
#[derive(Subcommand)]
enum ClusterCommand {
    /// Print the members, their roles, the leader and each node's client address.
    Status {
        /// Peer address (HOST:PEERPORT) of any node.
        #[arg(long, default_value = "127.0.0.1:2888")]
        server: String,
    },
    /// Remove node ID from the cluster (the leader promotes a learner if voters fall short).
    Remove {
        /// The node id, as printed by `roster cluster status`.
        id: u64,
        /// Peer address (HOST:PEERPORT) of any node.
        #[arg(long, default_value = "127.0.0.1:2888")]
        server: String,
    },
    /// Ask the node at --server to leave the cluster.
    Leave {
        /// Peer address (HOST:PEERPORT) of the node that leaves.
        #[arg(long, default_value = "127.0.0.1:2888")]
        server: String,
    },
}

/// Every setting of `roster serve`. Unset flags fall back to ROSTER_* variables, the config file, then
/// the defaults shown.
#[derive(Args)]
struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys, e.g. client_addr = "0.0.0.0:2181").
    #[arg(long, env = "ROSTER_CONFIG")]
    config: Option<PathBuf>,
    /// Address for ZooKeeper clients and four-letter words, or `off` for no plain port (TLS only, with
    /// --secure-client-addr) [default: 127.0.0.1:2181].
    #[arg(long, env = "ROSTER_CLIENT_ADDR", value_parser = parse_client_addr)]
    client_addr: Option<AddrOrOff>,
    /// Directory for the Raft log, snapshots and metadata; created if missing [default: ./roster-data].
    #[arg(long, env = "ROSTER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Smallest session timeout granted to clients, ms [default: 4000].
    #[arg(long, env = "ROSTER_MIN_SESSION_TIMEOUT_MS")]
    min_session_timeout_ms: Option<i32>,
    /// Largest session timeout granted to clients, ms. The session timeout is Roster's one
    /// failure-detection knob: a client silent for this long is expired and its ephemerals deleted
    /// [default: 40000].
    #[arg(long, env = "ROSTER_MAX_SESSION_TIMEOUT_MS")]
    max_session_timeout_ms: Option<i32>,
    /// Largest frame a client may send, bytes (ZooKeeper's jute.maxbuffer) [default: 1048575].
    #[arg(long, env = "ROSTER_MAX_FRAME_BYTES")]
    max_frame_bytes: Option<usize>,
    /// Most concurrent connections from one client IP address, 0 for no limit [default: 2000].
    #[arg(long, env = "ROSTER_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Most watches one connection may hold, 0 for no limit [default: 1000000].
    #[arg(long, env = "ROSTER_MAX_WATCHES_PER_SESSION")]
    max_watches_per_session: Option<usize>,
    /// Four-letter words answered on the client port: comma-separated, or * for all [default: *].
    #[arg(
        long = "4lw-whitelist",
        alias = "four-letter-words",
        env = "ROSTER_4LW_WHITELIST"
    )]
    four_letter_words: Option<String>,
    /// Digest of the super user, as printed by `roster digest super:PASSWORD` [default: none].
    #[arg(long, env = "ROSTER_SUPER_DIGEST")]
    super_digest: Option<String>,
    /// Allow TTL nodes (createTTL) [default: true].
    #[arg(long, env = "ROSTER_TTL_NODES")]
    ttl_nodes: Option<bool>,
    /// Take a snapshot after this many log entries [default: 100000], and not before half as many
    /// entries as the tree has znodes (a snapshot rewrites the whole tree); each node uses its own
    /// interval between three quarters of this and this, so cluster members do not snapshot at once.
    #[arg(long, env = "ROSTER_SNAPSHOT_EVERY")]
    snapshot_every: Option<u64>,
    /// How often session deadlines are checked, ms [default: 20].
    #[arg(long, env = "ROSTER_SESSION_TICK_MS")]
    session_tick_ms: Option<u64>,
    /// Make every read linearizable (a Raft read barrier before each read, like `sync`) [default: false].
    #[arg(long, env = "ROSTER_LINEARIZABLE_READS")]
    linearizable_reads: Option<bool>,
    /// Leave the cluster on a graceful shutdown (SIGTERM/Ctrl-C) instead of staying a member that is
    /// down [default: false].
    #[arg(long, env = "ROSTER_LEAVE_ON_SHUTDOWN")]
    leave_on_shutdown: Option<bool>,
    /// Log filter, e.g. info, debug, roster_server=debug [default: info,openraft=error].
    #[arg(long, env = "ROSTER_LOG")]
    log: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "ROSTER_LOG_FORMAT")]
    log_format: Option<String>,
    /// Address for the other Roster nodes; announced to them as is [default: 127.0.0.1:2888].
    #[arg(long, env = "ROSTER_PEER_ADDR")]
    peer_addr: Option<SocketAddr>,
    /// Join the cluster of the node at HOST:PEERPORT (only with an empty data directory; ignored later).
    #[arg(long, env = "ROSTER_JOIN")]
    join: Option<String>,
    /// Voters the cluster aims for: joining nodes become voters up to this, learners (observers) after
    /// [default: 3].
    #[arg(long, env = "ROSTER_TARGET_VOTERS")]
    target_voters: Option<usize>,
    /// On the leader, replace a voter that acknowledged nothing for this many ms by a caught-up
    /// learner (the dead voter becomes a learner); 0 never does (docs/embedding.md) [default: 0].
    #[arg(long, env = "ROSTER_REPLACE_DEAD_VOTERS_MS")]
    replace_dead_voters_ms: Option<u64>,
    /// Log entries kept behind the latest snapshot [default: 1000].
    #[arg(long, env = "ROSTER_SNAPSHOT_LOG_KEEP")]
    snapshot_log_keep: Option<u64>,
    /// Admin HTTP port: Prometheus metrics at /metrics, the JSON API at /api/v1, the live web view at
    /// /, health at /healthz and /readyz; `off` to disable. A port already taken is reported and
    /// skipped [default: 127.0.0.1:8080].
    #[arg(long, env = "ROSTER_ADMIN_ADDR")]
    admin_addr: Option<String>,
    /// Record Prometheus metrics (served at the admin port's /metrics); `false` records nothing
    /// [default: true].
    #[arg(long, env = "ROSTER_METRICS")]
    metrics: Option<bool>,
    /// File descriptors kept free for storage and peers: client connections are refused once open
    /// descriptors reach the limit minus this (`roster serve` first raises its soft limit to the hard
    /// limit) [default: 128].
    #[arg(long, env = "ROSTER_FD_RESERVE")]
    fd_reserve: Option<u64>,
    /// Close a connection that has not sent its handshake within this many ms [default: 10000].
    #[arg(long, env = "ROSTER_HANDSHAKE_TIMEOUT_MS")]
    handshake_timeout_ms: Option<u64>,
    /// Most bytes of replies and events queued for a client that does not read them; over it the
    /// connection is closed as a slow reader; at least twice max-frame-bytes is used [default: 16777216].
    #[arg(long, env = "ROSTER_MAX_OUTGOING_BYTES")]
    max_outgoing_bytes: Option<usize>,
    /// This node's peer certificate (PEM, from `roster tls init`); with --peer-tls-key and
    /// --peer-tls-ca every peer connection is mutual TLS 1.3 [default: none].
    #[arg(long, env = "ROSTER_PEER_TLS_CERT")]
    peer_tls_cert: Option<PathBuf>,
    /// The private key of --peer-tls-cert (PEM) [default: none].
    #[arg(long, env = "ROSTER_PEER_TLS_KEY")]
    peer_tls_key: Option<PathBuf>,
    /// The cluster CA certificate (PEM); peers must present a certificate it signed [default: none].
    #[arg(long, env = "ROSTER_PEER_TLS_CA")]
    peer_tls_ca: Option<PathBuf>,
    /// Allow plain-text, unauthenticated peers on a --peer-addr other than loopback: anyone who
    /// reaches the peer port can then join, remove members and vote [default: false].
    #[arg(long, env = "ROSTER_INSECURE_PEERS")]
    insecure_peers: bool,
    /// TLS client port (ZooKeeper's secureClientPort), beside --client-addr; needs --client-tls-cert
    /// and --client-tls-key [default: none].
    #[arg(long, env = "ROSTER_SECURE_CLIENT_ADDR")]
    secure_client_addr: Option<SocketAddr>,
    /// PEM certificate chain of the TLS client port; reloaded when the file changes.
    #[arg(long, env = "ROSTER_CLIENT_TLS_CERT")]
    client_tls_cert: Option<PathBuf>,
    /// PEM private key of the TLS client port; reloaded when the file changes.
    #[arg(long, env = "ROSTER_CLIENT_TLS_KEY")]
    client_tls_key: Option<PathBuf>,
    /// PEM CA file for client certificates: when set, TLS clients are asked for a certificate, whose
    /// subject DN becomes their x509 identity [default: none].
    #[arg(long, env = "ROSTER_CLIENT_TLS_CA")]
    client_tls_ca: Option<PathBuf>,
    /// With --client-tls-ca: want (a client certificate is optional) or need (required)
    /// (ZooKeeper's ssl.clientAuth) [default: want].
    #[arg(long, env = "ROSTER_CLIENT_TLS_CLIENT_AUTH")]
    client_tls_client_auth: Option<String>,
    /// JAAS file whose Server section lists SASL DIGEST-MD5 users (user_bob="secret";), as
    /// ZooKeeper's; enables SASL logins (identity sasl:bob). Read at each login [default: none].
    #[arg(long, env = "ROSTER_SASL_USERS_FILE")]
    sasl_users_file: Option<PathBuf>,
}

impl ServeArgs {
    fn into_config(self) -> Result<Config, roster_server::config::ConfigError> {
        let mut c = match &self.config {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        if let Some(AddrOrOff(a)) = self.client_addr {
            c.client_addr = a;
        }
        set!(
            data_dir,
            min_session_timeout_ms,
            max_session_timeout_ms,
            max_frame_bytes,
            max_connections_per_ip,
            max_watches_per_session,
            four_letter_words,
            ttl_nodes,
            snapshot_every,
            session_tick_ms,
            linearizable_reads,
            leave_on_shutdown,
            log,
            log_format,
            peer_addr,
            target_voters,
            replace_dead_voters_ms,
            snapshot_log_keep,
            admin_addr,
            metrics,
            fd_reserve,
            handshake_timeout_ms,
            max_outgoing_bytes,
            client_tls_client_auth
        );
        macro_rules! set_opt {
            ($($f:ident),*) => { $( if self.$f.is_some() { c.$f = self.$f; } )* };
        }
        set_opt!(
            secure_client_addr,
            client_tls_cert,
            client_tls_key,
            client_tls_ca,
            sasl_users_file
        );
        if self.join.is_some() {
            c.join = self.join;
        }
        if self.super_digest.is_some() {
            c.super_digest = self.super_digest;
        }
        if self.peer_tls_cert.is_some() {
            c.peer_tls_cert = self.peer_tls_cert;
        }
        if self.peer_tls_key.is_some() {
            c.peer_tls_key = self.peer_tls_key;
        }
        if self.peer_tls_ca.is_some() {
            c.peer_tls_ca = self.peer_tls_ca;
        }
        if self.insecure_peers {
            c.insecure_peers = true;
        }
        c.validate()?;
        if c.client_addr.is_none() && c.secure_client_addr.is_none() {
            return Err(roster_server::config::ConfigError::Invalid {
                setting: "client-addr",
                message: "is off and no --secure-client-addr is set: give one of them, or clients could not reach this node".into(),
            });
        }
        Ok(c)
    }
}

/// `--client-addr`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
struct AddrOrOff(Option<SocketAddr>);

fn parse_client_addr(s: &str) -> Result<AddrOrOff, String> {
    roster_server::config::parse_addr_or_off(s).map(AddrOrOff)
}

fn init_logging(filter: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Client(cmd) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => match rt.block_on(cli::run(cmd, &cli.client)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            },
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Import(args) => match import::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Digest { user_password } => {
            if !user_password.contains(':') {
                eprintln!("error: expected user:password");
                return ExitCode::from(2);
            }
            println!("{}", roster_proto::digest(&user_password));
            ExitCode::SUCCESS
        }
        Command::Bench(args) => match {
            // The sessions and fanout workloads hold one socket per session.
            raise_fd_limit();
            tokio::runtime::Builder::new_multi_thread()
        }
        .enable_all()
        .build()
        {
            Ok(rt) => match rt.block_on(bench::run(args)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Tls(cmd) => match tls::run(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Cluster { .. } if cli.client.tls_ca.is_some() || cli.client.tls_cert.is_some() => {
            eprintln!(
                "error: --tls-ca/--tls-cert/--tls-key are for client ports; `roster cluster` speaks to the peer port: use --tls-dir DIR (from `roster tls init`) or --cert, --key and --ca"
            );
            ExitCode::from(2)
        }
        Command::Cluster { command, tls } => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(cluster(command, &tls, cli.client.json)),
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            let config = match args.into_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&config.log, &config.log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(serve(config))
        }
    }
}

/// Raises this process's soft limit of open file descriptors to its hard limit (client connections
/// each hold one; storage needs its own), logging the outcome. `roster serve` does this; an
/// application embedding a node keeps its own limits.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the file descriptor limit");
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let old = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), soft = old, "cannot raise the file descriptor limit");
            return;
        }
        tracing::info!(
            from = old,
            to = lim.rlim_cur,
            "raised the file descriptor limit"
        );
    }
}

/// How long a node whose storage failed keeps reporting it (not serving) before it exits.
const STORAGE_FAILED_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

async fn serve(config: Config) -> ExitCode {
    raise_fd_limit();
    let node = match roster_server::Node::start(config).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = node.storage_failed();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
        _ = term.recv() => tracing::info!("terminated: shutting down"),
        r = failed.wait_for(|f| f.is_some()) => {
            let why = r.map(|f| f.clone().unwrap_or_default()).unwrap_or_default();
            // ruok, srvr, mntr and /readyz say so for a moment, for monitors that are looking.
            tracing::error!(reason = %why, "storage failed: exiting in {} s (a supervisor should restart this node; restore the data directory if the disk is damaged)", STORAGE_FAILED_GRACE.as_secs());
            tokio::time::sleep(STORAGE_FAILED_GRACE).await;
            tracing::error!("exiting: storage failed");
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), node.shutdown()).await;
            return ExitCode::FAILURE;
        }
    }
    node.shutdown().await;
    ExitCode::SUCCESS
}

async fn cluster(cmd: ClusterCommand, tls: &tls::ClusterTlsOpts, json: bool) -> ExitCode {
    use roster_server::cluster::admin;
    let tls = match tls.load() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let tls = tls.as_ref();
    let result = match cmd {
        ClusterCommand::Status { server } => match admin::status(&server, tls).await {
            Ok(st) if json => {
                // The answering node's view, then each member's own report (null when unreachable).
                let mut own = Vec::new();
                for m in &st.members {
                    own.push(
                        admin::status(&m.peer_addr, tls)
                            .await
                            .ok()
                            .filter(|s| s.node_id == m.node_id),
                    );
                }
                let out = serde_json::json!({ "view": st, "members": own });
                println!("{out}");
                Ok(())
            }
            Ok(st) => {
                println!("cluster {}", st.cluster_id);
                println!(
                    "leader  {}",
                    st.leader
                        .map(|l| l.to_string())
                        .unwrap_or_else(|| "none".into())
                );
                println!(
                    "{:<20} {:<8} {:<10} {:<22} {:<22} {:>10} serving",
                    "node", "role", "state", "peer", "client", "applied"
                );
                for m in &st.members {
                    let role = if m.voter { "voter" } else { "learner" };
                    // Each member reports its own state and client address; an unreachable one shows "?".
                    let (state, client, applied, serving) =
                        match admin::status(&m.peer_addr, tls).await {
                            Ok(s) if s.node_id == m.node_id => (
                                s.state,
                                s.client_addr,
                                s.applied.to_string(),
                                s.serving.to_string(),
                            ),
                            _ => ("?".into(), "?".into(), "?".into(), "?".into()),
                        };
                    println!(
                        "{:<20} {:<8} {:<10} {:<22} {:<22} {:>10} {}",
                        m.node_id, role, state, m.peer_addr, client, applied, serving
                    );
                }
                Ok(())
            }
            Err(e) => Err(e),
        },
        ClusterCommand::Remove { id, server } => admin::remove(&server, id, tls)
            .await
            .map(|()| println!("node {id} removed")),
        ClusterCommand::Leave { server } => admin::leave(&server, tls)
            .await
            .map(|()| println!("{server} left the cluster")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
