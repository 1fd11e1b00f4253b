"""Start, close, and dying: close() is idempotent, a closed sandbox refuses
work, the host process killed with SIGKILL takes its sandbox with it within
a second, and a failed start leaves nothing behind."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest

from sandbox import ConfigError, LaunchError, Mount, Sandbox, SandboxClosed, SandboxError, wait_closed
from sandbox import cgroup as sandbox_cgroup
from sandbox.cgroup import gc as cgroup_gc
from tests import leakcheck
from tests.conftest import fd_leaks, open_fds, sh_ok

pytestmark = pytest.mark.integration


def _end_host(child: subprocess.Popen[bytes]) -> None:
    """The host process of a test: make sure it is gone, and close its pipes."""
    if child.poll() is None:
        child.kill()
    child.wait()
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    child.stderr.close()


def _gone(pid: int, start: int) -> bool:
    """Dead: no such process, a zombie, or the pid reused by another."""
    p = leakcheck.proc_info(pid)
    return p is None or p.state in ("Z", "X") or p.start != start


def test_close_is_idempotent(sandbox_host, busybox_rootfs) -> None:
    sb = Sandbox(rootfs=busybox_rootfs).start()
    pid = sb.pid
    assert pid is not None and "running" in repr(sb)
    start = leakcheck.proc_info(pid).start
    sb.close()
    assert wait_closed()  # the init is killed in close(), and reaped in the background
    assert _gone(pid, start)
    sb.close()
    sb.close()
    assert sb.pid is None and "closed" in repr(sb)


def test_closed_sandboxes_are_reaped_in_the_background(sandbox_host, busybox_rootfs) -> None:
    """close() kills every sandbox (SIGKILL) and returns; the kernel's
    teardown is waited for by a thread, and wait_closed() waits for it."""
    inits = []
    for _ in range(5):
        sb = Sandbox(rootfs=busybox_rootfs).start()
        p = sb.spawn(["sleep", "100"])
        assert sb.pid is not None
        inits.append((sb.pid, leakcheck.proc_info(sb.pid).start))
        sb.close()
        with pytest.raises(SandboxClosed):
            p.wait()  # the close ended it: this only releases its pipes
    assert wait_closed()
    assert all(_gone(pid, start) for pid, start in inits)
    assert wait_closed(timeout=0.001)  # nothing left to wait for


def test_close_before_start(sandbox_host, busybox_rootfs) -> None:
    sb = Sandbox(rootfs=busybox_rootfs)
    sb.close()
    with pytest.raises(SandboxClosed):
        sb.start()


def test_exec_after_close(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs) as sb:
        assert sb.exec(["true"]).ok
    with pytest.raises(SandboxClosed):
        sb.exec(["true"])
    with pytest.raises(SandboxClosed):
        sb.spawn(["true"])
    with pytest.raises(SandboxClosed):
        sb.files.read_bytes("/etc/passwd")
    with pytest.raises(SandboxClosed):
        sb.start()


def test_exec_before_start(sandbox_host, busybox_rootfs) -> None:
    sb = Sandbox(rootfs=busybox_rootfs)
    with pytest.raises(SandboxClosed):
        sb.exec(["true"])


def test_start_twice(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs) as sb:
        with pytest.raises(SandboxClosed):
            sb.start()
        assert sb.exec(["true"]).ok


def test_close_kills_running_commands(sandbox_host, busybox_rootfs) -> None:
    sb = Sandbox(rootfs=busybox_rootfs).start()
    ns = os.readlink(f"/proc/{sb.pid}/ns/pid")
    p = sb.spawn(["sh", "-c", "sleep 100 & sleep 100 & echo started; wait"])
    assert p.stdout.readline() == b"started\n"
    assert len(leakcheck.pidns_members(ns)) >= 3
    sb.close()  # kills; the teardown is waited for in the background
    assert wait_closed()
    assert leakcheck.pidns_members(ns) == []
    try:
        r = p.wait()
    except SandboxClosed:
        pass
    else:
        assert r.reason != "exited"
    _close_quietly(p)


def _close_quietly(p) -> None:
    for f in (p.stdin, p.stdout, p.stderr, getattr(p, "_reply", None)):
        if f is not None:
            f.close()


def test_wait_on_a_closed_sandbox_releases_the_process_fds(sandbox_host, busybox_rootfs) -> None:
    """A Process whose sandbox went away: wait() may raise SandboxClosed,
    but must not keep the command's pipes and reply socket open (each
    would leak until garbage collection, with a ResourceWarning)."""
    before = open_fds()
    sb = Sandbox(rootfs=busybox_rootfs).start()
    p = sb.spawn(["sleep", "100"])
    sb.close()
    try:
        with pytest.raises(SandboxClosed):
            p.wait()
        assert fd_leaks(before) == {}, "the process's pipes and reply socket are still open"
    finally:
        _close_quietly(p)


def test_exception_in_with_block_closes(sandbox_host, busybox_rootfs) -> None:
    with pytest.raises(RuntimeError), Sandbox(rootfs=busybox_rootfs) as sb:
        pid = sb.pid
        start = leakcheck.proc_info(pid).start
        raise RuntimeError("boom")
    assert wait_closed()
    assert _gone(pid, start)


def test_sandbox_survives_its_commands(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs) as sb:
        # PID 1 ignores signals from inside it has no handler for.
        sh_ok(sb, "kill -9 1; kill -TERM 1; true")
        assert sb.exec(["true"]).ok


def test_close_from_another_thread_during_an_exec(sandbox_host, busybox_rootfs) -> None:
    """close() while another thread waits in exec(): that exec ends (with
    SandboxClosed or a killed result) instead of hanging, and the command's
    pipes and reply socket are released."""
    before = open_fds()
    sb = Sandbox(rootfs=busybox_rootfs).start()
    started = threading.Event()
    outcome: list[object] = []
    procs: list[object] = []

    def run() -> None:
        try:
            p = sb.spawn(["sleep", "100"])
            procs.append(p)
            started.set()
            outcome.append(p.wait())
        except BaseException as e:
            outcome.append(e)
            started.set()

    t = threading.Thread(target=run)
    t.start()
    try:
        assert started.wait(30)
        sb.close()
        t.join(30)  # a hang guard only
        assert not t.is_alive(), "exec() in another thread hangs after close()"
        assert len(outcome) == 1
        assert isinstance(outcome[0], SandboxClosed) or outcome[0].reason != "exited", outcome
        assert fd_leaks(before) == {}, "the exec's pipes and reply socket are still open"
    finally:
        sb.close()
        for p in procs:
            _close_quietly(p)


def test_a_dropped_sandbox_is_reaped(sandbox_host, busybox_rootfs) -> None:
    """A started sandbox that is dropped without close(): its init must not
    stay behind as an unwaited zombie of ours, nor its pidfd stay open
    (subprocess.Popen reaps in its finaliser; so should a Sandbox)."""
    before = open_fds()
    me = os.getpid()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        sb = Sandbox(rootfs=busybox_rootfs).start()
        pid, start = sb.pid, leakcheck.proc_info(sb.pid).start
        del sb
        gc.collect()
    deadline = time.monotonic() + 2
    while True:
        p = leakcheck.proc_info(pid)
        ours = p is not None and p.start == start and p.ppid == me
        if not ours or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    try:
        assert not ours, f"the dropped sandbox's init is still our child: {p.describe()}"
        assert fd_leaks(before) == {}
    finally:
        if ours:  # do not leave the zombie to the session leak check
            os.waitpid(pid, 0)
        for n, target in fd_leaks(before, grace=0).items():
            if target == "anon_inode:[pidfd]":
                os.close(n)


_KILLED_HOST = textwrap.dedent(r"""
    import sys
    from sandbox import Limits, Sandbox
    # a limit, so that the sandbox and its exec have cgroups for gc to collect
    sb = Sandbox(rootfs=sys.argv[1], limits=Limits(pids=64)).start()
    p = sb.spawn(["sh", "-c", "sleep 100 & sleep 100"])
    print(sb.pid, flush=True)
    p.wait()  # in the middle of an exec when the SIGKILL comes
