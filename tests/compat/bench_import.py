"""Measures the two ZooKeeper -> Roster cut-overs of docs/operations.md on a large tree (run by
scripts/bench-import, not by the test suite).

1. A real Apache ZooKeeper 3.8 (2 GiB heap) on loopback gets N znodes (default 1,000,000: 1,000
   parents of 1,000 children, 100 bytes of data each) from `roster bench --workload memory`
   (pipelined, 16 sessions).
2. Phase 1 of the two-phase cut-over, while ZooKeeper serves: `roster import` of its live data
   directory into directory A (timed, not downtime).
3. A write load on ZooKeeper between phase 1 and the stop (CATCHUP_WRITES, default 20,000: creates,
   setData of loaded znodes, deletes, kazoo pipelined).
   A copy of A (C) is followed during the load by `roster import --update --follow`.
4. ZooKeeper stopped (SIGTERM), then, timed step by step from the SIGTERM:
   - following: the follower on C notices the stop, replays the rest and writes C; `roster serve`
     on C until it serves (ruok, srvr);
   - two-phase: `roster import --update` of A, `roster serve` on A until it serves;
   - one-phase (for comparison, on the same stopped ZooKeeper): `roster import` of the whole tree into
     a new directory B, `roster serve` on B until it serves.
5. Checks on both: Roster's znode count (mntr) equals the import's report, and a sample of znodes
   (loaded ones and ones the write load changed) reads the same data and Stat as ZooKeeper had.

    scripts/bench-import                                   # 1,000,000 znodes
    ZNODES=100000 CATCHUP_WRITES=5000 scripts/bench-import # smaller

Everything runs on 127.0.0.1 in temporary directories that are deleted at the end.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time

from kazoo.client import KazooClient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import RosterServer, ZooKeeperServer, four_letter, roster_bin  # noqa: E402

N = int(os.environ.get("ZNODES", "1000000"))
CATCHUP = int(os.environ.get("CATCHUP_WRITES", "20000"))
WINDOW = 2000


class BigZooKeeper(ZooKeeperServer):
    def command(self):
        return [("-Xmx2g" if a == "-Xmx256m" else a) for a in super().command()]


def load(zk: ZooKeeperServer) -> str:
    """N znodes through `roster bench`; returns the directory holding their parents."""
    done = subprocess.run(
        [
            str(roster_bin()), "bench", "--servers", zk.hostport, "--workload", "memory",
            "--znodes", str(N), "--payload", "100", "--root", "/bench", "--memory-timeout", "3000s",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        sys.exit(f"loading ZooKeeper failed: {done.stderr[-2000:]}")
    c = KazooClient(hosts=zk.hostport, timeout=30)
    c.start(timeout=15)
    try:
        (run,) = c.get_children("/bench")
        return f"/bench/{run}"
    finally:
        c.stop()
        c.close()


def pipelined(calls) -> None:
    pending = []
    for call in calls:
        pending.append(call())
        if len(pending) >= WINDOW:
            for r in pending:
                r.get(timeout=60)
            pending = []
    for r in pending:
        r.get(timeout=60)


def catch_up_load(zk: KazooClient, base: str) -> list[str]:
    """CATCHUP_WRITES writes after phase 1: a third each creates, setData, deletes of loaded znodes.
    Returns paths whose state is checked on Roster."""
    zk.create("/catchup", b"")
    third = CATCHUP // 3
    rnd = random.Random(11)
    loaded = [f"{base}/p{i // 1000:05}/n{i % 1000:03}" for i in rnd.sample(range(N), min(N, 2 * third))]
    sets, deletes = loaded[:third], loaded[third:]
    pipelined(lambda i=i: zk.create_async(f"/catchup/c{i}", b"y" * 100) for i in range(third))
    pipelined(lambda p=p: zk.set_async(p, b"z" * 100) for p in sets)
    pipelined(lambda p=p: zk.delete_async(p) for p in deletes)
    return [f"/catchup/c{i}" for i in range(0, third, max(1, third // 100))] + sets[:100] + deletes[:100]


def read_sample(hostport: str, paths: list[str]) -> dict:
    c = KazooClient(hosts=hostport, timeout=30)
    c.start(timeout=15)
    try:
        return {p: (c.get(p) if c.exists(p) else None) for p in paths}
    finally:
        c.stop()
        c.close()


def roster_import(*args) -> tuple[dict, float]:
    t = time.monotonic()
    done = subprocess.run([str(roster_bin()), "import", *map(str, args), "--json"], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        sys.exit(f"roster import {' '.join(map(str, args))} failed: {done.stderr}")
    return json.loads(done.stdout), time.monotonic() - t


def serve_and_check(roster: RosterServer, report: dict, sample: dict) -> float:
    """Starts Roster; returns the seconds until it serves. Exits on a mismatch."""
    t = time.monotonic()
    roster.start(timeout=600)
    took = time.monotonic() - t
    got = read_sample(roster.hostport, list(sample))
    bad = [p for p in sample if got[p] != sample[p]]
    mntr = four_letter(roster.port, "mntr")
    count = next(int(l.split()[1]) for l in mntr.splitlines() if l.startswith("zk_znode_count"))
    roster.stop()
    # mntr counts as ZooKeeper does: one more than the nodes (fourlw::znode_count).
    if bad or count != report["znodes"] + 1:
        sys.exit(f"MISMATCH on {roster.name}: {bad[:5]} count {count} vs {report['znodes']}")
    return took


def main():
    zk = BigZooKeeper(name="zookeeper")
    two = RosterServer(name="roster-two-phase")
    one = RosterServer(name="roster-one-phase")
    fol = RosterServer(name="roster-follow")
    follower = None
    try:
        zk.start()
        t = time.monotonic()
        base = load(zk)
        load_s = time.monotonic() - t
        print(f"loaded {N} znodes into ZooKeeper in {load_s:.1f} s", flush=True)

        first, phase1_s = roster_import("--zk-data-dir", zk.data_dir, "--data-dir", two.data_dir)
        print(f"phase 1 (live import) in {phase1_s:.1f} s at zxid {first['last_zxid']}", flush=True)

        shutil.rmtree(fol.data_dir, ignore_errors=True)
        shutil.copytree(two.data_dir, fol.data_dir, symlinks=True)
        follower = subprocess.Popen(
            [str(roster_bin()), "import", "--update", "--follow", zk.hostport, "--json",
             "--zk-data-dir", str(zk.data_dir), "--data-dir", str(fol.data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        c = KazooClient(hosts=zk.hostport, timeout=30)
        c.start(timeout=15)
        t = time.monotonic()
        paths = catch_up_load(c, base)
        catchup_s = time.monotonic() - t
        c.stop()
        c.close()
        rnd = random.Random(7)
        paths += [f"{base}/p{i // 1000:05}/n{i % 1000:03}" for i in rnd.sample(range(N), min(N, 200))]
        sample = read_sample(zk.hostport, paths)

        t_stop = time.monotonic()
        zk.stop()
        stop_s = time.monotonic() - t_stop
        out, err = follower.communicate(timeout=1800)
        follow_done_s = time.monotonic() - t_stop
        if follower.returncode != 0:
            sys.exit(f"roster import --update --follow failed: {err}")
        followed = json.loads(out)
        fol_serve_s = serve_and_check(fol, followed, sample)

        update, update_s = roster_import("--update", "--zk-data-dir", zk.data_dir, "--data-dir", two.data_dir)
        two_serve_s = serve_and_check(two, update, sample)
        full, full_s = roster_import("--zk-data-dir", zk.data_dir, "--data-dir", one.data_dir)
        one_serve_s = serve_and_check(one, full, sample)
        if full["znodes"] != update["znodes"] or full["last_zxid"] != update["last_zxid"]:
            sys.exit(f"MISMATCH: update {update['znodes']} znodes at {update['last_zxid']}, full import {full['znodes']} at {full['last_zxid']}")

        v2 = zk.data_dir / "version-2"
        snap_mb = sum(p.stat().st_size for p in v2.glob("snapshot.*")) / 2**20
        log_mb = sum(p.stat().st_size for p in v2.glob("log.*")) / 2**20
        print(
            json.dumps(
                {
                    "znodes": full["znodes"],
                    "zookeeper_snapshot_files_mib": round(snap_mb, 1),
                    "zookeeper_log_files_mib": round(log_mb, 1),
                    "load_s": round(load_s, 1),
                    "phase1_live_import_s": round(phase1_s, 2),
                    "phase1_zxid": first["last_zxid"],
                    "catchup_writes": CATCHUP,
                    "catchup_load_s": round(catchup_s, 2),
                    "stop_zookeeper_s": round(stop_s, 2),
                    "two_phase_follow": {
                        "sigterm_to_written_s": round(follow_done_s, 2),
                        "steps_ms": followed["steps_ms"],
                        "txns_replayed": followed["txns_applied"],
                        "roster_start_to_serving_s": round(fol_serve_s, 2),
                        "downtime_s": round(follow_done_s + fol_serve_s, 2),
                    },
                    "two_phase": {
                        "update_s": round(update_s, 2),
                        "steps_ms": update["steps_ms"],
                        "txns_replayed": update["txns_applied"],
                        "zxids": f"{update['from_zxid']} -> {update['last_zxid']}",
                        "roster_start_to_serving_s": round(two_serve_s, 2),
                        "downtime_s": round(stop_s + update_s + two_serve_s, 2),
                    },
                    "one_phase": {
                        "import_s": round(full_s, 2),
                        "import_report_ms": full["elapsed_ms"],
                        "snapshot_zxid": full["snapshot_zxid"],
                        "txns_replayed": full["txns_applied"],
                        "roster_start_to_serving_s": round(one_serve_s, 2),
                        "downtime_s": round(stop_s + full_s + one_serve_s, 2),
                    },
                    "sample_checked": len(sample),
                },
                indent=2,
            ),
            flush=True,
        )
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        for s in (fol, two, one, zk):
            s.cleanup()
        shutil.rmtree(zk.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
