//! Test servers: a real Apache ZooKeeper, or the Roster binary, started by the tests themselves.
//!
//! [`TestServer`] names the kind of server; [`targets`] reads which kinds to test from
//! `ROSTER_CLIENT_TEST_TARGETS` (comma-separated `zookeeper`, `roster`, `embedded`; default
//! `zookeeper`). Each server listens on a free port on 127.0.0.1 with its data in a temporary directory.
//!
//! `embedded` is a Roster node inside the test process (`roster-embed`, on a runtime of its own so it
//! outlives each test's runtime): [`ServerProcess::addr`] is then its in-process connect string, so
//! the test's own clients reach it without TCP, while helper processes and four-letter words use its
//! client port ([`ServerProcess::tcp_addr`]). Its restart is a graceful shutdown and a new start on
//! the same data directory, under the same in-process name.
//!
//! The server process is started under a small `bash` guard that reads its standard input from the test
//! process: when the test process ends, however it ends (normal exit, panic, SIGKILL), the pipe closes,
//! the guard's `read` returns and it kills the server. [`ServerProcess`]'s `Drop` closes the pipe too, so
//! a server owned by one test dies with it, and [`shared`] servers (one per kind and test binary, kept in
//! a static that is never dropped) die with the process.
//!
//! ZooKeeper is run from Debian's `zookeeper` package (`/usr/share/java/zookeeper.jar`, whose manifest
//! names its dependencies; override with `ZOOKEEPER_CLASSPATH`, and `JAVA` for the java binary), as
//! `ZooKeeperServerMain` with a generated `zoo.cfg`: a 200 ms tick (so sessions may be as short as
//! 400 ms), every four-letter word allowed, no admin server, TTL nodes enabled
//! (`zookeeper.extendedTypesEnabled`) and the container/TTL reaper running every 500 ms. Roster is run as
//! `roster serve --client-addr 127.0.0.1:PORT --data-dir DIR` with the same session-timeout range, from
//! `ROSTER_BIN` or `target/debug/roster`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a server may take to start answering.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// ZooKeeper's tick in the generated config, ms.
pub const ZK_TICK_MS: u64 = 200;

/// A kind of server the client tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestServer {
    /// Apache ZooKeeper, from Debian's package.
    ZooKeeper,
    /// The Roster binary.
    Roster,
    /// A Roster node embedded in the test process, reached in process.
    Embedded,
}

impl TestServer {
    /// The name used in `ROSTER_CLIENT_TEST_TARGETS`.
    pub fn name(self) -> &'static str {
        match self {
            TestServer::ZooKeeper => "zookeeper",
            TestServer::Roster => "roster",
            TestServer::Embedded => "embedded",
        }
    }
}

/// The kinds selected by `ROSTER_CLIENT_TEST_TARGETS` (default: `zookeeper`).
pub fn targets() -> Vec<TestServer> {
    let spec =
        std::env::var("ROSTER_CLIENT_TEST_TARGETS").unwrap_or_else(|_| "zookeeper".to_string());
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.to_ascii_lowercase().as_str() {
            "zookeeper" | "zk" => TestServer::ZooKeeper,
            "roster" => TestServer::Roster,
            "embedded" => TestServer::Embedded,
            other => panic!(
                "ROSTER_CLIENT_TEST_TARGETS: unknown target {other:?} (want zookeeper, roster, embedded)"
            ),
        })
        .collect()
}

/// A running server, killed when dropped.
pub struct ServerProcess {
    /// What it is.
    pub kind: TestServer,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    /// The process (`None` for an embedded node).
    child: Option<Child>,
    /// The embedded node (for [`TestServer::Embedded`]).
    embedded: Option<EmbeddedNode>,
    /// Closing this makes the guard kill the server.
    guard: Option<ChildStdin>,
    dir: tempfile::TempDir,
    /// The server's command line, for [`ServerProcess::restart`].
    argv: Vec<String>,
}

impl ServerProcess {
    /// Starts a server of `kind` and waits until it answers.
    pub fn start(kind: TestServer) -> ServerProcess {
        let mut last_err = String::new();
        // A free port can be taken by someone else between finding it and the server binding it: retry.
        for _ in 0..3 {
            match Self::try_start(kind) {
                Ok(s) => return s,
                Err(e) => last_err = e,
            }
        }
        panic!("could not start {}: {last_err}", kind.name());
    }

