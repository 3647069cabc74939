"""Apache Curator 5.4 against Roster (one node and three) and ZooKeeper 3.8.

``CuratorSuite`` (java/CuratorSuite.java) runs every scenario in one JVM per target; each scenario is
reported here as its own test. ``test_curator_rides_through_leader_kill9`` puts a Curator client on
the leader of a 3-node Roster, kills that leader with ``kill -9`` and checks that the client's session,
its ephemeral node and its writes survive without Curator ever reporting the session LOST.
"""

import subprocess
import time

import pytest

import harness
from conftest import only_targets

SCENARIOS = [
    "crud",
    "transaction",
    "curator_cache",
    "path_children_cache",
    "node_cache",
    "persistent_watch",
    "leader_latch",
    "leader_selector",
    "mutex",
    "semaphore",
    "shared_counters",
    "service_discovery",
    "group_member",
    "persistent_node",
]

_results: dict = {}


def suite_results(target) -> dict:
    """Runs CuratorSuite once per target; {scenario: (passed, line)}."""
    if target.kind not in _results:
        cmd = harness.java_command("CuratorSuite", target.hostport, *SCENARIOS)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=200)
            out, err = r.stdout, r.stderr
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = "CuratorSuite timed out after 200 s"
        res = {}
        for line in out.splitlines():
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[0] == "RESULT":
                res[parts[1]] = (parts[2] == "PASS", line)
        _results[target.kind] = (res, err)
    return _results[target.kind]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_curator_scenario(target, java_classes, scenario):
    res, err = suite_results(target)
    if scenario not in res:
        pytest.fail(f"CuratorSuite did not report {scenario} on {target.kind}\n{err[-4000:]}\n{target.log_tail()}")
    passed, line = res[scenario]
    assert passed, f"{line}\n{err[-4000:]}"


def _session_on(port: int, session: str) -> bool:
    """Whether the server on this client port lists the session among its connections (cons)."""
    try:
        return session.lower() in harness.four_letter(port, "cons", timeout=2.0).lower()
    except OSError:
        return False


@only_targets("roster3")
def test_curator_rides_through_leader_kill9(target, peers):
    cluster = target.cluster
    leader = cluster.leader()
    order = [leader] + [i for i in range(3) if i != leader]
    hosts = ",".join(f"{harness.HOST}:{cluster.client_ports[i]}" for i in order)
    # the driver tries the leader first, so its connection is on the node about to die
    java = peers.java("curator-kill9", hosts=hosts, ordered=True)
    session = java.session
    assert _session_on(cluster.client_ports[leader], session), f"session {session} is not on the leader"
    path = f"/kill9-{int(time.time() * 1000)}"
    java.cmd(f"create_ephemeral {path}/eph here")
    java.cmd(f"write {path}/data before")
    java.cmd(f"latch {path}/latch java-1")
    assert java.cmd("wait_leader 10000")["leader"]

    cluster.kill9(leader)

    # the next write goes through a new leader, on the same session
    java.cmd(f"write {path}/data after", timeout=60)
    assert java.cmd("session")["session"] == session
    st = java.cmd(f"stat {path}/eph")
    assert st["exists"] and st["owner"] == session, st
    cluster.wait_healthy()
    assert cluster.modes().count("leader") == 1
    # a fresh Rust client elsewhere sees the same: the ephemeral and the latch leader survived
    survivors = ",".join(f"{harness.HOST}:{cluster.client_ports[i]}" for i in order[1:])
    rust = peers.rust("rust-observer", hosts=survivors)
    ps = rust.cmd(f"participants {path}/latch")["participants"]
    assert [p["id"] for p in ps] == ["java-1"] and ps[0]["session"] == session, ps
    assert java.cmd("leadership")["leader"], "the latch lost leadership over the failover"
    states = java.cmd("states")["states"]
    assert "LOST" not in states, states
    assert states[0] == "CONNECTED", states
    # Curator saw the connection drop and come back (SUSPENDED then RECONNECTED), not a new session
    assert "SUSPENDED" in states and states[-1] == "RECONNECTED", states
