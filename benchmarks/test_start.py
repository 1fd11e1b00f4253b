"""Start-up cost: our full cycle against bubblewrap, crun and a plain
fork+exec, measured in the same run; and the exec round trip in a running
sandbox.  See README.md for the command and the figures.

Each benchmark is one group of pytest-benchmark; the conftest prints median
and p99 per benchmark, with the targets of issue 2, at the end of the run.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from sandbox import Limits, Sandbox

if TYPE_CHECKING:
    from conftest import Crun

IDLE = 0.050  # seconds of idleness before each round, outside the timed region
MODES = {
    # mode: (rounds, idle seconds before each round)
    "back-to-back": (200, 0.0),
    "idle": (100, IDLE),
}
# Warm-up rounds, the same for every runner: a process's first hundred or so
# sandboxes are slower (2.07 against 1.75-1.9 ms medians of the next blocks of
# 200, measured), as pools fill and the kernel's caches settle.
WARMUP = 30
TRUE = ["/bin/true"]


def _sleep() -> None:
    time.sleep(IDLE)


def _measure(
    benchmark: BenchmarkFixture,
    fn: Callable[[], object],
    group: str,
    runner: str,
    mode: str,
    rounds: int | None = None,
    warmup: int = WARMUP,
) -> None:
    """One benchmark.pedantic run: `rounds` timed calls of `fn`, each after
    `IDLE` seconds of sleep in idle mode (the sleep is the setup, untimed)."""
    default_rounds, idle = MODES[mode]
    rounds = rounds or default_rounds
    benchmark.group = f"{group}, {mode}"
    benchmark.extra_info.update(runner=runner, mode=mode, idle_s=idle)
    benchmark.pedantic(fn, setup=_sleep if idle else None, rounds=rounds, warmup_rounds=warmup, iterations=1)


# -- the full cycle: start, exec /bin/true, stop ----------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_cycle_sandbox(benchmark: BenchmarkFixture, rootfs: str, mode: str) -> None:
    def cycle() -> None:
        with Sandbox(rootfs=rootfs) as sb:
            r = sb.exec(TRUE)
        assert r.exit_code == 0, r

    _measure(benchmark, cycle, "full cycle", "sandbox", mode)


BENCH_LIMITS = Limits(memory="256M", pids=128, cpus=1.0, cpu_time=10, timeout=10, output="16M")


@pytest.mark.parametrize("mode", MODES)
def test_cycle_sandbox_limits(benchmark: BenchmarkFixture, rootfs: str, mode: str) -> None:
    """The default sandbox with limits on (issue 4): its cgroup and the
    exec's, memory, pids, CPU quota, CPU time, wall clock and output caps."""

    def cycle() -> None:
        with Sandbox(rootfs=rootfs, limits=BENCH_LIMITS) as sb:
            r = sb.exec(TRUE)
        assert r.exit_code == 0 and r.max_memory is not None, r

    _measure(benchmark, cycle, "full cycle", "sandbox+limits", mode)


@pytest.mark.parametrize("mode", MODES)
def test_cycle_sandbox_no_seccomp(benchmark: BenchmarkFixture, rootfs: str, mode: str) -> None:
    """The same cycle with seccomp=None: what the filter's load costs (issue 2's
    target was set for this configuration)."""

    def cycle() -> None:
        with Sandbox(rootfs=rootfs, seccomp=None) as sb:
            r = sb.exec(TRUE)
        assert r.exit_code == 0, r

    _measure(benchmark, cycle, "full cycle", "sandbox-noseccomp", mode)


@pytest.mark.parametrize("mode", MODES)
def test_cycle_bwrap(benchmark: BenchmarkFixture, bwrap_argv: list[str], mode: str) -> None:
    def cycle() -> None:
        subprocess.run(bwrap_argv, check=True)

    _measure(benchmark, cycle, "full cycle", "bwrap", mode)


