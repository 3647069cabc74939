"""The two systems under test as 3-node clusters in the suite's namespaces: Roster and ZooKeeper 3.8.

Each node is one OS process started with ``ip netns exec rsf-nI`` (which execs, so the pid we hold is
the server's own and ``kill -9``/``SIGSTOP`` hit the server itself), listening for clients on
``10.211.0.1I:2181``, logging to ``<run>/logs/nI.log``. A node can be killed, restarted, paused and
resumed; ``modes()`` asks every node ``srvr`` (from the hub) for its ``Mode:``.

Both get the same environment: ``LD_PRELOAD`` of the slow-disk shim when the harness built one, with a
per-node flag file (``slow_flag(i)``): while the flag exists, fsync/fdatasync of that node sleep.

Roster: the release binary, node 1 first, nodes 2 and 3 with ``--join`` (ignored on restart: a node
rejoins as itself). ZooKeeper: Debian's ``zookeeper`` 3.8 jar run as ``QuorumPeerMain`` with one zoo.cfg
per node (tickTime 2000, initLimit 10, syncLimit 5, the sample configuration's values; sessions
4-40 s as Roster's defaults). Left out: observers/learners and dynamic reconfiguration.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from netns import NODE_NS, node_ip

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "compat"))
CLIENT_PORT = 2181
NODES = (1, 2, 3)


class ClusterError(RuntimeError):
    pass


def four_letter(host: str, cmd: str, timeout: float = 1.0, port: int = CLIENT_PORT) -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(cmd.encode())
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks).decode("utf-8", "replace")


def parse_mode(srvr: str) -> str:
    for line in srvr.splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    if "not currently serving" in srvr:
        return "not-serving"
    return "unknown"


class Cluster:
    kind = "cluster"

    def __init__(self, run_dir: Path, preload: str | None = None):
        self.run_dir = Path(run_dir)
        self.logs = self.run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.data = self.run_dir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.preload = preload
        self.procs: dict[int, subprocess.Popen] = {}
        self.paused: set[int] = set()
        self.started_once: set[int] = set()
        self.pool = ThreadPoolExecutor(max_workers=3)

    # -- to provide
    def command(self, i: int) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        pass

    # -- common
    @property
    def hosts(self) -> str:
        return ",".join(f"{node_ip(i)}:{CLIENT_PORT}" for i in NODES)

    def host(self, i: int) -> str:
        return f"{node_ip(i)}:{CLIENT_PORT}"

    def slow_flag(self, i: int) -> Path:
        return self.run_dir / f"slow-disk-n{i}"

    def env(self, i: int) -> dict:
        e = dict(os.environ)
        if self.preload:
            e["LD_PRELOAD"] = self.preload
            e["RSF_SLOW_FLAG"] = str(self.slow_flag(i))
            e["RSF_SLOW_HITS"] = str(self.run_dir / f"slow-disk-hits-n{i}")
        return e

    def start(self, i: int) -> None:
        if i in self.procs and self.procs[i].poll() is None:
            return
        cmd = ["ip", "netns", "exec", NODE_NS[i], *self.command(i)]
        log = open(self.logs / f"n{i}.log", "ab", buffering=0)
        log.write(("\n$ " + " ".join(cmd) + "\n").encode())
        self.procs[i] = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.data), env=self.env(i)
        )
        log.close()
        self.started_once.add(i)
        self.paused.discard(i)

    def alive(self, i: int) -> bool:
        p = self.procs.get(i)
        return p is not None and p.poll() is None

    def kill(self, i: int) -> None:
        p = self.procs.get(i)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.paused.discard(i)

    def pause(self, i: int) -> None:
        if self.alive(i):
            self.procs[i].send_signal(signal.SIGSTOP)
            self.paused.add(i)

    def resume(self, i: int) -> None:
        if self.alive(i):
            self.procs[i].send_signal(signal.SIGCONT)
        self.paused.discard(i)

    def stop_all(self) -> None:
        for i in list(self.procs):
            self.resume(i)
            self.kill(i)
        self.pool.shutdown(wait=False)

    def mode(self, i: int, timeout: float = 0.5) -> str:
        if not self.alive(i):
            return "down"
        try:
            return parse_mode(four_letter(node_ip(i), "srvr", timeout=timeout))
        except OSError:
            return "unreachable"

    def modes(self, timeout: float = 0.5) -> dict[int, str]:
        futs = {i: self.pool.submit(self.mode, i, timeout) for i in NODES}
        return {i: f.result() for i, f in futs.items()}

    def leaders(self) -> list[int]:
        return [i for i, m in self.modes().items() if m == "leader"]

    def wait_healthy(self, timeout: float = 90.0) -> dict[int, str]:
        """Waits for one leader and two followers (every node running)."""
        deadline = time.monotonic() + timeout
        modes: dict[int, str] = {}
        while time.monotonic() < deadline:
            for i in NODES:
                if i in self.procs and not self.alive(i):
                    raise ClusterError(f"{self.kind} n{i} exited ({self.procs[i].returncode})\n{self.log_tail(i)}")
            modes = self.modes()
            vals = sorted(modes.values())
            if vals == ["follower", "follower", "leader"]:
                return modes
            time.sleep(0.2)
        raise ClusterError(
            f"{self.kind}: no leader with two followers within {timeout:.0f}s (modes {modes})\n"
            + "\n".join(self.log_tail(i, 15) for i in NODES)
        )

    def log_tail(self, i: int, n: int = 30) -> str:
        try:
            lines = (self.logs / f"n{i}.log").read_text("utf-8", "replace").splitlines()[-n:]
        except OSError:
            lines = []
        return f"---- n{i} log tail ----\n" + "\n".join(lines)

    def start_cluster(self) -> None:
        raise NotImplementedError


class RosterCluster(Cluster):
    kind = "roster"

    def __init__(self, run_dir: Path, binary: Path, preload: str | None = None, tls: bool = True):
        super().__init__(run_dir, preload)
        self.binary = Path(binary)
        if not self.binary.exists():
            raise ClusterError(f"{self.binary} missing: cargo build --release -p roster (or set ROSTER_RELEASE_BIN)")
        # Peers on 10.x addresses need TLS (or --insecure-peers): the nodes run as deployed, with
        # certificates from `roster tls init` (docs/security.md).
        self.tls_dir = (self.run_dir / "tls").resolve() if tls else None

    def tls_flags(self, i: int) -> list[str]:
        """The peer TLS flags of node i (making the cluster's certificates on first use)."""
        d = self.tls_dir
        if d is None:
            return ["--insecure-peers"]
        if not (d / "ca.pem").exists():
            nodes = ",".join(f"n{j}={node_ip(j)}" for j in NODES)
            p = subprocess.run([str(self.binary), "tls", "init", "--dir", str(d), "--nodes", nodes],
                               capture_output=True, text=True, timeout=60)
            if p.returncode != 0:
                raise ClusterError(f"roster tls init failed: {p.stderr.strip()}")
        return ["--peer-tls-cert", str(d / f"n{i}.pem"), "--peer-tls-key", str(d / f"n{i}-key.pem"),
                "--peer-tls-ca", str(d / "ca.pem")]

    def command(self, i: int) -> list[str]:
        ip = node_ip(i)
        cmd = [
            str(self.binary),
            "serve",
            "--client-addr",
            f"{ip}:{CLIENT_PORT}",
            "--peer-addr",
            f"{ip}:2888",
            "--data-dir",
            str(self.data / f"n{i}"),
        ]
        if i != 1:
            cmd += ["--join", f"{node_ip(1)}:2888"]
        return cmd + self.tls_flags(i)

    def start_cluster(self) -> None:
        self.start(1)
        deadline = time.monotonic() + 30
        while self.mode(1) not in ("leader", "standalone"):
            if not self.alive(1) or time.monotonic() > deadline:
                raise ClusterError(f"roster n1 did not come up\n{self.log_tail(1)}")
            time.sleep(0.1)
        for i in (2, 3):
            self.start(i)
            deadline = time.monotonic() + 30
            while self.mode(i) not in ("follower", "leader"):
                if not self.alive(i) or time.monotonic() > deadline:
                    raise ClusterError(f"roster n{i} did not join\n{self.log_tail(i)}")
                time.sleep(0.1)
        self.wait_healthy()


class ZooKeeperCluster(Cluster):
    kind = "zookeeper"

    def prepare(self) -> None:
        from servers import zk_classpath  # tests/compat/servers.py

        self.classpath = zk_classpath()
        for i in NODES:
            d = self.data / f"n{i}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "myid").write_text(f"{i}\n")
            cfg = {
                "tickTime": 2000,
                "initLimit": 10,
                "syncLimit": 5,
                "dataDir": str(d),
                "clientPort": CLIENT_PORT,
                "clientPortAddress": node_ip(i),
                "minSessionTimeout": 4000,
                "maxSessionTimeout": 40000,
                "maxClientCnxns": 0,
                "admin.enableServer": "false",
                "4lw.commands.whitelist": "*",
                "standaloneEnabled": "false",
            }
            lines = [f"{k}={v}" for k, v in cfg.items()]
            lines += [f"server.{j}={node_ip(j)}:2888:3888" for j in NODES]
            (d / "zoo.cfg").write_text("\n".join(lines) + "\n")

    def command(self, i: int) -> list[str]:
        java = shutil.which("java") or "/usr/bin/java"
        return [
            java,
            "-Xms32m",
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-Djava.net.preferIPv4Stack=true",
            "-Dzookeeper.4lw.commands.whitelist=*",
            "-Dzookeeper.admin.enableServer=false",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-cp",
            self.classpath,
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            str(self.data / f"n{i}" / "zoo.cfg"),
        ]

    def start_cluster(self) -> None:
        self.prepare()
        for i in NODES:
            self.start(i)
        self.wait_healthy(timeout=120)


def make_cluster(system: str, run_dir: Path, roster_bin: Path, preload: str | None) -> Cluster:
    if system == "roster":
        return RosterCluster(run_dir, roster_bin, preload)
    if system == "zookeeper":
        return ZooKeeperCluster(run_dir, preload)
    raise ClusterError(f"unknown system {system!r}: roster or zookeeper")
