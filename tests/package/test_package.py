"""The Debian package, installed and run as a service on this machine; `cargo install` from the repository.

``$ROSTER_DEB`` is the package built by ``cargo deb -p roster`` (scripts/test builds it). The tests run
in order on one installation:

1. the package's contents and control data: the binary, the conffile, the unit, the docs, Depends;
2. ``dpkg -i``: the ``roster`` system user and group (no login shell), ``/var/lib/roster`` (roster,
   0750), ``/etc/roster/roster.toml`` (root:roster, 0640, registered as a conffile), the unit enabled,
   and ``systemd-analyze verify`` of the installed unit without complaint;
3. the service: with systemd as PID 1 through ``systemctl``; otherwise (containers, this CI) exactly the
   unit's ``ExecStart`` as its ``User``/``Group`` with its ``LimitNOFILE``, ``UMask``, ``Environment`` and
   no new privileges, in a network namespace of its own (the default ports stay free for other tests).
   It must answer ``ruok``, take a write and a read with the ``roster`` CLI, pass the Dockerfile's
   HEALTHCHECK command, write its data as ``roster``, stop on SIGTERM with exit 0 within
   ``TimeoutStopSec``, and find the write again after a restart;
4. ``dpkg -r`` keeps the data, the config and the user; ``dpkg -P`` deletes the config and the unit's
   enablement and still keeps the data directory (postrm says so), as docs/operations.md describes.

Needs root (dpkg, a user, a network namespace). Refuses to run (fails) if a ``roster`` package or user
already exists, so it never touches a real installation; it removes what it created at the end.
Left out: a real systemd boot (PID 1 here is not systemd), the hardening options' effect under systemd
(``systemd-analyze verify`` checks their syntax only), upgrades from an older package.
"""

from __future__ import annotations

import configparser
import grp
import os
import pwd
import resource
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = Path("/lib/systemd/system/roster.service")
CONF = Path("/etc/roster/roster.toml")
DATA = Path("/var/lib/roster")
NETNS = f"roster-pkg-{os.getpid()}"
SYSTEMD = Path("/run/systemd/system").is_dir()


