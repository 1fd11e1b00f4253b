"""The three kinds of users, each by its example: the judge
(examples/judge.py), the application (examples/untrusted_snippets.py) and
the pytest plugin (examples/test_in_sandbox.py, through `pytest -p sandbox`,
also under pytest-xdist)."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

from sandbox import images
from tests.conftest import PROJECT, have, require, require_sandbox_host

pytestmark = pytest.mark.integration
EXAMPLES = PROJECT / "examples"
TIMEOUT = 600


# -- the images the examples use ------------------------------------------------------


def _have_image(ref: str) -> bool:
    return any(r["ref"] == f"docker.io/library/{ref}" for r in images.list())


@pytest.fixture(scope="session")
def example_images(busybox_rootfs: Path, debian_rootfs: Path) -> None:
    """busybox, debian and python in the default store: built here from the
    recipes when missing (./dev test stores the first two; python takes a
    minute of mmdebstrap), one process at a time."""
    require_sandbox_host()
    trees = {"busybox": busybox_rootfs, "debian": debian_rootfs, "python": None}
    lock = Path(os.environ.get("SANDBOX_HOME", "/var/lib/sandbox")) / ".example-images.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        for name, tree in trees.items():
            if not _have_image(f"{name}:latest"):
                images.build(PROJECT / "images" / name, rootfs=tree)
    require(_have_image("python:latest"), "the python image could not be stored")


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _run(*argv: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)


# -- the judge --------------------------------------------------------------------------

# Every submission's verdict, and the reason each run of it must end with
# (None: any).  Written here, not only in the files' "expect:" lines, so that
# editing a submission cannot make its own test pass.
EXPECTED: dict[str, tuple[str, str | None]] = {  # "TLE": cpu_time, or timeout when starved of CPU
    "ac_sum.c": ("AC", "exited"),
    "ac_sum.py": ("AC", "exited"),
    "wa_overflow.c": ("WA", "exited"),
    "wa_off_by_one.py": ("WA", "exited"),
    "tle_spin.c": ("TLE", "TLE"),
    "tle_sleep.py": ("TLE", "timeout"),
    "tle_quadratic.py": ("TLE", None),  # AC on the small tests, cpu_time on the large one
    "mle_hog.c": ("MLE", "oom"),
    "mle_list.py": ("MLE", "oom"),
    "re_segfault.c": ("RE", "signaled"),
    "re_exception.py": ("RE", "exited"),
    "ole_spam.py": ("OLE", "output_limit"),
    "hostile_forkbomb.c": ("RE", "pids"),
    "hostile_forkbomb.py": ("RE", "pids"),
    "hostile_write_outside.py": ("RE", "exited"),
    "hostile_shadow.py": ("RE", "exited"),
    "hostile_network.py": ("RE", "exited"),
    "hostile_unshare.c": ("RE", "exited"),
    "hostile_kill_all.py": ("RE", "signaled"),
    "hostile_include_shadow.c": ("CE", None),
}
CANARY = "judge-hostile-canary"  # what hostile_write_outside.py writes, wherever it can
CANARY_PLACES = [Path("/tmp", CANARY), Path("/srv", CANARY), Path("/etc", CANARY), Path("/", CANARY)]


def _tree_digest(top: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(top.rglob("*")):
        st = p.lstat()
        h.update(f"{p.relative_to(top)} {st.st_mode:o} {st.st_size} {st.st_mtime_ns}\n".encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _shadow_secrets() -> list[str]:
    """The host's password hashes (or the whole file's lines): none may show."""
    try:
        lines = Path("/etc/shadow").read_text().splitlines()
    except OSError:
        return []
    return [x for x in lines if x.strip()]


@pytest.fixture(scope="module")
def judged(example_images: None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """examples/judge.py --json over every submission, with the host's state
    before and after: (graded by name, what changed outside)."""
    require(have("gcc"), "gcc on the host: the judge mounts the host's /usr for its compile sandbox")
    for p in CANARY_PLACES:
        assert not p.exists(), f"{p} exists before the judge runs: remove it"
    subs = EXAMPLES / "judge_submissions"
    before = {"submissions": _tree_digest(subs), "/etc/passwd": Path("/etc/passwd").read_bytes()}
    tmp_before = set(os.listdir("/tmp"))
    r = _run(str(EXAMPLES / "judge.py"), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    graded = {d["submission"]["name"]: d for d in map(json.loads, r.stdout.splitlines())}
    changed = [str(p) for p in CANARY_PLACES if p.exists()]
    if _tree_digest(subs) != before["submissions"]:
        changed.append(str(subs))
    if Path("/etc/passwd").read_bytes() != before["/etc/passwd"]:
        changed.append("/etc/passwd")
    # what the judge itself made in /tmp (its per-submission dirs) is gone again
    changed += [f"/tmp/{n}" for n in set(os.listdir("/tmp")) - tmp_before if n.startswith("judge-")]
    return graded, changed


def test_judge_grades_every_submission_right(judged: tuple[dict[str, dict[str, Any]], list[str]]) -> None:
    graded, _ = judged
    assert sorted(graded) == sorted(EXPECTED), "a submission without an expected verdict here, or missing"
    wrong = {}
    for name, (verdict, reason) in EXPECTED.items():
        g = graded[name]
        reasons = {t["reason"] for t in g["tests"]}
        allowed = {"cpu_time", "timeout"} if reason == "TLE" else {reason}
        if g["verdict"] != verdict or (reason is not None and not reasons <= allowed):
            wrong[name] = (g["verdict"], sorted(reasons), [t["detail"] for t in g["tests"]])
        assert g["submission"]["expect"] == verdict  # the file says the same
    assert not wrong, wrong


def test_judge_per_test_figures(judged: tuple[dict[str, dict[str, Any]], list[str]]) -> None:
    graded, _ = judged
    quad = [t["verdict"] for t in graded["tle_quadratic.py"]["tests"]]
    assert quad == ["AC", "AC", "TLE"]
    assert [t["verdict"] for t in graded["wa_overflow.c"]["tests"]] == ["AC", "AC", "WA"]
    for t in graded["mle_list.py"]["tests"] + graded["mle_hog.c"]["tests"]:
        assert t["memory"] is not None and t["memory"] <= 128 * 2**20 + 2**20  # the limit, give or take
    for t in graded["tle_spin.c"]["tests"]:
        if t["reason"] == "cpu_time":  # (a wall-clock timeout first on a very busy machine)
            assert 0.99 <= t["cpu_time"] <= 1.5
    assert graded["hostile_include_shadow.c"]["tests"] == []
    assert "Permission denied" in graded["hostile_include_shadow.c"]["compile_output"]


def test_hostile_submissions_change_nothing_outside(
    judged: tuple[dict[str, dict[str, Any]], list[str]],
) -> None:
    graded, changed = judged
    assert changed == []
    secrets = _shadow_secrets()
    for name, g in graded.items():
        seen = g["compile_output"] + "".join(t["stdout"] + t["detail"] for t in g["tests"])
        assert not [s for s in secrets if s in seen], f"{name} showed a line of the host's /etc/shadow"
    details = {n: " ".join(t["detail"] for t in graded[n]["tests"]) for n in graded}
    assert "Read-only file system" in details["hostile_write_outside.py"]  # its own file, mounted read-only
    assert "Operation not permitted" in details["hostile_network.py"]  # no inet socket at all
    assert "Permission denied" in details["hostile_shadow.py"]
    assert "exit status 1" in details["hostile_unshare.c"]


def test_judge_table(example_images: None) -> None:
    require(have("gcc"), "gcc on the host")
    subs = EXAMPLES / "judge_submissions"
    r = _run(str(EXAMPLES / "judge.py"), str(subs / "ac_sum.c"), str(subs / "wa_off_by_one.py"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:7] == ["submission", "lang", "verdict", "expected", "small", "negative", "large"]
    assert lines[1].split()[:4] == ["ac_sum.c", "C", "AC", "AC"]
    assert lines[2].split()[:4] == ["wa_off_by_one.py", "Python", "WA", "WA"]
    assert lines[-1].startswith("2 submissions x 3 tests in ")


def test_judge_verdict_mapping() -> None:
    judge = _load("judge")
    from sandbox import ExecResult

    def res(reason: str, code: int | None = 0, sig: int | None = None, out: bytes = b"3\n") -> Any:
        return ExecResult(["p"], code, sig, out, b"boom\n", reason, 0.0, 0.0, 0)

    assert judge.verdict_of(res("exited"), "3\n")[0] == "AC"
    assert judge.verdict_of(res("exited", out=b" 3 "), "3\n")[0] == "AC"  # whitespace is not judged
    assert judge.verdict_of(res("exited", out=b"4\n"), "3\n")[0] == "WA"
    assert judge.verdict_of(res("exited", code=2), "3\n") == ("RE", "exit status 2: boom")
    for reason, verdict in [("timeout", "TLE"), ("cpu_time", "TLE"), ("oom", "MLE"), ("output_limit", "OLE"),
                            ("pids", "RE"), ("seccomp", "RE"), ("file_size", "RE")]:  # fmt: skip
        assert judge.verdict_of(res(reason, code=None, sig=9), "3\n")[0] == verdict, reason
    assert judge.verdict_of(res("signaled", code=None, sig=11), "3\n")[0] == "RE"


# -- the application ----------------------------------------------------------------------


def test_snippets_demo(example_images: None) -> None:
    r = _run(str(EXAMPLES / "untrusted_snippets.py"))
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    got = [(d["caller"], d["status"], d["warm"]) for d in out]
    assert got == [
        ("alice", "ok", False),
        ("bob", "cpu_time", False),
        ("carol", "output_limit", False),
        ("dave", "memory", False),
        ("erin", "error", False),
        ("mallory", "error", False),  # alice's file is in alice's sandbox only
        ("alice", "ok", True),  # ... where her next snippet finds it
        ("bob", "timeout", True),
    ]
    assert out[6]["stdout"] == "kept for alice\n"
    assert out[2]["truncated"] and len(out[2]["stdout"]) == 40  # the demo prints the head only
    assert out[1]["cpu_time"] >= 1.0  # bob's loop ran to its CPU-time limit
    assert "6 sandboxes started" in r.stderr


def test_snippet_runner_reuses_and_evicts(example_images: None) -> None:
    mod = _load("untrusted_snippets")

    async def go() -> tuple[list[Any], int]:
        async with mod.SnippetRunner(max_sandboxes=1, output="1K") as runner:
            a1 = await runner.run("a", "import os; print(os.getuid(), os.getpid() > 1)")
            a2 = await runner.run("a", "print('again')")
            b = await runner.run("b", "print('x' * 5000)")  # a's sandbox is closed to make room
            a3 = await runner.run("a", "print('cold again')")
            big = await runner.run("a", "#" * (mod.MAX_CODE + 1))
            return [a1, a2, b, a3, big], runner.started

    results, started = anyio.run(go)
    a1, a2, b, a3, big = results
    assert (a1.status, a1.stdout) == ("ok", "65534 True\n")
    assert (a2.warm, a3.warm, started) == (True, False, 3)
    assert b.status == "output_limit" and b.truncated and len(b.stdout) == 1024
    assert big.status == "rejected" and big.exit_code is None
    assert json.loads(a1.to_json())["caller"] == "a"


# -- the pytest plugin --------------------------------------------------------------------

FAILING = """
import pytest

