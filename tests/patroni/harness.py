"""Processes of the Patroni suite: a 3-node Roster cluster in network namespaces, Patroni nodes, psql.

``RosterCluster`` runs node ``i`` in namespace ``rpt-ni`` (see net.py) on 10.212.0.1i, client port
2181 and peer port 2888, data under the run directory; it finds the Raft leader with
``roster cluster status --json``, and kill -9s and restarts nodes. ``PatroniNode`` writes one Patroni
YAML (ZooKeeper DCS = the three Roster nodes), runs Debian's /usr/bin/patroni as the ``postgres`` user
(PostgreSQL refuses root) in the hub namespace, reads its REST API, and kill -9s the whole node:
Patroni and every PostgreSQL process of its data directory. ``psql`` runs queries as the superuser.

Every wait is bounded and fails with what was last seen. Left out: TLS, ACLs on the DCS, synchronous
replication, more than two PostgreSQL nodes.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import net



def _pg_bin() -> Path:
    """$PATRONI_PG_BIN, else the newest /usr/lib/postgresql/N/bin (Debian 12: 15)."""
    if os.environ.get("PATRONI_PG_BIN"):
        return Path(os.environ["PATRONI_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3])
                   if p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
PATRONI = os.environ.get("PATRONI_BIN", "/usr/bin/patroni")
PATRONICTL = os.environ.get("PATRONICTL_BIN", "/usr/bin/patronictl")
SUPERUSER_PASSWORD = "test-superuser-pw"
SCOPE = "roster-demo"
# Patroni timings: small but legal (ttl >= loop_wait + 2 * retry_timeout). Patroni's ZooKeeper
# session timeout is the ttl: 10 s, inside Roster's default 4-40 s range.
TTL, LOOP_WAIT, RETRY_TIMEOUT = 10, 1, 4


class Timeout(AssertionError):
    pass


def wait_for(what: str, fn, timeout: float, interval: float = 0.25):
    """Calls ``fn`` until it returns something truthy; raises ``Timeout`` naming ``what`` and the last
    value or error seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except Exception as e:  # noqa: BLE001 - reported in the timeout message
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            raise Timeout(f"{what}: not reached within {timeout:.0f} s (last: {last!r})")
        time.sleep(interval)


# ---------------------------------------------------------------- Roster


class RosterCluster:
    CLIENT_PORT, PEER_PORT = 2181, 2888

    def __init__(self, binary: Path, root: Path):
        self.bin = binary
        self.root = root
        self.procs: dict[int, subprocess.Popen] = {}

    def client_addr(self, i: int) -> str:
        return f"{net.node_ip(i)}:{self.CLIENT_PORT}"

    def peer_addr(self, i: int) -> str:
        return f"{net.node_ip(i)}:{self.PEER_PORT}"

    def hosts(self) -> list[str]:
        return [self.client_addr(i) for i in net.NODE_NS]

    def start(self, i: int) -> None:
        data = self.root / f"roster{i}"
        cmd = ["ip", "netns", "exec", net.NODE_NS[i], str(self.bin), "serve",
               "--client-addr", self.client_addr(i), "--peer-addr", self.peer_addr(i),
               "--data-dir", str(data), "--insecure-peers"]
        if i != 1:
            cmd += ["--join", self.peer_addr(1)]
        log = open(self.root / f"roster{i}.log", "ab")
        self.procs[i] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start_all(self) -> None:
        self.start(1)
        wait_for("roster node 1 serving", lambda: self.status(1).get("view", {}).get("serving"), 20)
        for i in (2, 3):
            self.start(i)
            wait_for(f"roster node {i} joined", lambda i=i: self.voters_serving(i) >= i, 30)

    def status(self, i: int) -> dict:
        p = subprocess.run([str(self.bin), "cluster", "status", "--server", self.peer_addr(i), "--json",
                            "--timeout", "2s"], capture_output=True, text=True, timeout=10)
        if p.returncode != 0:
            raise RuntimeError(f"roster cluster status on node {i}: {p.stderr.strip()}")
        return json.loads(p.stdout)

    def voters_serving(self, i: int) -> int:
        st = self.status(i)
        return sum(1 for m in st["members"] if m and m.get("serving"))

    def leader(self) -> int:
        """Index (1..3) of the serving Raft leader, asked of every node that answers."""
        for i in net.NODE_NS:
            if i not in self.procs or self.procs[i].poll() is not None:
                continue
            try:
                st = self.status(i)
            except Exception:  # noqa: BLE001 - try the next node
                continue
            for m in st["members"]:  # an unreachable member is null
                if m and m.get("state") == "Leader" and m.get("serving"):
                    return self.index_of(m["client_addr"])
        raise RuntimeError("no serving Roster leader")

    def index_of(self, client_addr: str) -> int:
        for i in net.NODE_NS:
            if self.client_addr(i) == client_addr:
                return i
        raise RuntimeError(f"unknown Roster client address {client_addr}")

    def kill9(self, i: int) -> None:
        p = self.procs[i]
        # `ip netns exec` execs the binary, so this pid is roster itself
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


