"""Peer TLS across "machines": a 3-node Roster on 10.211.0.11-13 (network namespaces) with peer
certificates from ``roster tls init``, attacked from the hub (10.211.0.1) while a kazoo client keeps
writing. Each attack worked against a plain-text peer port (issue 10, item 4) and must now fail:

* a rogue node without a certificate (``--join``, ``--insecure-peers``) is not admitted;
* ``roster cluster remove`` without the administrator certificate (and with another CA's) fails;
* forged vote requests (hello + vote frames as the peer protocol encodes them) from a made-up node id,
  over plain TCP, TLS without a client certificate and TLS with another CA's certificate, get no
  answer and move neither the term nor the leader;

and the writer saw every write succeed. Needs root and ``ip netns``, like the fault suite (same
binaries and run directory: ``$ROSTER_RELEASE_BIN``, ``$FAULTS_CI_OUT``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import netns  # noqa: E402
from systems import RosterCluster  # noqa: E402

REPO = HERE.parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
ROSTER_BIN = Path(os.environ.get("ROSTER_RELEASE_BIN", TARGET / "release" / "roster"))
OUT = Path(os.environ.get("FAULTS_CI_OUT", TARGET / "faults-ci"))

pytestmark = pytest.mark.timeout(240)

PEER = 2888
SEED = f"{netns.node_ip(1)}:{PEER}"


# ---- the peer protocol, as an attacker writes it (postcard: varints, tags, length-prefixed bytes)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def frame(body: bytes) -> bytes:
    payload = bytes([2]) + body  # format version 2
    return len(payload).to_bytes(4, "big") + payload


def hello(cluster_id: str, from_node: int) -> bytes:
    cid = cluster_id.encode()
    # PeerMsg::Hello(0) { cluster_id: Some, from, to: None, kind: Raft(0) }
    return frame(varint(0) + b"\x01" + varint(len(cid)) + cid + varint(from_node) + b"\x00" + varint(0))


def vote(term: int, candidate: int, req_id: int = 1) -> bytes:
    # RaftRequest::Vote(1) { vote: { leader_id: { term, voted_for: Some(candidate) }, committed: false },
    # last_log_id: None, leadership_transfer: true } (crates/roster/tests/peer_tls.rs checks this layout)
    blob = varint(1) + varint(term) + b"\x01" + varint(candidate) + b"\x00" + b"\x00" + b"\x01"
    # PeerMsg::Request(3) { id, body: PeerRequest::Raft(0)(Blob) }
    return frame(varint(3) + varint(req_id) + varint(0) + varint(len(blob)) + blob)


def attack(sock) -> bytes:
    """Sends the forged frames and returns whatever comes back before the connection ends (2 s)."""
    got = b""
    try:
        sock.sendall(hello(CLUSTER["id"], 77) + vote(CLUSTER["term"] + 1000, 77))
        sock.settimeout(2)
        while True:
            b = sock.recv(4096)
            if not b:
                break
            got += b
    except (OSError, ssl.SSLError):
        pass
    finally:
        sock.close()
    return got


def refused(got: bytes) -> bool:
    """Nothing came back, or only a TLS alert record (content type 21): no peer-protocol answer."""
    return got == b"" or got[0] == 0x15


CLUSTER: dict = {}


def roster(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROSTER_BIN), *args], capture_output=True, text=True, timeout=timeout)


def status(tls_dir: Path) -> dict:
    p = roster("cluster", "--tls-dir", str(tls_dir), "status", "--server", SEED, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["view"]


@contextlib.contextmanager
def running(tls: bool, name: str):
    """A 3-node Roster in the suite's namespaces, this process in the hub."""
    try:
        netns.preflight()
    except netns.NetError as e:
        pytest.fail(f"cannot run here: {e}", pytrace=False)
    if not ROSTER_BIN.exists():
        pytest.fail(f"{ROSTER_BIN} is missing: cargo build --release -p roster (scripts/test does it)", pytrace=False)
    run_dir = OUT / name
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    with netns.Lock():
        netns.create()
        hub = netns.Hub()
        hub.__enter__()
        c = RosterCluster(run_dir, ROSTER_BIN, tls=tls)
        try:
            c.start_cluster()
            yield c
        finally:
            c.stop_all()
            hub.__exit__()
            netns.cleanup()


@pytest.fixture
def cluster():
    with running(True, "peer-security") as c:
        yield c


