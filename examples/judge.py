"""A judge: grade C and Python submissions against test cases, with time
and memory limits, on every core, and print a verdict table.

    sudo .venv/bin/python examples/judge.py                  # examples/judge_submissions/*
    sudo .venv/bin/python examples/judge.py my.c other.py    # these files only

The problem: read N, then N integers; print their sum (it overflows 32 bits
on the large test).  Each submission gets sandboxes of its own:

- C is compiled inside a sandbox too (image "debian" with the host's /usr
  mounted read-only for gcc; no image here ships a compiler): an
  `#include "/etc/shadow"` reads that sandbox's file, never the host's.
  `gcc -static -O2`, so the binary runs in any image.
- Every test runs in one sandbox of the "python" image per submission: its
  program is the only file of a host directory mounted read-only at /srv,
  the rootfs is read-only, the user is nobody, the seccomp profile is
  "judge" (no sockets but AF_UNIX), and each run has its limits:
  CPU time, wall clock, memory (no swap), processes, output, file size.
  The expected answers never enter a sandbox.

Verdicts from ExecResult.reason: timeout or cpu_time -> TLE, oom -> MLE,
output_limit -> OLE, signaled, seccomp, pids, file_size or a non-zero exit
status -> RE, an answer that differs -> WA, else AC (and CE when C does not
compile).  A submission's verdict is that of its first test that is not AC.

A first comment line "expect: VERDICT" in a submission is checked: main()
exits with status 1 when a verdict differs from what its file expects.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sandbox import ExecResult, Limits, Mount, Sandbox

HERE = Path(__file__).resolve().parent
SUBMISSIONS = HERE / "judge_submissions"
RUN_IMAGE = "python"  # python3 for Python; static C binaries run anywhere
COMPILE_IMAGE = "debian"
LANGUAGES = {".c": "C", ".py": "Python"}
VERDICTS = ("AC", "WA", "TLE", "MLE", "RE", "OLE", "CE")
_EXPECT = re.compile(r"^\s*(?:#|//)\s*expect:\s*([A-Z]+)")


@dataclass(frozen=True)
class TestCase:
    name: str
    input: str
    answer: str


@dataclass(frozen=True)
class Problem:
    name: str
    tests: tuple[TestCase, ...]
    cpu_time: float = 1.0  # seconds of CPU per test
    wall_time: float = 3.0  # seconds of wall clock per test (a sleeper uses no CPU)
    memory: str = "128M"
    pids: int = 16
    output: str = "1M"

    def limits(self) -> Limits:
        return Limits(
            cpu_time=self.cpu_time, timeout=self.wall_time, memory=self.memory, pids=self.pids,
            output=self.output, file_size="1M", cpus=1.0,
        )  # fmt: skip


@dataclass(frozen=True)
class Submission:
    name: str
    language: str  # "C" or "Python"
    source: str
    expect: str | None = None  # from its "expect:" comment, if any

    @classmethod
    def from_file(cls, path: Path) -> Submission:
        lang = LANGUAGES.get(path.suffix)
        if lang is None:
            raise ValueError(f"{path}: unknown language (use one of {', '.join(LANGUAGES)})")
        source = path.read_text()
        m = _EXPECT.match(source.splitlines()[0] if source else "")
        return cls(path.name, lang, source, m.group(1) if m else None)


@dataclass
class TestVerdict:
    test: str
    verdict: str
    cpu_time: float
    wall_time: float
    memory: int | None  # peak bytes, all processes of the run
    reason: str
    detail: str = ""  # what the verdict rests on: exit status, signal, stderr tail
    stdout: str = field(default="", repr=False)  # what the program printed (its head)


@dataclass
class Graded:
    submission: Submission
    verdict: str
    tests: list[TestVerdict]
    compile_output: str = ""

    @property
    def as_expected(self) -> bool | None:
        e = self.submission.expect
        return None if e is None else e == self.verdict

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["submission"] = {k: v for k, v in d["submission"].items() if k != "source"}
        return d


def sum_problem(large: int = 200_000, seed: int = 7) -> Problem:
    """Three tests: small, negative numbers, and N large numbers whose sum
    needs 64 bits (an `int` overflows there)."""
    rng = random.Random(seed)
    xs = [rng.randrange(10**8, 10**9) for _ in range(large)]
    return Problem(
        "sum",
        (
            TestCase("small", "2\n1 2\n", "3\n"),
            TestCase("negative", "5\n-1 -2 -3 4 10\n", "8\n"),
            TestCase("large", f"{large}\n{' '.join(map(str, xs))}\n", f"{sum(xs)}\n"),
        ),
    )


def load_submissions(paths: Sequence[Path] | None = None) -> list[Submission]:
    files = sorted(SUBMISSIONS.iterdir()) if paths is None else list(paths)
    return [Submission.from_file(p) for p in files if p.suffix in LANGUAGES or paths is not None]


# -- the verdict of one run --------------------------------------------------------


def verdict_of(r: ExecResult, answer: str) -> tuple[str, str]:
    """(verdict, what it rests on) for one run against the expected answer."""
    if r.reason in ("timeout", "cpu_time"):
        return "TLE", r.describe()
    if r.reason == "oom":
        return "MLE", r.describe()
    if r.reason == "output_limit":
        return "OLE", r.describe()
    if r.reason != "exited" or r.exit_code != 0:  # signaled, seccomp, pids, file_size, exit status
        tail = r.stderr_text.strip().splitlines()[-1:] or [""]
        return "RE", f"{r.describe()}: {tail[0][:120]}".rstrip(": ")
    if r.stdout_text.split() != answer.split():
        return "WA", f"printed {r.stdout_text[:40].strip()!r}, expected {answer[:40].strip()!r}"
    return "AC", ""


# -- grading -----------------------------------------------------------------------


def compile_c(source: str, out_dir: Path, timeout: float = 60.0) -> tuple[bool, str]:
    """gcc -static -O2 in a sandbox: the host's /usr read-only, nobody, the
    judge profile.  Writes out_dir/main on success; (ok, compiler output)."""
    with Sandbox(
        image=COMPILE_IMAGE, mounts=[Mount("/usr", "/usr")], user="65534:65534", seccomp="judge",
        hostname="compile",
        limits=Limits(cpu_time=timeout / 2, timeout=timeout, memory="512M", pids=32, file_size="64M"),
    ) as sb:  # fmt: skip
        sb.files.write_text("/tmp/main.c", source)
        r = sb.exec(["gcc", "-static", "-O2", "-o", "/tmp/main", "/tmp/main.c"], cwd="/tmp")
        if not r.ok:
            return False, (r.stderr_text or r.describe())[-2000:]
        (out_dir / "main").write_bytes(sb.files.read_bytes("/tmp/main"))
        (out_dir / "main").chmod(0o755)
        return True, r.stderr_text


def _prepare(sub: Submission, box: Path) -> tuple[list[str] | None, str]:
    """The program in `box` (the directory mounted at /srv), and its argv."""
    if sub.language == "Python":
        (box / "main.py").write_text(sub.source)
        (box / "main.py").chmod(0o644)
        return ["python3", "/srv/main.py"], ""
    ok, out = compile_c(sub.source, box)
    return (["/srv/main"] if ok else None), out


def grade(sub: Submission, problem: Problem) -> Graded:
    box = Path(tempfile.mkdtemp(prefix="judge-"))
    try:
        box.chmod(0o755)  # readable by the sandbox's user (host files appear as nobody's)
        argv, compile_output = _prepare(sub, box)
        if argv is None:
            return Graded(sub, "CE", [], compile_output)
        tests = []
        with Sandbox(
            image=RUN_IMAGE, mounts=[Mount(box, "/srv")], user="65534:65534", read_only=True,
            seccomp="judge", hostname="judge", disk="16M",
        ) as sb:  # fmt: skip
            for t in problem.tests:
                r = sb.exec(argv, stdin=t.input, limits=problem.limits(), cwd="/tmp")
                v, detail = verdict_of(r, t.answer)
                tests.append(
                    TestVerdict(t.name, v, r.cpu_time, r.wall_time, r.max_memory, r.reason, detail,
                                r.stdout_text[:2000])
                )  # fmt: skip
        first = next((t.verdict for t in tests if t.verdict != "AC"), "AC")
        return Graded(sub, first, tests, compile_output)
    finally:
        shutil.rmtree(box, ignore_errors=True)


def grade_all(subs: Sequence[Submission], problem: Problem, workers: int | None = None) -> list[Graded]:
    """Every submission, `workers` at a time (default: one per core); in order."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda s: grade(s, problem), subs))


