"""Start/stop servers for the compatibility tests.

Two kinds of server, both bound to 127.0.0.1 on a free port, each in its own
temporary directory, each with its log captured to a file:

* ``ZooKeeperServer``: a real Apache ZooKeeper 3.8 standalone server from
  Debian's ``zookeeper``/``libzookeeper-java`` packages (the reference).
* ``RosterServer``: the Roster binary (``target/debug/roster`` or ``$ROSTER_BIN``).

Both are context managers; ``start()`` waits until the four-letter word
``ruok`` answers ``imok`` (bounded by a timeout) and ``stop()`` always kills
the process.  Nothing here ever talks to a non-loopback address.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]

JAVA_DIR = Path("/usr/share/java")
ZK_JAR = JAVA_DIR / "zookeeper.jar"
ZK_CLI = Path("/usr/share/zookeeper/bin/zkCli.sh")

# Session timeout bounds shared by both servers (ms).  Roster's defaults.
MIN_SESSION_TIMEOUT_MS = 4000
MAX_SESSION_TIMEOUT_MS = 40000

# How often ZooKeeper's ContainerManager looks for empty containers and
# expired TTL nodes (ms).  ZooKeeper's default is 60 s, far too slow for a test.
CONTAINER_CHECK_INTERVAL_MS = 1000

START_TIMEOUT_S = float(os.environ.get("COMPAT_START_TIMEOUT", "60"))


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def four_letter(port: int, cmd: str, timeout: float = 5.0, host: str = HOST) -> str:
    """Send a four-letter word and return the whole answer (until EOF)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(cmd.encode("ascii"))
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"4lw {cmd!r} on port {port}: no EOF after {timeout}s")
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks).decode("utf-8", "replace")


def zk_classpath() -> str:
    """Classpath of the Debian ZooKeeper 3.8 server.

    ``zookeeper.jar``'s manifest carries a ``Class-Path`` with all its
    dependencies (netty, jetty, jackson, slf4j-api, zookeeper-jute, ...), so
    the jar alone is enough to run the server; Debian's zkEnv.sh uses just
    ``/etc/zookeeper/conf:/usr/share/java/zookeeper.jar``.  slf4j-api has no
    binding in that list, which silences every log line, so we add
    slf4j-simple (same Debian package as slf4j-api) to get a server log.
    """
    if not ZK_JAR.exists():
        raise ServerError(
            f"{ZK_JAR} is missing: install Debian's 'zookeeper' package "
            "(scripts/test does it: apt-get install -y zookeeper)"
        )
    cp = [str(ZK_JAR)]
    for extra in ("slf4j-simple.jar",):
        p = JAVA_DIR / extra
        if p.exists():
            cp.append(str(p))
    return ":".join(cp)


