"""ZooKeeper's C client against both servers: ``cli_mt``, the shell of
Debian's ``zookeeper-bin`` (``libzookeeper-mt2``, the multi-threaded C
library), drives create/get/set/ls/ls2/exists/delete/sync, a watch, a
sequential and an ephemeral node, and its output must be the same for
Apache ZooKeeper 3.8 and the server under test.

``cli_mt`` reads commands on stdin and prints results asynchronously, so each
command's output is what it printed until it went quiet; lines are compared
sorted within one command (watch events and replies may interleave), with
times, dates, zxids and session ids masked.  Left out: ``config`` (Roster's
``/zookeeper/config`` always holds its membership, docs/compatibility.md),
``myid``, ``reconfig`` and ``addauth`` (no output to compare).
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time

import pytest
from kazoo.client import KazooClient

CLI_MT = os.environ.get("CLI_MT", "/usr/lib/zookeeper/bin/cli_mt")

COMMANDS = [
    "create /c",
    "get /c",
    "set /c world",
    "get /c",
    "exists /c",
    "ls2 /c",
    "wexists /c/w",
    "create /c/w",
    "create +e /c/eph",
    "create +s /c/s",
    "create +s /c/s",
    "create2 /c/c2",
    "ls /c",
    "delete /c/w",
    "delete /c",
    "sync /c",
    "exists /nope",
    "get /nope",
    "set /nope x",
    "delete /nope",
    "create /c",
]

_MASKS = [
    (re.compile(r"time = \d+ msec"), "time = N msec"),
    (re.compile(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}"), "DATE"),
    (re.compile(r"([cm]zxid)=[0-9a-f]+"), r"\1=Z"),
    (re.compile(r"ephemeralOwner = [0-9a-f]+"), "ephemeralOwner = OWNER"),
    (re.compile(r"session id: 0x[0-9a-f]+"), "session id: SID"),
]


def _mask(line: str) -> str:
    for rx, to in _MASKS:
        line = rx.sub(to, line)
    return line


def _transcript(hostport: str) -> list:
    if not os.access(CLI_MT, os.X_OK):
        pytest.fail(f"{CLI_MT} missing: apt-get install zookeeper-bin (scripts/test does)", pytrace=False)
    p = subprocess.Popen([CLI_MT, hostport], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in p.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()

    def until_quiet(quiet=0.2, limit=5.0, want=None):
        got, deadline, last = [], time.monotonic() + limit, time.monotonic()
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.05)
            except queue.Empty:
                if got and (want is None or any(want in g for g in got)) and time.monotonic() - last > quiet:
                    break
                continue
            if line is None:
                break
            got.append(line)
            last = time.monotonic()
        return got

    out = []
    try:
        hello = until_quiet(want="CONNECTED_STATE")
        assert any("CONNECTED_STATE" in x for x in hello), f"cli_mt did not connect:\n{hello}"
        for cmd in COMMANDS:
            p.stdin.write(cmd + "\n")
            p.stdin.flush()
            got = [x for x in (_mask(x) for x in until_quiet()) if x.strip()]
            out.append([cmd, sorted(got)])
        p.stdin.write("quit\n")
        p.stdin.flush()
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return out


def _after_quit(hostport: str) -> list:
    """What another client sees once cli_mt quit: its session is closed, its ephemeral gone."""
    k = KazooClient(hosts=hostport, timeout=10.0)
    k.start(timeout=15.0)
    try:
        return [k.exists("/c/eph") is None, sorted(k.get_children("/c"))]
    finally:
        k.stop()
        k.close()


def test_cli_mt_same_output_on_both_servers(reference_server, sut_server):
    # Both at once (each waits for its own output to go quiet after every command).
    results: dict = {}
    runs = [threading.Thread(target=lambda k=k, hp=hp: results.__setitem__(k, _transcript(hp)))
            for k, hp in (("ref", reference_server.hostport), ("got", sut_server.hostport))]
    for t in runs:
        t.start()
    for t in runs:
        t.join(timeout=120)
    assert set(results) == {"ref", "got"}, "a cli_mt run did not finish (see the error above)"
    ref, got = results["ref"], results["got"]
    for (cmd, a), (_, b) in zip(ref, got):
        assert a == b, f"cli_mt {cmd!r}: zookeeper printed\n{a}\n{sut_server.name} printed\n{b}"
    assert len(ref) == len(got)
    # The commands did what they say on the reference (the comparison means something).
    flat = dict((c, o) for c, o in ref)
    assert any("world" in x for x in flat["get /c"]), ref
    assert any("CREATED_EVENT" in x and "/c/w" in x for x in flat["create /c/w"] + flat["wexists /c/w"]), ref
    after_ref, after_got = _after_quit(reference_server.hostport), _after_quit(sut_server.hostport)
    assert after_ref == after_got, f"after cli_mt quit: zookeeper {after_ref}, {sut_server.name} {after_got}"
    assert after_ref[0] is True, "cli_mt's ephemeral outlived its session on the reference"
    assert len(after_ref[1]) == 3, after_ref