# -- the table ---------------------------------------------------------------------


def _cell(t: TestVerdict) -> str:
    mem = "   -  " if t.memory is None else f"{t.memory / 2**20:5.1f}M"
    return f"{t.verdict:3} {t.cpu_time:4.2f} {t.wall_time:4.2f}s {mem}"


def format_table(graded: Sequence[Graded], problem: Problem) -> str:
    names = [t.name for t in problem.tests]
    width = max([len(g.submission.name) for g in graded] + [10])
    cell = 22
    lines = [
        f"{'submission':{width}}  {'lang':6}  {'verdict':7}  {'expected':8}  "
        + "  ".join(f"{n:{cell}}" for n in names),
    ]
    for g in graded:
        exp = g.submission.expect or "-"
        mark = "" if g.as_expected in (None, True) else " !!"
        cells = [_cell(t) for t in g.tests] or ["(did not compile)"]
        lines.append(
            f"{g.submission.name:{width}}  {g.submission.language:6}  {g.verdict:7}  {exp + mark:8}  "
            + "  ".join(f"{c:{cell}}" for c in cells)
        )
    lines.append(f"(per test: verdict, CPU and wall-clock seconds, peak memory of all the run's processes; "
                 f"limits: {problem.cpu_time:g} s CPU, {problem.wall_time:g} s wall, {problem.memory}, "
                 f"{problem.pids} processes, {problem.output} output)")  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("files", nargs="*", type=Path, help="submissions (default: examples/judge_submissions)")
    ap.add_argument("--json", action="store_true", help="one JSON object per submission instead of a table")
    ap.add_argument("--workers", type=int, default=None, help="submissions graded at once (default: cores)")
    args = ap.parse_args(argv)
    problem = sum_problem()
    try:
        subs = load_submissions(args.files or None)
    except (OSError, ValueError) as e:
        print(f"judge: {e}", file=sys.stderr)
        return 2
    start = time.monotonic()
    graded = grade_all(subs, problem, args.workers)
    took = time.monotonic() - start
    if args.json:
        for g in graded:
            print(json.dumps(g.to_dict()))
    else:
        print(format_table(graded, problem))
        print(f"{len(graded)} submissions x {len(problem.tests)} tests in {took:.1f} s "
              f"on {args.workers or os.cpu_count()} workers")  # fmt: skip
    wrong = [g.submission.name for g in graded if g.as_expected is False]
    if wrong:
        print("verdicts other than expected:", ", ".join(wrong), file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
