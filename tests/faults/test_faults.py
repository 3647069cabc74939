"""The fault suite's short CI version: one short run per nemesis against a 3-node Roster.

Each test plays one nemesis for about 18 s of workload (kazoo and Rust register workers, create
workers, ephemeral owners; see run.py) and asserts what must hold whatever the timing: the checker
finds the history valid (every key linearizable, no acknowledged write or create lost, sequence numbers
unique and in order, ephemerals matching their owners, replicas identical) and no client was a
casualty. Throughput, unknown outcomes and leader changes are reported, never asserted.

Needs root and ``ip netns`` (CI runs as root): without them the tests FAIL with what to do, they do not
skip. Binaries: ``$ROSTER_RELEASE_BIN`` (default target/release/roster) and ``$ROSTER_FAULT_WORKER``
(default target/release/examples/fault_worker); ``scripts/test`` builds both. Run directories (history,
final.json, node logs, report.json) stay in ``$FAULTS_CI_OUT`` (default target/faults-ci).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import netns  # noqa: E402
import run as faults  # noqa: E402

REPO = HERE.parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
ROSTER_BIN = Path(os.environ.get("ROSTER_RELEASE_BIN", TARGET / "release" / "roster"))
WORKER_BIN = Path(os.environ.get("ROSTER_FAULT_WORKER", TARGET / "release" / "examples" / "fault_worker"))
OUT = Path(os.environ.get("FAULTS_CI_OUT", TARGET / "faults-ci"))
DURATION = float(os.environ.get("FAULTS_CI_DURATION", "18"))

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def env():
    try:
        netns.preflight()
    except netns.NetError as e:
        pytest.fail(f"the fault suite cannot run here: {e}", pytrace=False)
    for b, how in (
        (ROSTER_BIN, "cargo build --release -p roster --bin roster"),
        (WORKER_BIN, "cargo build --release -p roster-client --example fault_worker"),
    ):
        if not b.exists():
            pytest.fail(f"{b} is missing: {how} (scripts/test does it)", pytrace=False)
    OUT.mkdir(parents=True, exist_ok=True)
    preload = faults.build_shim(OUT)
    os.environ["RSF_SLOW_MS"] = str(faults.SLOW_MS)
    with netns.Lock():
        yield preload
    netns.cleanup()


@pytest.mark.parametrize("nemesis", faults.ALL_NEMESES)
def test_nemesis(env, nemesis):
    opts = SimpleNamespace(kazoo_workers=4, rust_workers=2, create_workers=2, owners=3)
    r = faults.Run("roster", nemesis, 1, DURATION, OUT, opts).execute(ROSTER_BIN, WORKER_BIN, env)
    print(json.dumps(r, indent=1))
    where = f"(run directory {OUT}/roster-{nemesis}-s1: history.jsonl, final.json, report.json, logs/)"
    assert r["error"] is None, f"the run itself failed: {r['error']} {where}"
    assert r["ack_register"] > 0, f"no register operation succeeded at all {where}"
    if nemesis == "slow-disk" and env is not None:
        assert sum(r["slow_disk_hits"].values()) > 0, f"the slow-disk shim slowed no fsync {where}"
    assert r["linearizable"] is True, f"not linearizable: {r['violations']} {where}"
    assert r["lost"] == 0, f"acknowledged creates lost: {r['violations']} {where}"
    assert r["valid"], f"checker violations: {r['violations']} {where}"
    assert r["casualties"] == 0, f"client casualties {r['casualties_by_kind']} {where}"
