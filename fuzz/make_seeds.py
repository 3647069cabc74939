#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/corpus/<target>/ (run once; the corpora grow
from these and are kept in the repository).

Client seeds are real ZooKeeper frames built here from the jute layout; snapshot and log seeds are
files a real node wrote: pass a data directory (`--data-dir`) of a node that took a snapshot."""
import argparse
import glob
import hashlib
import os
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))


def s(b):
    return struct.pack(">i", len(b)) + b


def frame(body):
    return struct.pack(">i", len(body)) + body


def connect(session=0, passwd=b"\0" * 16, timeout=10000):
    return frame(struct.pack(">iqiq", 0, 0, timeout, session) + s(passwd) + b"\0")


def req(xid, op, body):
    return frame(struct.pack(">ii", xid, op) + body)


OPEN_ACL = struct.pack(">i", 1) + struct.pack(">i", 31) + s(b"world") + s(b"anyone")
BODIES = {
    1: s(b"/a") + s(b"data") + OPEN_ACL + struct.pack(">i", 0),  # create
    2: s(b"/a") + struct.pack(">i", -1),  # delete
    3: s(b"/a") + b"\1",  # exists
    4: s(b"/a") + b"\1",  # getData
    5: s(b"/a") + s(b"new") + struct.pack(">i", -1),  # setData
    6: s(b"/a"),  # getACL
    7: s(b"/a") + OPEN_ACL + struct.pack(">i", -1),  # setACL
    8: s(b"/") + b"\1",  # getChildren
    9: s(b"/a"),  # sync
    11: b"",  # ping
    12: s(b"/") + b"\0",  # getChildren2
    13: s(b"/a") + struct.pack(">i", -1),  # check
    15: s(b"/b") + s(b"x") + OPEN_ACL + struct.pack(">i", 1),  # create2
    19: s(b"/c") + s(b"") + OPEN_ACL + struct.pack(">i", 4),  # createContainer
    21: s(b"/t") + s(b"") + OPEN_ACL + struct.pack(">iq", 5, 1000),  # createTTL
    100: struct.pack(">i", 0) + s(b"digest") + s(b"u:p"),  # auth
    101: struct.pack(">q", 0) + struct.pack(">i", 1) + s(b"/a") + struct.pack(">i", 0) + struct.pack(">i", 0),  # setWatches
    103: s(b"/"),  # getEphemerals
    104: s(b"/"),  # getAllChildrenNumber
    106: s(b"/a") + struct.pack(">i", 1),  # addWatch
    17: s(b"/a") + struct.pack(">i", 1),  # checkWatches
    18: s(b"/a") + struct.pack(">i", 1),  # removeWatches
    107: b"",  # whoAmI
    -11: b"",  # closeSession
}


def multi():
    out = b""
    for op, body in [(1, BODIES[1]), (13, BODIES[13]), (5, BODIES[5]), (2, BODIES[2])]:
        out += struct.pack(">ibi", op, 0, -1) + body
    return out + struct.pack(">ibi", -1, 1, -1)


def put(target, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", help="a node's data directory with a snapshot and log segments")
    a = ap.parse_args()
    # client_conn: whole connections
    for w in [b"ruok", b"srvr", b"mntr", b"stat", b"cons", b"conf", b"envi", b"wchs", b"dump", b"isro"]:
        put("client_conn", w)
    session = connect()
    for op, body in BODIES.items():
        put("client_conn", session + req(1, op, body))
    put("client_conn", session + req(1, 14, multi()) + req(2, 22, multi()))
    put("client_conn", session + b"".join(req(i + 1, op, body) for i, (op, body) in enumerate(BODIES.items())))
    # client_request: selector byte, then the decoder's input
    put("client_request", b"\0" + session + req(1, 4, BODIES[4]))
    put("client_request", b"\1" + session[4:])
    put("client_request", b"\2" + struct.pack(">ii", 1, 4))
    for op, body in list(BODIES.items()) + [(14, multi()), (22, multi())]:
        put("client_request", b"\3" + struct.pack(">i", op) + body)
    if a.data_dir:
        for p in glob.glob(os.path.join(a.data_dir, "**", "*.snap"), recursive=True):
            data = open(p, "rb").read()
            put("snapshot", b"\0" + data)
            meta_len = struct.unpack(">I", data[12:16])[0]
            put("snapshot", b"\1" + data[28 + meta_len:])
        for p in glob.glob(os.path.join(a.data_dir, "**", "*.seg"), recursive=True):
            data = open(p, "rb").read().rstrip(b"\0")[: 1 << 16]
            put("log_segment", b"\1" + data)
            # the same records as (u16 length, payload) for the checksum-fixing mode
            out, pos = b"", 0
            while pos + 16 <= len(data):
                n = struct.unpack(">I", data[pos:pos + 4])[0]
                if n > 65535 or pos + 16 + n > len(data):
                    break
                out += struct.pack(">H", n) + data[pos + 16:pos + 16 + n]
                pos += 16 + n
            put("log_segment", b"\0" + out)
    for t in ["client_request", "client_conn", "peer_frame", "snapshot", "log_segment"]:
        os.makedirs(os.path.join(ROOT, "corpus", t), exist_ok=True)


if __name__ == "__main__":
    main()