    fn try_start(kind: TestServer) -> Result<ServerProcess, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("roster-test-{}-", kind.name()))
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = free_port();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        if kind == TestServer::Embedded {
            let embedded = EmbeddedNode::start(&data, port)?;
            let mut server = ServerProcess {
                kind,
                port,
                child: None,
                embedded: Some(embedded),
                guard: None,
                dir,
                argv: Vec::new(),
            };
            server.wait_ready()?;
            return Ok(server);
        }
        let argv = match kind {
            TestServer::ZooKeeper => zookeeper_argv(dir.path(), &data, port)?,
            TestServer::Roster => roster_argv(&data, port)?,
            TestServer::Embedded => unreachable!("started above"),
        };
        let mut child = spawn_guarded(&argv, &dir.path().join("server.log"))?;
        let guard = child.stdin.take();
        let mut server = ServerProcess {
            kind,
            port,
            child: Some(child),
            embedded: None,
            guard,
            dir,
            argv,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Stops the server (SIGTERM, as an operator would) and starts it again on the same port and data
    /// directory; returns once it answers again.
    pub fn restart(&mut self, downtime: Duration) {
        self.stop();
        std::thread::sleep(downtime);
        if let Some(e) = &mut self.embedded {
            e.start_again()
                .unwrap_or_else(|e| panic!("restarting the embedded node: {e}"));
            self.wait_ready()
                .unwrap_or_else(|e| panic!("restarting the embedded node: {e}"));
            return;
        }
        let mut child = spawn_guarded(&self.argv, &self.dir.path().join("server.log"))
            .unwrap_or_else(|e| panic!("restarting {}: {e}", self.kind.name()));
        self.guard = child.stdin.take();
        self.child = Some(child);
        self.wait_ready()
            .unwrap_or_else(|e| panic!("restarting {}: {e}", self.kind.name()));
    }

    fn stop(&mut self) {
        if let Some(e) = &mut self.embedded {
            e.stop();
            return;
        }
        drop(self.guard.take());
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let kind = self.kind;
        let server = self;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = server.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "{} exited with {status} during startup; log:\n{}",
                    kind.name(),
                    server.log()
                ));
            }
            if server.is_ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not answer within {STARTUP_TIMEOUT:?}; log:\n{}",
                    kind.name(),
                    server.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn is_ready(&self) -> bool {
        // Both answer the `ruok` four-letter word once they serve clients.
        // ZooKeeper says `imok` a moment before it can take requests; `srvr` tells them apart
        // ("This ZooKeeper instance is not currently serving requests").
        self.try_four_letter("ruok").is_ok_and(|r| r == "imok")
            && self
                .try_four_letter("srvr")
                .is_ok_and(|r| r.contains("Mode:"))
    }

    /// The connect string for this process's clients: `127.0.0.1:PORT`, or for an embedded node its
    /// in-process connect string.
    pub fn addr(&self) -> String {
        match &self.embedded {
            Some(e) => e.connect_string(),
            None => self.tcp_addr(),
        }
    }

    /// `127.0.0.1:PORT`, for other processes.
    pub fn tcp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Sends a four-letter word and returns the reply.
    pub fn four_letter(&self, word: &str) -> String {
        self.try_four_letter(word)
            .unwrap_or_else(|e| panic!("{word}: {e}"))
    }

    fn try_four_letter(&self, word: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&self.socket_addr(), Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(word.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `argv` under the guard (see the module docs), appending its output to `log`.
fn spawn_guarded(argv: &[String], log: &std::path::Path) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| e.to_string())?;
    Command::new("bash")
        .arg("-c")
        // Run the server in the background; when our stdin closes (test process gone), kill it.
        .arg(r#""$@" & pid=$!; read -r _; kill "$pid" 2>/dev/null; wait "$pid""#)
        .arg("guard")
        .args(argv)
        .stdin(Stdio::piped())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawning {argv:?}: {e}"))
}

/// One server of `kind` per test binary, started on first use and killed when the process exits.
pub fn shared(kind: TestServer) -> &'static ServerProcess {
    static ZK: OnceLock<ServerProcess> = OnceLock::new();
    static ROSTER: OnceLock<ServerProcess> = OnceLock::new();
    static EMBEDDED: OnceLock<ServerProcess> = OnceLock::new();
    let cell = match kind {
        TestServer::ZooKeeper => &ZK,
        TestServer::Roster => &ROSTER,
        TestServer::Embedded => &EMBEDDED,
    };
    cell.get_or_init(|| ServerProcess::start(kind))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn zookeeper_argv(
    dir: &std::path::Path,
    data: &std::path::Path,
    port: u16,
) -> Result<Vec<String>, String> {
    let classpath = std::env::var("ZOOKEEPER_CLASSPATH")
        .unwrap_or_else(|_| "/usr/share/java/zookeeper.jar".to_string());
    if !classpath
        .split(':')
        .any(|p| std::path::Path::new(p).exists())
    {
        return Err(format!("ZooKeeper not found at {classpath:?}: install Debian's zookeeper package or set ZOOKEEPER_CLASSPATH"));
    }
    let cfg = dir.join("zoo.cfg");
    let text = format!(
        "tickTime={ZK_TICK_MS}\n\
         dataDir={}\n\
         clientPort={port}\n\
         clientPortAddress=127.0.0.1\n\
         minSessionTimeout={}\n\
         maxSessionTimeout=60000\n\
         4lw.commands.whitelist=*\n\
         admin.enableServer=false\n",
        data.display(),
        2 * ZK_TICK_MS,
    );
    std::fs::write(&cfg, text).map_err(|e| e.to_string())?;
    let java = std::env::var("JAVA").unwrap_or_else(|_| "java".to_string());
    Ok(vec![
        java,
        "-Xmx256m".into(),
        "-XX:+UseSerialGC".into(),
        "-XX:TieredStopAtLevel=1".into(),
        "-Dzookeeper.extendedTypesEnabled=true".into(),
        "-Dznode.container.checkIntervalMs=500".into(),
        "-Dzookeeper.admin.enableServer=false".into(),
        "-cp".into(),
        classpath,
        "org.apache.zookeeper.server.ZooKeeperServerMain".into(),
        cfg.display().to_string(),
    ])
}

fn roster_argv(data: &std::path::Path, port: u16) -> Result<Vec<String>, String> {
    let bin = match std::env::var("ROSTER_BIN") {
        Ok(b) => PathBuf::from(b),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/roster"),
    };
    if !bin.exists() {
        return Err(format!(
            "no Roster binary at {}: run `cargo build -p roster` or set ROSTER_BIN",
            bin.display()
        ));
    }
    Ok(vec![
        bin.display().to_string(),
        "serve".into(),
        "--client-addr".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        data.display().to_string(),
        // The same session-timeout range as the ZooKeeper config above.
        "--min-session-timeout-ms".into(),
        (2 * ZK_TICK_MS).to_string(),
        "--max-session-timeout-ms".into(),
        "60000".into(),
    ])
}

/// Runs `scenario` against every selected target's shared server, saying which one on stderr.
pub async fn each_target<F, Fut>(test: &str, scenario: F)
where
    F: Fn(&'static ServerProcess) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for target in targets() {
        eprintln!("{test}: against {}", target.name());
        scenario(shared(target)).await;
    }
}

