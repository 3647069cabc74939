"""Kazoo worker processes of the fault suite: register clients, create clients, ephemeral owners.

Each worker is its own OS process (``python workers.py KIND JSON-ARGS``), started inside the hub
namespace by the harness, and writes one JSON event per line to its own file (the history format
of docs/reliability.md): an ``invoke`` before each request and exactly one ``ok``/``fail``/``info``
after it, ``casualty`` when the client itself breaks, ``log`` for anything else. Times are
``time.monotonic() - t0`` with ``t0`` given by the harness, so every process of a run shares one clock.

Classification, the same for every kind of worker:

* ``ok``: the server answered with a result.
* ``fail``: the server answered with an error that proves there was no effect (``BadVersion`` on a
  compare-and-set, ``NodeExists`` on a create, ``NoNode``).
* ``info``: unknown outcome (connection loss, our wait timed out, session expired, anything else).
  The process then continues under a new id (``kazoo-3`` -> ``kazoo-3.1``), Jepsen's rule.
* ``casualty``: the client broke rather than the request: kazoo's "xids do not match" protocol error,
  its connection thread dying (``ConnectionClosedError`` on a client we did not close), or the client not
  connected to any server for more than twice its session timeout (the suite's nemeses always leave a
  majority up and reachable from the hub). The worker then closes that client and carries on with a fresh
  ``KazooClient``, so one casualty is counted once and the run goes on.

Left out: retries (a request is sent once), watches, and multi-ops. Loops are bounded by the run's
duration and by ``max_ops``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import threading
import time

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    NodeExistsError,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError


class Events:
    """Line-buffered JSONL writer on the run's shared monotonic clock."""

    def __init__(self, path: str, t0: float):
        self.f = open(path, "a", buffering=1)
        self.t0 = t0
        self.lock = threading.Lock()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 6)

    def emit(self, **ev) -> dict:
        ev.setdefault("t", self.now())
        with self.lock:
            self.f.write(json.dumps(ev, separators=(",", ":")) + "\n")
        return ev


