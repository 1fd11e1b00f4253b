"""Shared pieces of the start-up benchmarks: the rootfs, the peer runners
(bubblewrap, crun, a plain fork+exec) and a per-benchmark median/p99 report
with the targets of issue 2.

Not part of the test suite (pyproject's testpaths is ``tests``).  Run with

    .venv/bin/python -m pytest benchmarks -p no:cacheprovider --benchmark-only

Options: ``--bench-strict`` makes a missed target fail the run;
``SANDBOX_BENCH_ROOTFS`` points at another rootfs than the Debian one.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import math
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOTFS = os.environ.get("SANDBOX_BENCH_ROOTFS", "/var/lib/sandbox/rootfs/debian")

# Targets of issue 2 (no cgroup limits or seccomp yet), in milliseconds.
CYCLE_MEDIAN_MS = 2.0  # issue 2: without seccomp
CYCLE_HARDENED_MEDIAN_MS = 2.5  # issues 4 and 5: with the default profile, and with limits
CYCLE_P99_MS = 6.0
EXEC_MEDIAN_MS = 0.7


# -- percentiles and the report ------------------------------------------------


def percentile(sorted_data: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted data (p in 0..100): with 200
    rounds p99 is the 198th value, with 100 rounds the 99th."""
    if not sorted_data:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_data)))
    return sorted_data[rank - 1]


@dataclass
class Row:
    group: str
    runner: str
    rounds: int
    median: float  # ms
    p99: float
    minimum: float
    maximum: float
    checks: list[tuple[str, bool]] = field(default_factory=list)


_KEY = pytest.StashKey[list[Row]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-strict",
        action="store_true",
        default=False,
        help="fail the run when a target of issue 2 is missed",
    )


_LOAD = pytest.StashKey[str]()


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_KEY] = []
    config.stash[_LOAD] = _loadavg()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The crun benchmarks first, while this process has one thread: on a
    # hybrid cgroup host they step into a private mount namespace, which
    # unshare(2) and setns(2) refuse to a threaded process, and the package
    # starts a helper thread (its network-namespace pool) with the first
    # sandbox.  The sort is stable: the rest keep their order.
    items.sort(key=lambda item: "crun_runner" not in getattr(item, "fixturenames", ()))


