"""Harness of the Curator tests: the Java programs, the Rust peer, a 3-node Roster on loopback.

* ``java_classes()``: compiles ``java/*.java`` with javac against Debian's Curator 5.4 jars into a
  cache directory keyed by the sources' hash (``$CURATOR_JAVA_CACHE``, default ``target/curator-java``).
* ``Peer``: a long-lived line-driven process (``CuratorDriver`` on the JVM or the ``mixed_peer`` example
  of roster-client), one command per line, one JSON reply per line, every reply bounded in time.
* ``RosterCluster``: three ``roster serve`` on 127.0.0.1 with their own client/peer ports and data
  directories (the README's "A cluster"), the leader found from ``srvr``, ``kill9(i)`` for failover.

Single-node servers come from ``tests/compat/servers.py``. Nothing here talks to a non-loopback
address. Left out: ZooKeeper ensembles (ZooKeeper runs single-node only here).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "compat"))

from servers import (  # noqa: E402
    HOST,
    MAX_SESSION_TIMEOUT_MS,
    MIN_SESSION_TIMEOUT_MS,
    REPO_ROOT,
    ServerError,
    four_letter,
    free_port,
    roster_bin,
)

JAVA_DIR = Path("/usr/share/java")
CURATOR_JARS = ["curator-recipes.jar", "curator-framework.jar", "curator-client.jar", "curator-x-discovery.jar"]
# Curator's jars name their dependencies (zookeeper, guava, jackson, slf4j-api) in their manifests'
# Class-Path; slf4j-nop silences slf4j's "no binding" warning.
EXTRA_JARS = ["slf4j-nop.jar"]
JVM_FLAGS = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k", "-Xmx256m", "-Djava.net.preferIPv4Stack=true"]
REPLY_TIMEOUT_S = 60.0


class HarnessError(RuntimeError):
    pass


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR") or REPO_ROOT / "target")


def jar_classpath() -> str:
    missing = [j for j in CURATOR_JARS + EXTRA_JARS if not (JAVA_DIR / j).exists()]
    if missing:
        raise HarnessError(
            f"missing {', '.join(missing)} in {JAVA_DIR}: apt-get install -y libcurator-framework-java "
            "libcurator-recipes-java libcurator-discovery-java libslf4j-java (scripts/test does it)"
        )
    return ":".join(str(JAVA_DIR / j) for j in CURATOR_JARS + EXTRA_JARS)


def java_classes() -> Path:
    """The compiled Java programs (compiled now unless the cache has these sources already)."""
    sources = sorted((HERE / "java").glob("*.java"))
    h = hashlib.sha256()
    for s in sources:
        h.update(s.name.encode() + b"\0" + s.read_bytes())
    cache = Path(os.environ.get("CURATOR_JAVA_CACHE") or target_dir() / "curator-java")
    out = cache / h.hexdigest()[:16]
    if (out / "CuratorSuite.class").exists() and (out / "CuratorDriver.class").exists():
        return out
    javac = shutil.which("javac")
    if javac is None:
        raise HarnessError("javac not found: apt-get install -y default-jdk-headless")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="classes-", dir=cache))  # same file system: the rename is atomic
    r = subprocess.run(
        [javac, "-nowarn", "-encoding", "UTF-8", "-d", str(tmp), "-cp", jar_classpath(), *map(str, sources)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode != 0:
        raise HarnessError(f"javac failed:\n{r.stdout}\n{r.stderr}")
    if out.exists():  # compiled meanwhile by another run
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out)
    return out


def java_command(main: str, *args: str) -> list[str]:
    java = shutil.which("java") or "/usr/bin/java"
    return [java, *JVM_FLAGS, "-cp", f"{jar_classpath()}:{java_classes()}", main, *args]


def mixed_peer_bin() -> Path:
    env = os.environ.get("ROSTER_MIXED_PEER")
    p = Path(env) if env else target_dir() / "debug" / "examples" / "mixed_peer"
    if not p.exists():
        raise HarnessError(f"{p} not found: cargo build -p roster-client --example mixed_peer (or set ROSTER_MIXED_PEER)")
    return p


class Peer:
    """A line-driven participant process; ``peer.cmd("lock /x 1000")`` returns its JSON reply."""

    def __init__(self, name: str, argv: list[str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.stderr"
        self._err = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        hello = self._next("start-up")
        if not hello.get("ok"):
            self.kill()
            raise HarnessError(f"{name} could not start: {hello}")
        self.session = hello.get("session")

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next(self, what: str, timeout: float = REPLY_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise HarnessError(f"{self.name}: no reply to {what!r} within {timeout}s") from None
            if line is None:
                raise HarnessError(f"{self.name} exited (status {self.proc.poll()}) before answering {what!r}: {self.stderr_tail()}")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def cmd(self, line: str, timeout: float = REPLY_TIMEOUT_S) -> dict:
        """Sends one command and returns its reply; raises if the reply is an error."""
        r = self.call(line, timeout)
        if not r.get("ok"):
            raise HarnessError(f"{self.name}: {line!r} failed: {r.get('error')}")
        return r

    def call(self, line: str, timeout: float = REPLY_TIMEOUT_S) -> dict:
        """Sends one command and returns its reply, error or not."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._next(line, timeout)

    def stderr_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9, at once (its session is left to expire)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()
        self._err.close()