def run(*cmd: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Runs a command with a bounded time, its output captured as text."""
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        pytest.fail(f"{shlex.join(cmd)} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def in_ns(*cmd: str, **kw) -> subprocess.CompletedProcess:
    """Runs a command where the service listens: its namespace, or the host when systemd runs it."""
    if SYSTEMD:
        return run(*cmd, **kw)
    return run("ip", "netns", "exec", NETNS, *cmd, **kw)


def unit_service_section() -> dict[str, list[str]]:
    """The [Service] section of the installed unit: key -> every value given (systemd allows repeats)."""
    out: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        if section == "Service":
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture(scope="module")
def deb() -> Path:
    if os.geteuid() != 0:
        pytest.fail("tests/package needs root (dpkg -i, a system user, a network namespace): run scripts/test as root")
    path = os.environ.get("ROSTER_DEB")
    if not path or not Path(path).is_file():
        pytest.fail("set ROSTER_DEB to the package built by `cargo deb -p roster` (scripts/test does this)")
    if run("dpkg-query", "-W", "-f=${Status}", "roster", check=False).stdout.startswith("install ok"):
        pytest.fail("a roster package is already installed here; this test installs and purges its own: remove it first")
    try:
        pwd.getpwnam("roster")
        pytest.fail("a roster user already exists; this test creates and deletes its own: remove it first")
    except KeyError:
        pass
    if DATA.exists():
        pytest.fail(f"{DATA} already exists; this test would mix its data with it: move it away first")
    yield Path(path)
    # cleanup, whatever happened: the package, the namespace, the data, the user and group
    run("dpkg", "--purge", "roster", check=False)
    run("ip", "netns", "delete", NETNS, check=False)
    shutil.rmtree(DATA, ignore_errors=True)
    run("userdel", "roster", check=False)
    run("groupdel", "roster", check=False)


def test_contents(deb: Path) -> None:
    contents = run("dpkg-deb", "--contents", str(deb)).stdout
    paths = {line.split()[-1] for line in contents.splitlines() if line.strip()}
    for path in ["./usr/bin/roster", "./etc/roster/roster.toml", "./lib/systemd/system/roster.service",
                 "./usr/share/doc/roster/copyright", "./usr/share/doc/roster/operations.md",
                 "./usr/share/doc/roster/RELEASE_NOTES.md"]:
        assert path in paths, f"{path} missing from the package:\n{contents}"
    info = run("dpkg-deb", "--info", str(deb)).stdout
    assert "Package: roster" in info
    assert "libc6" in info, f"Depends should name libc6 ($auto):\n{info}"
    for script in ["postinst", "prerm", "postrm"]:
        assert script in info, f"maintainer script {script} missing:\n{info}"
    ctrl = tempfile.mkdtemp(prefix="roster-deb-ctrl-")
    try:
        run("dpkg-deb", "--control", str(deb), ctrl)
        assert Path(ctrl, "conffiles").read_text().split() == ["/etc/roster/roster.toml"]
    finally:
        shutil.rmtree(ctrl)


def test_install(deb: Path) -> None:
    p = run("dpkg", "-i", str(deb))
    if not SYSTEMD:
        assert "systemd is not running" in p.stderr, "postinst should say how to start the node without systemd"
    assert os.access("/usr/bin/roster", os.X_OK)
    assert run("/usr/bin/roster", "--version").stdout.startswith("roster ")

    user = pwd.getpwnam("roster")
    assert user.pw_uid < 1000, "roster must be a system user"
    assert user.pw_shell in ("/usr/sbin/nologin", "/bin/false"), user.pw_shell
    assert user.pw_dir == str(DATA)
    assert grp.getgrgid(user.pw_gid).gr_name == "roster"

    st = DATA.stat()
    assert (st.st_uid, st.st_gid) == (user.pw_uid, user.pw_gid)
    assert stat.S_IMODE(st.st_mode) == 0o750

    st = CONF.stat()
    assert (st.st_uid, st.st_gid) == (0, user.pw_gid)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert stat.S_IMODE(CONF.parent.stat().st_mode) == 0o750
    assert "/etc/roster/roster.toml" in run("dpkg-query", "-W", "-f=${Conffiles}", "roster").stdout

    assert Path("/etc/systemd/system/multi-user.target.wants/roster.service").is_symlink(), "the unit should be enabled"
    if shutil.which("systemd-analyze"):
        v = run("systemd-analyze", "verify", str(UNIT), check=False)
        assert v.returncode == 0 and not v.stderr.strip(), f"systemd-analyze verify:\n{v.stdout}{v.stderr}"


class Service:
    """roster.service started as systemd would start it (see the module doc)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.unit = unit_service_section()
        self.log = Path(tempfile.mkstemp(prefix="roster-pkg-", suffix=".log")[1])

    def start(self) -> None:
        if SYSTEMD:
            run("systemctl", "start", "roster.service")
            return
        u = self.unit
        assert u["User"] == ["roster"] and u["Group"] == ["roster"]
        assert u["NoNewPrivileges"] == ["yes"]
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": str(DATA), "USER": "roster", "LOGNAME": "roster", "SHELL": "/usr/sbin/nologin"}
        for assignment in u.get("Environment", []):
            for kv in shlex.split(assignment):
                k, _, v = kv.partition("=")
                env[k] = v
        # systemd (PID 1, every capability) sets the unit's limit; a container's root may not raise its
        # hard limit that far, so here the limit is the unit's or this process's hard limit, the lower
        nofile = min(int(u["LimitNOFILE"][0]), resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        umask = int(u.get("UMask", ["0022"])[0], 8)
        exec_start = shlex.split(u["ExecStart"][0])
        cmd = ["ip", "netns", "exec", NETNS, "prlimit", f"--nofile={nofile}:{nofile}", "--",
               "setpriv", "--reuid=roster", "--regid=roster", "--init-groups", "--no-new-privs",
               "--inh-caps=-all", "--bounding-set=-all", "--", *exec_start]
        out = self.log.open("ab")
        self.proc = subprocess.Popen(cmd, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, umask=umask)

    def stop(self) -> int:
        if SYSTEMD:
            run("systemctl", "stop", "roster.service")
            return 0
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        timeout = float(self.unit.get("TimeoutStopSec", ["90s"])[0].rstrip("s"))
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            pytest.fail(f"roster did not stop within TimeoutStopSec ({timeout} s) of SIGTERM:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def four_letter(self, word: str) -> str:
        script = ("import socket,sys\n"
                  "s=socket.create_connection(('127.0.0.1',2181),timeout=2)\n"
                  f"s.sendall(b'{word}')\n"
                  "d=b''\n"
                  "while True:\n"
                  "  c=s.recv(65536)\n"
                  "  if not c: break\n"
                  "  d+=c\n"
                  "sys.stdout.write(d.decode())\n")
        return in_ns("python3", "-c", script, check=False, timeout=10).stdout

    def wait_serving(self, deadline_s: float = 30) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"roster exited {self.proc.returncode} at start:\n{self.log.read_text()}")
            if self.four_letter("ruok") == "imok" and "Mode: standalone" in self.four_letter("srvr"):
                return
            time.sleep(0.3)
        pytest.fail(f"roster did not answer ruok/srvr within {deadline_s} s:\n{self.log.read_text()}")


@pytest.fixture(scope="module")
def netns(deb: Path):
    run("ip", "netns", "add", NETNS)
    run("ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up")
    yield NETNS
    run("ip", "netns", "delete", NETNS, check=False)


def test_service_runs(deb: Path, netns: str) -> None:
    svc = Service()
    try:
        svc.start()
        svc.wait_serving()
        if svc.proc is not None:
            # the process (the child of ip/prlimit/setpriv, which exec) runs as roster, no privileges
            status = Path(f"/proc/{svc.proc.pid}/status").read_text()
            uid = pwd.getpwnam("roster").pw_uid
            assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status, status
            assert "NoNewPrivs:\t1" in status, status
            assert "CapEff:\t0000000000000000" in status and "CapBnd:\t0000000000000000" in status, status
        cli = ["/usr/bin/roster", "--server", "127.0.0.1:2181", "--timeout", "5s"]
        in_ns(*cli, "create", "/pkg-test", "installed")
        assert in_ns(*cli, "get", "/pkg-test").stdout.strip() == "installed"
        # the Dockerfile's HEALTHCHECK command, against the running node, then against nothing
        in_ns("/usr/bin/roster", "--server", "127.0.0.1:2181", "--timeout", "3s", "status")
        assert in_ns("/usr/bin/roster", "--server", "127.0.0.1:2199", "--timeout", "1s", "status",
                     check=False).returncode != 0
        # the data is the service user's, and not readable by others (UMask=0027)
        files = [p for p in DATA.rglob("*")]
        assert files, f"nothing written under {DATA}"
        uid = pwd.getpwnam("roster").pw_uid
        for p in files:
            st = p.lstat()
            assert st.st_uid == uid, f"{p} is not owned by roster"
            assert not st.st_mode & stat.S_IRWXO, f"{p} is accessible to others: {oct(st.st_mode)}"
        assert svc.stop() == 0, f"roster exited non-zero on SIGTERM:\n{svc.log.read_text()}"

        # restarted (as after `systemctl restart`): the node is still itself, the write still there
        svc.start()
        svc.wait_serving()
        assert in_ns(*cli, "get", "/pkg-test").stdout.strip() == "installed"
        assert svc.stop() == 0, f"roster exited non-zero on SIGTERM:\n{svc.log.read_text()}"
    finally:
        svc.kill()
        svc.log.unlink(missing_ok=True)


def test_remove_keeps_data(deb: Path) -> None:
    run("dpkg", "--remove", "roster")
    assert not Path("/usr/bin/roster").exists()
    assert CONF.is_file(), "remove keeps the conffile"
    assert any(DATA.rglob("*")), "remove keeps the data"
    pwd.getpwnam("roster")  # the user stays


def test_purge(deb: Path) -> None:
    p = run("dpkg", "--purge", "roster")
    assert not CONF.exists() and not CONF.parent.exists(), "purge deletes /etc/roster"
    assert not Path("/etc/systemd/system/multi-user.target.wants/roster.service").exists()
    assert any(DATA.rglob("*")), "purge keeps the data directory (docs/operations.md)"
    assert "kept the data directory /var/lib/roster" in p.stderr
    assert not run("dpkg-query", "-W", "-f=${Status}", "roster", check=False).stdout.startswith("install ok")


def test_cargo_install(tmp_path: Path) -> None:
    """`cargo install --path crates/roster --locked` builds and installs a working binary (it reuses the
    workspace's release build when one is there)."""
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo/bin/cargo")
    p = run(cargo, "install", "--path", str(ROOT / "crates/roster"), "--root", str(tmp_path), "--locked",
            "--quiet", timeout=540, check=False)
    assert p.returncode == 0, f"cargo install failed:\n{p.stderr[-4000:]}"
    out = run(str(tmp_path / "bin/roster"), "--version").stdout
    assert out.startswith("roster 0."), out
