"""Shared fixtures, the must-work switch and the session leak check.

- `require(condition, why)`: every "the host lacks a feature" check of the
  integration tests goes through it.  It skips, or fails when the
  environment says SANDBOX_MUST_WORK=1 (CI: a skip there hides a broken
  host or a broken package).
- `busybox_rootfs`, `debian_rootfs`: session fixtures giving the rootfs
  directories under $SANDBOX_ROOTFS_DIR (default /var/lib/sandbox/rootfs),
  built with images/*/build-rootfs.sh when missing.
- The leak check (tests/leakcheck.py) snapshots the host at the start of the
  session and compares at the end: any leftover process, mount, network
  link, cgroup or state dir fails the session, with a list of what leaked.
"""

from __future__ import annotations

import fcntl
import glob
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import leakcheck

# the image tests' registry, store and request-recording proxy
pytest_plugins = ["tests.registry.fixture"]

PROJECT = Path(__file__).resolve().parent.parent
# No test may pull from Docker Hub (no traffic but to loopback and our own
# namespaces): an image missing from the store fails instead; subprocesses
# (the examples) inherit it.
os.environ.setdefault("SANDBOX_REGISTRY_MIRRORS_ONLY", "1")
MUST_WORK = os.environ.get("SANDBOX_MUST_WORK") == "1"
BUILD_WAIT = 900.0  # seconds to wait for a rootfs another process is building


# -- the must-work switch ---------------------------------------------------------


def require(condition: object, why: str) -> None:
    """Skip the test unless `condition` holds; with SANDBOX_MUST_WORK=1, fail."""
    if condition:
        return
    if MUST_WORK:
        pytest.fail(f"the host lacks a feature (SANDBOX_MUST_WORK=1 forbids skipping): {why}", pytrace=False)
    pytest.skip(f"the host lacks a feature: {why}")


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = platform.release().split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (IndexError, ValueError):
        return False


def _userns_enabled() -> bool:
    try:
        return int(Path("/proc/sys/user/max_user_namespaces").read_text()) > 0
    except (OSError, ValueError):
        return True  # no knob: nothing disables them


def _has_fs(name: str) -> bool:
    try:
        return any(line.split()[-1] == name for line in Path("/proc/filesystems").read_text().splitlines())
    except OSError:
        return False


def require_sandbox_host() -> None:
    """What every sandbox needs from the host; checked directly, never by
    interpreting a failed sandbox start (that could hide a package bug)."""
    require(os.geteuid() == 0, "sandboxes need root for now (no newuidmap support)")
    require(_userns_enabled(), "user namespaces are disabled (user.max_user_namespaces = 0)")
    require(_has_fs("overlay"), "no overlayfs in /proc/filesystems")
    require(_kernel_at_least(5, 12), f"kernel {platform.release()} has no idmapped mounts (needs 5.12)")


# -- rootfs fixtures ---------------------------------------------------------------


def rootfs_dir() -> Path:
    return Path(os.environ.get("SANDBOX_ROOTFS_DIR", "/var/lib/sandbox/rootfs"))


def _ready(path: Path) -> bool:
    # The build scripts rename a finished tree into place: if it is there, it is whole.
    return path.is_dir()


def _newest_mtime(top: str, depth: int = 3) -> float:
    newest = 0.0
    for dirpath, dirnames, _ in os.walk(top, onerror=lambda e: None):
        try:
            newest = max(newest, os.stat(dirpath).st_mtime)
        except OSError:
            pass
        if dirpath[len(top) :].count("/") >= depth:
            dirnames[:] = []
    return newest


def _build_in_progress(path: Path) -> bool:
    """The build scripts work in OUTDIR.tmp.XXXXXX beside OUTDIR, then rename.
    A tmp dir nothing has written to for 5 minutes is a killed build's."""
    tmps = glob.glob(glob.escape(str(path)) + ".tmp.*")
    return any(time.time() - _newest_mtime(t) < 300 for t in tmps)