class _Server:
    kind = "server"

    def __init__(self, name: str | None = None, workdir: str | None = None):
        self.name = name or self.kind
        self._own_tmp = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"compat-{self.kind}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.workdir / f"{self.kind}.log"
        self.proc: subprocess.Popen | None = None
        self._logf = None

    # -- to be provided by subclasses
    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return dict(os.environ)

    # -- common
    @property
    def hostport(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_S) -> "_Server":
        cmd = self.command()
        self._logf = open(self.log_path, "ab", buffering=0)
        self._logf.write(("$ " + " ".join(cmd) + "\n").encode())
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            cwd=str(self.workdir),
            env=self.env(),
            start_new_session=True,  # own process group: kill it whole
        )
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with status {self.proc.returncode} during start-up\n"
                    + self.log_tail()
                )
            try:
                # ZooKeeper answers imok as soon as it listens, before it
                # serves requests; srvr tells when it really is ready.
                if four_letter(self.port, "ruok", timeout=2.0).strip() == "imok":
                    srvr = four_letter(self.port, "srvr", timeout=2.0)
                    if "not currently serving" not in srvr:
                        return self
                    last_err = srvr.strip()
            except OSError as e:  # refused, reset, timeout...
                last_err = e
            time.sleep(0.1)
        self.stop()
        raise ServerError(
            f"{self.name} did not answer ruok=imok on {self.hostport} within {timeout}s "
            f"(last error: {last_err!r})\n" + self.log_tail()
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._logf is not None:
            self._logf.close()
            self._logf = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_tmp and not os.environ.get("COMPAT_KEEP_TMP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_text().splitlines()[-lines:]
        return f"---- last {len(text)} lines of {self.name} log ({self.log_path}) ----\n" + "\n".join(text)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} {self.hostport}>"


class ZooKeeperServer(_Server):
    """Apache ZooKeeper 3.8 standalone (ZooKeeperServerMain) with a generated zoo.cfg."""

    kind = "zookeeper"

    def __init__(self, name: str | None = None, workdir: str | None = None, extra_cfg: dict | None = None):
        super().__init__(name, workdir)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.cfg_path = self.workdir / "zoo.cfg"
        cfg = {
            "tickTime": 2000,
            "dataDir": str(self.data_dir),
            "clientPort": self.port,
            "clientPortAddress": HOST,
            "maxClientCnxns": 60,
            "minSessionTimeout": MIN_SESSION_TIMEOUT_MS,
            "maxSessionTimeout": MAX_SESSION_TIMEOUT_MS,
            "admin.enableServer": "false",
            # Unknown keys are turned into system properties 'zookeeper.<key>'
            # by QuorumPeerConfig; we also pass them as -D below to be sure.
            "4lw.commands.whitelist": "*",
            "extendedTypesEnabled": "true",
        }
        cfg.update(extra_cfg or {})
        self.cfg_path.write_text("".join(f"{k}={v}\n" for k, v in cfg.items()))

    def command(self) -> list[str]:
        java = shutil.which("java") or "/usr/bin/java"
        return [
            java,
            "-Xms32m",
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.net.preferIPv4Stack=true",
            "-Dzookeeper.4lw.commands.whitelist=*",
            "-Dzookeeper.extendedTypesEnabled=true",
            "-Dzookeeper.admin.enableServer=false",
            f"-Dznode.container.checkIntervalMs={CONTAINER_CHECK_INTERVAL_MS}",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-cp",
            zk_classpath(),
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            str(self.cfg_path),
        ]


def roster_bin() -> Path:
    env = os.environ.get("ROSTER_BIN")
    if env:
        return Path(env)
    return REPO_ROOT / "target" / "debug" / "roster"


class RosterServer(_Server):
    """A single Roster node: ``roster serve --client-addr 127.0.0.1:PORT --data-dir DIR``."""

    kind = "roster"

    def __init__(self, name: str | None = None, workdir: str | None = None, extra_args: list[str] | None = None):
        super().__init__(name, workdir)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.extra_args = list(extra_args or [])

    def command(self) -> list[str]:
        binary = roster_bin()
        if not binary.exists():
            raise ServerError(
                f"Roster binary not found at {binary}: build it with "
                "`cargo build -p roster --bin roster` (or set ROSTER_BIN)"
            )
        if not os.access(binary, os.X_OK):
            raise ServerError(f"Roster binary {binary} is not executable")
        return [
            str(binary),
            "serve",
            "--client-addr",
            self.hostport,
            "--data-dir",
            str(self.data_dir),
            "--min-session-timeout-ms",
            str(MIN_SESSION_TIMEOUT_MS),
            "--max-session-timeout-ms",
            str(MAX_SESSION_TIMEOUT_MS),
            "--4lw-whitelist",
            "*",
            *self.extra_args,
        ]

    def env(self) -> dict:
        e = dict(os.environ)
        e.setdefault("RUST_BACKTRACE", "1")
        e.setdefault("RUST_LOG", "info")
        e.setdefault("NO_COLOR", "1")  # plain log file
        return e


def server_under_test(name: str | None = None) -> _Server:
    """The server the differential tests compare against ZooKeeper.

    ``COMPAT_SELF_CHECK=1`` swaps Roster for a second ZooKeeper, to prove the
    traces are deterministic.
    """
    if os.environ.get("COMPAT_SELF_CHECK") == "1":
        return ZooKeeperServer(name=name or "zookeeper-2")
    return RosterServer(name=name or "roster")


if __name__ == "__main__":  # manual smoke test: python servers.py zk|roster
    kind = sys.argv[1] if len(sys.argv) > 1 else "zk"
    cls = ZooKeeperServer if kind.startswith("zk") else RosterServer
    t0 = time.monotonic()
    with cls() as s:
        print(f"{s!r} up in {time.monotonic() - t0:.2f}s; log {s.log_path}")
        for w in ("ruok", "srvr", "envi"):
            print(f"--- {w}\n{four_letter(s.port, w)}")
