"""Malformed requests after a valid handshake, for every opcode -20..200.

``probe_all(port, base)`` sends, for every opcode, (1) a garbage body (24
bytes from a generator seeded with the opcode, so both servers get the same
bytes) and (2) a valid body followed by trailing bytes, each followed by a
barrier (``exists /``).  What came back before the barrier's reply is the
answer: a list of ``[xid, err]`` replies (``xid`` is ``"own"`` when it is the
request's xid) and ``"closed"`` when the server closed the connection.  After
an Unimplemented or a closeSession reply ZooKeeper closes the connection from
another thread, so the barrier may still be answered: there the probe waits up
to 1 s for the close itself (``"closed"`` or ``"open"``).  A connection is
reused while the server leaves it open; a closed one is replaced by a new
session.

Left out: what the reply bodies hold (only the header's error code is
compared; the differential scenarios check bodies of valid requests).
"""

from __future__ import annotations

import random
import socket
import struct

from rawzk import W

OPCODES = range(-20, 201)
BARRIER_XID = 0x7FFF0000
UNIMPLEMENTED = -6
CLOSE_SESSION = -11
UNIMPLEMENTED_CLOSE_S = 1.0
TRAILING = b"\x00\x01\x02\xff\xfe\xfd\xfc"


def garbage(op: int) -> bytes:
    return random.Random(op * 7919 + 17).randbytes(24)


def valid_body(op: int, base: str) -> bytes:
    """A well-formed body of opcode ``op`` (empty for bodiless and unknown opcodes)."""
    p = f"{base}/v{op & 0xFFFF}"
    acl = W().int(1).int(31).string("world").string("anyone")
    bodies = {
        1: lambda: W().string(p).buffer(b"d").acls([]).int(0),  # empty ACL: InvalidACL, no node
        2: lambda: W().string(f"{base}/missing").int(-1),
        3: lambda: W().string(base).bool(False),
        4: lambda: W().string(base).bool(False),
        5: lambda: W().string(f"{base}/missing").buffer(b"x").int(-1),
        6: lambda: W().string(base),
        7: lambda: W().string(f"{base}/missing").int(1).int(31).string("world").string("anyone").int(-1),
        8: lambda: W().string(base).bool(False),
        9: lambda: W().string(base),
        12: lambda: W().string(base).bool(False),
        14: lambda: W().int(2).bool(False).int(-1).string(f"{base}/missing").int(-1).int(-1).bool(True).int(-1),
        15: lambda: W().string(f"{base}/missing/x").buffer(b"d").int(1).int(31).string("world").string("anyone").int(0),
        17: lambda: W().string(base).int(2),
        18: lambda: W().string(base).int(2),
        19: lambda: W().string(f"{base}/missing/x").buffer(b"").int(1).int(31).string("world").string("anyone").int(4),
        21: lambda: W().string(f"{base}/missing/x").buffer(b"").int(1).int(31).string("world").string("anyone").int(5).long(1000),
        22: lambda: W().int(4).bool(False).int(-1).string(base).bool(False).int(-1).bool(True).int(-1),
        100: lambda: W().int(0).string("digest").buffer(b"u:p"),
        101: lambda: W().long(0).strings([]).strings([]).strings([]),
        102: lambda: W().buffer(b""),
        103: lambda: W().string(base),
        104: lambda: W().string(base),
        105: lambda: W().long(0).strings([]).strings([]).strings([]).strings([]).strings([]),
        106: lambda: W().string(base).int(0),
    }
    del acl
    f = bodies.get(op)
    return bytes(f().b) if f else b""


class Conn:
    def __init__(self, port: int, timeout: float = 5.0):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        req = W().int(0).long(0).int(30000).long(0).buffer(b"\x00" * 16).bool(False)
        self._send(bytes(req.b))
        self._frame()  # ConnectResponse
        self.xid = 0
        self.closed = False

    def _send(self, payload: bytes):
        self.sock.sendall(struct.pack("!i", len(payload)) + payload)

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return bytes(buf)

    def _frame(self) -> bytes:
        (n,) = struct.unpack("!i", self._exact(4))
        return self._exact(n)

    def ask(self, op: int, body: bytes) -> list:
        self.xid += 1
        xid = self.xid
        barrier = bytes(W().int(BARRIER_XID).int(3).string("/").bool(False).b)
        try:
            self._send(struct.pack("!ii", xid, op) + body)
            self._send(barrier)
        except OSError:
            self.closed = True
            return ["closed"]
        got: list = []
        while True:
            try:
                frame = self._frame()
            except (OSError, ConnectionError):
                self.closed = True
                got.append("closed")
                return got
            rxid, _zxid, err = struct.unpack("!iqi", frame[:16])
            if rxid == BARRIER_XID:
                return got
            if rxid == -1:  # a watch event
                continue
            got.append(["own" if rxid == xid else rxid, err])
            if err == UNIMPLEMENTED or (op == CLOSE_SESSION and rxid == xid):
                # ZooKeeper closes after an Unimplemented or closeSession reply, but from another
                # thread: the barrier may still be answered first.  Wait for the close itself.
                got.append(self._closes_within(UNIMPLEMENTED_CLOSE_S))
                return got

    def _closes_within(self, seconds: float) -> str:
        self.sock.settimeout(seconds)
        try:
            while True:
                self._frame()
        except socket.timeout:
            return "open"
        except (OSError, ConnectionError):
            self.closed = True
            return "closed"
        finally:
            self.sock.settimeout(self.timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def probe_all(port: int, base: str) -> list:
    """``[[op, kind, answer], ...]`` for every opcode and both kinds of body."""
    out = []
    conn = Conn(port)
    try:
        for op in OPCODES:
            for kind, body in (("garbage", garbage(op)), ("trailing", valid_body(op, base) + TRAILING)):
                if conn.closed:
                    conn.close()
                    conn = Conn(port)
                out.append([op, kind, conn.ask(op, body)])
    finally:
        conn.close()
    return out