def _ensure_rootfs(name: str) -> Path:
    path = rootfs_dir() / name
    if _ready(path):
        require(
            (path / "bin" / "sh").is_symlink() or (path / "bin" / "sh").exists(),
            f"{path} exists but has no /bin/sh: rebuild it with images/{name}/build-rootfs.sh",
        )
        return path
    script = PROJECT / "images" / name / "build-rootfs.sh"
    require(os.geteuid() == 0, f"building the {name} rootfs needs root")
    require(script.exists(), f"no {script}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time across pytest processes; a build started by hand
    # (no lock, but its .tmp dir exists) is waited for.
    with open(path.parent / f".{name}.build-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        deadline = time.monotonic() + BUILD_WAIT
        while not _ready(path) and _build_in_progress(path) and time.monotonic() < deadline:
            time.sleep(1)
        if not _ready(path):
            log = path.parent / f".{name}.build.log"
            with open(log, "w") as out:
                r = subprocess.run(
                    ["sh", str(script), str(path)], stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_WAIT
                )
            if r.returncode != 0 or not _ready(path):
                tail = log.read_text(errors="replace")[-2000:]
                require(False, f"cannot build the {name} rootfs at {path} (exit {r.returncode}):\n{tail}")
    return path


@pytest.fixture(scope="session")
def busybox_rootfs() -> Path:
    return _ensure_rootfs("busybox")


@pytest.fixture(scope="session")
def debian_rootfs() -> Path:
    return _ensure_rootfs("debian")


@pytest.fixture
def copied_rootfs(busybox_rootfs: Path, tmp_path: Path) -> Path:
    """A private copy of the busybox rootfs (2 MB) that a test may plant
    things in; owned by root like the original."""
    dst = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", str(busybox_rootfs), str(dst)], check=True)
    return dst


@pytest.fixture
def sandbox_host() -> None:
    require_sandbox_host()


@pytest.fixture
def sb(sandbox_host: None, busybox_rootfs: Path) -> Iterator[object]:
    """A running busybox sandbox, closed after the test."""
    from sandbox import Sandbox

    with Sandbox(rootfs=busybox_rootfs) as s:
        yield s


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """A host directory the sandbox may read (0755) or write (0777)."""
    d = tmp_path / "host"
    d.mkdir()
    d.chmod(0o755)
    return d


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None


# -- the session leak check -------------------------------------------------------

_BEFORE = pytest.StashKey[leakcheck.Snapshot]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_BEFORE] = leakcheck.snapshot()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.stash.get(_BEFORE, None)
    if before is None:
        return
    found = leakcheck.leaks(before, grace=5.0)
    if not found:
        return
    text = leakcheck.report(found)
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write("\n")
        tr.write_sep("=", "LEAK CHECK FAILED", red=True, bold=True)
        tr.write_line(text)
    else:
        print(text)
    if session.exitstatus == pytest.ExitCode.OK or session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- helpers for integration tests --------------------------------------------------


def sh(sb: object, script: str, **kw: object) -> object:
    """Run a shell script in the sandbox; return the ExecResult."""
    return sb.exec(["sh", "-c", script], **kw)  # type: ignore[attr-defined]


def sh_ok(sb: object, script: str, **kw: object) -> str:
    """Run a shell script that must succeed; return its stdout as text."""
    r = sh(sb, script, **kw)
    assert r.reason == "exited" and r.exit_code == 0, (script, r, r.stderr)  # type: ignore[attr-defined]
    return r.stdout_text  # type: ignore[attr-defined]


# -- the host process's own fds -----------------------------------------------------

# What the package keeps open process-wide once it has started a sandbox:
# the sealed init memfd, user namespaces carrying id maps, and a pool of
# ready network namespaces (refilled by a background thread, which also
# holds a few fds for a moment while it makes one), each with its two
# sockstat files (those are told apart by the pool's own record of them).
PROCESS_WIDE_FDS = ("/memfd:sandbox-init", "user:[", "net:[")


def open_fds() -> dict[int, str]:
    """This process's fds, once the SDK's cgroup thread has let go of the
    groups (and their open files) it keeps ahead of time."""
    leakcheck.quiesce()
    out = {}
    for n in os.listdir("/proc/self/fd"):
        try:
            out[int(n)] = os.readlink(f"/proc/self/fd/{n}")
        except OSError:
            pass
    return out


def _live_cgroup_file(path: str) -> bool:
    """A file of a cgroup that still exists: a running sandbox keeps the
    files of its next exec's group open (sandbox/cgroup/group.py); only
    fds of removed groups would be leaks."""
    return path.startswith("/sys/fs/cgroup/") and os.path.exists(os.path.dirname(path))


def _pooled_netns_files() -> set[int]:
    """The sockstat files of the network namespaces the pool holds (see
    sandbox/netpool.py): process-wide as those namespaces are."""
    netpool = sys.modules.get("sandbox.netpool")
    if netpool is None:
        return set()
    return {f for pair in list(netpool.pool._stats.values()) for f in pair}


def fd_leaks(before: dict[int, str], grace: float = 2.0) -> dict[int, str]:
    """fds open now that were not in `before` (process-wide ones aside);
    polls up to `grace` s so that fds of a background refill settle."""
    deadline = time.monotonic() + grace
    while True:
        now, pooled = open_fds(), _pooled_netns_files()
        new = {
            n: t
            for n, t in now.items()
            if before.get(n) != t
            and not t.startswith(PROCESS_WIDE_FDS)
            and not _live_cgroup_file(t)
            and n not in pooled
        }
        if not new or time.monotonic() >= deadline:
            return new
        time.sleep(0.02)
