"""Mixed fleets: Java services on Apache Curator and Rust services on roster-client sharing one election,
one service registry, one lock and one group, on Roster (one node and three) and ZooKeeper 3.8.

The Java side is ``CuratorDriver`` (LeaderLatch, ServiceDiscovery/ServiceProvider, InterProcessMutex,
GroupMember); the Rust side is roster-client's ``mixed_peer`` example (recipes::election, discovery,
lock, membership) and the ``roster`` CLI. Each participant is its own process with its own session, so
``kill -9`` of one is a real crash: its session expires after the session timeout (4 s).
"""

import json
import time

import harness

WAIT_MS = 20000


def unique(prefix: str) -> str:
    return f"/{prefix}-{time.monotonic_ns()}"


def leaders(java, rust) -> list[str]:
    """Who counts itself leader, across both languages."""
    out = []
    for name, p in list(java.items()) + list(rust.items()):
        if p.cmd("leadership")["leader"]:
            out.append(name)
    return out


def test_one_election_across_languages(target, peers):
    path = unique("mixed-election")
    java, rust = {}, {}
    # join in a known order: java-1, rust-1, java-2, rust-2 (each returns once its node is in line)
    java["java-1"] = peers.java("java-1")
    java["java-1"].cmd(f"latch {path} java-1")
    t1 = java["java-1"].cmd(f"wait_leader {WAIT_MS}")
    assert t1["leader"] and isinstance(t1["token"], int), t1
    rust["rust-1"] = peers.rust("rust-1")
    rust["rust-1"].cmd(f"elect {path} rust-1")
    java["java-2"] = peers.java("java-2")
    java["java-2"].cmd(f"latch {path} java-2")
    rust["rust-2"] = peers.rust("rust-2")
    rust["rust-2"].cmd(f"elect {path} rust-2")

    # one line, read the same way by both libraries and the CLI
    ps = rust["rust-2"].cmd(f"participants {path}")["participants"]
    assert [p["id"] for p in ps] == ["java-1", "rust-1", "java-2", "rust-2"], ps
    assert ps[0]["leader"] and ps[0]["token"] == t1["token"], (ps, t1)
    assert ps[0]["session"] == java["java-1"].session
    assert java["java-2"].cmd("leadership")["leader_id"] == "java-1"
    cli = harness.roster_cli("leader", path, "--json", "-s", target.hostport)
    assert cli.returncode == 0 and "java-1" in cli.stdout and str(t1["token"]) in cli.stdout, cli
    assert leaders(java, rust) == ["java-1"]

    # the Java leader dies: leadership crosses to Rust, with a larger fencing token
    java.pop("java-1").kill()
    t2 = rust["rust-1"].cmd(f"wait_leader {WAIT_MS}", timeout=60)
    assert t2["leader"] and t2["token"] > t1["token"], (t1, t2)
    assert leaders(java, rust) == ["rust-1"]
    assert java["java-2"].cmd("leadership")["leader_id"] == "rust-1"

    # the Rust leader dies: back to Java, token larger again
    rust.pop("rust-1").kill()
    t3 = java["java-2"].cmd(f"wait_leader {WAIT_MS}", timeout=60)
    assert t3["leader"] and t3["token"] > t2["token"], (t2, t3)
    assert leaders(java, rust) == ["java-2"]
    ps = rust["rust-2"].cmd(f"participants {path}")["participants"]
    assert [p["id"] for p in ps] == ["java-2", "rust-2"] and ps[0]["token"] == t3["token"], (ps, t3)

    # the Java leader closes its latch: the last Rust candidate leads
    java.pop("java-2").cmd("latch_close")
    t4 = rust["rust-2"].cmd(f"wait_leader {WAIT_MS}")
    assert t4["leader"] and t4["token"] > t3["token"], (t3, t4)
    assert leaders(java, rust) == ["rust-2"]


