"""Differential test: each scenario against Apache ZooKeeper 3.8 and against
the server under test; the normalized traces must be equal.

COMPAT_SELF_CHECK=1 runs ZooKeeper against a second ZooKeeper instead of
Roster, which proves the traces are deterministic.  COMPAT_TRACE_DIR=dir
writes both traces of every scenario there as JSON lines.
"""

import difflib
import json
import os

import pytest

from scenarios import SCENARIOS, run_scenario


def _lines(trace):
    return [json.dumps(item, sort_keys=False) for item in trace]


def _dump(name, side, trace):
    d = os.environ.get("COMPAT_TRACE_DIR")
    if d:
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{name}.{side}.jsonl"), "w") as f:
            f.write("\n".join(_lines(trace)) + "\n")


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_differential(name, reference_server, sut_server):
    ref = run_scenario(name, reference_server)
    _dump(name, "zookeeper", ref)
    aborted = [i for i in ref if i and i[0] == "ABORTED"]
    assert not aborted, f"scenario {name} aborted on the reference ZooKeeper (harness bug): {aborted}"
    got = run_scenario(name, sut_server)
    _dump(name, sut_server.kind, got)
    if ref != got:
        diff = "\n".join(
            difflib.unified_diff(
                _lines(ref),
                _lines(got),
                fromfile=f"zookeeper ({reference_server.hostport})",
                tofile=f"{sut_server.name} ({sut_server.hostport})",
                lineterm="",
                n=2,
            )
        )
        pytest.fail(
            f"scenario {name!r}: traces differ ({len(ref)} vs {len(got)} steps)\n"
            f"doc: {SCENARIOS[name].__doc__}\n{diff}",
            pytrace=False,
        )
