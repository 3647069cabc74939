"""Fixtures for the compatibility tests.

* ``reference_server``: a fresh Apache ZooKeeper 3.8 standalone (per test).
* ``sut_server``: a fresh server under test: Roster (``target/debug/roster``
  or ``$ROSTER_BIN``), or a second ZooKeeper when ``COMPAT_SELF_CHECK=1``.

Every server is bound to 127.0.0.1 on a free port, in its own temp dir, with
its log in a file; the process group is always killed at teardown, and when a
test fails the tail of each server's log is printed.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from servers import RosterServer, ServerError, ZooKeeperServer, server_under_test  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request) -> bool:
    for when in ("setup", "call"):
        rep = getattr(request.node, "rep_" + when, None)
        if rep is not None and rep.failed:
            return True
    return False


def _serve(request, server, log_lines=120):
    start_error = None
    try:
        server.start()
    except ServerError as e:
        start_error = str(e)
    except BaseException:
        server.cleanup()
        raise
    if start_error is not None:
        server.cleanup()
        pytest.fail(f"{server.name} failed to start: {start_error}", pytrace=False)
    try:
        yield server
    finally:
        alive = server.alive()
        server.stop()
        if _failed(request) or not alive:
            note = "" if alive else " (the process had DIED before teardown)"
            print(f"\n{server!r}{note}\n{server.log_tail(log_lines)}")
        server.cleanup()


@pytest.fixture
def reference_server(request):
    """Apache ZooKeeper 3.8: the reference."""
    yield from _serve(request, ZooKeeperServer(name="zookeeper"), log_lines=40)


@pytest.fixture
def sut_server(request):
    """The server under test (Roster; or ZooKeeper with COMPAT_SELF_CHECK=1)."""
    yield from _serve(request, server_under_test())


@pytest.fixture
def roster_server(request):
    yield from _serve(request, RosterServer())


def pytest_report_header(config):
    sut = "ZooKeeper (COMPAT_SELF_CHECK=1)" if os.environ.get("COMPAT_SELF_CHECK") == "1" else "Roster"
    return f"compat: reference = Apache ZooKeeper 3.8 (Debian), server under test = {sut}"
