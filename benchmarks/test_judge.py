"""The judge at scale: grade 1,000 small submissions (a Python program that
reads two numbers and prints their sum) with examples/judge.py, on every
core, beside a plain `subprocess.run` of the same programs on the host with
the same thread pool (no isolation, no limits: the floor).

Each submission is graded as the example grades one: its own host directory
mounted read-only, a fresh sandbox of the "python" image (nobody, read-only
rootfs, the judge profile), one run with the problem's limits, the verdict.
One round of each; the figures are the round's wall clock, submissions per
second and the cost of one submission (wall clock x workers / submissions,
and the CPU time of this process and its children per submission).

    .venv/bin/python -m pytest benchmarks/test_judge.py -p no:cacheprovider --benchmark-only
    SANDBOX_BENCH_JUDGE_N=200 ...     # fewer submissions
"""

from __future__ import annotations

import importlib.util
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

GROUP = "judge: 1,000 submissions, every core"
COUNT = int(os.environ.get("SANDBOX_BENCH_JUDGE_N", "1000"))
if COUNT != 1000:
    GROUP = f"judge: {COUNT} submissions, every core"
WORKERS = os.cpu_count() or 1
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Debian's python3.11, as in the image (a python3 found on PATH may be a slow shim, such as pyenv's)
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3") or "python3"


def _judge() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_judge", EXAMPLES / "judge.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


judge = _judge()
PROBLEM = judge.Problem("a+b", (judge.TestCase("one", "20 22\n", "42\n"),))


def _submissions() -> list[Any]:
    # distinct sources, the same work: what a contest's a+b looks like
    body = "a, b = map(int, input().split())\nprint(a + b)\n"
    return [judge.Submission(f"sub{i:04d}.py", "Python", f"# submission {i}\n{body}") for i in range(COUNT)]


def _plain(sub: Any) -> str:
    """The same program run directly on the host: write it, run it, compare."""
    d = tempfile.mkdtemp(prefix="bench-judge-")
    try:
        path = os.path.join(d, "main.py")
        with open(path, "w") as f:
            f.write(sub.source)
        t = PROBLEM.tests[0]
        r = subprocess.run([PYTHON, path], input=t.input.encode(), capture_output=True, timeout=10)
        return "AC" if r.returncode == 0 and r.stdout.split() == t.answer.encode().split() else "WA"
    finally:
        shutil.rmtree(d, ignore_errors=True)


@dataclass
class Figures:
    runner: str
    wall: float = 0.0
    cpu: float = 0.0

    def line(self) -> str:
        return (
            f"{self.runner:12} {COUNT:>6} {self.wall:>8.2f} {COUNT / self.wall:>9.1f} "
            f"{self.wall * WORKERS / COUNT * 1e3:>12.2f} {self.cpu / COUNT * 1e3:>12.2f}"
        )


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class _Summary:
    """A table at the end of the run (a fixture's own output would be captured)."""

    def __init__(self) -> None:
        self.rows: list[Figures] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        if not self.rows:
            return
        tr.section(f"judge: {COUNT} submissions, {WORKERS} workers (one per core)")
        tr.write_line(
            f"{'runner':12} {'subs':>6} {'wall s':>8} {'subs/s':>9} {'ms/sub/core':>12} {'cpu ms/sub':>12}"
        )
        for r in self.rows:
            tr.write_line(r.line())
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        tr.write_line(f"load average (1, 5, 15 min): {load}")


@pytest.fixture(scope="module")
def table(request: pytest.FixtureRequest) -> Iterator[list[Figures]]:
    summary = _Summary()
    if not request.config.pluginmanager.has_plugin("judge-benchmark-summary"):
        request.config.pluginmanager.register(summary, "judge-benchmark-summary")
    yield summary.rows


def _measure(
    benchmark: BenchmarkFixture, table: list[Figures], runner: str, grade: Callable[[Any], str]
) -> None:
    subs = _submissions()
    fig = Figures(runner)

    def batch() -> None:
        c0, t0 = _cpu(), time.perf_counter()
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            verdicts = list(pool.map(grade, subs))
        fig.wall, fig.cpu = time.perf_counter() - t0, _cpu() - c0
        assert verdicts == ["AC"] * COUNT, sorted(set(verdicts))

    benchmark.group = GROUP
    benchmark.extra_info.update(runner=runner, submissions=COUNT, workers=WORKERS)
    benchmark.pedantic(batch, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(
        submissions_per_s=round(COUNT / fig.wall, 2), cpu_ms_per_submission=round(fig.cpu / COUNT * 1e3, 3)
    )
    table.append(fig)


def test_judge_sandbox(benchmark: BenchmarkFixture, table: list[Figures]) -> None:
    if os.geteuid() != 0:
        pytest.skip("sandboxes need root")
    from sandbox import images

    if not any(r["ref"] == "docker.io/library/python:latest" for r in images.list()):
        pytest.skip("no python image in the store: sandbox build images/python")
    _measure(benchmark, table, "sandbox", lambda s: judge.grade(s, PROBLEM).verdict)


def test_judge_plain_subprocess(benchmark: BenchmarkFixture, table: list[Figures]) -> None:
    _measure(benchmark, table, "subprocess", _plain)
