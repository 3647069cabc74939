"""`roster import` from the data directory of a real Apache ZooKeeper 3.8.

ZooKeeper runs a bounded write load with every create mode (persistent, ephemeral, both sequential,
container, TTL, null data), ACLs (digest, world read-only, setACL), setData, multi (committed and
failed) and a session that closes, with ``snapCount`` small so that snapshots are taken in the middle
of the load (fuzzy ones: the newest is followed by logged txns), plain or gzip-compressed. It is then
stopped (``kill -9``, or SIGTERM), ``roster import`` makes a Roster data directory from its files, and ZooKeeper (restarted on
its own directory) and Roster (started on the import) must show the same tree: every znode's data,
ACL, full Stat and children. Then the next sequential create gets the same name on both, Roster's
zxids continue above ZooKeeper's, and a session that was open in ZooKeeper resumes on Roster with
its id and password, its ephemerals still there.

Also: importing into a non-empty directory is refused, and a damaged log names the file and offset.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from kazoo.client import KazooClient
from kazoo.security import make_acl, make_digest_acl

from rawzk import RawClient
from servers import RosterServer, ZooKeeperServer, roster_bin

SESSION_TIMEOUT_S = 40  # the largest both servers grant: the open session outlives the test
ROUNDS = 40
ALICE = ("digest", "alice:secret")


def _client(hostport: str, **kw) -> KazooClient:
    c = KazooClient(hosts=hostport, timeout=SESSION_TIMEOUT_S, auth_data=[ALICE], **kw)
    c.start(timeout=15)
    return c


def zk_load(zk: ZooKeeperServer) -> KazooClient:
    """The write load; returns the client whose session stays open (its ephemerals survive)."""
    a = _client(zk.hostport)
    b = _client(zk.hostport)
    raw = RawClient("127.0.0.1", zk.port, session_timeout_ms=SESSION_TIMEOUT_S * 1000)
    raw.add_auth("digest", b"alice:secret")
    a.create("/imp", b"root")
    a.create("/imp/secret", b"s", acl=[make_digest_acl("alice", "secret", all=True)])
    owner = make_digest_acl("alice", "secret", all=True)
    a.create("/imp/ro", b"r", acl=[make_acl("world", "anyone", read=True), owner])
    a.create("/imp/seq")
    raw.create("/imp/null", None)
    raw.create_ttl("/imp/ttl", 3_600_000, b"t")
    raw.create_ttl("/imp/ttlseq-", 3_600_000, b"ts", sequential=True)
    raw.create_container("/imp/box")
    raw.create("/imp/box/item", b"i")
    for i in range(ROUNDS):
        p = a.create("/imp/seq/n-", str(i).encode(), sequence=True)
        if i % 3 == 0:
            a.delete(p)  # sequence numbers now run ahead of the child count
        a.create(f"/imp/eph-a-{i}", b"a", ephemeral=True)
        b.create("/imp/eph-b-", b"b", ephemeral=True, sequence=True)
        a.set("/imp", f"v{i}".encode())
        if i % 5 == 0:
            a.set_acls("/imp/ro", [make_acl("world", "anyone", read=True, write=i % 2 == 0), owner])
        t = a.transaction()
        t.create(f"/imp/multi-{i}", b"m")
        t.set_data("/imp/secret", f"s{i}".encode())
        t.check("/imp/seq", -1)
        t.commit()
        t = a.transaction()  # fails as a whole: nothing of it is applied
        t.create(f"/imp/never-{i}", b"x")
        t.delete("/imp/does-not-exist")
        t.commit()
        raw.create_container(f"/imp/box{i}")
        raw.create(f"/imp/box{i}/x", b"x")
        if i % 2:
            raw.delete(f"/imp/box{i}/x")  # ZooKeeper's container manager deletes the container
        if i % 4 == 0:
            raw.create_ttl(f"/imp/ttl-{i}", 3_600_000, b"t")
    raw.close()
    b.stop()  # closes its session: its ephemerals go
    b.close()
    return a


def walk(client: KazooClient) -> dict:
    """path -> (data, stat, acl, sorted children) of every znode but /zookeeper/config."""
    out = {}
    todo = ["/"]
    while todo:
        path = todo.pop()
        data, stat = client.get(path)
        acl, _ = client.get_acls(path)
        kids = sorted(client.get_children(path))
        out[path] = (
            data,
            tuple(stat),
            sorted((a.perms, a.id.scheme, a.id.id) for a in acl),
            kids,
        )
        for k in kids:
            child = path.rstrip("/") + "/" + k
            # The ensemble's own configuration: each server answers with its own.
            if child != "/zookeeper/config":
                todo.append(child)
    return out


def run_import(zk_dir, data_dir, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(roster_bin()), "import", "--zk-data-dir", str(zk_dir), "--data-dir", str(data_dir), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("stop,compression", [("kill", ""), ("term", ""), ("kill", "gz")])
def test_import_matches_zookeeper(stop, compression):
    cfg = {"snapCount": 30}
    if compression:
        cfg["snapshot.compression.method"] = compression  # snapshot.<zxid>.gz files
    zk = ZooKeeperServer(name="zookeeper", extra_cfg=cfg)
    zk2 = roster = None
    a = None
    try:
        zk.start()
        a = zk_load(zk)
        held_session = a.client_id
        time.sleep(2.5)  # the container manager (1 s interval) removes the emptied containers
        # The newest snapshot must be followed by logged txns (it was taken mid-load): write on
        # until the last zxid is above it.
        for i in range(10):
            t = a.transaction()  # a failed multi after the snapshot: replayed as nothing
            t.create(f"/imp/never-tail-{i}", b"x")
            t.delete("/imp/does-not-exist")
            t.commit()
            _, stat = a.set("/imp", f"tail-{i}".encode()), a.exists("/imp")
            newest = max(int(p.name.split(".")[1], 16) for p in (zk.data_dir / "version-2").glob("snapshot.*"))
            if stat.mzxid > newest:
                break
        if stop == "kill":
            os.killpg(zk.proc.pid, signal.SIGKILL)
            zk.proc.wait(timeout=10)
        zk.stop()
        a.stop()  # the server is gone: nothing reaches it
        a.close()
        a = None
        version2 = zk.data_dir / "version-2"
        snaps = sorted(p.name for p in version2.glob("snapshot.*"))
        assert len(snaps) >= 3, f"snapCount=30 should have made several snapshots: {snaps}"
        assert all(n.endswith(".gz") for n in snaps) if compression else True, snaps

        roster = RosterServer(name="roster")
        done = run_import(zk.data_dir, roster.data_dir, "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["txns_applied"] > 0, "the newest snapshot is followed by logged txns"
        assert report["checksums_verified"] >= report["txns_applied"]
        assert report["dropped_ephemerals"] == []
        kept = {int(s["id"], 16): s for s in report["sessions"]}
        assert held_session[0] in kept and kept[held_session[0]]["ephemerals"] == ROUNDS

        # Importing again into the now non-empty directory is refused.
        again = run_import(zk.data_dir, roster.data_dir)
        assert again.returncode != 0 and "not empty" in again.stderr, again.stderr

        zk2 = ZooKeeperServer(name="zookeeper-restarted", workdir=str(zk.workdir))
        zk2.start()
        roster.start()
        zc, rc = _client(zk2.hostport), _client(roster.hostport)
        try:
            want, got = walk(zc), walk(rc)
            only_zk, only_roster = sorted(set(want) - set(got)), sorted(set(got) - set(want))
            assert (only_zk, only_roster) == ([], []), report
            assert len(want) == report["znodes"] - 1  # /zookeeper/config is not walked
            diffs = [(p, want[p], got[p]) for p in sorted(want) if want[p] != got[p]]
            assert diffs == [], "\n".join(f"{p}\n  zookeeper {w}\n  roster    {g}" for p, w, g in diffs[:10])
            assert any(s[1][7] == held_session[0] for s in want.values()), "ephemerals of the open session"
            assert "/imp/null" in want and want["/imp/null"][0] is None or want["/imp/null"][0] == b""

            # The next sequential create gets the same name on both.
            for parent in ("/imp/seq", "/imp"):
                names = [c.create(parent + "/next-", b"", sequence=True) for c in (zc, rc)]
                assert names[0] == names[1], names
            # Roster's zxids continue above every imported one.
            _, stat = rc.get(parent)
            assert stat.pzxid > int(report["last_zxid"], 16)
        finally:
            zc.stop(), zc.close(), rc.stop(), rc.close()

        # The session left open in ZooKeeper resumes on Roster with its password; its
        # ephemerals are still there.
        resumed = KazooClient(hosts=roster.hostport, timeout=SESSION_TIMEOUT_S, client_id=held_session)
        resumed.start(timeout=15)
        try:
            assert resumed.client_id[0] == held_session[0]
            assert resumed.exists("/imp/eph-a-0").ephemeralOwner == held_session[0]
        finally:
            resumed.stop()
            resumed.close()
    finally:
        if a is not None:
            a.stop()
            a.close()
        for s in (zk2, roster):
            if s is not None:
                s.cleanup()
        zk.cleanup()


def test_import_refuses_a_damaged_log(tmp_path):
    zk = ZooKeeperServer(name="zookeeper")
    try:
        zk.start()
        c = _client(zk.hostport)
        for i in range(20):
            c.create(f"/d{i}", b"x" * 50)
        c.stop()
        c.close()
        zk.stop()
        logs = sorted((zk.data_dir / "version-2").glob("log.*"))
        assert logs
        log = logs[-1]
        b = bytearray(log.read_bytes())
        b[16 + 200] ^= 0xFF  # inside an early record
        log.write_bytes(bytes(b))
        done = run_import(zk.data_dir, tmp_path / "new")
        assert done.returncode != 0
        assert log.name in done.stderr and "damaged transaction log at byte" in done.stderr, done.stderr
        assert not (tmp_path / "new").exists(), "nothing is written when the import fails"
    finally:
        zk.cleanup()