""")


def test_host_killed_with_sigkill_takes_the_sandbox_within_a_second(sandbox_host, busybox_rootfs) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_HOST, str(busybox_rootfs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = child.stdout.readline()
        assert line.strip().isdigit(), (line, child.stderr.read() if child.poll() is not None else b"")
        init = int(line)
        info = leakcheck.proc_info(init)
        assert info is not None and info.exe.startswith(leakcheck.INIT_EXE)
        ns = info.pidns
        deadline = time.monotonic() + 10
        while len(leakcheck.pidns_members(ns)) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)  # the sleeps of the exec are being started
        members = leakcheck.pidns_members(ns)
        assert len(members) >= 3, [m.describe() for m in members]
        os.kill(child.pid, signal.SIGKILL)
        killed = time.monotonic()
        while True:
            left = [m for m in leakcheck.pidns_members(ns)]
            if not left and _gone(init, info.start):
                break
            elapsed = time.monotonic() - killed
            assert elapsed < 1.0, f"{elapsed:.2f} s after SIGKILL, still alive: " + "; ".join(
                m.describe() for m in left
            )
            time.sleep(0.002)
        _assert_gc_collects(child.pid)
    finally:
        _end_host(child)


def _assert_gc_collects(owner: int) -> None:
    """The dead owner's cgroups stay until `sandbox gc` (or its next start) removes them."""

    def left() -> list[str]:
        return [c for c in leakcheck._cgroups() if f"sandbox-{owner}-" in c]

    if sandbox_cgroup.root() is not None:
        assert left(), "the killed owner's sandbox had no cgroup"
    out = subprocess.run([sys.executable, "-m", "sandbox.cli", "gc"], capture_output=True, check=True)
    assert left() == [], out.stdout
    assert cgroup_gc.collect(everywhere=True) == []  # nothing more to do


