"""Capture real ZooKeeper 3.8 four-letter-word outputs into reference/zk-3.8/
(documentation for the Roster team: the exact formats to reproduce).

    .venv/bin/python tests/compat/make_reference.py

Set-up before the capture: one kazoo session that created /ref (data "x") and
the ephemeral /ref/e, then left a data watch on /ref, a child watch on /ref,
an exists watch on the missing /ref/none and one on /ref/e.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kazoo.client import KazooClient  # noqa: E402

from servers import ZooKeeperServer, four_letter  # noqa: E402

WORDS = ["ruok", "isro", "srvr", "stat", "conf", "envi", "cons", "wchs", "wchc", "wchp", "dirs", "mntr", "dump", "gtmk", "xyzw"]


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference", "zk-3.8")
    os.makedirs(out_dir, exist_ok=True)
    with ZooKeeperServer() as s:
        c = KazooClient(hosts=s.hostport, timeout=10)
        c.start(timeout=15)
        try:
            c.create("/ref", b"x")
            c.create("/ref/e", ephemeral=True)
            c.get("/ref", watch=lambda e: None)
            c.get_children("/ref", watch=lambda e: None)
            c.exists("/ref/none", watch=lambda e: None)
            c.exists("/ref/e", watch=lambda e: None)
            notes = [f"session id of the kazoo client: 0x{c.client_id[0]:x}", f"client port: {s.port}"]
            for w in WORDS:
                text = four_letter(s.port, w)
                with open(os.path.join(out_dir, f"{w}.txt"), "w") as f:
                    f.write(text)
                print(f"{w}: {len(text)} bytes")
            with open(os.path.join(out_dir, "README.txt"), "w") as f:
                f.write(__doc__ + "\n" + "\n".join(notes) + "\n")
        finally:
            c.stop()
            c.close()


if __name__ == "__main__":
    main()