/// A fresh path for one test run, so tests sharing a server do not meet.
pub fn unique_root(test: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "/{test}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An embedded Roster node on a runtime of its own (see the module docs).
pub struct EmbeddedNode {
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    node: Option<roster_embed::Embedded>,
    builder: roster_embed::Builder,
    name: String,
}

impl EmbeddedNode {
    fn start(data: &std::path::Path, port: u16) -> Result<EmbeddedNode, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let name = format!(
            "client-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let peer = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?;
        let builder = roster_embed::Embedded::builder(data)
            .name(&name)
            .peer_addr(peer)
            .client_addr(Some(SocketAddr::from(([127, 0, 0, 1], port))))
            // The same session-timeout range as the ZooKeeper config below.
            .configure(|c| {
                c.min_session_timeout_ms = (2 * ZK_TICK_MS) as i32;
                c.max_session_timeout_ms = 60_000;
            });
        let mut e = EmbeddedNode {
            runtime: Some(runtime),
            node: None,
            builder,
            name,
        };
        e.start_again()?;
        Ok(e)
    }

    /// Runs `f` to completion on the node's runtime, from a thread of its own (so it works inside
    /// a test's runtime too).
    fn on_runtime<T: Send>(&self, f: impl std::future::Future<Output = T> + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| self.runtime.as_ref().expect("runtime").block_on(f))
                .join()
                .expect("embedded node thread")
        })
    }

    fn start_again(&mut self) -> Result<(), String> {
        let builder = self.builder.clone();
        let node = self
            .on_runtime(builder.start())
            .map_err(|e| e.to_string())?;
        self.node = Some(node);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            self.on_runtime(node.shutdown());
        }
    }

    fn connect_string(&self) -> String {
        format!("{}{}:0", self.name, roster_client::local::SUFFIX)
    }
}

impl Drop for EmbeddedNode {
    fn drop(&mut self) {
        self.stop();
        // Dropping a runtime inside a test's runtime would panic: let it wind down in the background.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