def test_the_forged_vote_is_answered_by_plain_peers():
    """The control: the same attacker against --insecure-peers gets its vote answered."""
    with running(False, "peer-security-plain") as c:
        ready = c.wait_healthy()
        follower = next(i for i, m in ready.items() if m == "follower")
        # the cluster id, as any unauthenticated caller could ask it
        p = roster("cluster", "status", "--server", SEED, "--json")
        assert p.returncode == 0, p.stderr
        view = json.loads(p.stdout)["view"]
        CLUSTER.update(id=view["cluster_id"], term=view["term"])
        got = attack(socket.create_connection((netns.node_ip(follower), PEER), timeout=5))
        # HelloOk, then the Response to the vote: two peer frames of format version 2
        assert not refused(got) and got[4] == 2, got[:40]
        assert len(got) > 4 + int.from_bytes(got[:4], "big"), f"no answer after the hello: {got!r}"


def test_tls_cluster_refuses_rogue_nodes_unauthenticated_removes_and_forged_votes(cluster):
    tls_dir = cluster.tls_dir
    other = cluster.run_dir / "other-ca"
    p = roster("tls", "init", "--dir", str(other), "--nodes", f"r={netns.HUB_IP}")
    assert p.returncode == 0, p.stderr
    before = status(tls_dir)
    assert sum(1 for m in before["members"] if m["voter"]) == 3
    CLUSTER.update(id=before["cluster_id"], term=before["term"])

    # A client keeps writing through every node while the attacks run.
    from kazoo.client import KazooClient

    zk = KazooClient(hosts=cluster.hosts, timeout=10)
    zk.start(timeout=30)
    zk.ensure_path("/sec")
    stop = threading.Event()
    result = {"ok": 0, "errors": []}

    def writer():
        i = 0
        while not stop.is_set():
            try:
                zk.create(f"/sec/w-{i}", b"x")
                result["ok"] += 1
            except Exception as e:  # noqa: BLE001 - every failure is reported
                result["errors"].append(repr(e))
            i += 1
            time.sleep(0.02)

    t = threading.Thread(target=writer)
    t.start()
    rogue = None
    try:
        # 1. A rogue node without a certificate, in the hub, asks to join.
        rogue_dir = cluster.run_dir / "rogue"
        log = open(cluster.run_dir / "rogue.log", "wb")
        rogue = subprocess.Popen(
            [str(ROSTER_BIN), "serve", "--client-addr", f"{netns.HUB_IP}:2181", "--peer-addr",
             f"{netns.HUB_IP}:{PEER}", "--admin-addr", "off", "--data-dir", str(rogue_dir), "--join", SEED,
             "--insecure-peers"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        time.sleep(5)
        assert len(status(tls_dir)["members"]) == 3, "the rogue node was admitted"
        n1_log = (cluster.logs / "n1.log").read_text("utf-8", "replace")
        assert "peer connection refused" in n1_log

        # 2. Unauthenticated remove of a follower, and with another CA's certificate.
        follower = next(m["node_id"] for m in before["members"] if m["node_id"] != before["leader"])
        p = roster("cluster", "remove", str(follower), "--server", SEED)
        assert p.returncode != 0, "unauthenticated remove succeeded"
        p = roster("cluster", "--tls-dir", str(other), "remove", str(follower), "--server", SEED)
        assert p.returncode != 0, "remove with another CA's certificate succeeded"
        assert len(status(tls_dir)["members"]) == 3

        # 3. Forged votes to every node, 20 rounds of each kind.
        no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        no_cert.check_hostname = False
        no_cert.verify_mode = ssl.CERT_NONE
        wrong_ca = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        wrong_ca.check_hostname = False
        wrong_ca.verify_mode = ssl.CERT_NONE
        wrong_ca.load_cert_chain(str(other / "r.pem"), str(other / "r-key.pem"))
        for _ in range(20):
            for i in (1, 2, 3):
                addr = (netns.node_ip(i), PEER)
                got = attack(socket.create_connection(addr, timeout=5))
                assert refused(got), f"plain TCP got an answer: {got[:40]!r}"
                for ctx in (no_cert, wrong_ca):
                    try:
                        s = ctx.wrap_socket(socket.create_connection(addr, timeout=5))
                    except (OSError, ssl.SSLError):
                        continue  # refused during the handshake
                    got = attack(s)
                    assert refused(got), f"a forged vote got an answer over TLS: {got[:40]!r}"
        time.sleep(2)
        after = status(tls_dir)
        assert (after["term"], after["leader"]) == (before["term"], before["leader"])
        assert len(after["members"]) == 3
    finally:
        stop.set()
        t.join(30)
        if rogue is not None:
            rogue.kill()
            rogue.wait(10)
        zk.stop()
        zk.close()
    assert result["errors"] == [], f"writes failed during the attacks: {result['errors'][:5]}"
    assert result["ok"] > 50, f"only {result['ok']} writes went through"