_KILLED_THREAD_HOST = textwrap.dedent(r"""
    import sys, threading
    from sandbox import Limits, Sandbox
    def run():
        # no parent-death signal from a thread; a limit, for cgroups to collect
        sb = Sandbox(rootfs=sys.argv[1], limits=Limits(pids=64)).start()
        p = sb.spawn(["sleep", "100"])
        print(sb.pid, flush=True)
        p.wait()
    t = threading.Thread(target=run)
    t.start()
    t.join()
""")


def test_host_killed_while_a_thread_owns_the_sandbox(sandbox_host, busybox_rootfs) -> None:
    """Launched from a thread, the init has no parent-death signal; the
    control socket's EOF must end it just the same."""
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_THREAD_HOST, str(busybox_rootfs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        init = int(child.stdout.readline())
        info = leakcheck.proc_info(init)
        assert info is not None
        os.kill(child.pid, signal.SIGKILL)
        killed = time.monotonic()
        while leakcheck.pidns_members(info.pidns) or not _gone(init, info.start):
            assert time.monotonic() - killed < 1.0, "the sandbox outlived its host by a second"
            time.sleep(0.002)
        _assert_gc_collects(child.pid)
    finally:
        _end_host(child)


# -- failed starts leave nothing ----------------------------------------------------------


def _start_fails(exc: type[BaseException], **kw: object) -> BaseException:
    before, fds = leakcheck.snapshot(), open_fds()
    with pytest.raises(exc) as e:
        Sandbox(**kw).start()
    assert leakcheck.leaks(before) == []
    assert fd_leaks(fds) == {}
    return e.value


def test_missing_rootfs_leaves_nothing(sandbox_host, tmp_path: Path) -> None:
    e = _start_fails(ConfigError, rootfs=tmp_path / "missing")
    assert e.option == "rootfs"


def test_bad_layer_leaves_nothing(sandbox_host, busybox_rootfs, tmp_path: Path) -> None:
    e = _start_fails(ConfigError, layers=[busybox_rootfs, tmp_path / "missing"])
    assert e.option == "layers[1]"


def test_layer_that_cannot_be_idmapped_leaves_nothing(sandbox_host, busybox_rootfs) -> None:
    """procfs supports no idmapped mounts: the start fails before the clone."""
    e = _start_fails(LaunchError, layers=[busybox_rootfs, "/proc/self/fdinfo"])
    assert "idmap" in str(e) or "mount tree" in str(e)


def test_setup_failure_inside_the_init_leaves_nothing(sandbox_host, busybox_rootfs, host_dir: Path) -> None:
    """A destination below a regular file of the image can never be made:
    a SandboxError (ConfigError up front, or LaunchError from the init), and
    nothing left behind.  A raw OSError is a bug of its own (see test_spec)."""
    before = leakcheck.snapshot()
    try:
        Sandbox(rootfs=busybox_rootfs, mounts=[Mount(host_dir, "/etc/passwd/x")]).start()
    except SandboxError:
        pass
    except OSError as e:
        pytest.fail(f"a bad mount destination raised {type(e).__name__}: {e}")
    else:
        pytest.fail("a mount below a regular file started")
    assert leakcheck.leaks(before) == []


def test_setup_failure_of_the_init_itself(sandbox_host, busybox_rootfs, host_dir: Path) -> None:
    """Same failure, made to reach the init (the validator is bypassed):
    a LaunchError naming the path, and nothing left behind."""
    import dataclasses

    sb = Sandbox(rootfs=busybox_rootfs, mounts=[Mount(host_dir, "/ok")])
    sb._spec = dataclasses.replace(sb._spec, mounts=(Mount(str(host_dir), "/etc/passwd/x", True),))
    before = leakcheck.snapshot()
    with pytest.raises(LaunchError) as e:
        sb.start()
    assert "/etc/passwd/x" in str(e.value)
    assert leakcheck.leaks(before) == []
    with Sandbox(rootfs=busybox_rootfs) as ok:  # and the next start works
        assert ok.exec(["true"]).ok


def test_many_failed_starts_leak_no_fds(sandbox_host, busybox_rootfs, host_dir: Path) -> None:
    import dataclasses

    before = open_fds()
    for _ in range(30):
        with pytest.raises(LaunchError):
            Sandbox(layers=[busybox_rootfs, "/proc/self/fdinfo"]).start()
        sb = Sandbox(rootfs=busybox_rootfs, mounts=[Mount(host_dir, "/ok")])
        sb._spec = dataclasses.replace(sb._spec, mounts=(Mount(str(host_dir), "/etc/passwd/x", True),))
        with pytest.raises(LaunchError):
            sb.start()
    assert fd_leaks(before) == {}
