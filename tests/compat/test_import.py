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

The cut-over with the least downtime (docs/operations.md): ``roster import`` reads the files of a
ZooKeeper that still serves, ZooKeeper then takes the same kind of load again plus changes to the
imported nodes (sets, deletes, setACL, emptied containers, ephemerals of the held session), is
stopped, and ``roster import --update`` replays only the txns logged since (or, with ``--follow``,
has replayed them while ZooKeeper wrote them and finishes when it stops); the differential read of the
whole tree must again equal ZooKeeper's. ``--update`` refuses a directory Roster has served, one
not made by an import, and the logs of another ZooKeeper.
"""

from __future__ import annotations

import json
import os
import shutil
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


def zk_load(zk: ZooKeeperServer, root: str = "/imp", a: KazooClient | None = None) -> KazooClient:
    """The write load under `root`; returns the client whose session stays open (its ephemerals
    survive): `a` if given."""
    a = a or _client(zk.hostport)
    b = _client(zk.hostport)
    raw = RawClient("127.0.0.1", zk.port, session_timeout_ms=SESSION_TIMEOUT_S * 1000)
    raw.add_auth("digest", b"alice:secret")
    a.create(root, b"root")
    a.create(f"{root}/secret", b"s", acl=[make_digest_acl("alice", "secret", all=True)])
    owner = make_digest_acl("alice", "secret", all=True)
    a.create(f"{root}/ro", b"r", acl=[make_acl("world", "anyone", read=True), owner])
    a.create(f"{root}/seq")
    raw.create(f"{root}/null", None)
    raw.create_ttl(f"{root}/ttl", 3_600_000, b"t")
    raw.create_ttl(f"{root}/ttlseq-", 3_600_000, b"ts", sequential=True)
    raw.create_container(f"{root}/box")
    raw.create(f"{root}/box/item", b"i")
    for i in range(ROUNDS):
        p = a.create(f"{root}/seq/n-", str(i).encode(), sequence=True)
        if i % 3 == 0:
            a.delete(p)  # sequence numbers now run ahead of the child count
        a.create(f"{root}/eph-a-{i}", b"a", ephemeral=True)
        b.create(f"{root}/eph-b-", b"b", ephemeral=True, sequence=True)
        a.set(root, f"v{i}".encode())
        if i % 5 == 0:
            a.set_acls(f"{root}/ro", [make_acl("world", "anyone", read=True, write=i % 2 == 0), owner])
        t = a.transaction()
        t.create(f"{root}/multi-{i}", b"m")
        t.set_data(f"{root}/secret", f"s{i}".encode())
        t.check(f"{root}/seq", -1)
        t.commit()
        t = a.transaction()  # fails as a whole: nothing of it is applied
        t.create(f"{root}/never-{i}", b"x")
        t.delete(f"{root}/does-not-exist")
        t.commit()
        raw.create_container(f"{root}/box{i}")
        raw.create(f"{root}/box{i}/x", b"x")
        if i % 2:
            raw.delete(f"{root}/box{i}/x")  # ZooKeeper's container manager deletes the container
        if i % 4 == 0:
            raw.create_ttl(f"{root}/ttl-{i}", 3_600_000, b"t")
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


def compare_trees(zk_hostport: str, roster_hostport: str) -> dict:
    """Walks both servers; asserts every znode's data, ACL, Stat and children are equal."""
    zc, rc = _client(zk_hostport), _client(roster_hostport)
    try:
        want, got = walk(zc), walk(rc)
    finally:
        zc.stop(), zc.close(), rc.stop(), rc.close()
    only_zk, only_roster = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert (only_zk, only_roster) == ([], [])
    diffs = [(p, want[p], got[p]) for p in sorted(want) if want[p] != got[p]]
    assert diffs == [], "\n".join(f"{p}\n  zookeeper {w}\n  roster    {g}" for p, w, g in diffs[:10])
    return want


