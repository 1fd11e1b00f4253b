"""Interrupts, forks and the interpreter's exit: a sandbox is never left
running with nothing holding it, and never killed by a process that does
not own it.

Every script here runs in its own Python process (a KeyboardInterrupt
storm, a fork, an exit) and checks itself with the leak check; the test
asserts on what it printed.  The interrupts land wherever they land: a run
that hits no critical moment passes too, a leak at any moment fails."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from sandbox import AsyncSandbox, Limits, Sandbox, SandboxClosed
from tests import leakcheck

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT_WAIT = 120  # seconds: a script that hangs fails the test instead of the suite


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SCRIPT_WAIT,
    )


def test_an_unclosed_sandbox_does_not_hang_the_exit(sandbox_host, busybox_rootfs) -> None:
    """A script that ends with a sandbox it never closed: the sandbox is
    collected as the interpreter finalizes, when no thread can start any
    more (the reaper's start blocked for ever there)."""
    r = _run(
        """
        import sys, warnings
        from sandbox import Sandbox
        warnings.simplefilter("ignore", ResourceWarning)
        sb = Sandbox(rootfs=sys.argv[1], warm=False).start()
        print(sb.pid, sb.exec(["true"]).exit_code, flush=True)
        """,
        str(busybox_rootfs),
    )
    assert r.returncode == 0, r.stderr
    pid, code = r.stdout.split()
    assert code == "0"
    info = leakcheck.proc_info(int(pid))
    gone = info is None or (info.state == "Z" and info.ppid == 1)
    assert gone or not info.exe.startswith(leakcheck.INIT_EXE)


_FORK = """
    import os, sys, warnings
    from sandbox import Limits, Sandbox, SandboxClosed
    from tests import leakcheck
    warnings.simplefilter("ignore", ResourceWarning)
    root = sys.argv[1]
    sb = Sandbox(rootfs=root, limits=Limits(pids=32)).start()
    # the parent's watchdog thread runs (a cpu_time limit is watched by it)
    print("parent", sb.exec(["true"], limits=Limits(cpu_time=5)).reason, flush=True)
    pid = os.fork()
    if pid == 0:
        try:
            sb.exec(["true"])
            print("child used the parent's sandbox", flush=True)
        except SandboxClosed as e:
            print("child refused:", "inherited over a fork" in str(e), flush=True)
        # its own sandbox, with a limit only the watchdog enforces
        with Sandbox(rootfs=root) as mine:
            r = mine.exec(["sh", "-c", "while :; do :; done"], limits=Limits(cpu_time=0.2), timeout=60)
            print("child cpu_time:", r.reason, flush=True)
        sys.exit(0)  # a normal exit: the inherited sandbox is collected here
    _, status = os.waitpid(pid, 0)
    print("child status", os.waitstatus_to_exitcode(status), flush=True)
    # the parent's sandbox still works, and nothing was killed under it
    print("parent after", sb.exec(["echo", "alive"]).stdout_text.strip(), flush=True)
    sb.close()
"""


def test_a_forked_child_neither_kills_nor_uses_the_parents_sandbox(sandbox_host, busybox_rootfs) -> None:
    r = _run(_FORK, str(busybox_rootfs))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "parent exited" in lines
    assert "child refused: True" in lines, r.stdout
    assert "child cpu_time: cpu_time" in lines, r.stdout  # the child's own watchdog runs
    assert "child status 0" in lines
    assert "parent after alive" in lines, r.stdout + r.stderr


_STORM = """
    import random, signal, sys, threading, time, warnings
    from sandbox import Limits, Sandbox, SandboxError, wait_closed
    from tests import leakcheck
    warnings.simplefilter("ignore", ResourceWarning)
    root, rounds, limits = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "limits"
    before = leakcheck.snapshot()
    rng = random.Random(int(sys.argv[4]))
    main = threading.main_thread().ident
    stop = threading.Event()
    armed = [False]

    def interrupt(signum, frame):
        # as Python's own SIGINT handler, but only inside the SDK's calls:
        # the script's own bookkeeping is not the subject
        if armed[0]:
            raise KeyboardInterrupt

    def storm():
        # SIGINTs at random moments: of a start, an exec, a spawn, a close
        while not stop.wait(rng.uniform(0.0002, 0.012)):
            signal.pthread_kill(main, signal.SIGINT)

    signal.signal(signal.SIGINT, interrupt)
    kw = {"limits": Limits(pids=64)} if limits else {}
    t = threading.Thread(target=storm)
    t.start()
    interrupted = done = 0
    for i in range(rounds):
        sb = None
        try:
            armed[0] = True
            sb = Sandbox(rootfs=root, **kw)
            with sb:
                sb.exec(["true"])
                p = sb.spawn(["sleep", "100"])
                p.kill()
                p.wait()
            armed[0] = False
            done += 1
        except KeyboardInterrupt:
            armed[0] = False
            interrupted += 1
        except SandboxError as e:
            armed[0] = False
            print("error:", repr(e), flush=True)
        # what a caller does: let go of it (an interrupted close is
        # finished by the garbage collector, or by a close() again)
        del sb
    stop.set()
    t.join()
    wait_closed()
    found = leakcheck.leaks(before, grace=5.0)
    print("rounds", done, "interrupted", interrupted, flush=True)
    print(leakcheck.report(found) if found else "no leaks", flush=True)
"""


@pytest.mark.parametrize("limits", ["plain", "limits"])
def test_interrupts_anywhere_leave_nothing_behind(sandbox_host, busybox_rootfs, limits: str) -> None:
    """KeyboardInterrupt at random moments of a start/exec/spawn/close loop:
    no init, command, cgroup, lease or mount outlives the loop.  (Before:
    a live init after an interrupt just as the launch returned, a zombie
    after one inside close(), a spawned command running on with no handle.)"""
    r = _run(_STORM, str(busybox_rootfs), "150", limits, "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no leaks" in r.stdout.splitlines(), r.stdout + r.stderr[-3000:]
    assert "error:" not in r.stdout, r.stdout


def test_a_process_used_after_its_sandbox_closed_says_so(sandbox_host, busybox_rootfs) -> None:
    sb = Sandbox(rootfs=busybox_rootfs).start()
    p = sb.spawn(["sleep", "100"])
    sb.close()
    with pytest.raises(SandboxClosed):
        p.wait()
    for use in (p.wait, p.poll, p.kill, p.communicate):
        with pytest.raises(SandboxClosed, match="given up on"):
            use()


def test_an_async_process_used_after_its_sandbox_closed_says_so(sandbox_host, busybox_rootfs) -> None:
    async def main() -> None:
        sb = await AsyncSandbox(rootfs=busybox_rootfs).start()
        p = await sb.spawn(["sleep", "100"])
        await sb.aclose()
        with pytest.raises(SandboxClosed):
            await p.wait()
        for use in (p.wait, p.kill, p.communicate):
            with pytest.raises(SandboxClosed, match="given up on"):
                await use()

    anyio.run(main)


def _count_sleeps(sb: Sandbox) -> int:
    r = sb.exec(["sh", "-c", "cat /proc/[0-9]*/comm"])
    return r.stdout_text.split().count("sleep")


def test_a_spawn_cancelled_as_it_starts_is_killed(sandbox_host, busybox_rootfs) -> None:
    """Cancelled at every point of spawn() (deadlines from 0 up): whatever
    started is killed; nothing of it runs on with no handle."""

    async def main() -> None:
        async with AsyncSandbox(rootfs=busybox_rootfs) as sb:
            for i in range(60):
                p = None
                with anyio.move_on_after(i * 0.00005):
                    p = await sb.spawn(["sleep", "100"])
                if p is not None:  # it started: the caller's to end
                    await p.kill()
                    await p.wait()
            r = await sb.exec(["sh", "-c", "cat /proc/[0-9]*/comm"])
            assert r.stdout_text.split().count("sleep") == 0, r.stdout_text

    anyio.run(main)


def test_a_deadline_before_the_command_joined_its_cgroup_still_kills(sandbox_host, busybox_rootfs) -> None:
    """A timeout so short that the watchdog reaches it while the init is
    still starting the command (not in its cgroup yet): the command is
    killed all the same, never run to its end under reason "timeout"."""
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(pids=16)) as sb:
        for _ in range(60):
            r = sb.spawn(["sleep", "30"], timeout=0.0003).wait()
            assert r.reason == "timeout"
            assert r.signal == signal.SIGKILL, r
        assert _count_sleeps(sb) == 0


def test_cancelled_spawns_leave_the_signal_handlers_as_they_were(sandbox_host, busybox_rootfs) -> None:
    """Several spawns cancelled at once, each killing its command as it gives
    up: no signal handler of the caller's is left replaced (holds of signals
    around those awaits interleaved and restored each other's out of order)."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    async def one(sb: AsyncSandbox, delay: float) -> None:
        p = None
        with anyio.move_on_after(delay):
            p = await sb.spawn(["sleep", "100"])
        if p is not None:
            await p.kill()
            await p.wait()

    async def main() -> None:
        async with AsyncSandbox(rootfs=busybox_rootfs) as sb:
            for i in range(20):
                async with anyio.create_task_group() as tg:
                    for k in range(3):
                        tg.start_soon(one, sb, (i % 5) * 0.0001 + k * 0.00003)
            r = await sb.exec(["sh", "-c", "cat /proc/[0-9]*/comm"])
            assert r.stdout_text.split().count("sleep") == 0, r.stdout_text

    anyio.run(main)
    assert {s: signal.getsignal(s) for s in before} == before
