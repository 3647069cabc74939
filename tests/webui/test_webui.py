"""The live web view in headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium).

Starts three `roster serve` nodes on loopback, opens a follower's page, and checks that it shows the
three nodes and the leader, that a group member appears and leaves live, and that after `kill -9` of
the leader the page shows it unreachable and a new leader, without a reload. Screenshots go to
target/webui-artifacts/ (or $WEBUI_ARTIFACTS).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from kazoo.client import KazooClient

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("ROSTER_BIN") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "roster"
)
ARTIFACTS = Path(os.environ.get("WEBUI_ARTIFACTS", ROOT / "target" / "webui-artifacts"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.timeout(120)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, base, n, join=None):
        self.dir = Path(base) / f"node{n}"
        self.dir.mkdir()
        self.client, self.peer, self.admin = free_port(), free_port(), free_port()
        args = [
            BIN, "serve",
            "--client-addr", f"127.0.0.1:{self.client}",
            "--peer-addr", f"127.0.0.1:{self.peer}",
            "--admin-addr", f"127.0.0.1:{self.admin}",
            "--data-dir", str(self.dir / "data"),
        ]
        if join:
            args += ["--join", f"127.0.0.1:{join.peer}"]
        self.log = open(self.dir / "server.log", "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)

    def url(self, path):
        return f"http://127.0.0.1:{self.admin}{path}"

    def api(self, path):
        with urllib.request.urlopen(self.url(path), timeout=5) as r:
            return json.load(r)

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def wait(what, check, within=30.0, every=0.1):
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 (a node still starting answers with errors)
            last = e
        time.sleep(every)
    raise AssertionError(f"{what}: not within {within} s (last: {last!r})")


@pytest.fixture
def cluster():
    if not os.access(BIN, os.X_OK):
        pytest.fail(f"no roster binary at {BIN}: run `cargo build -p roster` or set ROSTER_BIN")
    base = tempfile.mkdtemp(prefix="roster-webui-")
    nodes = []
    try:
        a = Node(base, 1)
        nodes.append(a)
        wait("node 1 ready", lambda: a.api("/api/v1/cluster")["has_leader"])
        nodes.append(Node(base, 2, join=a))
        nodes.append(Node(base, 3, join=a))

        def formed():
            c = a.api("/api/v1/cluster")
            ok = len(c["members"]) == 3 and all(
                m["health"] == "ok" and m["voter"] for m in c["members"]
            )
            return c if ok and c["leader"] else None

        wait("three voters, all healthy", formed, within=60)
        yield nodes
    finally:
        for n in nodes:
            n.kill9()
        for n in nodes:
            n.log.close()
        if os.environ.get("WEBUI_KEEP_DATA") != "1":
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="roster-webui-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000",
    ]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def page_nodes(driver):
    """The cluster picture as the page draws it: {node id: (role, health)}."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#nodes .node'))"
        ".map(n => [n.dataset.nodeId, n.dataset.role, n.dataset.health]);"
    )


def wait_page(driver, what, check, within=30.0):
    """`wait` for a condition on the page; on a time-out, a screenshot and what the page showed."""
    try:
        return wait(what, check, within)
    except AssertionError as e:
        shot(driver, "FAILED-" + "".join(c if c.isalnum() else "-" for c in what)[:60] + ".png")
        shown = driver.execute_script(
            "return [document.getElementById('summary').textContent, "
            "document.getElementById('live').dataset.state];")
        logs = ""
        try:
            logs = "\n".join(str(l) for l in driver.get_log("browser"))
        except Exception:  # noqa: BLE001 (not every driver keeps the console)
            pass
        raise AssertionError(f"{e}; page nodes {page_nodes(driver)}, summary/stream {shown}; console: {logs}") from None


def shot(driver, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))


def test_page_shows_the_cluster_members_and_a_new_leader_live(cluster, browser):
    c = cluster[0].api("/api/v1/cluster")
    leader = c["leader"]
    ids = {}
    for n in cluster:
        ids[n.api("/api/v1/cluster")["node_id"]] = n
    page_node = next(n for i, n in ids.items() if i != leader)  # a follower survives the kill

    zk = KazooClient(hosts=f"127.0.0.1:{page_node.client}", timeout=10)
    zk.start(timeout=15)
    try:
        member = {"id": "worker-1", "address": "10.0.0.1", "port": 2552, "tags": {}}
        zk.create("/app/members/worker-1", json.dumps(member).encode(), ephemeral=True, makepath=True)
        zk.create("/app/leader/_c_0f6a1d52-7d3e-4a8e-9c1b-2f2f7a1e3b4c-latch-", b"worker-1",
                  ephemeral=True, sequence=True, makepath=True)
        instance = {"name": "api", "id": "i1", "address": "10.0.0.5", "port": 8080, "sslPort": None,
                    "payload": None, "registrationTimeUTC": int(time.time() * 1000),
                    "serviceType": "DYNAMIC", "uriSpec": None}
        zk.create("/services/api/i1", json.dumps(instance).encode(), ephemeral=True, makepath=True)

        browser.get(page_node.url("/"))
        # Three nodes, the leader marked, all healthy.
        wait_page(browser, "the page shows three healthy nodes and the leader", lambda: sorted(page_nodes(browser)) == sorted(
            [str(i), "leader" if i == leader else "follower", "ok"] for i in ids))
        wait_page(browser, "the stream is live", lambda: browser.find_element("id", "live").get_attribute("data-state") == "live")
        wait_page(browser, "the group, election and service are shown", lambda: "worker-1" in browser.find_element(
            "id", "groups").text and "worker-1" in browser.find_element("id", "elections").text
            and "i1" in browser.find_element("id", "services").text)
        shot(browser, "01-cluster.png")
        browser.execute_script("window.__loadedOnce = 'yes';")

        # A member joins, then leaves: the page follows.
        zk.create("/app/members/worker-2", b'{"id":"worker-2"}', ephemeral=True)
        wait_page(browser, "worker-2 appears", lambda: "worker-2" in browser.find_element("id", "groups").text)
        shot(browser, "02-member-joined.png")
        zk.delete("/app/members/worker-2")
        wait_page(browser, "worker-2 leaves", lambda: "worker-2" not in browser.find_element("id", "groups").text)

        # kill -9 the leader: it shows unreachable, another node leads, and the page never reloaded.
        ids[leader].kill9()

        def moved():
            nodes = {i: (role, health) for i, role, health in page_nodes(browser)}
            new = [i for i, (role, _) in nodes.items() if role == "leader"]
            return (nodes.get(str(leader), ("", ""))[1] == "unreachable" and len(new) == 1
                    and new[0] != str(leader) and new[0])

        new_leader = wait_page(browser, "the page shows the old leader gone and a new leader", moved)
        assert browser.execute_script("return window.__loadedOnce;") == "yes", "the page reloaded"
        assert browser.find_element("id", "leader-id").get_attribute("data-leader") == new_leader
        wait_page(browser, "the timeline shows the leader change with its cause", lambda: browser.execute_script(
            f"return Array.from(document.querySelectorAll('#timeline li[data-leader=\"{new_leader}\"]'))"
            ".some(li => li.querySelector('.cause') && li.querySelector('.cause').textContent.length > 0);"))
        shot(browser, "03-leader-killed.png")
    finally:
        zk.stop()
        zk.close()
