"""Independent clients' own test suites, run against both servers.

kazoo's and aiozk's test files are not installed with their wheels: their
source distributions are fetched from PyPI at test time (``pip download
--no-binary :all:``) into a cache folder (``$COMPAT_UPSTREAM_CACHE``, default
``.cache/upstream`` at the repository root; never committed), unpacked, and a
bounded selection of their tests is run in a child pytest:

* kazoo 2.11.0 ``kazoo/tests/test_client.py``: the null-data and empty-data
  tests (``create``/``set`` with ``None`` must read back ``None``, ``b""``
  must read back ``b""``).  Its ``KazooTestHarness`` starts its own ZooKeeper;
  ``upstream_shim.py`` points it at the server under test instead.
* aiozk 0.32.0 ``aiozk/test/test_client.py`` and ``test_transaction.py``
  (``ZK_HOST``/``ZK_PORT`` name the server): nodes created without data are
  null, and ``get`` must return ``None``.

Each runs against Apache ZooKeeper 3.8 (showing the tests are right) and
against the server under test.  Left out: the rest of both suites (aiozk's
whole suite takes ~45 s per server; kazoo's needs cluster control).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = Path(os.environ.get("COMPAT_UPSTREAM_CACHE", ROOT / ".cache" / "upstream"))

SUITES = {
    "kazoo": {
        "dist": "kazoo==2.11.0",
        "dir": "kazoo-2.11.0",
        "args": ["-p", "upstream_shim", "kazoo/tests/test_client.py", "-k", "null_data or empty_string"],
        "expect": 4,
    },
    "aiozk": {
        "dist": "aiozk==0.32.0",
        "dir": "aiozk-0.32.0",
        "args": [
            "-o", "asyncio_mode=auto",
            "-o", "asyncio_default_fixture_loop_scope=function",
            "aiozk/test/test_client.py",
            "aiozk/test/test_transaction.py",
        ],
        "expect": None,
    },
}


def _source(suite: str) -> Path:
    """The unpacked sdist of a suite, fetched into the cache when missing."""
    spec = SUITES[suite]
    target = CACHE / spec["dir"]
    if target.is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
         "--no-deps", "--no-binary", ":all:", "-d", str(CACHE), spec["dist"]],
        capture_output=True, text=True, timeout=120,
    )
    archive = CACHE / f"{spec['dir']}.tar.gz"
    if r.returncode != 0 or not archive.is_file():
        pytest.fail(f"cannot fetch the {spec['dist']} sdist from PyPI (needed for its tests):\n"
                    f"{r.stdout}{r.stderr}", pytrace=False)
    with tarfile.open(archive) as tar:
        tar.extractall(CACHE, filter="data")
    return target


def _run(suite: str, server) -> None:
    src = _source(suite)
    env = dict(os.environ)
    host, port = server.hostport.rsplit(":", 1)
    env.update(
        UPSTREAM_ZK_HOSTS=server.hostport,
        ZK_HOST=host,
        ZK_PORT=port,
        PYTHONPATH=str(HERE),
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider",
           "-c", os.devnull, "--rootdir", str(src), "--timeout", "30", *SUITES[suite]["args"]]
    r = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True, timeout=150)
    out = r.stdout + r.stderr
    tail = "\n".join(out.splitlines()[-25:])
    assert r.returncode == 0, f"{suite}'s tests failed against {server.name} ({server.hostport}):\n{tail}"
    expect = SUITES[suite]["expect"]
    if expect is not None:
        assert f"{expect} passed" in out, f"expected {expect} of {suite}'s tests to run:\n{tail}"


@pytest.mark.parametrize("suite", list(SUITES))
def test_upstream_suite_against_zookeeper(suite, reference_server):
    _run(suite, reference_server)


@pytest.mark.parametrize("suite", list(SUITES))
def test_upstream_suite_against_server_under_test(suite, sut_server):
    _run(suite, sut_server)
