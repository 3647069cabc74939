"""pytest plugin for running kazoo's own test suite against a server that is
already running: its ``KazooTestHarness`` normally starts a ZooKeeper cluster
from ``ZOOKEEPER_PATH``; with this plugin (``-p upstream_shim``, this folder on
``PYTHONPATH``) its cluster is the servers named in ``UPSTREAM_ZK_HOSTS``
(``host:port[,host:port]``), which the harness neither starts nor stops.

Left out: the harness's fault injection that needs the cluster's processes
(``cluster.stop()``/``start()`` do nothing here), so only tests that talk to
the server through a client are meaningful.
"""

import os

from kazoo.testing import harness


class _Server:
    def __init__(self, address: str):
        self.address = address
        self.secure_address = address
        self.running = True


class _Cluster(list):
    def start(self):
        pass

    def stop(self):
        pass

    def terminate(self):
        pass

    def get_logs(self):
        return []


def _cluster():
    hosts = os.environ.get("UPSTREAM_ZK_HOSTS")
    if not hosts:
        raise RuntimeError("set UPSTREAM_ZK_HOSTS=host:port to the server kazoo's tests should use")
    return _Cluster(_Server(a) for a in hosts.split(","))


harness.get_global_cluster = _cluster