class XidWatch(logging.Handler):
    """Notices kazoo's connection-thread failures that never reach a request's caller."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed kazoo log call must not kill the worker
            msg = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            msg += f": {record.exc_info[1]!r}"
        if "xids do not match" in msg:
            self.seen.append(("protocol_error", msg[:300]))
        elif "Unhandled exception in connection loop" in msg:
            self.seen.append(("dead_client", msg[:300]))


XIDS = XidWatch()
logging.getLogger("kazoo").addHandler(XIDS)
logging.getLogger("kazoo").setLevel(logging.WARNING)
logging.getLogger("kazoo").propagate = False


class Worker:
    """One logical client: a KazooClient, a process id (renamed after each ``info``), the event file."""

    def __init__(self, args: dict):
        self.args = args
        self.ev = Events(args["out"], args["t0"])
        self.base = args["name"]
        self.gen = 0
        self.p = self.base
        self.hosts = args["hosts"]
        self.session_timeout = float(args.get("session_timeout", 6.0))
        self.op_timeout = float(args.get("op_timeout", self.session_timeout))
        self.deadline = args["t0"] + float(args["duration"])
        self.max_ops = int(args.get("max_ops", 20000))
        self.rng = random.Random(args.get("seed", 0))
        self.zk: KazooClient | None = None
        self.disconnected_since: float | None = None
        self.casualties = 0
        self.reported_xids = 0

    # -- client lifecycle
    def connect(self) -> None:
        """A fresh KazooClient; keeps trying (bounded by the run's deadline) until it has a session."""
        while time.monotonic() < self.deadline + 30:
            zk = KazooClient(
                hosts=self.hosts,
                timeout=self.session_timeout,
                connection_retry=dict(max_tries=-1, delay=0.1, backoff=1.5, max_delay=1.0, max_jitter=0.2),
            )
            zk.add_listener(self._state_listener)
            try:
                zk.start(timeout=self.session_timeout)
            except Exception as e:  # KazooTimeoutError and friends: no server gave a session in time
                self.ev.emit(p=self.p, type="log", f="connect_failed", value=repr(e)[:200])
                self._drop(zk)
                time.sleep(0.5)
                continue
            self.zk = zk
            self.disconnected_since = None
            sid = zk.client_id[0] if zk.client_id else None
            self.ev.emit(p=self.p, type="log", f="connected", value=sid)
            return
        raise SystemExit(f"{self.base}: no session by the end of the run")

    def _state_listener(self, state) -> None:
        if state == KazooState.CONNECTED:
            self.disconnected_since = None
        elif self.disconnected_since is None:
            self.disconnected_since = time.monotonic()

    @staticmethod
    def _drop(zk: KazooClient) -> None:
        try:
            zk.stop()
        except Exception:
            pass
        try:
            zk.close()
        except Exception:
            pass

    def replace_client(self, why: str, absorb_xids: bool = False) -> None:
        self.ev.emit(p=self.p, type="log", f="new_client", value=why)
        if self.zk is not None:
            self._drop(self.zk)  # joins the old connection thread, so its last log lines are in
        if absorb_xids:
            # the casualty was already counted from the request's RuntimeError; the connection
            # thread's own log line about the same failure must not count it twice
            self.reported_xids = len(XIDS.seen)
        self.zk = None
        self.connect()

    def casualty(self, kind: str, detail: str) -> None:
        self.casualties += 1
        self.ev.emit(p=self.p, type="casualty", kind=kind, detail=detail[:300])

    def health(self) -> None:
        """Counts a casualty and replaces the client if it broke or has been disconnected too long."""
        assert self.zk is not None
        if len(XIDS.seen) > self.reported_xids:
            seen = XIDS.seen[self.reported_xids :]
            self.reported_xids = len(XIDS.seen)
            kind = "protocol_error" if any(k == "protocol_error" for k, _ in seen) else "dead_client"
            self.casualty(kind, "; ".join(m for _, m in seen))
            self.replace_client("connection thread died")
            return
        conn = self.zk._connection
        if conn.connection_stopped.is_set() and not self.zk._stopped.is_set():
            self.casualty("dead_client", "kazoo connection thread stopped")
            self.replace_client("dead connection thread")
            return
        ds = self.disconnected_since
        if ds is not None and time.monotonic() - ds > 2 * self.session_timeout:
            self.casualty("dead_client", f"not connected for {time.monotonic() - ds:.1f}s")
            self.replace_client("not reconnected")

    # -- one request
    def request(self, f: str, key, value, call):
        """Runs ``call()`` as one operation; returns ('ok', result) / ('fail', None) / ('info', None)."""
        self.ev.emit(p=self.p, type="invoke", f=f, key=key, value=value)
        try:
            result = call()
        except (BadVersionError, NodeExistsError, NoNodeError) as e:
            self.ev.emit(p=self.p, type="fail", f=f, key=key, value=value, error=type(e).__name__)
            return "fail", None
        except Exception as e:
            self.ev.emit(p=self.p, type="info", f=f, key=key, value=value, error=f"{type(e).__name__}: {e}"[:200])
            self.gen += 1
            self.p = f"{self.base}.{self.gen}"
            text = repr(e)
            if isinstance(e, RuntimeError) and "xids" in text:
                self.casualty("protocol_error", text)
                self.replace_client("protocol error", absorb_xids=True)
            elif isinstance(e, ConnectionClosedError):
                self.casualty("dead_client", text)
                self.replace_client("connection closed")
            elif isinstance(e, SessionExpiredError):
                self.ev.emit(p=self.p, type="log", f="session_expired", value=None)
                self.replace_client("session expired")
            elif not isinstance(e, KazooTimeoutError) and type(e).__name__ not in (
                "ConnectionLoss",
                "OperationTimeoutError",
            ):
                self.casualty("other", text)
                self.replace_client("unexpected error")
            return "info", None
        return "ok", result

    def wait(self, async_result):
        return async_result.get(timeout=self.op_timeout)

    def ops(self):
        """Yields until the deadline or max_ops, checking the client's health before each request."""
        n = 0
        while time.monotonic() < self.deadline and n < self.max_ops:
            self.health()
            yield n
            n += 1
            time.sleep(self.rng.uniform(0.0, float(self.args.get("think", 0.05))))


# ------------------------------------------------------------------ kinds


def decode(data: bytes):
    if not data:
        return None
    return int(data.decode())


def register(args: dict) -> None:
    """Random read / sync_read / write / cas on a few keys; every written value is unique in the run."""
    w = Worker(args)
    w.connect()
    keys = args["keys"]
    vid = int(args["value_base"])
    seen: dict[str, tuple] = {}  # key -> (value, version) of this worker's last ok read
    for _ in w.ops():
        key = w.rng.choice(keys)
        f = w.rng.choice(["read", "sync_read", "write", "write", "cas", "cas"])
        zk = w.zk
        if f == "cas" and key not in seen:
            f = "read"
        if f == "read":
            st, res = w.request("read", key, None, lambda: w.wait(zk.get_async(key)))
            if st == "ok":
                v = decode(res[0])
                seen[key] = (v, res[1].version)
                w.ev.emit(p=w.p, type="ok", f="read", key=key, value=v)
        elif f == "sync_read":

            def sync_get():
                w.wait(zk.sync_async(key))
                return w.wait(zk.get_async(key))

            st, res = w.request("sync_read", key, None, sync_get)
            if st == "ok":
                v = decode(res[0])
                seen[key] = (v, res[1].version)
                w.ev.emit(p=w.p, type="ok", f="sync_read", key=key, value=v)
        elif f == "write":
            vid += 1
            val = vid
            st, res = w.request("write", key, val, lambda: w.wait(zk.set_async(key, str(val).encode(), -1)))
            if st == "ok":
                seen[key] = (val, res.version)
                w.ev.emit(p=w.p, type="ok", f="write", key=key, value=val)
        else:
            expected, version = seen[key]
            vid += 1
            val = vid
            st, res = w.request(
                "cas", key, [expected, val], lambda: w.wait(zk.set_async(key, str(val).encode(), version))
            )
            if st == "ok":
                seen[key] = (val, res.version)
                w.ev.emit(p=w.p, type="ok", f="cas", key=key, value=[expected, val])
            elif st == "fail":
                seen.pop(key, None)
    Worker._drop(w.zk)


def creates(args: dict) -> None:
    """Unique persistent creates and sequential creates, alternating at random."""
    w = Worker(args)
    w.connect()
    widx = args["index"]
    n = 0
    for _ in w.ops():
        zk = w.zk
        if w.rng.random() < 0.5:
            n += 1
            path = f"/faults/unique/c-{widx}-{n}"
            st, res = w.request("create", path, path, lambda: w.wait(zk.create_async(path, b"")))
            if st == "ok":
                w.ev.emit(p=w.p, type="ok", f="create", key=path, value=path)
        else:
            prefix = "/faults/seq/n-"
            st, res = w.request(
                "create_seq", prefix, prefix, lambda: w.wait(zk.create_async(prefix, b"", sequence=True))
            )
            if st == "ok":
                w.ev.emit(p=w.p, type="ok", f="create_seq", key=prefix, value=res)
    Worker._drop(w.zk)


def owner(args: dict) -> None:
    """Creates one ephemeral znode, records its session, then just keeps the session (until killed).

    It never re-creates the znode: when its session expires (because the harness paused it past its
    timeout) it records that and idles. Its events are ``log`` lines (an ephemeral that goes away is not
    a lost create).
    """
    w = Worker(args)
    path = args["path"]
    w.connect()
    sid = w.zk.client_id[0]
    try:
        w.zk.create(path, str(sid).encode(), ephemeral=True)
        w.ev.emit(p=w.p, type="log", f="owner", key=path, value=sid)
    except Exception as e:
        w.ev.emit(p=w.p, type="log", f="owner_failed", key=path, value=repr(e)[:200])
    expired = False
    # Lives until the harness stops it after the final checks (bounded: run + 10 minutes).
    end = w.deadline + 600
    while time.monotonic() < end:
        time.sleep(0.2)
        state = w.zk.client_state
        if not expired and state == "EXPIRED_SESSION":
            expired = True
            w.ev.emit(p=w.p, type="log", f="owner_expired", key=path, value=sid)
        if len(XIDS.seen) > w.reported_xids:
            seen = XIDS.seen[w.reported_xids :]
            w.reported_xids = len(XIDS.seen)
            kind = "protocol_error" if any(k == "protocol_error" for k, _ in seen) else "dead_client"
            w.casualty(kind, "; ".join(m for _, m in seen))


def main() -> None:
    kind, raw = sys.argv[1], sys.argv[2]
    args = json.loads(raw)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    {"register": register, "creates": creates, "owner": owner}[kind](args)


if __name__ == "__main__":
    main()