def java_peer(
    name: str, hosts: str, log_dir: Path, session_timeout_ms: int = MIN_SESSION_TIMEOUT_MS, ordered: bool = False
) -> Peer:
    """A CuratorDriver; ``ordered`` makes its client try ``hosts`` in order (no shuffle)."""
    args = [hosts, str(session_timeout_ms)] + (["ordered"] if ordered else [])
    return Peer(name, java_command("CuratorDriver", *args), log_dir)


def rust_peer(name: str, hosts: str, log_dir: Path, session_timeout_ms: int = MIN_SESSION_TIMEOUT_MS) -> Peer:
    return Peer(name, [str(mixed_peer_bin()), hosts, str(session_timeout_ms)], log_dir)


def roster_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Runs the ``roster`` CLI (the same binary as the server)."""
    return subprocess.run([str(roster_bin()), *args], capture_output=True, text=True, timeout=timeout)


def srvr_mode(port: int) -> str:
    try:
        for line in four_letter(port, "srvr", timeout=1.0).splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return "unknown"
    except OSError:
        return "down"


class RosterCluster:
    """Three Roster nodes on 127.0.0.1 (the README's "A cluster"), each in its own data directory."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.client_ports = [free_port() for _ in range(3)]
        self.peer_ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen | None] = [None, None, None]
        self._logs = []

    @property
    def hostport(self) -> str:
        return ",".join(f"{HOST}:{p}" for p in self.client_ports)

    def log_path(self, i: int) -> Path:
        return self.workdir / f"node{i + 1}.log"

    def _start(self, i: int) -> None:
        binary = roster_bin()
        if not binary.exists():
            raise ServerError(f"Roster binary not found at {binary}: cargo build -p roster (or set ROSTER_BIN)")
        data = self.workdir / f"node{i + 1}"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(binary), "serve",
            "--client-addr", f"{HOST}:{self.client_ports[i]}",
            "--peer-addr", f"{HOST}:{self.peer_ports[i]}",
            "--data-dir", str(data),
            "--min-session-timeout-ms", str(MIN_SESSION_TIMEOUT_MS),
            "--max-session-timeout-ms", str(MAX_SESSION_TIMEOUT_MS),
            "--4lw-whitelist", "*",
        ]
        if i > 0:
            cmd += ["--join", f"{HOST}:{self.peer_ports[0]}"]
        logf = open(self.log_path(i), "ab")
        self._logs.append(logf)
        env = dict(os.environ, NO_COLOR="1", RUST_BACKTRACE="1")
        self.procs[i] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)

    def start(self, timeout: float = 60.0) -> "RosterCluster":
        self._start(0)
        self._wait(lambda: srvr_mode(self.client_ports[0]) in ("leader", "standalone"), timeout, "node 1 serving")
        for i in (1, 2):
            self._start(i)
        self.wait_healthy(timeout)
        return self

    def _wait(self, cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, p in enumerate(self.procs):
                if p is not None and p.poll() is not None and p.returncode != -signal.SIGKILL:
                    raise ServerError(f"roster node {i + 1} exited with {p.returncode}:\n{self.log_tail(i)}")
            if cond():
                return
            time.sleep(0.1)
        raise ServerError(f"3-node Roster: timed out waiting for {what}; modes {self.modes()}\n"
                          + "\n".join(self.log_tail(i) for i in range(3)))

    def modes(self) -> list[str]:
        return [srvr_mode(p) if self.alive(i) else "killed" for i, p in enumerate(self.client_ports)]

    def alive(self, i: int) -> bool:
        p = self.procs[i]
        return p is not None and p.poll() is None

    def wait_healthy(self, timeout: float = 60.0) -> None:
        def ok():
            m = [x for x in self.modes() if x != "killed"]
            return m.count("leader") == 1 and all(x in ("leader", "follower") for x in m)
        self._wait(ok, timeout, "one leader and followers")

    def leader(self) -> int:
        self.wait_healthy()
        return self.modes().index("leader")

    def kill9(self, i: int) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)

    def log_tail(self, i: int, n: int = 40) -> str:
        try:
            lines = self.log_path(i).read_text("utf-8", "replace").splitlines()[-n:]
        except OSError:
            lines = []
        return f"---- node {i + 1} log ----\n" + "\n".join(lines)

    def stop(self) -> None:
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
        for f in self._logs:
            f.close()
        self._logs.clear()