def test_service_discovery_across_languages(target, peers):
    base = unique("mixed-services")
    java = peers.java("java-sd")
    rust = peers.rust("rust-sd")
    java.cmd(f'register {base} api j-1 10.0.0.1 8080 {{"zone":"a"}}')
    rust.cmd(f'register {base} api r-1 10.0.0.2 8081 {{"zone":"b"}}')

    # Roster's client reads Curator's instance JSON, payload included
    got = {i["id"]: i for i in rust.cmd(f"instances {base} api")["instances"]}
    assert sorted(got) == ["j-1", "r-1"], got
    assert got["j-1"]["address"] == "10.0.0.1" and got["j-1"]["port"] == 8080, got["j-1"]
    assert (got["j-1"].get("payload") or {}).get("zone") == "a", got["j-1"]

    # Curator reads Roster's
    got = {i["id"]: i for i in java.cmd(f"instances {base} api")["instances"]}
    assert sorted(got) == ["j-1", "r-1"], got
    assert got["r-1"]["address"] == "10.0.0.2" and got["r-1"]["port"] == 8081, got["r-1"]
    assert (got["r-1"].get("payload") or {}).get("zone") == "b", got["r-1"]

    # cluster:// names resolve to both, from the client API and from the CLI
    r = rust.cmd(f"resolve {base} cluster://api/user/victorops")
    assert r["targets"] == ["j-1", "r-1"] and r["path"] == "user/victorops", r
    cli = harness.roster_cli("resolve", "cluster://api/user/victorops", "--base", base, "--json", "-s", target.hostport)
    assert cli.returncode == 0, cli
    assert "10.0.0.1" in cli.stdout and "10.0.0.2" in cli.stdout, cli.stdout

    # providers (cached, watched) on each side see the other side's instances
    p = java.cmd(f"provider {base} api r-1 {WAIT_MS}")
    assert p["seen"] and p["ids"] == ["j-1", "r-1"], p
    p = rust.cmd(f"provider {base} api j-1 {WAIT_MS}")
    assert p["seen"] and p["ids"] == ["j-1", "r-1"], p

    # a Curator instance that unregisters is gone for Roster; a Rust one that dies is gone for Curator
    java.cmd("unregister")
    assert [i["id"] for i in rust.cmd(f"instances {base} api")["instances"]] == ["r-1"]
    rust.kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if java.cmd(f"instances {base} api")["instances"] == []:
            break
        time.sleep(0.2)
    assert java.cmd(f"instances {base} api")["instances"] == []
    cli = harness.roster_cli("resolve", "cluster://api/x", "--base", base, "-s", target.hostport)
    assert cli.returncode == 3, cli


def test_mutex_excludes_across_languages(target, peers):
    path = unique("mixed-lock")
    java = peers.java("java-lock")
    java2 = peers.java("java-lock-2")
    rust = peers.rust("rust-lock")

    j = java.cmd(f"lock {path} {WAIT_MS}")
    assert j["acquired"] and isinstance(j["token"], int), j
    assert rust.cmd(f"lock {path} rust 500")["acquired"] is False
    java.cmd("unlock")
    r = rust.cmd(f"lock {path} rust {WAIT_MS}")
    assert r["acquired"] and r["token"] > j["token"], (j, r)
    assert java2.cmd(f"lock {path} 500")["acquired"] is False
    rust.cmd("unlock")
    j2 = java2.cmd(f"lock {path} {WAIT_MS}")
    assert j2["acquired"] and j2["token"] > r["token"], (r, j2)
    # a Rust waiter queued behind the Java holder gets the lock when the holder's process dies
    rust2 = peers.rust("rust-lock-2")
    java2.kill()
    r2 = rust2.cmd(f"lock {path} rust-2 {WAIT_MS}", timeout=60)
    assert r2["acquired"] and r2["token"] > j2["token"], (j2, r2)
    assert java.cmd(f"lock {path} 500")["acquired"] is False
    rust2.cmd("unlock")


def test_group_membership_across_languages(target, peers):
    group = unique("mixed-group")
    java = peers.java("java-member")
    rust = peers.rust("rust-member")
    java.cmd(f"group_join {group} j-1 java-payload")
    rust.cmd(f"join {group} r-1 10.0.0.2 2552")

    seen = java.cmd(f"group_members {WAIT_MS} j-1,r-1")
    assert seen["ids"] == ["j-1", "r-1"], seen
    assert json.loads(seen["data"]["r-1"])["port"] == 2552, seen
    m = rust.cmd(f"members {group}")
    assert m["ids"] == ["j-1", "r-1"] and m["data"]["j-1"] == "java-payload", m
    cli = harness.roster_cli("members", group, "--json", "-s", target.hostport)
    assert cli.returncode == 0 and "j-1" in cli.stdout and "r-1" in cli.stdout, cli

    rust.cmd("leave")
    assert java.cmd(f"group_members {WAIT_MS} j-1")["ids"] == ["j-1"]
    java.cmd("group_leave")
    assert rust.cmd(f"members {group}")["ids"] == []