@pytest.mark.parametrize("mode", MODES)
def test_cycle_bwrap_seccomp(benchmark: BenchmarkFixture, bwrap_argv: list[str], mode: str) -> None:
    """bwrap with our default profile as its filter (`--seccomp FD` takes a
    compiled program): the peer of our default sandbox, which loads it too."""
    from sandbox import seccomp

    prog = seccomp.compile_profile("default")
    assert prog
    fd = os.memfd_create("bwrap-seccomp")
    os.write(fd, prog)
    argv = [*bwrap_argv[:-1], "--seccomp", str(fd), bwrap_argv[-1]]

    def cycle() -> None:
        os.lseek(fd, 0, os.SEEK_SET)  # bwrap reads the program from the fd's offset
        subprocess.run(argv, check=True, pass_fds=(fd,))

    try:
        _measure(benchmark, cycle, "full cycle", "bwrap+seccomp", mode)
    finally:
        os.close(fd)


@pytest.mark.parametrize("mode", MODES)
def test_cycle_crun(benchmark: BenchmarkFixture, crun_runner: Crun, mode: str) -> None:
    argv, stdio = crun_runner.argv, crun_runner.stdio
    benchmark.extra_info["hidden_cgroup2_unified"] = crun_runner.hidden_unified

    def cycle() -> None:
        subprocess.run(argv(), check=True, **stdio)

    _measure(benchmark, cycle, "full cycle", "crun", mode)


@pytest.mark.parametrize("mode", MODES)
def test_cycle_fork_exec(benchmark: BenchmarkFixture, mode: str) -> None:
    """The floor: a plain vfork+exec of the host's /bin/true, no isolation."""

    def cycle() -> None:
        subprocess.run(TRUE, check=True)

    _measure(benchmark, cycle, "full cycle", "fork-exec", mode)


# -- exec in a running sandbox ----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_exec_roundtrip(benchmark: BenchmarkFixture, rootfs: str, mode: str) -> None:
    with Sandbox(rootfs=rootfs) as sb:

        def run() -> None:
            r = sb.exec(TRUE)
            assert r.exit_code == 0, r

        _measure(
            benchmark,
            run,
            "exec round trip",
            "sandbox",
            mode,
            rounds=1000 if mode == "back-to-back" else None,
            warmup=20,
        )


# -- the exec round trip on a busy machine ----------------------------------------

LOADED = "under load"


@pytest.fixture
def cpu_hogs(rootfs: str) -> Iterator[None]:
    """One busy loop per CPU, the whole time, as a judge's other submissions
    would be; inside a sandbox of their own, with limits and a timeout."""
    n = os.cpu_count() or 1
    with Sandbox(rootfs=rootfs, limits=Limits(cpus=float(n), pids=n + 4, memory="64M")) as hogs:
        procs = [hogs.spawn(["sh", "-c", "while :; do :; done"], timeout=300) for _ in range(n)]
        try:
            time.sleep(0.2)  # running on every CPU
            yield
        finally:
            for p in procs:
                p.kill()
                p.wait()


def _measure_loaded(benchmark: BenchmarkFixture, fn: Callable[[], object], runner: str) -> None:
    benchmark.group = f"exec round trip, {LOADED}"
    benchmark.extra_info.update(runner=runner, mode=LOADED, idle_s=0.0)
    benchmark.pedantic(fn, rounds=300, warmup_rounds=20, iterations=1)


def test_exec_roundtrip_loaded(benchmark: BenchmarkFixture, rootfs: str, cpu_hogs: None) -> None:
    """The exec round trip while every CPU is busy with a loop of another
    sandbox (whose cgroup holds them to their fair share)."""
    with Sandbox(rootfs=rootfs) as sb:

        def run() -> None:
            r = sb.exec(TRUE)
            assert r.exit_code == 0, r

        _measure_loaded(benchmark, run, "sandbox")


def test_fork_exec_loaded(benchmark: BenchmarkFixture, cpu_hogs: None) -> None:
    """The floor under the same load: a plain vfork+exec of the host's /bin/true."""

    def run() -> None:
        subprocess.run(TRUE, check=True)

    _measure_loaded(benchmark, run, "fork-exec")
