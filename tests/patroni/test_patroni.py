"""Patroni keeps a PostgreSQL primary and replica highly available with a 3-node Roster as its DCS.

Debian's Patroni (its ZooKeeper DCS is kazoo) and PostgreSQL 15, two Patroni nodes (pg1, pg2) and three
Roster nodes, each Roster node in its own network namespace (net.py) so one can be partitioned. The
tests run in order on one cluster, each first waiting for one primary and one streaming replica:

1. bootstrap: pg1 or pg2 is primary, the other streams from it, a row written on the primary is read on
   the replica;
2. kill -9 of the Roster Raft leader (then its restart), and of the Roster node the primary's Patroni
   is connected to if that was another one: no PostgreSQL failover at all;
3. partition of the Roster node the primary's Patroni is connected to (Raft traffic cut, 15 s, longer
   than the 10 s session timeout), then heal: no failover;
4. ``patronictl switchover --force``: the replica becomes primary, the old primary follows it;
5. kill -9 of the primary's whole node (Patroni and PostgreSQL): the replica is promoted within
   ttl + loop_wait (+ retry_timeout of slack), keeps the writes, and the old primary, restarted once the
   promotion has settled in the DCS (see the test), rejoins as its replica (pg_rewind).

"No failover" means, sampled every 0.5 s through the fault: the same node answers 200 on ``/primary``,
PostgreSQL there is not in recovery and accepts a write each time; afterwards both postmasters have
their old start time (no restart, no demotion), the timeline is unchanged
(``pg_control_checkpoint()`` and Patroni's), Patroni's history has no new entry, and the leader key and
both member keys in Roster are still owned by the same ZooKeeper sessions (no session was lost).

Needs root (namespaces, iptables, running PostgreSQL as ``postgres``), Debian's ``patroni``,
``python3-kazoo`` and ``postgresql`` (scripts/test installs them). Binary: ``$ROSTER_BIN`` (default
target/debug/roster). Logs and Roster data stay in ``$PATRONI_CI_OUT`` (default target/patroni-ci);
PostgreSQL's directories live in ``$PATRONI_PG_DIR`` (default /tmp/roster-patroni) during the run. Without
what it needs the suite FAILS saying what to do; it does not skip. A watching client records every
change of Patroni's keys (dcs-events.log); a health timeout prints them with each Roster node's view.

Left out: a Roster node cut off from its clients too, Patroni's failsafe mode, synchronous replication,
more than two PostgreSQL nodes, a watchdog; performance (only Patroni's promotion bound is asserted).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness as h  # noqa: E402
import net  # noqa: E402

REPO = HERE.parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
ROSTER_BIN = Path(os.environ.get("ROSTER_BIN", TARGET / "debug" / "roster")).resolve()
OUT = Path(os.environ.get("PATRONI_CI_OUT", TARGET / "patroni-ci")).resolve()
# PostgreSQL's directories: under /tmp, since the postgres user may not be able to reach into the
# checkout (a clone under /root). Emptied at the start of a run and removed at its end.
PG_ROOT = Path(os.environ.get("PATRONI_PG_DIR", "/tmp/roster-patroni")).resolve()
OBSERVE_S = 15.0  # longer than the 10 s session timeout: an expired session would show as a failover
PROMOTE_BOUND_S = h.TTL + h.LOOP_WAIT + h.RETRY_TIMEOUT


class HA:
    def __init__(self, roster: h.RosterCluster, nodes: dict[str, h.PatroniNode]):
        self.roster = roster
        self.nodes = nodes

    def state(self) -> tuple[h.PatroniNode, h.PatroniNode] | None:
        """(primary, replica) when one node is primary and the other a running replica streaming
        from it, else None."""
        prim = [n for n in self.nodes.values() if n.is_primary()]
        if len(prim) != 1:
            return None
        p = prim[0]
        r = next(n for n in self.nodes.values() if n is not p)
        if not r.is_streaming_replica():
            return None
        streaming = h.psql(p.pg_port, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
        return (p, r) if streaming == "1" else None

    def healthy(self, timeout: float = 60) -> tuple[h.PatroniNode, h.PatroniNode]:
        try:
            return h.wait_for("one primary and one streaming replica", self.state, timeout, 0.5)
        except h.Timeout as e:
            evidence = self.evidence()
            # Diagnosis, not a retry (the test fails either way): GET /cluster makes each Patroni reload
            # its cached view of the DCS. If the cluster then heals, the data in Roster was right and a
            # Patroni had missed a change (a watch notification that never reached it).
            for n in self.nodes.values():
                try:
                    n.api("/cluster")
                except Exception:  # noqa: BLE001 - a node that is down answers nothing
                    pass
            try:
                h.wait_for("healthy after GET /cluster", self.state, 15, 0.5)
                after = "it became healthy within 15 s of a forced reload (GET /cluster): a Patroni's cached "
                after += "view was stale, i.e. it missed a watch notification"
            except h.Timeout:
                after = "still unhealthy 15 s after a forced reload (GET /cluster)"
            raise AssertionError(f"{e}\n{evidence}\nthen: {after}") from None

    def evidence(self) -> str:
        """What to look at when a test fails."""
        lines = [f"run directory: {OUT} (pg1.log, pg2.log, roster1..3.log, dcs-events.log, Roster data)"]
        for n in self.nodes.values():
            try:
                lines.append(f"{n.name}: {n.api('/patroni')}")
            except Exception as e:  # noqa: BLE001
                lines.append(f"{n.name}: REST API unreachable: {e}")
        p = h.patronictl(self.nodes["pg1"].config, "list")
        lines.append(p.stdout + p.stderr)
        lines.append(dcs_dump(self))
        events = (OUT / "dcs-events.log").read_text().splitlines()[-60:]
        lines.append("-- last changes of Patroni's keys seen by a watching client (dcs-events.log):")
        lines += events
        return "\n".join(lines)


def dcs_dump(ha: HA) -> str:
    """Patroni's keys as each Roster node answers them on its own (reads are local to a node, so a
    node that lags or missed a change shows here): path, ephemeral owner, mzxid, data."""
    out = []
    base = f"/service/{h.SCOPE}"
    for i in net.NODE_NS:
        srv = ha.roster.client_addr(i)
        out.append(f"-- Roster node {i} ({srv})")
        paths = [base + "/" + c for c in ("leader", "status", "failover", "history")]
        p = subprocess.run([str(ROSTER_BIN), "ls", "-s", srv, f"{base}/members"], capture_output=True,
                           text=True, timeout=20)
        out.append(f"members: {p.stdout.split()} {p.stderr.strip()}")
        paths += [f"{base}/members/{m}" for m in p.stdout.split()]
        for path in paths:
            p = subprocess.run([str(ROSTER_BIN), "get", "--stat", "--json", "-s", srv, path],
                               capture_output=True, text=True, timeout=20)
            if p.returncode != 0:
                out.append(f"{path}: {p.stderr.strip()[:200]}")
                continue
            d = json.loads(p.stdout)
            out.append(f"{path}: owner={d['stat']['ephemeral_owner']:#x} mzxid={d['stat']['mzxid']} "
                       f"czxid={d['stat']['czxid']} data={d['data'][:300]}")
        # data watches by path (child watches are not listed, as in ZooKeeper), and the connections
        for word in ("wchp", "cons"):
            out.append(f"{word}: {four_letter_word(net.node_ip(i), ha.roster.CLIENT_PORT, word)}")
    return "\n".join(out)


def four_letter_word(host: str, port: int, word: str) -> str:
    try:
        with socket.create_connection((host, port), timeout=3) as c:
            c.sendall(word.encode())
            buf = b""
            while chunk := c.recv(65536):
                buf += chunk
        return buf.decode(errors="replace")
    except OSError as e:
        return f"({e})"


def znode_owner(ha: HA, path: str) -> int:
    """ephemeralOwner of ``path`` in Roster: the ZooKeeper session of the Patroni that created it."""
    p = subprocess.run([str(ROSTER_BIN), "get", "--stat", "--json", "-s", ",".join(ha.roster.hosts()), path],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, f"roster get {path}: {p.stderr}"
    return json.loads(p.stdout)["stat"]["ephemeral_owner"]


def promotion_settled(ha: HA, node: h.PatroniNode) -> bool:
    p = subprocess.run([str(ROSTER_BIN), "get", "--json", "-s", ",".join(ha.roster.hosts()),
                        f"/service/{h.SCOPE}/members/{node.name}"], capture_output=True, text=True, timeout=20)
    if p.returncode != 0:
        return False
    d = json.loads(json.loads(p.stdout)["data"])
    return d.get("role") in ("master", "primary") and "checkpoint_after_promote" not in d


def snapshot(ha: HA, primary: h.PatroniNode, replica: h.PatroniNode) -> dict:
    base = f"/service/{h.SCOPE}"
    return {
        # the same ZooKeeper sessions hold the leader key and both member keys: no session was lost
        "leader_session": znode_owner(ha, f"{base}/leader"),
        "primary_member_session": znode_owner(ha, f"{base}/members/{primary.name}"),
        "replica_member_session": znode_owner(ha, f"{base}/members/{replica.name}"),
        "primary": primary.name,
        "timeline": int(h.psql(primary.pg_port, "SELECT timeline_id FROM pg_control_checkpoint()")),
        "patroni_timeline": primary.api("/patroni")[1].get("timeline"),
        "primary_started": h.psql(primary.pg_port, "SELECT pg_postmaster_start_time()"),
        "replica_started": h.psql(replica.pg_port, "SELECT pg_postmaster_start_time()"),
        "history": h.patronictl(primary.config, "history", "-f", "json").stdout.strip(),
    }


def observe_no_failover(ha: HA, primary: h.PatroniNode, seconds: float, tag: str) -> int:
    """Samples every 0.5 s for ``seconds``: ``primary`` stays primary (REST and PostgreSQL) and takes a
    write each time. Returns the number of writes."""
    writes = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        code, body = primary.api("/patroni")
        assert primary.is_primary(), f"{tag}: {primary.name} stopped being primary: {code} {body}\n{ha.evidence()}"
        assert h.psql(primary.pg_port, "SELECT pg_is_in_recovery()") == "f", f"{tag}: {primary.name} in recovery"
        h.psql(primary.pg_port, f"INSERT INTO ha_probe(tag) VALUES ('{tag}')")
        writes += 1
        time.sleep(0.5)
    return writes


def assert_same(before: dict, after: dict, ha: HA, tag: str) -> None:
    for k in before:
        assert before[k] == after[k], (f"{tag}: {k} changed from {before[k]!r} to {after[k]!r}: "
                                       f"PostgreSQL failed over or restarted\n{ha.evidence()}")


def roster_node_of(node: h.PatroniNode, roster: h.RosterCluster) -> int | None:
    """The Roster node Patroni ``node`` is connected to (its established TCP connection to a client
    port, from ``ss`` in the hub namespace)."""
    p = subprocess.run(["ss", "-Htnp", "state", "established", "( dport = :2181 )"], capture_output=True,
                       text=True, timeout=10)
    for line in p.stdout.splitlines():
        if f"pid={node.proc.pid}," in line:
            peer = line.split()[3]
            return roster.index_of(peer)
    return None


@pytest.fixture(scope="module")
def ha():
    try:
        net.preflight()
    except net.NetError as e:
        pytest.fail(f"the Patroni suite cannot run here: {e}", pytrace=False)
    missing = [f"{what} (apt-get install -y {pkg})" for what, pkg in (
        (h.PATRONI, "patroni"), (h.PATRONICTL, "patroni"), (str(h.PG_BIN / "postgres"), "postgresql"),
        (str(h.PG_BIN / "pg_rewind"), "postgresql"), ("/usr/lib/python3/dist-packages/kazoo", "python3-kazoo"),
        ("/usr/bin/ss", "iproute2")) if not Path(what).exists()]
    if not ROSTER_BIN.exists():
        missing.append(f"{ROSTER_BIN} (cargo build -p roster, or set ROSTER_BIN)")
    if missing:
        pytest.fail("the Patroni suite needs: " + ", ".join(missing) + " (scripts/test installs them)",
                    pytrace=False)
    with net.Lock():
        for d in (OUT, PG_ROOT):
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
            os.chmod(d, 0o755)
        net.create()
        roster = h.RosterCluster(ROSTER_BIN, OUT)
        nodes = {name: h.PatroniNode(name, pg, api, PG_ROOT, OUT, roster.hosts())
                 for name, pg, api in (("pg1", 5432, 8008), ("pg2", 5433, 8009))}
        try:
            with net.Hub():
                roster.start_all()
                for n in nodes.values():
                    n.write_config()
                recorder = h.DcsRecorder(roster.hosts(), f"/service/{h.SCOPE}", OUT / "dcs-events.log")
                recorder.start()
                nodes["pg1"].start()  # first, so it bootstraps the cluster; pg2 then clones it
                h.wait_for("pg1 bootstrapped as primary", nodes["pg1"].is_primary, 90, 0.5)
                nodes["pg2"].start()
                ha = HA(roster, nodes)
                ha.healthy(90)
                yield ha
                recorder.stop()
                for n in nodes.values():
                    n.stop()
                roster.stop_all()
        finally:
            for n in nodes.values():
                try:
                    n.kill9_node()
                except Exception:  # noqa: BLE001 - best effort; cleanup kills what is left
                    pass
            roster.stop_all()
            net.cleanup()
            shutil.rmtree(PG_ROOT, ignore_errors=True)


def test_bootstrap_streams_from_primary(ha):
    primary, replica = ha.healthy()
    h.psql(primary.pg_port, "CREATE TABLE IF NOT EXISTS ha_probe (id bigserial PRIMARY KEY, tag text, "
                            "at timestamptz DEFAULT now())")
    h.psql(primary.pg_port, "INSERT INTO ha_probe(tag) VALUES ('bootstrap')")
    h.wait_for("the bootstrap row on the replica", lambda: h.psql(
        replica.pg_port, "SELECT count(*) FROM ha_probe WHERE tag = 'bootstrap'") == "1", 20)
    assert h.psql(replica.pg_port, "SELECT pg_is_in_recovery()") == "t"
    # the DCS really is Roster: Patroni's keys are there
    p = subprocess.run([str(ROSTER_BIN), "ls", "-s", ",".join(ha.roster.hosts()), f"/service/{h.SCOPE}"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    for key in ("leader", "members", "config", "initialize"):
        assert re.search(rf"\b{key}\b", p.stdout), f"/service/{h.SCOPE} has no {key}: {p.stdout}"


def kill_roster_node_and_observe(ha: HA, i: int, primary: h.PatroniNode, tag: str) -> int:
    """kill -9 of Roster node ``i``, OBSERVE_S of no-failover checks, restart, 3 s more of them."""
    ha.roster.kill9(i)
    writes = observe_no_failover(ha, primary, OBSERVE_S, tag)
    leader = ha.roster.leader()
    assert leader != i
    ha.roster.start(i)
    h.wait_for(f"Roster node {i} back", lambda: ha.roster.voters_serving(leader) == 3, 30)
    return writes + observe_no_failover(ha, primary, 3, f"{tag}-back")


def test_roster_leader_kill9_causes_no_failover(ha):
    """The Raft leader is killed; then, if the primary's Patroni was connected to another Roster node,
    that node too (so Patroni itself loses its server and moves its session)."""
    primary, replica = ha.healthy()
    before = snapshot(ha, primary, replica)
    leader = ha.roster.leader()
    on = roster_node_of(primary, ha.roster)
    print(f"Roster leader: node {leader}; {primary.name}'s Patroni is on Roster node {on}, "
          f"{replica.name}'s on {roster_node_of(replica, ha.roster)}")
    writes = kill_roster_node_and_observe(ha, leader, primary, "roster-leader-kill")
    if on is not None and on != leader:
        print(f"and kill -9 of Roster node {on}, {primary.name}'s server (leader now: {ha.roster.leader()})")
        writes += kill_roster_node_and_observe(ha, on, primary, "roster-primarys-node-kill")
    assert ha.healthy(30) == (primary, replica)
    assert_same(before, snapshot(ha, primary, replica), ha, "Roster leader kill -9")
    print(f"no failover: {writes} writes on {primary.name} through the Roster kills and restarts")


def test_roster_partition_causes_no_failover(ha):
    primary, replica = ha.healthy()
    before = snapshot(ha, primary, replica)
    target = roster_node_of(primary, ha.roster) or ha.roster.leader()
    print(f"partitioning Roster node {target} (the one {primary.name}'s Patroni is connected to; "
          f"leader is {ha.roster.leader()})")
    net.isolate(target)
    try:
        writes = observe_no_failover(ha, primary, OBSERVE_S, "roster-partition")
        moved = roster_node_of(primary, ha.roster)
        assert moved != target, f"{primary.name}'s Patroni still talks to the cut-off Roster node {target}"
    finally:
        net.heal()
    h.wait_for("all 3 Roster nodes serving again", lambda: ha.roster.voters_serving(ha.roster.leader()) == 3, 30)
    writes += observe_no_failover(ha, primary, 3, "roster-healed")
    assert ha.healthy(30) == (primary, replica)
    assert_same(before, snapshot(ha, primary, replica), ha, "partition of one Roster node")
    print(f"no failover: {writes} writes on {primary.name} through the partition and heal")


def test_switchover(ha):
    primary, replica = ha.healthy()
    tl = int(h.psql(primary.pg_port, "SELECT timeline_id FROM pg_control_checkpoint()"))
    p = h.patronictl(primary.config, "switchover", "--leader", primary.name, "--candidate", replica.name,
                     "--force")
    assert p.returncode == 0, f"patronictl switchover: {p.stdout}{p.stderr}\n{ha.evidence()}"
    new_primary, new_replica = ha.healthy(60)
    assert (new_primary, new_replica) == (replica, primary), ha.evidence()
    h.wait_for("the new timeline in the checkpoint", lambda: int(h.psql(
        new_primary.pg_port, "SELECT timeline_id FROM pg_control_checkpoint()")) == tl + 1, 30)
    h.psql(new_primary.pg_port, "INSERT INTO ha_probe(tag) VALUES ('after-switchover')")
    h.wait_for("the post-switchover row on the old primary", lambda: h.psql(
        new_replica.pg_port, "SELECT count(*) FROM ha_probe WHERE tag = 'after-switchover'") == "1", 20)


def test_primary_node_kill9_promotes_replica_and_old_primary_rejoins(ha):
    primary, replica = ha.healthy()
    tl = int(h.psql(primary.pg_port, "SELECT timeline_id FROM pg_control_checkpoint()"))
    h.psql(primary.pg_port, "INSERT INTO ha_probe(tag) VALUES ('before-node-kill')")
    h.wait_for("the row on the replica", lambda: h.psql(
        replica.pg_port, "SELECT count(*) FROM ha_probe WHERE tag = 'before-node-kill'") == "1", 20)
    t0 = time.monotonic()
    killed = primary.kill9_node()
    print(f"kill -9 of {primary.name}: pids {killed}")
    h.wait_for(f"{replica.name} promoted", replica.is_primary, PROMOTE_BOUND_S + 5, 0.2)
    took = time.monotonic() - t0
    print(f"{replica.name} promoted {took:.1f} s after the kill (ttl {h.TTL}, loop_wait {h.LOOP_WAIT})")
    assert took <= PROMOTE_BOUND_S, f"promotion took {took:.1f} s > ttl+loop_wait+retry_timeout"
    # Patroni answers 200 on /primary once it holds the leader key and asked PostgreSQL to promote;
    # PostgreSQL leaves recovery a moment later
    h.wait_for(f"{replica.name} out of recovery", lambda: h.psql(
        replica.pg_port, "SELECT pg_is_in_recovery()") == "f", 15)
    assert h.psql(replica.pg_port, "SELECT count(*) FROM ha_probe WHERE tag = 'before-node-kill'") == "1"
    h.psql(replica.pg_port, "INSERT INTO ha_probe(tag) VALUES ('after-promotion')")
    # Restart the old primary once the promotion is complete as far as the DCS says: the new primary's
    # member key has role master and no checkpoint_after_promote flag. Patroni 3.0.2's ZooKeeper DCS
    # tells other members of a member-key change only when the key is re-created (a child event),
    # and the promoted node re-creates it when the flag goes, but moves role "promoted" -> "master"
    # with a plain set. A node that starts in between can cache role "promoted" for the leader, and
    # its rewind check (rewind.py: "role not in master/primary: return") then never runs; it loops on
    # "requested starting point ... is not in this server's history". Seen once in about 15 runs
    # before this wait (docs/patroni.md, "A Patroni race").
    h.wait_for(f"{replica.name}'s member key: role master, post-promote checkpoint done",
               lambda: promotion_settled(ha, replica), 30)
    primary.start()
    new_primary, new_replica = ha.healthy(90)
    assert (new_primary, new_replica) == (replica, primary), ha.evidence()
    h.wait_for("the post-promotion row on the rejoined node", lambda: h.psql(
        primary.pg_port, "SELECT count(*) FROM ha_probe WHERE tag = 'after-promotion'") == "1", 30)
    h.wait_for("a newer timeline", lambda: int(h.psql(
        replica.pg_port, "SELECT timeline_id FROM pg_control_checkpoint()")) > tl, 30)
    hist = json.loads(h.patronictl(replica.config, "history", "-f", "json").stdout or "[]")
    print(f"history: {hist}")
