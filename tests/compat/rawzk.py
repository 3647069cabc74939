"""A minimal raw ZooKeeper wire-protocol client (jute over TCP).

kazoo 2.11 has no API for container nodes, TTL nodes, persistent watches
(addWatch), multiRead, getEphemerals, getAllChildrenNumber, removeWatches,
checkWatches or whoAmI.  This client speaks those opcodes directly so the
differential tests can cover them.  It is deliberately small and strict:

* one TCP connection to 127.0.0.1, one session, every call bounded by a timeout;
* a reader thread that routes replies by xid and collects watch events
  (xid -1) in arrival order, and pings while idle;
* server errors come back as ``ZKError(code)`` so traces can record the code.

It is a test helper, not a general client: no reconnects, no chroot, no SASL.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import namedtuple

# ---- opcodes (org.apache.zookeeper.ZooDefs.OpCode)
OP_NOTIFICATION = 0
OP_CREATE = 1
OP_DELETE = 2
OP_EXISTS = 3
OP_GETDATA = 4
OP_SETDATA = 5
OP_GETACL = 6
OP_SETACL = 7
OP_GETCHILDREN = 8
OP_SYNC = 9
OP_PING = 11
OP_GETCHILDREN2 = 12
OP_CHECK = 13
OP_MULTI = 14
OP_CREATE2 = 15
OP_RECONFIG = 16
OP_CHECKWATCHES = 17
OP_REMOVEWATCHES = 18
OP_CREATECONTAINER = 19
OP_DELETECONTAINER = 20
OP_CREATETTL = 21
OP_MULTIREAD = 22
OP_AUTH = 100
OP_SETWATCHES = 101
OP_SASL = 102
OP_GETEPHEMERALS = 103
OP_GETALLCHILDRENNUMBER = 104
OP_SETWATCHES2 = 105
OP_ADDWATCH = 106
OP_WHOAMI = 107
OP_CLOSESESSION = -11
OP_ERROR = -1

# ---- CreateMode flags
PERSISTENT = 0
EPHEMERAL = 1
PERSISTENT_SEQUENTIAL = 2
EPHEMERAL_SEQUENTIAL = 3
CONTAINER = 4
PERSISTENT_WITH_TTL = 5
PERSISTENT_SEQUENTIAL_WITH_TTL = 6

# ---- AddWatchMode
ADD_WATCH_PERSISTENT = 0
ADD_WATCH_PERSISTENT_RECURSIVE = 1

# ---- WatcherType for removeWatches / checkWatches
WATCHER_CHILDREN = 1
WATCHER_DATA = 2
WATCHER_ANY = 3
WATCHER_PERSISTENT = 4
WATCHER_PERSISTENT_RECURSIVE = 5

# ---- event types / states
EVENT_TYPES = {
    -1: "None",
    1: "NodeCreated",
    2: "NodeDeleted",
    3: "NodeDataChanged",
    4: "NodeChildrenChanged",
    5: "DataWatchRemoved",
    6: "ChildWatchRemoved",
    7: "PersistentWatchRemoved",
}
KEEPER_STATES = {
    -112: "Expired",
    -1: "Unknown",
    0: "Disconnected",
    3: "SyncConnected",
    4: "AuthFailed",
    5: "ConnectedReadOnly",
    6: "SaslAuthenticated",
    7: "Closed",
}

# ---- error codes (KeeperException.Code)
ERROR_NAMES = {
    0: "OK",
    -1: "SYSTEMERROR",
    -2: "RUNTIMEINCONSISTENCY",
    -3: "DATAINCONSISTENCY",
    -4: "CONNECTIONLOSS",
    -5: "MARSHALLINGERROR",
    -6: "UNIMPLEMENTED",
    -7: "OPERATIONTIMEOUT",
    -8: "BADARGUMENTS",
    -13: "NEWCONFIGNOQUORUM",
    -14: "RECONFIGINPROGRESS",
    -15: "UNKNOWNSESSION",
    -100: "APIERROR",
    -101: "NONODE",
    -102: "NOAUTH",
    -103: "BADVERSION",
    -108: "NOCHILDRENFOREPHEMERALS",
    -110: "NODEEXISTS",
    -111: "NOTEMPTY",
    -112: "SESSIONEXPIRED",
    -113: "INVALIDCALLBACK",
    -114: "INVALIDACL",
    -115: "AUTHFAILED",
    -118: "SESSIONMOVED",
    -119: "NOTREADONLY",
    -120: "EPHEMERALONLOCALSESSION",
    -121: "NOWATCHER",
    -122: "REQUESTTIMEOUT",
    -123: "RECONFIGDISABLED",
    -124: "SESSIONCLOSEDREQUIRESASLAUTH",
    -125: "QUOTAEXCEEDED",
    -127: "THROTTLEDOP",
}

Stat = namedtuple(
    "Stat",
    "czxid mzxid ctime mtime version cversion aversion ephemeralOwner dataLength numChildren pzxid",
)
_STAT = struct.Struct("!qqqqiiiqiiq")
Event = namedtuple("Event", "type state path")
ACL = namedtuple("ACL", "perms scheme id")
OPEN_ACL_UNSAFE = [ACL(31, "world", "anyone")]


class ZKError(Exception):
    """A non-zero error code in a reply header (or a multi/multiRead slot)."""

    def __init__(self, code: int, what: str = ""):
        self.code = code
        self.name = ERROR_NAMES.get(code, f"CODE{code}")
        super().__init__(f"{self.name}({code}) {what}".strip())


class ConnectionClosed(Exception):
    pass


class SessionExpired(Exception):
    """The server answered the ConnectRequest with a zero timeout/session."""

    def __init__(self, msg, timeout=None, session_id=None, passwd=None):
        super().__init__(msg)
        self.timeout = timeout
        self.session_id = session_id
        self.passwd = passwd


# ---------------------------------------------------------------- jute encoding
class W:
    def __init__(self):
        self.b = bytearray()

    def int(self, v):
        self.b += struct.pack("!i", v)
        return self

    def long(self, v):
        self.b += struct.pack("!q", v)
        return self

    def bool(self, v):
        self.b += b"\x01" if v else b"\x00"
        return self

    def buffer(self, v):
        if v is None:
            return self.int(-1)
        self.int(len(v))
        self.b += v
        return self

    def string(self, v):
        return self.buffer(None if v is None else v.encode("utf-8"))

    def acls(self, acls):
        self.int(len(acls))
        for a in acls:
            self.int(a.perms).string(a.scheme).string(a.id)
        return self

    def strings(self, items):
        self.int(len(items))
        for s in items:
            self.string(s)
        return self


class R:
    def __init__(self, b: bytes, off: int = 0):
        self.b = b
        self.off = off

    def _take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.off)[0]
        self.off += struct.calcsize(fmt)
        return v

    def int(self):
        return self._take("!i")

    def long(self):
        return self._take("!q")

    def bool(self):
        return self._take("!B") != 0

    def buffer(self):
        n = self.int()
        if n < 0:
            return None
        v = bytes(self.b[self.off : self.off + n])
        self.off += n
        return v

    def string(self):
        v = self.buffer()
        return None if v is None else v.decode("utf-8")

    def strings(self):
        n = self.int()
        return [self.string() for _ in range(max(n, 0))]

    def stat(self):
        v = Stat._make(_STAT.unpack_from(self.b, self.off))
        self.off += _STAT.size
        return v

    def acls(self):
        n = self.int()
        out = []
        for _ in range(max(n, 0)):
            perms = self.int()
            out.append(ACL(perms, self.string(), self.string()))
        return out

    def remaining(self):
        return len(self.b) - self.off


# ---------------------------------------------------------------- the client
class RawClient:
    """One session over one connection.  All calls block at most ``timeout`` s."""

    def __init__(
        self,
        host: str,
        port: int,
        session_timeout_ms: int = 10000,
        timeout: float = 10.0,
        session_id: int = 0,
        passwd: bytes = b"\x00" * 16,
        last_zxid: int = 0,
    ):
        assert host in ("127.0.0.1", "localhost", "::1"), "loopback only"
        self.host, self.port, self.timeout = host, port, timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._wlock = threading.Lock()
        self._cv = threading.Condition()
        self._replies = {}
        self.events: list[Event] = []
        self._closed = False
        self._xid = 0
        self.last_zxid = last_zxid
        # ConnectRequest: protocolVersion, lastZxidSeen, timeOut, sessionId, passwd, readOnly
        req = W().int(0).long(last_zxid).int(session_timeout_ms).long(session_id).buffer(passwd).bool(False)
        self._send_frame(bytes(req.b))
        r = R(self._recv_frame())
        self.protocol_version = r.int()
        self.negotiated_timeout = r.int()
        self.session_id = r.long()
        self.passwd = r.buffer()
        self.read_only = r.bool() if r.remaining() else None
        if self.negotiated_timeout <= 0 or self.session_id == 0:
            self.sock.close()
            raise SessionExpired(
                f"connect answered timeout={self.negotiated_timeout} session=0x{self.session_id:x}",
                self.negotiated_timeout,
                self.session_id,
                self.passwd,
            )
        self.sock.settimeout(None)
        self._last_send = time.monotonic()
        self._reader = threading.Thread(target=self._read_loop, name="rawzk-reader", daemon=True)
        self._reader.start()
        self._pinger = threading.Thread(target=self._ping_loop, name="rawzk-pinger", daemon=True)
        self._pinger.start()

    # -- framing
    def _send_frame(self, payload: bytes):
        with self._wlock:
            self.sock.sendall(struct.pack("!i", len(payload)) + payload)
            self._last_send = time.monotonic()

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionClosed("server closed the connection")
            buf += chunk
        return bytes(buf)

    def _recv_frame(self):
        (n,) = struct.unpack("!i", self._recv_exact(4))
        if n < 0 or n > 64 * 1024 * 1024:
            raise ConnectionClosed(f"bad frame length {n}")
        return self._recv_exact(n)

    def _read_loop(self):
        try:
            while True:
                frame = self._recv_frame()
                r = R(frame)
                xid, zxid, err = r.int(), r.long(), r.int()
                if xid == -1:  # watch event
                    ev = Event(EVENT_TYPES.get(r.int(), "?"), KEEPER_STATES.get(r.int(), "?"), r.string())
                    with self._cv:
                        self.events.append(ev)
                        self._cv.notify_all()
                    continue
                if xid == -2:  # ping reply
                    continue
                if zxid > 0:
                    self.last_zxid = zxid
                with self._cv:
                    self._replies[xid] = (err, frame, r.off, zxid)
                    self._cv.notify_all()
        except (OSError, ConnectionClosed, struct.error):
            pass
        finally:
            with self._cv:
                self._closed = True
                self._cv.notify_all()

    def _ping_loop(self):
        interval = max(self.negotiated_timeout / 3000.0, 0.5)
        while True:
            time.sleep(0.25)
            with self._cv:
                if self._closed:
                    return
            if time.monotonic() - self._last_send > interval:
                try:
                    self._send_frame(bytes(W().int(-2).int(OP_PING).b))
                except OSError:
                    return

    # -- requests
    def call(self, op: int, body: bytes = b"", timeout: float | None = None):
        """Send one request; return (R positioned at the body, zxid); raise ZKError."""
        with self._cv:
            self._xid += 1
            xid = self._xid
        self._send_frame(bytes(W().int(xid).int(op).b) + body)
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cv:
            while xid not in self._replies:
                if self._closed:
                    raise ConnectionClosed(f"connection closed waiting for op {op}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply to op {op} xid {xid} within {timeout or self.timeout}s")
                self._cv.wait(left)
            err, frame, off, zxid = self._replies.pop(xid)
        if err != 0:
            raise ZKError(err, f"op={op}")
        return R(frame, off), zxid

    def wait_events(self, n: int, timeout: float = 5.0) -> list[Event]:
        """Block until at least n events arrived (or timeout); return a copy of all."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while len(self.events) < n and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            return list(self.events)

    def barrier(self):
        """A round trip: every event the server queued before now has arrived."""
        self.exists("/")
        return list(self.events)

    def take_events(self):
        """barrier(), then return the events received so far and forget them."""
        self.exists("/")
        with self._cv:
            evs, self.events = self.events, []
        return evs

    # -- operations
    def create(self, path, data=b"", acl=None, flags=PERSISTENT, ttl=None):
        acl = OPEN_ACL_UNSAFE if acl is None else acl
        w = W().string(path).buffer(data).acls(acl).int(flags)
        if ttl is not None:
            w.long(ttl)
            op = OP_CREATETTL
        elif flags == CONTAINER:
            op = OP_CREATECONTAINER
        else:
            op = OP_CREATE2
        r, _ = self.call(op, bytes(w.b))
        return r.string(), r.stat()

    def create_container(self, path, data=b"", acl=None):
        return self.create(path, data, acl, flags=CONTAINER)

    def create_ttl(self, path, ttl_ms, data=b"", acl=None, sequential=False):
        flags = PERSISTENT_SEQUENTIAL_WITH_TTL if sequential else PERSISTENT_WITH_TTL
        return self.create(path, data, acl, flags=flags, ttl=ttl_ms)

    def create_with_opcode(self, op, path, data=b"", flags=PERSISTENT, ttl=None):
        """Any create-like opcode with any flags, to probe the server's checks."""
        w = W().string(path).buffer(data).acls(OPEN_ACL_UNSAFE).int(flags)
        if ttl is not None:
            w.long(ttl)
        r, _ = self.call(op, bytes(w.b))
        if op == OP_CREATE:
            return r.string()
        return r.string(), r.stat()

    def delete(self, path, version=-1):
        self.call(OP_DELETE, bytes(W().string(path).int(version).b))

    def exists(self, path, watch=False):
        try:
            r, _ = self.call(OP_EXISTS, bytes(W().string(path).bool(watch).b))
        except ZKError as e:
            if e.code == -101:
                return None
            raise
        return r.stat()

    def get(self, path, watch=False):
        r, _ = self.call(OP_GETDATA, bytes(W().string(path).bool(watch).b))
        return r.buffer(), r.stat()

    def set(self, path, data, version=-1):
        r, _ = self.call(OP_SETDATA, bytes(W().string(path).buffer(data).int(version).b))
        return r.stat()

    def get_children(self, path, watch=False):
        r, _ = self.call(OP_GETCHILDREN2, bytes(W().string(path).bool(watch).b))
        return r.strings(), r.stat()

    def get_acl(self, path):
        r, _ = self.call(OP_GETACL, bytes(W().string(path).b))
        return r.acls(), r.stat()

    def sync(self, path):
        r, _ = self.call(OP_SYNC, bytes(W().string(path).b))
        return r.string()

    def add_watch(self, path, mode=ADD_WATCH_PERSISTENT):
        self.call(OP_ADDWATCH, bytes(W().string(path).int(mode).b))

    def remove_watches(self, path, watcher_type):
        self.call(OP_REMOVEWATCHES, bytes(W().string(path).int(watcher_type).b))

    def check_watches(self, path, watcher_type):
        self.call(OP_CHECKWATCHES, bytes(W().string(path).int(watcher_type).b))

    def get_ephemerals(self, prefix="/"):
        r, _ = self.call(OP_GETEPHEMERALS, bytes(W().string(prefix).b))
        return r.strings()

    def get_all_children_number(self, path):
        r, _ = self.call(OP_GETALLCHILDRENNUMBER, bytes(W().string(path).b))
        return r.int()

    def whoami(self):
        r, _ = self.call(OP_WHOAMI)
        n = r.int()
        return [(r.string(), r.string()) for _ in range(max(n, 0))]

    def add_auth(self, scheme, credential: bytes):
        """AuthPacket (opcode 100, xid -4)."""
        body = W().int(0).string(scheme).buffer(credential)
        self._special_call(-4, OP_AUTH, bytes(body.b), "auth")

    def _special_call(self, xid, op, body: bytes, what: str):
        """Requests with a fixed negative xid (auth -4, setWatches -8)."""
        self._send_frame(bytes(W().int(xid).int(op).b) + body)
        deadline = time.monotonic() + self.timeout
        with self._cv:
            while xid not in self._replies:
                if self._closed:
                    raise ConnectionClosed(f"connection closed during {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply to {what}")
                self._cv.wait(left)
            err, _, _, _ = self._replies.pop(xid)
        if err:
            raise ZKError(err, what)

    def set_watches(self, relative_zxid, data=(), exist=(), child=()):
        """SetWatches (opcode 101, xid -8), as clients send after a reconnect."""
        body = W().long(relative_zxid).strings(list(data)).strings(list(exist)).strings(list(child))
        self._special_call(-8, OP_SETWATCHES, bytes(body.b), "setWatches")

    def set_watches2(self, relative_zxid, data=(), exist=(), child=(), persistent=(), recursive=()):
        """SetWatches2 (opcode 105, xid -8): also re-adds persistent watches."""
        body = W().long(relative_zxid)
        for lst in (data, exist, child, persistent, recursive):
            body.strings(list(lst))
        self._special_call(-8, OP_SETWATCHES2, bytes(body.b), "setWatches2")

    def multi_read(self, ops):
        """ops: list of ("get"|"children", path).  Returns a list whose items are
        ("data", bytes, Stat) / ("children", [names]) / ("error", code)."""
        w = W()
        for kind, path in ops:
            w.int(OP_GETDATA if kind == "get" else OP_GETCHILDREN).bool(False).int(-1)
            w.string(path).bool(False)
        w.int(-1).bool(True).int(-1)
        r, _ = self.call(OP_MULTIREAD, bytes(w.b))
        return self._read_multi(r)

    def multi(self, ops):
        """ops: list of tuples ("create", path, data, flags) / ("delete", path, version)
        / ("set", path, data, version) / ("check", path, version).  Returns the
        raw per-op results (no exception on failure: the caller compares them)."""
        w = W()
        for op in ops:
            kind = op[0]
            if kind == "create":
                _, path, data, flags = op
                w.int(OP_CREATE).bool(False).int(-1).string(path).buffer(data).acls(OPEN_ACL_UNSAFE).int(flags)
            elif kind == "create2":
                _, path, data, flags = op
                w.int(OP_CREATE2).bool(False).int(-1).string(path).buffer(data).acls(OPEN_ACL_UNSAFE).int(flags)
            elif kind == "delete":
                _, path, version = op
                w.int(OP_DELETE).bool(False).int(-1).string(path).int(version)
            elif kind == "set":
                _, path, data, version = op
                w.int(OP_SETDATA).bool(False).int(-1).string(path).buffer(data).int(version)
            elif kind == "check":
                _, path, version = op
                w.int(OP_CHECK).bool(False).int(-1).string(path).int(version)
            else:
                raise ValueError(kind)
        w.int(-1).bool(True).int(-1)
        r, _ = self.call(OP_MULTI, bytes(w.b))
        return self._read_multi(r)

    @staticmethod
    def _read_multi(r: R):
        out = []
        while True:
            typ, done, err = r.int(), r.bool(), r.int()
            if done:
                break
            if typ == OP_ERROR:
                out.append(("error", r.int()))
            elif typ == OP_GETDATA:
                data = r.buffer()
                out.append(("data", data, r.stat()))
            elif typ == OP_GETCHILDREN:
                out.append(("children", r.strings()))
            elif typ == OP_CREATE:
                out.append(("create", r.string()))
            elif typ == OP_CREATE2:
                path = r.string()
                out.append(("create2", path, r.stat()))
            elif typ == OP_DELETE:
                out.append(("delete",))
            elif typ == OP_SETDATA:
                out.append(("set", r.stat()))
            elif typ == OP_CHECK:
                out.append(("check",))
            else:
                out.append(("type", typ, err))
                break
        return out

    def close(self, timeout: float = 5.0):
        """closeSession, then close the socket (idempotent)."""
        if not self._closed:
            try:
                self.call(OP_CLOSESESSION, timeout=timeout)
            except (ZKError, ConnectionClosed, TimeoutError, OSError):
                pass
        self.drop()

    def drop(self):
        """Close the TCP connection without ending the session."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._reader.join(timeout=5)
        with self._cv:
            self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