# ---------------------------------------------------------------- Patroni


def pg_user() -> pwd.struct_passwd:
    return pwd.getpwnam("postgres")


class PatroniNode:
    def __init__(self, name: str, pg_port: int, api_port: int, pg_root: Path, log_dir: Path,
                 roster_hosts: list[str]):
        """``pg_root`` holds the node's config, data and socket directories and must be reachable by
        the postgres user (every parent directory searchable); the log goes to ``log_dir``."""
        self.name = name
        self.pg_port = pg_port
        self.api_port = api_port
        self.dir = pg_root / name
        self.data_dir = self.dir / "data"
        self.config = self.dir / "patroni.yml"
        self.log = log_dir / f"{name}.log"
        self.hosts = roster_hosts
        self.proc: subprocess.Popen | None = None

    def write_config(self) -> None:
        u = pg_user()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "sock").mkdir(exist_ok=True)
        os.chown(self.dir, u.pw_uid, u.pw_gid)
        os.chown(self.dir / "sock", u.pw_uid, u.pw_gid)
        self.config.write_text(patroni_yaml(self.name, self.pg_port, self.api_port, self.dir, self.hosts))
        os.chown(self.config, u.pw_uid, u.pw_gid)

    def start(self) -> None:
        u = pg_user()
        log = open(self.log, "ab")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.dir), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        self.proc = subprocess.Popen([PATRONI, str(self.config)], stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, user=u.pw_uid, group=u.pw_gid, env=env,
                                     cwd=str(self.dir), start_new_session=True)
        log.close()

    def api(self, path: str = "/patroni") -> tuple[int, dict]:
        """(HTTP status, JSON body) of a GET on this node's REST API."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}{path}", timeout=2) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body or b"{}")
            except ValueError:
                return e.code, {}

    def is_primary(self) -> bool:
        return self.api("/primary")[0] == 200

    def is_streaming_replica(self) -> bool:
        code, body = self.api("/replica")
        return code == 200 and body.get("state") == "running"

    def postmaster_pid(self) -> int | None:
        """The running postmaster of this node's data directory, or None. postmaster.pid outlives a
        kill -9, so the pid is only trusted if that process's working directory is the data directory
        (PostgreSQL chdirs there): a stale file never gets an unrelated process killed."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            if Path(os.readlink(f"/proc/{pid}/cwd")) == self.data_dir.resolve():
                return pid
        except (OSError, ValueError, IndexError):
            pass
        return None

    def kill9_node(self) -> list[int]:
        """kill -9 of the whole node: Patroni, the postmaster and every child of the postmaster
        (PostgreSQL runs in its own session, so the Patroni pid alone would leave it running)."""
        pids = []
        pm = self.postmaster_pid()
        if self.proc is not None and self.proc.poll() is None:
            pids.append(self.proc.pid)
        if pm:
            pids.append(pm)
            pids += children_of(pm)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)  # freeze first, so nothing reacts to the others' deaths
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(timeout=10)
        for pid in pids:
            wait_for(f"pid {pid} gone", lambda pid=pid: not Path(f"/proc/{pid}").exists()
                     or "Z" in _proc_state(pid), 10, 0.05)
        return pids

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9_node()
        if self.postmaster_pid():
            self.kill9_node()


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(d.name))
    return out


