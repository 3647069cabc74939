"""Fixtures of the Curator tests.

* ``target``: the server the Java and Rust clients share, once per kind for the whole run: ``roster``
  (one node), ``roster3`` (three nodes on loopback) and ``zookeeper`` (Apache ZooKeeper 3.8, the
  reference). ``CURATOR_TARGETS=roster,zookeeper`` narrows the list. Tests work below their own paths,
  so they can share a server.
* ``peers``: starts Curator drivers and Rust peers (``harness.Peer``) and kills them at teardown.
"""

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from servers import RosterServer, ServerError, ZooKeeperServer  # noqa: E402

ALL_TARGETS = ["roster", "roster3", "zookeeper"]


def targets() -> list[str]:
    env = os.environ.get("CURATOR_TARGETS")
    if not env:
        return ALL_TARGETS
    wanted = [t.strip() for t in env.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in ALL_TARGETS]
    if unknown:
        raise pytest.UsageError(f"CURATOR_TARGETS: unknown {unknown}; known {ALL_TARGETS}")
    return wanted


class Target:
    def __init__(self, kind: str, hostport: str, cluster=None, server=None):
        self.kind = kind
        self.hostport = hostport
        self.cluster = cluster
        self.server = server

    def log_tail(self) -> str:
        if self.cluster is not None:
            return "\n".join(self.cluster.log_tail(i) for i in range(3))
        return self.server.log_tail(40) if self.server is not None else ""

    def __repr__(self):
        return f"<{self.kind} {self.hostport}>"


def pytest_generate_tests(metafunc):
    if "target" in metafunc.fixturenames:
        only = getattr(metafunc.function, "curator_targets", None)
        ts = [t for t in targets() if only is None or t in only]
        metafunc.parametrize("target", ts, indirect=True, scope="session")


@pytest.fixture(scope="session")
def target(request):
    kind = request.param
    if kind == "roster3":
        workdir = Path(tempfile.mkdtemp(prefix="curator-roster3-"))
        cluster = harness.RosterCluster(workdir)
        try:
            cluster.start()
        except ServerError as e:
            cluster.stop()
            pytest.fail(f"3-node Roster did not start: {e}", pytrace=False)
        try:
            yield Target(kind, cluster.hostport, cluster=cluster)
        finally:
            cluster.stop()
        return
    server = RosterServer(name="roster") if kind == "roster" else ZooKeeperServer(name="zookeeper")
    try:
        server.start()
    except ServerError as e:
        server.cleanup()
        pytest.fail(f"{kind} did not start: {e}", pytrace=False)
    try:
        yield Target(kind, server.hostport, server=server)
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def java_classes():
    try:
        return harness.java_classes()
    except harness.HarnessError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def peers(tmp_path, java_classes, request):
    """``peers.java(name)`` / ``peers.rust(name)``: participants on the target, killed at teardown."""

    class Peers:
        def __init__(self):
            self.all = []
            self.hosts = None

        def java(self, name, hosts=None, **kw):
            p = harness.java_peer(name, hosts or self.hosts, tmp_path, **kw)
            self.all.append(p)
            return p

        def rust(self, name, hosts=None):
            p = harness.rust_peer(name, hosts or self.hosts, tmp_path)
            self.all.append(p)
            return p

    ps = Peers()
    if "target" in request.fixturenames:
        ps.hosts = request.getfixturevalue("target").hostport
    yield ps
    for p in ps.all:
        p.close()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for p in ps.all:
            print(f"---- {p.name} stderr ----\n{p.stderr_tail()}")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def only_targets(*kinds):
    """Decorator: run a test on these targets only."""

    def mark(f):
        f.curator_targets = kinds
        return f

    return mark


def pytest_report_header(config):
    return f"curator: Apache Curator 5.4 (Debian) and roster-client against {', '.join(targets())}"
