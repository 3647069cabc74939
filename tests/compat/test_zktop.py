"""zktop (Debian's ``zktop`` package), a monitoring tool that parses the
``stat`` four-letter word, against both servers.

zktop is a curses program; its parsing lives in ``zktop.ZKServer`` (one
``stat`` round trip, parsed into the version, mode, counters, latencies and
one ``Session`` per client line), which is what this test drives: the fields
it shows must parse from Roster as from ZooKeeper 3.8, with the sessions of
two connected clients listed.  The curses screen itself is run once under a
pseudo terminal and must show the summary line and the server's row.  Left out: ``srst`` (zktop's
reset key).
"""

from __future__ import annotations

import importlib
import os
import pty
import select
import subprocess
import sys
import time

import pytest
from kazoo.client import KazooClient

ZKTOP_PATHS = ["/usr/lib/python3/dist-packages"]


def _zktop():
    """The zktop module (it parses sys.argv when imported)."""
    if not os.path.exists("/usr/bin/zktop"):
        pytest.fail("zktop is missing: apt-get install zktop (scripts/test does)", pytrace=False)
    for p in ZKTOP_PATHS:
        if p not in sys.path:
            sys.path.append(p)
    argv, sys.argv = sys.argv, ["zktop"]
    try:
        return importlib.import_module("zktop")
    finally:
        sys.argv = argv


def _view(zktop, server, clients):
    # zktop polls: a round that finds the server "Unavailable" (any error while it reads or parses
    # `stat`, e.g. an empty answer when the server sees zktop's half-close before the command, the
    # race zktop's --fix_330 option names) is simply redone at its next interval. So is it here, up to
    # five times; a server whose every answer fails to parse still fails the test.
    for _ in range(5):
        s = zktop.ZKServer(server.hostport, 0)
        if not s.unavailable:
            break
        time.sleep(0.2)
    assert not s.unavailable, f"zktop could not parse stat of {server.name} (five tries)"
    ours = [x for x in s.sessions if int(x.port) in clients]
    return {
        "version": s.version.split(".")[0],
        "mode": s.mode,
        "latency fields": [x.isdigit() or x.replace(".", "", 1).isdigit() for x in (s.min_latency, s.avg_latency, s.max_latency)],
        "counters": [getattr(s, k).isdigit() for k in ("received", "sent", "outstanding", "node_count")],
        "zxid": s.zxid.startswith("0x"),
        "node_count": s.node_count,
        "client sessions": sorted((x.host, x.interest_ops, sorted(vars(x))) for x in ours),
    }


def _clients(server):
    cs = [KazooClient(hosts=server.hostport, timeout=10.0) for _ in range(2)]
    for c in cs:
        c.start(timeout=15.0)
    cs[0].create("/top", b"x")
    return cs


def test_zktop_parses_stat_alike(reference_server, sut_server):
    zktop = _zktop()
    views = []
    for server in (reference_server, sut_server):
        cs = _clients(server)
        try:
            ports = {c._connection._socket.getsockname()[1] for c in cs}
            views.append(_view(zktop, server, ports))
        finally:
            for c in cs:
                c.stop()
                c.close()
    ref, got = views
    assert ref["version"] == "3" and ref["mode"] == "standalone", ref
    assert len(ref["client sessions"]) == 2, ref
    assert ref == got, f"zktop sees zookeeper as\n{ref}\nand {sut_server.name} as\n{got}"


def test_zktop_screen_shows_the_server(sut_server):
    _zktop()
    pid, fd = pty.fork()
    if pid == 0:  # the child: zktop on a 120x30 pseudo terminal
        os.environ.update(TERM="xterm", LINES="30", COLUMNS="120")
        os.execv("/usr/bin/python3", ["python3", "/usr/bin/zktop", "--servers", sut_server.hostport])
    screen = b""
    port = str(sut_server.port).encode()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (b"nodecount:" in screen and port in screen):
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    screen += os.read(fd, 65536)
                except OSError:
                    break
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)
    text = screen.decode("utf-8", "replace")
    # The summary line and the server's row (ID 0, its port, mode S for standalone).
    assert "Ensemble -- nodecount:" in text, f"zktop screen:\n{text[-2000:]}"
    assert str(sut_server.port) in text and " S" in text, f"zktop screen:\n{text[-2000:]}"