@pytest.mark.sandbox(image="busybox")
def test_fails_after_an_exec(sandbox):
    sandbox.exec(["sh", "-c", "echo before; echo the-last-out; echo the-last-err >&2; exit 3"])
    assert False, "deliberately"

def test_factory_fails(sandbox_factory):
    a = sandbox_factory(image="busybox", hostname="first")
    a.exec(["hostname"])
    b = sandbox_factory(image="busybox")
    b.exec(["sh", "-c", "seq 1 5000"])
    assert False

def test_passes(sandbox):
    assert sandbox.exec(["true"]).ok
"""

NO_FIXTURE = """
import threading

def test_plugin_idle():
    # loaded, but no fixture used: no sandbox, no SDK thread
    assert threading.active_count() == 1, threading.enumerate()
"""


def _pytest(*args: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess[str]:
    return _run("-m", "pytest", "-p", "sandbox", "-p", "no:cacheprovider", *args, cwd=cwd)


def test_plugin_runs_the_example(example_images: None) -> None:
    r = _pytest("-q", "examples/test_in_sandbox.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "7 passed" in r.stdout


def test_plugin_under_xdist(example_images: None) -> None:
    r = _pytest("-v", "-n", "2", "examples/test_in_sandbox.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "7 passed" in r.stdout
    workers = set(re.findall(r"^\[(gw\d)\] .*PASSED", r.stdout, re.M))
    assert workers == {"gw0", "gw1"}, r.stdout  # both workers made sandboxes


def test_plugin_loads_by_itself_once_installed(example_images: None) -> None:
    # no -p: the pytest11 entry point
    r = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", "--sandbox-image", "busybox", "-k", "factory",
             "examples/test_in_sandbox.py")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout


def test_plugin_reports_the_last_exec(example_images: None, tmp_path: Path) -> None:
    (tmp_path / "test_failing.py").write_text(FAILING)
    r = _pytest("-q", "-rN", str(tmp_path / "test_failing.py"), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 failed, 1 passed" in r.stdout
    first = r.stdout.split("_ test_fails_after_an_exec _")[1].split("_ test_factory_fails _")[0]
    assert " sandbox: last exec (sandbox fixture (image busybox)) " in first
    assert "argv: ['sh', '-c', 'echo before; echo the-last-out; echo the-last-err >&2; exit 3']" in first
    assert "reason: exited (exit status 3)\n" in first
    assert "--- stdout (20 bytes) ---\nbefore\nthe-last-out\n--- stderr (13 bytes) ---\nthe-last-err" in first
    factory = r.stdout.split("_ test_factory_fails _")[1]
    assert "sandbox #1 (image busybox): exec #1\nargv: ['hostname']" in factory  # one section per sandbox
    assert "--- stdout (6 bytes) ---\nfirst\n" in factory
    assert "sandbox #2 (image busybox): exec #1\nargv: ['sh', '-c', 'seq 1 5000']" in factory
    assert "--- stdout (last 2000 of 23893 bytes) ---" in factory  # the tail of seq 1 5000
    assert "\n4999\n5000\n" in factory and "\n4000\n" not in factory
    assert "_ test_passes _" not in r.stdout


def test_plugin_costs_nothing_unused(tmp_path: Path) -> None:
    (tmp_path / "test_idle.py").write_text(textwrap.dedent(NO_FIXTURE))
    r = _pytest("-q", str(tmp_path / "test_idle.py"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout


def test_plugin_bad_marker(example_images: None, tmp_path: Path) -> None:
    (tmp_path / "test_bad.py").write_text(
        textwrap.dedent("""
        import pytest

        @pytest.mark.sandbox(image="busybox", limits={"memory": "lots"})
        def test_bad_limit(sandbox):
            pass

        @pytest.mark.sandbox("busybox", "python")
        def test_two_images(sandbox):
            pass
    """)
    )
    r = _pytest("-q", str(tmp_path / "test_bad.py"), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "ConfigError: limits.memory: 'lots' is not a size" in r.stdout
    assert "takes at most one positional argument (the image)" in r.stdout
