"""The fault suite's network: a hub namespace with a bridge and three node namespaces, and partitions.

``rsf-hub`` holds bridge ``br0`` (10.211.0.1/24); ``rsf-n1..3`` each have ``eth0`` (10.211.0.11..13/24),
a veth whose other end is enslaved to the bridge. Nothing is added to the root namespace. Clients,
workers and the harness's own probes run in the hub (``enter_hub``), so they reach every node whatever
the partition; partitions are iptables DROP rules inside the node namespaces against the other nodes'
addresses (node<->node traffic only), and healing flushes them.

Names are fixed, so ``cleanup`` first removes what a crashed earlier run left (it kills only processes
still inside these namespaces, by pid) and ``lock`` keeps two runs from sharing them. Left out: delay,
loss and bandwidth shaping (tc netem), and IPv6.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time

HUB = "rsf-hub"
NODE_NS = {1: "rsf-n1", 2: "rsf-n2", 3: "rsf-n3"}
HUB_IP = "10.211.0.1"
LOCK_PATH = "/run/roster-faults.lock"
#: How long a run waits for another run on this machine to finish before it gives up.
LOCK_WAIT_S = 1800
CLONE_NEWNET = 0x40000000


def node_ip(i: int) -> str:
    return f"10.211.0.{10 + i}"


class NetError(RuntimeError):
    pass


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise NetError(f"`{' '.join(cmd)}` failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p


def preflight() -> None:
    """Fails with what to do when the suite cannot run here (not root, no ip netns, no iptables)."""
    if os.geteuid() != 0:
        raise NetError("the fault suite needs root (network namespaces, iptables): run it as root (CI does)")
    for tool, pkg in (("ip", "iproute2"), ("iptables", "iptables")):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            raise NetError(f"`{tool}` not found: apt-get install -y {pkg} (scripts/faults does it)")
    p = sh("ip", "netns", "list", check=False)
    if p.returncode != 0:
        raise NetError(f"`ip netns` does not work here: {p.stderr.strip()}")


def existing() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n == HUB or n in NODE_NS.values()]


def cleanup() -> None:
    """Removes the suite's namespaces, first killing (by pid) any process still running inside them."""
    for ns in existing():
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        for _ in range(50):
            if not sh("ip", "netns", "pids", ns, check=False).stdout.split():
                break
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
    # every node reaches the hub: fail early and clearly if the bridge does not forward
    if sh("sh", "-c", "command -v ping", check=False).returncode != 0:
        return
    for i, ns in NODE_NS.items():
        ok = False
        for _ in range(30):
            if sh("ip", "netns", "exec", ns, "ping", "-c1", "-W1", HUB_IP, check=False).returncode == 0:
                ok = True
                break
            time.sleep(0.2)
        if not ok:
            raise NetError(f"{ns} cannot reach the hub {HUB_IP} over the bridge")


def isolate(groups: list[list[int]]) -> None:
    """Cuts node<->node traffic between the given groups (e.g. [[1], [2, 3]]), both directions."""
    for g in groups:
        others = [j for h in groups if h is not g for j in h]
        for i in g:
            ns = NODE_NS[i]
            for j in others:
                sh("ip", "netns", "exec", ns, "iptables", "-w", "-A", "INPUT", "-s", node_ip(j), "-j", "DROP")
                sh("ip", "netns", "exec", ns, "iptables", "-w", "-A", "OUTPUT", "-d", node_ip(j), "-j", "DROP")


def heal() -> None:
    for ns in NODE_NS.values():
        if ns in existing():
            sh("ip", "netns", "exec", ns, "iptables", "-w", "-F", check=False)


class Hub:
    """Moves the calling process into the hub namespace and back (setns on the main thread).

    Must be entered before the process starts any thread: threads created afterwards inherit the hub;
    child processes too.
    """

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.home_fd: int | None = None

    def _setns(self, fd: int) -> None:
        if self.libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetError(f"setns failed: {os.strerror(err)}")

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
    """One fault-suite run per machine at a time (the namespace names are fixed). A second run waits
    for the first (saying so once), at most ``LOCK_WAIT_S`` seconds, then fails."""

    def __enter__(self) -> "Lock":
        self.f = open(LOCK_PATH, "w")
        deadline = time.monotonic() + LOCK_WAIT_S
        said = False
        while True:
            try:
                fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.f.close()
                    raise NetError(
                        f"another fault-suite run held {LOCK_PATH} for over {LOCK_WAIT_S} s; "
                        "wait for it to finish (or end it) and run again"
                    ) from None
                if not said:
                    print(f"[faults] another fault-suite run holds {LOCK_PATH}: waiting for it", file=sys.stderr)
                    said = True
                time.sleep(2)

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()