def patroni_yaml(name: str, pg_port: int, api_port: int, d: Path, hosts: list[str]) -> str:
    host_list = ", ".join(f"'{h}'" for h in hosts)
    return f"""# Patroni node {name}: PostgreSQL on 127.0.0.1:{pg_port}, REST API on 127.0.0.1:{api_port},
# the Roster cluster as its ZooKeeper.
scope: {SCOPE}
namespace: /service/
name: {name}

restapi:
  listen: 127.0.0.1:{api_port}
  connect_address: 127.0.0.1:{api_port}

zookeeper:
  hosts: [{host_list}]

bootstrap:
  dcs:
    ttl: {TTL}
    loop_wait: {LOOP_WAIT}
    retry_timeout: {RETRY_TIMEOUT}
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_log_hints: 'on'
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 128MB
  initdb:
  - encoding: UTF8
  - data-checksums
  - auth-local: trust
  - auth-host: scram-sha-256
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 scram-sha-256
  - host all all 127.0.0.1/32 scram-sha-256

postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {d / 'data'}
  bin_dir: {PG_BIN}
  pgpass: {d / 'pgpass'}
  authentication:
    superuser:
      username: postgres
      password: {SUPERUSER_PASSWORD}
    replication:
      username: replicator
      password: test-replicator-pw
    rewind:
      username: rewinder
      password: test-rewinder-pw
  parameters:
    unix_socket_directories: '{d / 'sock'}'
    shared_buffers: 16MB
    max_connections: 20

watchdog:
  mode: off

tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
"""


def psql(port: int, sql: str, timeout: float = 10) -> str:
    """Runs ``sql`` as the superuser over TCP on 127.0.0.1 (in the hub); returns unaligned output."""
    env = dict(os.environ, PGPASSWORD=SUPERUSER_PASSWORD, PGCONNECT_TIMEOUT="3")
    p = subprocess.run([str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d",
                        "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True, timeout=timeout, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"psql -p {port} -c {sql!r}: {p.stderr.strip()}")
    return p.stdout.strip()


def patronictl(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    u = pg_user()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(config.parent), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    return subprocess.run([PATRONICTL, "-c", str(config), *args], capture_output=True, text=True,
                          timeout=timeout, user=u.pw_uid, group=u.pw_gid, env=env, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------- DCS recorder


class DcsRecorder:
    """Logs every change of Patroni's member and leader keys, as a ZooKeeper client sees them, to a file:
    time, key, czxid/mzxid, owner and the fields that drive Patroni's decisions (role, state,
    checkpoint_after_promote). A diagnosis aid: when a Patroni acts on a stale view, this shows what it
    could have known. Uses the test venv's kazoo; its own session, so it changes nothing it observes."""

    def __init__(self, hosts: list[str], base: str, out: Path):
        from kazoo.client import KazooClient

        self.zk = KazooClient(hosts=",".join(hosts), timeout=10)
        self.base = base
        self.f = open(out, "a", buffering=1)
        self.watched: set[str] = set()

    def start(self) -> None:
        from kazoo.recipe.watchers import ChildrenWatch, DataWatch

        self.zk.start(timeout=15)
        self.zk.ensure_path(f"{self.base}/members")
        DataWatch(self.zk, f"{self.base}/leader", lambda d, s: self._log("leader", d, s))

        def on_members(names):
            for name in names:
                if name not in self.watched:
                    self.watched.add(name)
                    DataWatch(self.zk, f"{self.base}/members/{name}", self._logger(f"members/{name}"))
            self._write(f"members children: {sorted(names)}")

        ChildrenWatch(self.zk, f"{self.base}/members", on_members)

    def _logger(self, key: str):
        # exactly two parameters: kazoo passes the event too to a callback that takes a third
        return lambda data, stat: self._log(key, data, stat)

    def _log(self, key: str, data, stat) -> None:
        if stat is None:
            self._write(f"{key}: gone")
            return
        summary = data.decode(errors="replace") if data else ""
        try:
            d = json.loads(summary)
            summary = (f"role={d.get('role')} state={d.get('state')} "
                       f"checkpoint_after_promote={d.get('checkpoint_after_promote', '-')} tl={d.get('timeline')}")
        except ValueError:
            pass
        self._write(f"{key}: czxid={stat.czxid} mzxid={stat.mzxid} owner={stat.ephemeralOwner:#x} {summary}")

    def _write(self, line: str) -> None:
        t = time.strftime("%H:%M:%S", time.localtime()) + f".{int(time.time() * 1000) % 1000:03d}"
        self.f.write(f"{t} {line}\n")

    def stop(self) -> None:
        try:
            self.zk.stop()
            self.zk.close()
        finally:
            self.f.close()