@pytest.fixture(autouse=True)
def _percentiles(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each benchmark: median and p99 of its rounds, into the JSON
    (extra_info) and the summary printed at the end."""
    if "benchmark" not in request.fixturenames:
        yield
        return
    bm = request.getfixturevalue("benchmark")
    yield
    meta = getattr(bm, "stats", None)
    if meta is None or not meta.stats.data:
        return  # --benchmark-disable, or the test failed before measuring
    data = sorted(t * 1e3 for t in meta.stats.data)
    row = Row(
        group=bm.group or "",
        runner=bm.extra_info.get("runner", request.node.name),
        rounds=len(data),
        median=percentile(data, 50),
        p99=percentile(data, 99),
        minimum=data[0],
        maximum=data[-1],
    )
    bm.extra_info.update(median_ms=round(row.median, 4), p99_ms=round(row.p99, 4))
    request.config.stash[_KEY].append(row)


def _check_targets(rows: list[Row]) -> None:
    by_group: dict[str, dict[str, Row]] = {}
    for r in rows:
        r.checks.clear()
        by_group.setdefault(r.group, {})[r.runner] = r
    for group, runners in by_group.items():
        if group.startswith("full cycle"):
            # issue 2's targets, for the sandbox without seccomp, against bwrap
            bare, bw = runners.get("sandbox-noseccomp"), runners.get("bwrap")
            if bare is not None:
                bare.checks.append((f"median <= {CYCLE_MEDIAN_MS} ms", bare.median <= CYCLE_MEDIAN_MS))
                bare.checks.append((f"p99 <= {CYCLE_P99_MS} ms", bare.p99 <= CYCLE_P99_MS))
                if bw is not None:
                    bare.checks.append((f"median < bwrap's {bw.median:.2f} ms", bare.median < bw.median))
            # issue 5's, for the default sandbox, against bwrap with the same filter
            ours, bws = runners.get("sandbox"), runners.get("bwrap+seccomp")
            if ours is not None:
                ok = ours.median <= CYCLE_HARDENED_MEDIAN_MS
                ours.checks.append((f"median <= {CYCLE_HARDENED_MEDIAN_MS} ms", ok))
                ours.checks.append((f"p99 <= {CYCLE_P99_MS} ms", ours.p99 <= CYCLE_P99_MS))
                if bws is not None:
                    what = f"median < bwrap+seccomp's {bws.median:.2f} ms"
                    ours.checks.append((what, ours.median < bws.median))
            # issue 4's, for the default sandbox with limits on, against bwrap with the same filter
            lim = runners.get("sandbox+limits")
            if lim is not None:
                lim.checks.append(
                    (f"median <= {CYCLE_HARDENED_MEDIAN_MS} ms", lim.median <= CYCLE_HARDENED_MEDIAN_MS)
                )
                if bws is not None:
                    what = f"median < bwrap+seccomp's {bws.median:.2f} ms"
                    lim.checks.append((what, lim.median < bws.median))
        elif group.startswith("cold pull + unpack") and (ours := runners.get("sandbox")):
            if (peer := runners.get("skopeo+umoci")) is not None:  # issue 3: no slower than theirs
                what = f"median <= skopeo+umoci's {peer.median:.0f} ms"
                ours.checks.append((what, ours.median <= peer.median))
        elif group == "exec round trip, back-to-back" and (ours := runners.get("sandbox")):
            ours.checks.append((f"median <= {EXEC_MEDIAN_MS} ms", ours.median <= EXEC_MEDIAN_MS))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_KEY, [])
    if not rows:
        return
    _check_targets(rows)
    tr = terminalreporter
    tr.section("sandbox start-up: median and p99 (ms)")
    tr.write_line(
        f"{'group':34} {'runner':18} {'rounds':>6} {'min':>7} {'median':>7} {'p99':>7} {'max':>7}  targets"
    )
    for r in sorted(rows, key=lambda r: (r.group, r.median)):
        checks = ", ".join(f"{'ok' if ok else 'MISSED'}: {what}" for what, ok in r.checks)
        tr.write_line(
            f"{r.group:34} {r.runner:18} {r.rounds:>6} {r.minimum:>7.3f} {r.median:>7.3f} "
            f"{r.p99:>7.3f} {r.maximum:>7.3f}  {checks}"
        )
    # Other work on the machine shows up in the p99s first: say how busy it was.
    tr.write_line(
        f"load average (1, 5, 15 min) at start: {config.stash.get(_LOAD, '?')}, "
        f"at end: {_loadavg()}; {os.cpu_count()} CPUs"
    )
    missed = [f"{r.group} / {r.runner}: {what}" for r in rows for what, ok in r.checks if not ok]
    if missed:
        note = "" if config.getoption("bench_strict") else " (informational; --bench-strict fails the run)"
        tr.write_line(f"{len(missed)} target(s) missed{note}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    rows = session.config.stash.get(_KEY, [])
    if not session.config.getoption("bench_strict") or not rows:
        return
    _check_targets(rows)
    if any(not ok for r in rows for _, ok in r.checks) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- the rootfs and the peers ----------------------------------------------------


@pytest.fixture(scope="session")
def rootfs() -> str:
    if not os.path.isfile(os.path.join(ROOTFS, "bin/true")):
        pytest.skip(f"no rootfs with /bin/true at {ROOTFS}: build it with images/debian/build-rootfs.sh")
    return ROOTFS


@pytest.fixture(scope="session", autouse=True)
def _spawn_is_vfork() -> None:
    """The peers are started with subprocess.run, and that must not fork the
    interpreter (a fork of a big parent costs ~10 ms here).  On 3.11 with
    close_fds=True and no preexec_fn/user/group/umask, _posixsubprocess uses
    vfork() (checked with `strace -f -e trace=clone,clone3,vfork`)."""
    if not getattr(subprocess, "_USE_VFORK", False):
        pytest.skip("this Python's subprocess does not use vfork: the peer figures would be unfair")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {name})")
    return path  # absolute: no PATH search in the child


@pytest.fixture(scope="session")
def bwrap_argv(rootfs: str) -> list[str]:
    return [
        _tool("bwrap"),
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        rootfs,
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "/bin/true",
    ]


# crun: an OCI bundle written by hand, as close to the bwrap line and to our
# sandbox as the spec allows: every namespace bwrap --unshare-all makes but
# cgroup (see below), container root mapped onto 100000 (like our default
# range), the rootfs read-only, /proc, a tmpfs /dev, a tmpfs /tmp; no
# seccomp, no cgroup (--cgroup-manager=disabled), default capabilities.


def _crun_config(rootfs: str) -> dict[str, Any]:
    idmap = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    return {
        "ociVersion": "1.0.0",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/true"],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
        },
        "root": {"path": rootfs, "readonly": True},
        "hostname": "crun",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "mode=755", "size=65536k"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"],
            },
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "user")],
            "uidMappings": idmap,
            "gidMappings": idmap,
        },
    }


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
UNIFIED = b"/sys/fs/cgroup/unified"


def _hybrid_cgroups() -> bool:
    try:
        return bool(Path(UNIFIED.decode(), "cgroup.controllers").read_text().split())
    except OSError:
        return False


class _HiddenUnified:
    """crun 1.8 refuses a cgroup "hybrid" host whose v2 hierarchy has any
    controller ("cgroups in hybrid mode not supported, drop all controllers
    from cgroupv2"), even with --cgroup-manager=disabled; this host has
    hugetlb there.  So for the crun benchmarks only, this process steps into a
    private mount namespace without /sys/fs/cgroup/unified (crun then sees a
    plain v1 host) and steps back afterwards.  Nothing changes on the host."""

    def __enter__(self) -> _HiddenUnified:
        if threading.active_count() > 1:
            raise OSError(
                errno.EINVAL,
                "this process has threads already (run the crun "
                "benchmarks before any sandbox: see pytest_collection_modifyitems)",
            )
        self._old = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        if _libc.unshare(CLONE_NEWNS) != 0:
            e = ctypes.get_errno()
            os.close(self._old)
            raise OSError(e, f"unshare(CLONE_NEWNS): {os.strerror(e)} (is the process threaded?)")
        ok = (
            _libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0
            and _libc.umount2(UNIFIED, MNT_DETACH) == 0
        )
        if not ok:
            e = ctypes.get_errno()
            self.__exit__()
            raise OSError(e, f"hiding {UNIFIED.decode()}: {os.strerror(e)}")
        return self

    def __exit__(self, *exc: object) -> None:
        r = _libc.setns(self._old, CLONE_NEWNS)
        os.close(self._old)
        if r != 0:  # pragma: no cover - would leave the process in the private namespace
            raise OSError(ctypes.get_errno(), "setns back to the host mount namespace")


@dataclass
class Crun:
    argv: Callable[[], list[str]]
    stdio: dict[str, int]
    hidden_unified: bool


@pytest.fixture(scope="session")
def _crun_bundle(rootfs: str) -> Iterator[tuple[str, str, str]]:
    crun = _tool("crun")
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-crun-") as tmp:
        bundle, state = os.path.join(tmp, "bundle"), os.path.join(tmp, "state")
        os.mkdir(bundle)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(_crun_config(rootfs), f)
        yield crun, bundle, state


@pytest.fixture
def crun_runner(_crun_bundle: tuple[str, str, str]) -> Iterator[Crun]:
    """The crun command line, its stdio, and (on a hybrid host) the private
    mount namespace it needs, for the length of one benchmark."""
    crun, bundle, state = _crun_bundle
    counter = iter(range(1 << 62))

    def argv() -> list[str]:
        # Each run is a new container id; `crun run` deletes it on exit.
        return [
            crun,
            "--root",
            state,
            "--cgroup-manager=disabled",
            "run",
            "--bundle",
            bundle,
            f"bench-{os.getpid()}-{next(counter)}",
        ]

    # crun fchown()s fds 0-2 to the mapped container root (100000): never hand
    # it a shared file such as /dev/null or the terminal.  A private pipe for
    # stdin, a private file for its output.
    hide = _hybrid_cgroups()
    with contextlib.ExitStack() as stack:
        r, w = os.pipe2(os.O_CLOEXEC)
        stack.callback(os.close, r)
        stack.callback(os.close, w)
        out = stack.enter_context(tempfile.TemporaryFile(prefix="sandbox-bench-crun-out-"))
        stdio = {"stdin": r, "stdout": out.fileno(), "stderr": out.fileno()}
        if hide:
            try:
                stack.enter_context(_HiddenUnified())
            except OSError as e:
                pytest.skip(f"crun needs a cgroup v2 hierarchy without controllers here, and {e}")
        p = subprocess.run(argv(), **stdio)
        if p.returncode != 0:
            out.seek(0)
            pytest.skip(f"crun does not run here: {out.read().decode(errors='replace').strip()}")
        yield Crun(argv, stdio, hide)
