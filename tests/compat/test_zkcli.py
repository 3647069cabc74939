"""zkCli.sh (ZooKeeper 3.8's own Java CLI) against the server: a third,
independent client.

Each step runs ``/usr/share/zookeeper/bin/zkCli.sh -server 127.0.0.1:PORT <cmd>``
as a fresh JVM (one session per step; zkCli exits WITHOUT closing its session,
so an ephemeral it creates lives on until the session times out) and checks
the exit code, stdout and stderr line by line (stat lines by regex).  The same
expectations run against ZooKeeper itself, which proves them.
"""

import os
import re
import signal
import subprocess

import pytest

from servers import ZK_CLI

DATE = r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d [A-Z]+ \d{4}"
EPOCH = "Thu Jan 01 00:00:00 UTC 1970"
HEX = r"0x[0-9a-f]+"
CONNECTED = "WatchedEvent state:SyncConnected type:None path:null"


def stat(**f):
    """Regexes for zkCli's stat block; fields not given match any value."""

    def v(name, default):
        return re.escape(str(f[name])) if name in f else default

    return [
        rf"cZxid = {v('cZxid', HEX)}",
        rf"ctime = {v('ctime', DATE)}",
        rf"mZxid = {v('mZxid', HEX)}",
        rf"mtime = {v('mtime', DATE)}",
        rf"pZxid = {v('pZxid', HEX)}",
        rf"cversion = {v('cversion', '-?[0-9]+')}",
        rf"dataVersion = {v('dataVersion', '[0-9]+')}",
        rf"aclVersion = {v('aclVersion', '[0-9]+')}",
        rf"ephemeralOwner = {v('ephemeralOwner', HEX)}",
        rf"dataLength = {v('dataLength', '[0-9]+')}",
        rf"numChildren = {v('numChildren', '[0-9]+')}",
    ]


def lit(*lines):
    return [re.escape(x) for x in lines]


# (args, exit code, stdout lines after the connection banner, stderr lines)
STEPS = [
    (["create", "/cli", "hello"], 0, [], lit("Created /cli")),
    (["create", "/cli", "again"], 1, [], lit("Node already exists: /cli")),
    (["get", "/cli"], 0, lit("hello"), []),
    (["set", "/cli", "world"], 0, [], []),
    (["get", "-s", "/cli"], 0, lit("world") + stat(dataVersion=1, dataLength=5, numChildren=0, cversion=0, aclVersion=0, ephemeralOwner="0x0"), []),
    (["set", "-v", "5", "/cli", "x"], 1, [], lit("version No is not valid : /cli")),
    (["create", "/cli/missing/c"], 1, [], lit("Node does not exist: /cli/missing/c")),
    (["create", "/cli/zeta"], 0, [], lit("Created /cli/zeta")),
    (["create", "/cli/alpha", "adata"], 0, [], lit("Created /cli/alpha")),
    (["create", "/cli/mid"], 0, [], lit("Created /cli/mid")),
    (["create", "-s", "/cli/s-", "seq"], 0, [], lit("Created /cli/s-0000000003")),
    (["create", "-c", "/cli/cont"], 0, [], lit("Created /cli/cont")),
    (["create", "-t", "600000", "/cli/ttl"], 0, [], lit("Created /cli/ttl")),
    (["ls", "/cli"], 0, lit("[alpha, cont, mid, s-0000000003, ttl, zeta]"), []),
    (
        ["ls", "-R", "/cli"],
        0,
        lit("/cli", "/cli/alpha", "/cli/cont", "/cli/mid", "/cli/s-0000000003", "/cli/ttl", "/cli/zeta"),
        [],
    ),
    (["stat", "/cli"], 0, stat(cversion=6, numChildren=6, dataVersion=1, dataLength=5, ephemeralOwner="0x0"), []),
    (["ls", "-s", "/"], 0, lit("[cli, zookeeper]") + stat(cZxid="0x0", ctime=EPOCH, mZxid="0x0", mtime=EPOCH, cversion=0, numChildren=2, dataVersion=0, dataLength=0, ephemeralOwner="0x0"), []),
    (["stat", "/nope"], 1, [], lit("Node does not exist: /nope")),
    (["delete", "/cli"], 1, [], lit("Node not empty: /cli")),
    (["delete", "-v", "3", "/cli/zeta"], 1, [], lit("version No is not valid : /cli/zeta")),
    (["delete", "/cli/zeta"], 0, [], []),
    (["setAcl", "/cli/alpha", "world:anyone:r"], 0, [], []),
    (["getAcl", "/cli/alpha"], 0, lit("'world,'anyone", ": r"), []),
    (["set", "/cli/alpha", "x"], 1, [], lit("Insufficient permission : /cli/alpha")),
    (["get", "/cli/alpha"], 0, lit("adata"), []),
    (["getAcl", "/"], 0, lit("'world,'anyone", ": cdrwa"), []),
    (["sync", "/cli"], 0, lit("Sync is OK"), []),
    (["whoami"], 0, lit("Auth scheme: User", "ip: 127.0.0.1"), []),
    (["getAllChildrenNumber", "/cli"], 0, lit("5"), []),
    (["getEphemerals", "/"], 0, lit("[]"), []),
    (["ls", "/zookeeper"], 0, lit("[config, quota]"), []),
    # zkCli exits without closeSession: the ephemeral outlives the process
    (["create", "-e", "/cli-eph", "e"], 0, [], lit("Created /cli-eph")),
    (["ls", "/"], 0, lit("[cli, cli-eph, zookeeper]"), []),
    (["deleteall", "/cli"], 0, [], []),
    (["get", "/cli"], 1, [], lit("Node does not exist: /cli")),
    (["ls", "/"], 0, lit("[cli-eph, zookeeper]"), []),
]