@pytest.mark.parametrize("stop,follow", [("kill", False), ("term", False), ("term", True)])
def test_cutover_imports_live_then_updates_to_the_stop(stop, follow):
    zk = ZooKeeperServer(name="zookeeper", extra_cfg={"snapCount": 30})
    zk2 = roster = follower = None
    a = None
    try:
        zk.start()
        a = zk_load(zk)
        held_session = a.client_id

        # Phase 1: the whole tree, read from the files of the ZooKeeper that keeps serving.
        roster = RosterServer(name="roster")
        done = run_import(zk.data_dir, roster.data_dir, "--json")
        assert done.returncode == 0, done.stderr
        first = json.loads(done.stdout)
        if follow:  # replays ZooKeeper's logs as they grow, until ZooKeeper stops
            follower = subprocess.Popen(
                [str(roster_bin()), "import", "--update", "--follow", zk.hostport, "--json",
                 "--zk-data-dir", str(zk.data_dir), "--data-dir", str(roster.data_dir)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

        # ZooKeeper goes on: the same load under a new root (every create mode, multi, a session
        # that closes, the held session's ephemerals) and changes to what phase 1 imported.
        zk_load(zk, "/imp2", a)
        raw = RawClient("127.0.0.1", zk.port, session_timeout_ms=SESSION_TIMEOUT_S * 1000)
        raw.add_auth("digest", b"alice:secret")
        a.set("/imp", b"after-import")
        a.set_acls("/imp/ro", [make_acl("world", "anyone", all=True)])
        a.delete("/imp/eph-a-0")  # an ephemeral of the held session, imported in phase 1
        a.delete("/imp/multi-0")
        for kid in a.get_children("/imp/seq")[:5]:
            a.delete(f"/imp/seq/{kid}")
        a.create("/imp/seq/late-", b"late", sequence=True)
        raw.delete("/imp/box/item")  # the container empties; ZooKeeper's manager deletes it
        raw.create_ttl("/imp/ttl-late", 3_600_000, b"t")
        t = a.transaction()
        t.create("/imp/multi-late", b"m")
        t.delete("/imp/multi-1")
        t.set_data("/imp/secret", b"late")
        t.commit()
        c = _client(zk.hostport)  # a session that opens after phase 1 and stays open
        c.create("/imp2/eph-c", b"c", ephemeral=True)
        raw.close()
        time.sleep(2.5)  # the container manager (1 s interval) removes the emptied containers

        # Phase 2: stop ZooKeeper, replay only what it logged since phase 1.
        if stop == "kill":
            os.killpg(zk.proc.pid, signal.SIGKILL)
            zk.proc.wait(timeout=10)
        zk.stop()
        for client in (a, c):
            client.stop()  # the server is gone: nothing reaches it
            client.close()
        a = None
        if follower is not None:
            out, err = follower.communicate(timeout=120)
            assert follower.returncode == 0, err
            update = json.loads(out)
        else:
            done = run_import(zk.data_dir, roster.data_dir, "--update", "--json")
            assert done.returncode == 0, done.stderr
            update = json.loads(done.stdout)
        assert update["from_zxid"] == first["last_zxid"]
        assert int(update["last_zxid"], 16) > int(first["last_zxid"], 16)
        assert update["txns_applied"] > 0 and update["rewritten"]
        assert update["checksums_verified"] >= update["txns_applied"]
        # Nothing new since: a second update changes nothing.
        again = run_import(zk.data_dir, roster.data_dir, "--update", "--json")
        assert again.returncode == 0, again.stderr
        again = json.loads(again.stdout)
        assert (again["txns_applied"], again["rewritten"], again["last_zxid"]) == (0, False, update["last_zxid"])

        zk2 = ZooKeeperServer(name="zookeeper-restarted", workdir=str(zk.workdir))
        zk2.start()
        roster.start()
        want = compare_trees(zk2.hostport, roster.hostport)
        assert len(want) == update["znodes"] - 1  # /zookeeper/config is not walked
        assert "/imp2/eph-c" in want and "/imp/eph-a-0" not in want and "/imp/box" not in want
        assert any(s[1][7] == held_session[0] for s in want.values()), "ephemerals of the open session"

        # Roster has served the directory: updating it again is refused.
        roster.stop()
        served = run_import(zk.data_dir, roster.data_dir, "--update")
        assert served.returncode != 0 and "roster serve has run on it" in served.stderr, served.stderr
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        if a is not None:
            a.stop()
            a.close()
        for s in (zk2, roster):
            if s is not None:
                s.cleanup()
        zk.cleanup()


def test_update_refuses_another_history_and_other_directories(tmp_path):
    def small_zk(name):
        zk = ZooKeeperServer(name=name)
        zk.start()
        c = _client(zk.hostport)
        for i in range(20):
            c.create(f"/d{i}", b"x" * 50)
        return zk, c

    zk, c = small_zk("zookeeper")
    other, oc = small_zk("zookeeper-other")
    try:
        done = run_import(zk.data_dir, tmp_path / "imported")
        assert done.returncode == 0, done.stderr
        # The other ZooKeeper ran the same writes (the same zxids) but is another history.
        oc.create("/more", b"y")
        refused = run_import(other.data_dir, tmp_path / "imported", "--update")
        assert refused.returncode != 0 and "run a full roster import" in refused.stderr, refused.stderr
        assert "not the one imported" in refused.stderr or "not the history" in refused.stderr, refused.stderr
        # The ZooKeeper it came from: the update goes through (read live, ZooKeeper still serves).
        c.create("/more", b"z")
        ok = run_import(zk.data_dir, tmp_path / "imported", "--update", "--json")
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["txns_applied"] == 1

        # The logs holding the imported zxid are gone (purged): refused, not guessed.
        purged = tmp_path / "purged"
        shutil.copytree(zk.data_dir, purged)
        for log in (purged / "version-2").glob("log.*"):
            log.unlink()
        refused = run_import(purged, tmp_path / "imported", "--update")
        assert refused.returncode != 0 and "purged the logs" in refused.stderr, refused.stderr

        # Not made by an import: an empty directory, and one roster serve made.
        refused = run_import(zk.data_dir, tmp_path / "empty", "--update")
        assert refused.returncode != 0 and "not made by roster import" in refused.stderr, refused.stderr
        served = RosterServer(name="roster-plain")
        try:
            served.start()
            served.stop()
            refused = run_import(zk.data_dir, served.data_dir, "--update")
            assert refused.returncode != 0 and "not made by roster import" in refused.stderr, refused.stderr
        finally:
            served.cleanup()
    finally:
        for client in (c, oc):
            client.stop()
            client.close()
        zk.cleanup()
        other.cleanup()
