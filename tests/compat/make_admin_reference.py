"""Capture real ZooKeeper 3.8 AdminServer answers (/commands/*) into reference/zk-3.8-admin/
(the JSON shapes Roster's admin port reproduces; crates/roster/tests/admin_commands.rs compares
Roster's key sets and value types against these files).

    .venv/bin/python tests/compat/make_admin_reference.py

Set-up before the capture: as make_reference.py (one kazoo session, /ref with data "x", the
ephemeral /ref/e, a data and a child watch on /ref, exists watches on /ref/none and /ref/e).
The AdminServer listens on 127.0.0.1 only.
"""

import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kazoo.client import KazooClient  # noqa: E402

from servers import HOST, ZooKeeperServer, free_port  # noqa: E402

COMMANDS = [
    "ruok", "srvr", "stat", "mntr", "conf", "envi", "cons", "wchs", "wchc", "wchp", "dirs",
    "is_read_only", "dump", "crst", "srst", "gtmk", "voting_view", "leader", "last_snapshot",
    "hash", "system_properties", "initial_configuration", "observers", "zabstate",
    "watch_summary", "connection_stat_reset", "no_such_command",
]


class ZooKeeperWithAdmin(ZooKeeperServer):
    def __init__(self):
        self.admin_port = free_port()
        super().__init__(extra_cfg={
            "admin.enableServer": "true",
            "admin.serverAddress": HOST,
            "admin.serverPort": self.admin_port,
        })

    def command(self):
        cmd = super().command()
        cmd = [c for c in cmd if not c.startswith("-Dzookeeper.admin.enableServer")]
        # Jetty needs the servlet API, which zookeeper.jar's manifest does not list (Debian's
        # servlet-api jar, a dependency of its jetty9 package).
        i = cmd.index("-cp") + 1
        cmd[i] += ":/usr/share/java/servlet-api.jar"
        return cmd[:1] + [
            "-Dzookeeper.admin.enableServer=true",
            f"-Dzookeeper.admin.serverAddress={HOST}",
            f"-Dzookeeper.admin.serverPort={self.admin_port}",
        ] + cmd[1:]


def get(port, name):
    url = f"http://{HOST}:{port}/commands/{name}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference", "zk-3.8-admin")
    os.makedirs(out_dir, exist_ok=True)
    with ZooKeeperWithAdmin() as s:
        c = KazooClient(hosts=s.hostport, timeout=10)
        c.start(timeout=15)
        try:
            c.create("/ref", b"x")
            c.create("/ref/e", ephemeral=True)
            c.get("/ref", watch=lambda e: None)
            c.get_children("/ref", watch=lambda e: None)
            c.exists("/ref/none", watch=lambda e: None)
            c.exists("/ref/e", watch=lambda e: None)
            for name in COMMANDS:
                status, body = get(s.admin_port, name)
                try:
                    body = json.dumps(json.loads(body), indent=2, sort_keys=True) + "\n"
                except ValueError:
                    pass
                with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
                    f.write(body)
                print(f"{name}: HTTP {status}, {len(body)} bytes")
            with open(os.path.join(out_dir, "README.txt"), "w") as f:
                f.write(__doc__)
        finally:
            c.stop()
            c.close()


if __name__ == "__main__":
    main()