def run_cli(hostport: str, args: list[str], timeout: float = 60.0):
    env = dict(os.environ)
    env["TZ"] = "UTC"
    env["CLIENT_JVMFLAGS"] = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx128m"
    p = subprocess.Popen(
        [str(ZK_CLI), "-server", hostport, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # zkCli.sh runs java as a child: kill the group
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(f"zkCli {args} did not finish within {timeout}s\nstdout:\n{out}\nstderr:\n{err}")
    return p.returncode, out, err


def _body(out: str):
    """The command's own output: zkCli's connection chatter removed. The SyncConnected banner is
    printed by zkCli's event thread, so on a loaded machine it can come after the command's output, or
    not at all before the JVM exits; it is dropped wherever it is. `None` if zkCli never got as far as
    "Connecting to"."""
    lines = out.splitlines()
    if not any(l.startswith("Connecting to ") for l in lines):
        return None
    body = [
        l
        for l in lines
        if not l.startswith("Connecting to ") and l not in ("WATCHER::", CONNECTED)
    ]
    while body and not body[0].strip():
        body.pop(0)
    while body and not body[-1].strip():
        body.pop()
    return body


def _err_lines(err: str):
    return [l for l in err.splitlines() if l.strip() and not l.startswith("SLF4J")]


def _match(patterns, lines):
    if len(patterns) != len(lines):
        return False
    return all(re.fullmatch(p, l) for p, l in zip(patterns, lines))


@pytest.mark.parametrize("side", ["zookeeper", "server_under_test"])
def test_zkcli(side, request):
    if not ZK_CLI.exists():
        pytest.fail(f"{ZK_CLI} is missing: install Debian's zookeeper package (scripts/test does)")
    server = request.getfixturevalue("reference_server" if side == "zookeeper" else "sut_server")
    failures = []
    for args, rc, want_out, want_err in STEPS:
        code, out, err = run_cli(server.hostport, args)
        body = _body(out)
        errs = _err_lines(err)
        problems = []
        if body is None:
            problems.append("never started connecting (no \"Connecting to\" line)")
            body = out.splitlines()
        if code != rc:
            problems.append(f"exit code {code}, want {rc}")
        if not _match(want_out, body):
            problems.append(f"stdout {body!r}\n      want {want_out!r}")
        if not _match(want_err, errs):
            problems.append(f"stderr {errs!r}\n      want {want_err!r}")
        if problems:
            failures.append(f"zkCli {' '.join(args)}:\n    " + "\n    ".join(problems))
    assert not failures, f"{len(failures)} zkCli step(s) failed against {server.name}:\n" + "\n".join(failures)


# ---------------------------------------------------------------- one interactive session
# Every zkCli command that makes sense against a standalone server, typed into one zkCli
# session (stdin), against both servers; the outputs must be equal once masked.  Left out
# (deliberate differences, docs/compatibility.md): `config` and `reconfig` (Roster's
# /zookeeper/config always holds its membership, reconfig is enabled), and the usage line
# of `listquota` (Roster does not track quota usage: the masked "Output stat" line).
INTERACTIVE = [
    "create /i x",
    "create -e /i/eph e",
    "create -s /i/s- s",
    "create -c /i/cont",
    "create -t 600000 /i/ttl",
    "get -s /i",
    "get -w /i",
    "set -s /i y",
    "ls -w /i",
    "create /i/c",
    "stat -w /i",
    "delete -v 0 /i/c",
    "addWatch /i",
    "set /i z",
    "addWatch -m PERSISTENT /i/p",
    "create /i/p",
    "printwatches off",
    "set /i/p quiet",
    "printwatches on",
    "removewatches /i -a",
    "removewatches /i/p -d",
    "getAcl -s /i",
    "setAcl -s /i world:anyone:cdrwa",
    "setAcl -v 7 /i world:anyone:cdrwa",
    "addauth digest u:p",
    "whoami",
    "create /i/auth a auth::cdrwa",
    "getAcl /i/auth",
    "getAllChildrenNumber /i",
    "getEphemerals /i",
    "ls -R /i",
    "ls -s /i",
    "sync /i",
    "setquota -n 5 /i",
    "listquota /i",
    "delquota /i",
    "listquota /i",
    "version",
    "history",
    "redo 1",
    "deleteall /i",
    "ls /",
    "close",
    "connect {hostport}",
    "ls /",
    "quit",
]

_CLI_MASKS = [
    (re.compile(DATE), "DATE"),
    (re.compile(HEX), "0xH"),
    (re.compile(r"^Output stat for (\S+) .*$"), r"Output stat for \1 (masked: usage not tracked by Roster)"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
    (re.compile(r"digest,'u:\S+"), "digest,'u:HASH"),
    # zkCli compares the new quota with the usage ZooKeeper tracks (Roster tracks none)
    (re.compile(r"^\[Warning\]: the count quota you create is less than the existing count:\d+$"), ""),
]


def _interactive(hostport: str) -> tuple[list, list]:
    """(output lines in order, sorted watch events) of one zkCli session."""
    env = dict(os.environ, TZ="UTC", CLIENT_JVMFLAGS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx128m")
    script = "".join(c.format(hostport=hostport) + "\n" for c in INTERACTIVE)
    p = subprocess.run([str(ZK_CLI), "-server", hostport], input=script, capture_output=True,
                       text=True, env=env, timeout=90, start_new_session=True)
    lines, events = [], []
    for line in (p.stdout + p.stderr).splitlines():
        if not line.strip() or line.startswith(("SLF4J", "WATCHER::")) or re.match(r"^\d+ \[", line):
            continue
        for rx, to in _CLI_MASKS:
            line = rx.sub(to, line)
        if not line:
            continue
        (events if line.startswith("WatchedEvent") else lines).append(line)
    return lines, sorted(events)


def test_zkcli_every_command_in_one_session(reference_server, sut_server):
    if not ZK_CLI.exists():
        pytest.fail(f"{ZK_CLI} is missing: install Debian's zookeeper package (scripts/test does)")
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(2) as ex:
        ref_f = ex.submit(_interactive, reference_server.hostport)
        got_f = ex.submit(_interactive, sut_server.hostport)
        (ref, ref_ev), (got, got_ev) = ref_f.result(), got_f.result()
    import difflib

    diff = "\n".join(difflib.unified_diff(ref, got, "zookeeper", sut_server.name, lineterm="", n=2))
    assert ref == got, f"zkCli output differs:\n{diff}"
    # zkCli prints an event only if `printwatches` is on when its event thread gets to it, so the
    # NodeCreated of /i/p (fired by the command just before `printwatches off`) and the
    # NodeDataChanged of /i/p (fired while it is off, just before `printwatches on`) print or not
    # depending on that thread's speed (races inside zkCli, each seen under load, the second on
    # ZooKeeper itself): they are left out of the comparison; every other event is compared.
    racy = {
        "WatchedEvent state:SyncConnected type:NodeCreated path:/i/p",
        "WatchedEvent state:SyncConnected type:NodeDataChanged path:/i/p",
    }
    ref_ev = [e for e in ref_ev if e not in racy]
    got_ev = [e for e in got_ev if e not in racy]
    assert ref_ev == got_ev, f"zkCli watch events differ:\nzookeeper {ref_ev}\n{sut_server.name} {got_ev}"
    # The session did what the commands say on the reference (the comparison means something).
    assert "Created /i/s-0000000001" in ref and "ZooKeeper CLI version" in " ".join(ref), ref
    assert any("NodeDataChanged path:/i" in e for e in ref_ev), ref_ev
