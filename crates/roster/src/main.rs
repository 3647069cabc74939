//! `roster`: the one binary. `roster serve` runs a node; the other subcommands are tools around it.
//!
//! Settings come from flags, then `ROSTER_*` environment variables, then an optional TOML file
//! (`--config`), then built-in defaults, so `roster serve` alone runs a usable single node.

use clap::{Args, Parser, Subcommand};
use roster_server::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
}

#[derive(Subcommand)]
enum Command {
    /// Run a Roster node (defaults: clients on 127.0.0.1:2181, data in ./roster-data).
    Serve(Box<ServeArgs>),
    /// Print the digest of USER:PASSWORD, for digest ACLs and the --super-digest setting.
    Digest {
        /// The credentials, as user:password.
        user_password: String,
    },
}

/// Every setting of `roster serve`. Unset flags fall back to ROSTER_* variables, the config file, then
/// the defaults shown.
#[derive(Args)]
struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys, e.g. client_addr = "0.0.0.0:2181").
    #[arg(long, env = "ROSTER_CONFIG")]
    config: Option<PathBuf>,
    /// Address for ZooKeeper clients and four-letter words [default: 127.0.0.1:2181].
    #[arg(long, env = "ROSTER_CLIENT_ADDR")]
    client_addr: Option<SocketAddr>,
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
    #[arg(long = "4lw-whitelist", alias = "four-letter-words", env = "ROSTER_4LW_WHITELIST")]
    four_letter_words: Option<String>,
    /// Digest of the super user, as printed by `roster digest super:PASSWORD` [default: none].
    #[arg(long, env = "ROSTER_SUPER_DIGEST")]
    super_digest: Option<String>,
    /// Allow TTL nodes (createTTL) [default: true].
    #[arg(long, env = "ROSTER_TTL_NODES")]
    ttl_nodes: Option<bool>,
    /// Take a snapshot after this many log entries [default: 100000].
    #[arg(long, env = "ROSTER_SNAPSHOT_EVERY")]
    snapshot_every: Option<u64>,
    /// How often session deadlines are checked, ms [default: 20].
    #[arg(long, env = "ROSTER_SESSION_TICK_MS")]
    session_tick_ms: Option<u64>,
    /// Log filter, e.g. info, debug, roster_server=debug [default: info,openraft=warn].
    #[arg(long, env = "ROSTER_LOG")]
    log: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "ROSTER_LOG_FORMAT")]
    log_format: Option<String>,
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
        set!(
            client_addr,
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
            log,
            log_format
        );
        if self.super_digest.is_some() {
            c.super_digest = self.super_digest;
        }
        c.validate()?;
        Ok(c)
    }
}

fn init_logging(filter: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Digest { user_password } => {
            if !user_password.contains(':') {
                eprintln!("error: expected user:password");
                return ExitCode::from(2);
            }
            println!("{}", roster_state::digest(&user_password));
            ExitCode::SUCCESS
        }
        Command::Serve(args) => {
            let config = match args.into_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&config.log, &config.log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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

async fn serve(config: Config) -> ExitCode {
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
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
        _ = term.recv() => tracing::info!("terminated: shutting down"),
    }
    node.shutdown().await;
    ExitCode::SUCCESS
}
