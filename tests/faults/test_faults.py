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


# ---------------------------------------------------------------- pure parts (no root needed)


def test_schedule_is_seeded_and_fits_the_run():
    a = faults.schedule("mixed", 3, 60)
    assert a == faults.schedule("mixed", 3, 60)
    assert a != faults.schedule("mixed", 4, 60)
    assert a and all(c["at"] + c["fault"] <= 59 for c in a)
    assert all(c["kind"] in faults.NEMESES for c in a)
    assert {c["kind"] for c in faults.schedule("kill-leader", 1, 60)} == {"kill-leader"}


def _s(t, n1, n2, n3):
    return (t, {1: n1, 2: n2, 3: n3})


def test_leader_changes_ignores_stale_claims_and_counts_disruptive_heals():
    # n1 isolated keeps claiming; n3 elected during the partition; heal at 9: n1 steps down: 1 change,
    # not after the heal.
    samples = [
        _s(0, "leader", "follower", "follower"),
        _s(3, "leader", "candidate", "follower"),
        _s(3.2, "leader", "follower", "leader"),
        _s(9.1, "follower", "follower", "leader"),
    ]
    changes, after = faults.leader_changes(samples, [(9.0, [1])])
    assert [(c["from"], c["to"]) for c in changes] == [(1, 3)] and after == 0

    # a paused leader wakes up still claiming: no election
    samples = [
        _s(0, "leader", "follower", "follower"),
        _s(1, "unreachable", "follower", "follower"),
        _s(2, "unreachable", "leader", "follower"),
        _s(6.1, "leader", "leader", "follower"),
        _s(6.3, "follower", "leader", "follower"),
    ]
    changes, after = faults.leader_changes(samples, [(6.0, [1])])
    assert [c["to"] for c in changes] == [2] and after == 0

    # an isolated follower returns and deposes the healthy leader n2 (re-elected or not): counted
    samples = [
        _s(0, "follower", "leader", "follower"),
        _s(5, "candidate", "leader", "follower"),
        _s(10.1, "follower", "candidate", "follower"),
        _s(10.4, "follower", "leader", "follower"),
    ]
    changes, after = faults.leader_changes(samples, [(10.0, [1])])
    assert [c["to"] for c in changes] == [2] and after == 1


def test_criteria_compares_roster_with_zookeeper_on_the_same_schedule():
    base = dict(nemesis="kill-leader", seed=1, linearizable=True, lost=0, casualties=0, leader_changes_after_heal=0)
    z = dict(base, system="zookeeper", ack_register=100, unknown=10)
    good = dict(base, system="roster", ack_register=100, unknown=20)
    assert faults.criteria([good, z]) == "kill-leader seed 1: meets the done-criteria"
    bad = dict(base, system="roster", ack_register=99, unknown=21, casualties=1, leader_changes_after_heal=2)
    text = faults.criteria([bad, z])
    for miss in ("ack-reg 99 < ZooKeeper's 100", "unknown 21 > 2x", "casualties=1", "after-heal=2"):
        assert miss in text
    assert faults.criteria([good]) == ""  # nothing to compare with
