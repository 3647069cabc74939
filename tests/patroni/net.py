"""The Patroni suite's network: a hub namespace with a bridge, one namespace per Roster node, partitions.

``rpt-hub`` holds bridge ``br0`` (10.212.0.1/24) and everything that is not a Roster node: the test
process itself (``Hub`` moves it there), Patroni, PostgreSQL, patronictl and psql, all on the hub's own
loopback. ``rpt-n1..3`` each hold one Roster node on ``eth0`` (10.212.0.11..13), a veth enslaved to the
bridge. A partition (``isolate``) is a pair of iptables DROP rules inside one node's namespace against
the other two nodes' addresses: Raft traffic is cut, client traffic from the hub is not, which is the
case where a server must itself stop serving clients it can no longer vouch for. Nothing is added to
the root namespace.

The names and subnet differ from the fault suite's (tests/faults/netns.py, ``rsf-*``, 10.211.0.0/24),
so the two suites can run at the same time; ``Lock`` keeps two Patroni runs apart, and ``cleanup``
removes what a crashed run left (killing by pid only processes still inside these namespaces). Left
out: delay, loss, IPv6, and cutting a node off from clients as well as peers.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
import time

HUB = "rpt-hub"
NODE_NS = {1: "rpt-n1", 2: "rpt-n2", 3: "rpt-n3"}
HUB_IP = "10.212.0.1"
LOCK_PATH = "/run/roster-patroni.lock"
LOCK_WAIT_S = 900
CLONE_NEWNET = 0x40000000


def node_ip(i: int) -> str:
    return f"10.212.0.{10 + i}"


class NetError(RuntimeError):
    pass


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise NetError(f"`{' '.join(cmd)}` failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p


def preflight() -> None:
    """Raises with what to do when namespaces cannot be made here (not root, no ip, no iptables)."""
    if os.geteuid() != 0:
        raise NetError("the Patroni suite needs root (network namespaces, iptables, running postgres as "
                       "the postgres user): run it as root (CI does)")
    for tool, pkg in (("ip", "iproute2"), ("iptables", "iptables")):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            raise NetError(f"`{tool}` not found: apt-get install -y {pkg} (scripts/test does it)")


def existing() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n == HUB or n in NODE_NS.values()]


def cleanup() -> None:
    """Removes the suite's namespaces, first killing (by pid) every process still inside them."""
    for ns in existing():
        for _ in range(50):
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            time.sleep(0.1)
        sh("ip", "netns", "del", ns, check=False)


def create() -> None:
    """Builds the hub and the three node namespaces (after ``cleanup``)."""
    cleanup()
    sh("ip", "netns", "add", HUB)
    sh("ip", "-n", HUB, "link", "set", "lo", "up")
    sh("ip", "-n", HUB, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", HUB, "addr", "add", f"{HUB_IP}/24", "dev", "br0")
    sh("ip", "-n", HUB, "link", "set", "br0", "up")
    for i, ns in NODE_NS.items():
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"veth{i}", "netns", HUB)
        sh("ip", "-n", ns, "addr", "add", f"{node_ip(i)}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", HUB, "link", "set", f"veth{i}", "master", "br0")
        sh("ip", "-n", HUB, "link", "set", f"veth{i}", "up")


def isolate(i: int) -> None:
    """Cuts Roster node ``i`` off from the other two nodes (both directions); clients still reach it."""
    ns = NODE_NS[i]
    for j in NODE_NS:
        if j != i:
            sh("ip", "netns", "exec", ns, "iptables", "-w", "-A", "INPUT", "-s", node_ip(j), "-j", "DROP")
            sh("ip", "netns", "exec", ns, "iptables", "-w", "-A", "OUTPUT", "-d", node_ip(j), "-j", "DROP")


def heal() -> None:
    for ns in NODE_NS.values():
        if ns in existing():
            sh("ip", "netns", "exec", ns, "iptables", "-w", "-F", check=False)


class Hub:
    """Moves the calling process into the hub namespace and back (setns on the main thread).

    Enter it before the process starts any thread: threads and child processes created afterwards
    inherit the hub.
    """

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.home_fd: int | None = None

    def _setns(self, fd: int) -> None:
        if self.libc.setns(fd, CLONE_NEWNET) != 0:
            raise NetError(f"setns failed: {os.strerror(ctypes.get_errno())}")

    def __enter__(self) -> "Hub":
        self.home_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{HUB}", os.O_RDONLY)
        try:
            self._setns(fd)
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc) -> None:
        if self.home_fd is not None:
            self._setns(self.home_fd)
            os.close(self.home_fd)
            self.home_fd = None


class Lock:
    """One Patroni-suite run per machine at a time (the namespace names are fixed)."""

    def __enter__(self) -> "Lock":
        self.f = open(LOCK_PATH, "w")
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.f.close()
                    raise NetError(f"another Patroni-suite run held {LOCK_PATH} for over {LOCK_WAIT_S} s; "
                                   "wait for it to finish (or end it) and run again") from None
                time.sleep(2)

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()
