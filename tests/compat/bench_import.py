"""Measures the ZooKeeper -> Roster cut-over of docs/operations.md on a large tree (run by
scripts/bench-import, not by the test suite).

1. A real Apache ZooKeeper 3.8 (2 GiB heap) on loopback gets N znodes (default 1,000,000: 1,000
   parents of 1,000 children, 100 bytes of data each) from kazoo, pipelined.
2. The cut-over, timed step by step: ZooKeeper stopped (SIGTERM), `roster import` of its data
   directory, `roster serve` on the result until it serves (ruok, then srvr). The sum is the write
   downtime of the procedure.
3. Checks: Roster's znode count (mntr) equals the import's report and a sample of znodes reads the
   same data and Stat as ZooKeeper had written.

    scripts/bench-import                 # 1,000,000 znodes
    ZNODES=100000 scripts/bench-import   # smaller

Everything runs on 127.0.0.1 in a temporary directory that is deleted at the end.
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
FANOUT = 1000
WINDOW = 2000


class BigZooKeeper(ZooKeeperServer):
    def command(self):
        return [("-Xmx2g" if a == "-Xmx256m" else a) for a in super().command()]


def load(zk: KazooClient) -> dict:
    zk.create("/bench", b"")
    parents = (N + FANOUT - 1) // FANOUT
    for p in range(parents):
        zk.create(f"/bench/p{p}", b"")
    pending, sample, done = [], {}, 0
    data = b"x" * 100
    t0 = time.monotonic()
    for i in range(N):
        path = f"/bench/p{i // FANOUT}/n{i % FANOUT}"
        pending.append(zk.create_async(path, data))
        if len(pending) >= WINDOW:
            for r in pending:
                r.get(timeout=60)
            done += len(pending)
            pending = []
            if done % 100000 == 0:
                print(f"  loaded {done} znodes ({done / (time.monotonic() - t0):.0f}/s)", flush=True)
    for r in pending:
        r.get(timeout=60)
    for i in random.Random(7).sample(range(N), min(N, 200)):
        path = f"/bench/p{i // FANOUT}/n{i % FANOUT}"
        sample[path] = zk.get(path)
    return sample


def main():
    zk = BigZooKeeper(name="zookeeper")
    roster = RosterServer(name="roster")
    try:
        zk.start()
        c = KazooClient(hosts=zk.hostport, timeout=30)
        c.start(timeout=15)
        t = time.monotonic()
        sample = load(c)
        print(f"loaded {N} znodes into ZooKeeper in {time.monotonic() - t:.1f} s", flush=True)
        c.stop()
        c.close()

        t_stop = time.monotonic()
        zk.stop()
        t_import = time.monotonic()
        done = subprocess.run(
            [str(roster_bin()), "import", "--zk-data-dir", str(zk.data_dir), "--data-dir", str(roster.data_dir), "--json"],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if done.returncode != 0:
            sys.exit(f"import failed: {done.stderr}")
        report = json.loads(done.stdout)
        t_serve = time.monotonic()
        roster.start(timeout=600)
        t_end = time.monotonic()

        r = KazooClient(hosts=roster.hostport, timeout=30)
        r.start(timeout=15)
        bad = [p for p, (d, s) in sample.items() if r.get(p) != (d, s)]
        r.stop()
        r.close()
        mntr = four_letter(roster.port, "mntr")
        count = next(int(l.split()[1]) for l in mntr.splitlines() if l.startswith("zk_znode_count"))
        v2 = zk.data_dir / "version-2"
        snap_mb = sum(p.stat().st_size for p in v2.glob("snapshot.*")) / 2**20
        log_mb = sum(p.stat().st_size for p in v2.glob("log.*")) / 2**20
        print(
            json.dumps(
                {
                    "znodes": report["znodes"],
                    "roster_znode_count": count,
                    "zookeeper_snapshot_files_mib": round(snap_mb, 1),
                    "zookeeper_log_files_mib": round(log_mb, 1),
                    "snapshot_zxid": report["snapshot_zxid"],
                    "txns_replayed": report["txns_applied"],
                    "stop_zookeeper_s": round(t_import - t_stop, 2),
                    "import_s": round(t_serve - t_import, 2),
                    "import_report_ms": report["elapsed_ms"],
                    "roster_start_to_serving_s": round(t_end - t_serve, 2),
                    "downtime_s": round(t_end - t_stop, 2),
                    "sample_mismatches": len(bad),
                },
                indent=2,
            )
        )
        # mntr counts as ZooKeeper does: one more than the nodes (fourlw::znode_count).
        if bad or count != report["znodes"] + 1:
            sys.exit(f"MISMATCH: {bad[:5]} count {count} vs {report['znodes']}")
    finally:
        roster.cleanup()
        zk.cleanup()
        shutil.rmtree(zk.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
