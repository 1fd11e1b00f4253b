"""Limits and verdicts for real (issue 4), on whichever cgroup version the
host has (v1 here, v2 in the VM): a memory bomb ends "oom" near its limit,
a fork bomb "pids" with the host responsive, CPU spins "cpu_time", sleeps
"timeout" with the whole tree gone, floods "output_limit" with the host's
memory bounded, a full disk ENOSPC; the rlimits, the CPU quota and set,
the accounting of one exec in its own cgroup, per-exec overrides, removal
of every cgroup, the async front end, the CLI and bad values.

Every resource bomb runs inside a sandbox with limits and a timeout."""

from __future__ import annotations

import json
import os
import re
import select
import statistics
import subprocess
import sys
import textwrap
import threading
import time

import anyio
import pytest

from sandbox import PIPE, AsyncSandbox, ConfigError, Limits, Mount, Sandbox, SandboxClosed, wait_closed
from sandbox import cgroup as sandbox_cgroup
from tests import leakcheck
from tests.conftest import fd_leaks, open_fds, require, require_sandbox_host, sh, sh_ok

pytestmark = pytest.mark.integration

MB = 1 << 20
SAFE = 30.0  # seconds: the wall-clock bound of every command that is not about timeouts
# ash keeps a command substitution's output in memory (and grows it by copying)
MEMORY_BOMB = 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived'
SPIN = "while :; do :; done"
# perl (debian rootfs): burn exactly N seconds of this process's CPU, after
# touching M MiB that stay held (vec zero-fills the string it grows)
HOLD_AND_BURN = r"""
use Time::HiRes qw(clock_gettime CLOCK_PROCESS_CPUTIME_ID);
my ($mib, $secs) = @ARGV;
my $x = ""; vec($x, $mib * 1024 * 1024 - 1, 8) = 1 if $mib;
my $n = 0; while (clock_gettime(CLOCK_PROCESS_CPUTIME_ID) < $secs) { $n++ for 1..10000 }
"""
TOUCH_FREE_AND_BURN = HOLD_AND_BURN.replace("my $n = 0;", "undef $x; my $n = 0;")
# perl: grows one string to N MiB (zero-filled at memset speed, also in a VM)
PERL_MEMORY_BOMB = 'my $x = ""; vec($x, 400 * 1024 * 1024 - 1, 8) = 1; print "survived"'
FORK_BOMB = "while (1) { fork }"  # perl: a refused fork returns undef, the loop goes on


@pytest.fixture
def cgroups(sandbox_host: None) -> object:
    root = sandbox_cgroup.root()
    require(root is not None, f"no usable cgroups: {sandbox_cgroup.why()}")
    return root


def live_cmdlines(sb: Sandbox) -> list[str]:
    """cmdlines of the sandbox's live processes (zombies have none), but
    the init's and the lister's own."""
    out = sh_ok(
        sb,
        "for p in /proc/[0-9]*; do [ $p = /proc/$$ ] && continue; "
        "c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); [ -n \"$c\" ] && echo \"$c\"; done; true",
        timeout=SAFE,
    )
    return [c for c in out.splitlines() if not c.startswith("sandbox-init")]


def inside_cgroups(sb: Sandbox, **kw: object) -> dict[str, str]:
    """/proc/self/cgroup of an exec: {controllers: path} for the lines that
    are ours (a sandbox-... path)."""
    return our_cgroups(sh_ok(sb, "cat /proc/self/cgroup", timeout=SAFE, **kw))


def our_cgroups(text: str) -> dict[str, str]:
    """{controllers: path} of the lines of a /proc/PID/cgroup that are ours."""
    found = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if "/sandbox-" in path:
            found[controllers] = path
    assert found, text
    return found


def host_dirs(name: str) -> list[str]:
    """Every cgroup directory on the host, in any hierarchy, at or under one named `name`."""
    found = []
    for dirpath, dirnames, _ in os.walk(leakcheck.CGROUP_ROOT, onerror=lambda e: None):
        if dirpath[len(leakcheck.CGROUP_ROOT) :].count("/") >= 10:
            dirnames[:] = []
        if f"/{name}/" in f"{dirpath}/":
            found.append(dirpath)
    return found


def own_leaks(before: leakcheck.Snapshot) -> list[str]:
    """leakcheck.leaks, without what other test runs on this machine made
    meanwhile: processes are ours when their parent is this process,
    cgroups when their name carries our pid; network links are not ours."""
    mine = f"sandbox-{os.getpid()}-"
    out = []
    for line in leakcheck.leaks(before):
        kind = line.split(":", 1)[0]
        if kind == "proc" and f"(ppid {os.getpid()}," not in line:
            continue
        if kind == "cgroup" and "sandbox-" in line and mine not in line:
            continue
        if kind == "link":
            continue
        out.append(line)
    return out


def dirs_soon(name: str, deadline: float = 5.0) -> list[str]:
    """host_dirs(name) once they are gone (cgroups are removed in the
    background, soon after their last process), or what is left at the
    deadline."""
    end = time.monotonic() + deadline
    while True:
        left = host_dirs(name)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.02)


def dirs_after_close(name: str) -> list[str]:
    """What is left of a closed sandbox's cgroups once the pool let go of
    them: it may keep a sandbox's own group for the next sandbox with the
    same limits (sandbox/cgroup/pool.py), and removes it at its shutdown."""
    sandbox_cgroup.shutdown()
    return dirs_soon(name)


def group_names(paths: dict[str, str]) -> tuple[str, str]:
    """(sandbox group name, exec group name) from an exec's /proc/self/cgroup
    paths.  On v1 an exec under its sandbox's CPU quota or cpuset (none of
    its own) is in the sandbox's cpu or cpuset group."""
    shared = ("cpu", "cpuset")
    names = {tuple(p.strip("/").split("/")[-2:]) for c, p in paths.items() if c not in shared}
    assert len(names) == 1, paths  # one sandbox group and one exec group, in every other hierarchy
    sandbox_name, exec_name = names.pop()
    assert sandbox_name.startswith("sandbox-"), paths
    for c in shared:
        path = paths.get(c)
        assert path is None or path.endswith((f"/{sandbox_name}", f"/{sandbox_name}/{exec_name}")), paths
    return sandbox_name, exec_name


# -- memory --------------------------------------------------------------------------------


def test_memory_bomb_is_oom_near_the_limit(cgroups, busybox_rootfs) -> None:
    limit = 64 * MB
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(memory="64M", timeout=SAFE)) as sb:
        r = sh(sb, MEMORY_BOMB)
        assert r.reason == "oom", (r, r.stderr)
        assert r.signal == 9 and b"survived" not in r.stdout
        assert r.max_memory is not None
        assert 0.9 * limit <= r.max_memory <= limit, r.max_memory / MB
        assert "oom" in r.describe()
        assert sb.exec(["true"]).ok  # the sandbox itself lives on


def test_no_oom_below_the_limit(cgroups, busybox_rootfs) -> None:
    """The verdict comes from the cgroup's OOM count: a SIGKILL of the
    command's own is "signaled", and a run under the limit is "exited"."""
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(memory="64M", timeout=SAFE)) as sb:
        r = sh(sb, 'x=$(head -c 1000000 /dev/zero | tr "\\0" a); echo ${#x}')
        assert (r.reason, r.stdout) == ("exited", b"1000000\n")
        r = sh(sb, "kill -9 $$")
        assert (r.reason, r.signal) == ("signaled", 9)


def test_per_exec_memory_override_and_sandbox_default(cgroups, debian_rootfs) -> None:
    bomb = ["perl", "-e", PERL_MEMORY_BOMB]
    with Sandbox(rootfs=debian_rootfs, limits=Limits(memory="256M", timeout=SAFE)) as sb:
        r = sb.exec(bomb, limits=Limits(memory="32M"))
        assert r.reason == "oom", (r, r.stderr)
        assert 0.9 * 32 * MB <= r.max_memory <= 32 * MB, r.max_memory / MB
        r = sb.exec(bomb)  # the sandbox's limit, by default
        assert r.reason == "oom", (r, r.stderr)
        assert 0.9 * 256 * MB <= r.max_memory <= 256 * MB, r.max_memory / MB
        r = sb.exec(bomb, limits={"memory": "32M"})  # a dict works too
        assert r.reason == "oom" and r.max_memory <= 32 * MB
        r = sb.exec(bomb, limits=Limits(memory="512M"))  # more than the sandbox's: its 256M still hold
        # (the exec group's peak may pass its parent's limit by a charge batch:
        # the kernel counts the child before it finds the parent full)
        assert r.reason == "oom" and r.max_memory <= 260 * MB, r


def test_spawn_takes_limits(cgroups, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(timeout=SAFE)) as sb:
        p = sb.spawn(["sh", "-c", MEMORY_BOMB], limits=Limits(memory="32M"))
        r = p.wait()
        assert r.reason == "oom" and r.max_memory <= 32 * MB


# -- processes -----------------------------------------------------------------------------


def _host_spawn() -> float:
    t = time.perf_counter()
    subprocess.run(["true"], check=True)
    return time.perf_counter() - t


def _triples_during(samples: list[tuple[float, float]], windows: list[tuple[float, float]]) -> list[float]:
    """Durations of the host spawns that ran wholly inside a bomb's window,
    as the best of each 3 back-to-back ones (in the same window)."""
    best: list[float] = []
    for a, b in windows:
        inside = [end - start for start, end in samples if a <= start and end <= b]
        best += [min(inside[i : i + 3]) for i in range(0, len(inside) - 2, 3)]
    return best


def test_fork_bomb_is_pids_and_the_host_stays_responsive(cgroups, debian_rootfs) -> None:
    """A thread spawns host processes without pause while ten fork bombs (or
    more, until 10 samples are in) run one after the other (each ends as soon as a fork is refused).  What
    counts is the best of each 3 back-to-back spawns inside a bomb: a host
    stalled by the bomb makes all three slow, while one slow spawn is CPU
    scheduling noise (64 spinning processes share the CPUs with everything
    else).  The bound is 50 ms, or 10 times the host's own idle spawn time
    on a slow (emulated) host."""
    idle = statistics.median(_host_spawn() for _ in range(10))
    bound = max(0.050, 10 * idle)
    samples: list[tuple[float, float]] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def spawner() -> None:
        try:
            while not stop.is_set():
                t = time.monotonic()
                subprocess.run(["true"], check=True)
                samples.append((t, time.monotonic()))
        except BaseException as e:
            failed.append(e)

    windows: list[tuple[float, float]] = []
    with Sandbox(rootfs=debian_rootfs, limits=Limits(pids=64, timeout=SAFE)) as sb:
        th = threading.Thread(target=spawner)
        th.start()
        try:
            # ten bombs at least; more where host spawns are slow (a VM)
            while len(windows) < 10 or (len(_triples_during(samples, windows)) < 10 and len(windows) < 40):
                began = time.monotonic()
                r = sb.exec(["perl", "-e", FORK_BOMB])
                windows.append((began, time.monotonic()))
                assert r.reason == "pids", r
                if r.pids_peak is not None:
                    assert r.pids_peak == 64
        finally:
            stop.set()
            th.join()
        assert sb.exec(["true"]).ok
    assert failed == []  # every host spawn worked
    best = _triples_during(samples, windows)
    assert len(best) >= 10, (len(samples), windows)
    assert max(best) < bound, f"best of 3 host spawns during the bombs (s): {best}; idle {idle:.4f}"
    assert "pids" in r.describe()


def test_fork_bomb_in_exec_ends_at_once(cgroups, debian_rootfs) -> None:
    with Sandbox(rootfs=debian_rootfs, limits=Limits(pids=32, timeout=SAFE)) as sb:
        r = sb.exec(["perl", "-e", FORK_BOMB])
        assert r.reason == "pids", r
        assert r.wall_time < 5  # the refused fork is seen within a poll (50 ms), not at the timeout
        assert live_cmdlines(sb) == []  # every process of the bomb is gone


def test_pids_limit_below_need_is_pids_not_signaled(cgroups, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(timeout=SAFE)) as sb:
        r = sh(sb, "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait", limits=Limits(pids=4))
        assert r.reason == "pids", (r, r.stderr)
        r = sh(sb, "sleep 0.1 & sleep 0.1 & wait; echo ok", limits=Limits(pids=4))
        assert (r.reason, r.stdout) == ("exited", b"ok\n")
        if r.pids_peak is not None:
            assert 2 <= r.pids_peak <= 4


def test_sandbox_limits_bound_the_sum_of_its_execs(cgroups, debian_rootfs) -> None:
    """The sandbox's own group holds the limits too: two execs of 40 MiB
    under memory=64M, or 7 + 5 processes under pids=10, do not both fit."""
    hold = 'my $x = ""; vec($x, 40 * 1024 * 1024 - 1, 8) = 1; $| = 1; print "ready\\n"; sleep 100'
    with Sandbox(rootfs=debian_rootfs, limits=Limits(memory="64M", pids=10, timeout=SAFE)) as sb:
        p = sb.spawn(["perl", "-e", hold])
        try:
            assert p.stdout is not None and p.stdout.readline() == b"ready\n"
            second = sb.exec(["perl", "-e", hold.replace("sleep 100", "")])
        finally:
            if p.poll() is None:
                p.kill()
            first = p.wait()
        assert "oom" in (first.reason, second.reason), (first, second)
        p = sb.spawn(["sh", "-c", "for i in 1 2 3 4 5 6 7; do sleep 100 & done; echo ready; wait"])
        try:
            assert p.stdout is not None and p.stdout.readline() == b"ready\n"
            r = sh(sb, "for i in 1 2 3 4 5; do sleep 1 & done; wait; echo done")
            assert r.reason == "pids", (r, r.stderr)
        finally:
            p.kill()
            p.wait()


def test_spawn_pids_holds_while_the_caller_streams(cgroups, debian_rootfs) -> None:
    """A spawned fork bomb is ended with nobody in wait(): its stdout ends."""
    with Sandbox(rootfs=debian_rootfs, limits=Limits(pids=16, timeout=SAFE)) as sb:
        p = sb.spawn(["perl", "-e", FORK_BOMB])
        try:
            assert p.stdout is not None
            poller = select.poll()
            poller.register(p.stdout.fileno(), select.POLLIN)
            assert poller.poll(5000), "the bomb still runs after 5 s"
            assert p.stdout.read() == b""  # EOF: every process of it is gone
        finally:
            r = p.wait()
        assert r.reason == "pids", r


# -- CPU time ------------------------------------------------------------------------------


def test_cpu_spin_is_cpu_time(cgroups, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(timeout=SAFE)) as sb:
        r = sh(sb, SPIN, limits=Limits(cpu_time=1))
        assert r.reason == "cpu_time", r
        assert r.signal in (9, 24), r  # SIGXCPU of RLIMIT_CPU, or the host's kill
        assert 0.9 <= r.cpu_time <= 1.5, r.cpu_time
        assert r.cpu_time == pytest.approx(r.cpu_user + r.cpu_sys)
        assert "cpu_time" in r.describe()
        assert sh(sb, "echo next").stdout == b"next\n"  # only that exec was ended


def test_cpu_spin_cpu_time_is_within_10_percent_of_1_s(cgroups, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(timeout=SAFE)) as sb:
        r = sh(sb, SPIN, limits=Limits(cpu_time=1))
        assert r.reason == "cpu_time", r
        assert 0.9 <= r.cpu_time <= 1.1, (r.cpu_user, r.cpu_sys)


def test_two_process_spin_is_cpu_time(cgroups, busybox_rootfs) -> None:
    """RLIMIT_CPU is per process: two spinners are caught by the cgroup's total."""
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(timeout=SAFE)) as sb:
        r = sh(sb, f"({SPIN}) & {SPIN}", limits=Limits(cpu_time=1))
        assert r.reason == "cpu_time", r
        assert 0.9 <= r.cpu_time <= 1.5, r.cpu_time  # not 2 s: no process reached its RLIMIT_CPU
        assert r.signal == 9
        assert live_cmdlines(sb) == []  # the background spinner went too


def test_sub_second_cpu_time(cgroups, busybox_rootfs) -> None:
    """RLIMIT_CPU counts whole seconds; the host's watch ends 0.5 s at 0.5 s."""
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(timeout=SAFE)) as sb:
        r = sh(sb, SPIN, limits=Limits(cpu_time=0.5))
        assert r.reason == "cpu_time", r
        assert 0.45 <= r.cpu_time <= 0.75, r.cpu_time  # not the 1 s of RLIMIT_CPU
        assert r.signal == 9


def test_sandbox_cpu_time_applies_to_every_exec(cgroups, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(cpu_time=0.5, timeout=SAFE)) as sb:
        for _ in range(2):
            r = sh(sb, SPIN)
            assert r.reason == "cpu_time" and r.cpu_time <= 0.75, r
        assert sh(sb, "echo quick").reason == "exited"


# -- wall clock ----------------------------------------------------------------------------

TREE = "setsid sleep 10 & setsid sh -c 'sleep 10 & sleep 10; true' & sleep 10 & sleep 10"


@pytest.mark.parametrize("how", ["limits", "exec-timeout"])
def test_sleep_10_with_timeout_1_ends_within_1_2_s_and_its_tree_is_gone(cgroups, busybox_rootfs, how) -> None:
    with Sandbox(rootfs=busybox_rootfs) as sb:
        kw: dict[str, object] = {"limits": Limits(timeout=1)} if how == "limits" else {"timeout": 1}
        r = sb.exec(["sleep", "10"], **kw)  # type: ignore[arg-type]
        assert r.reason == "timeout"
        assert 1.0 <= r.wall_time <= 1.2, r.wall_time
        began = time.monotonic()
        r = sh(sb, TREE, **kw)
        elapsed = time.monotonic() - began
        assert r.reason == "timeout" and r.signal == 9
        assert 1.0 <= r.wall_time <= 1.2 and elapsed <= 1.2, (r.wall_time, elapsed)
        # at once, without waiting: also the children that made their own session
        assert [c for c in live_cmdlines(sb) if "sleep" in c] == []


def test_exec_timeout_overrides_the_sandbox_timeout(cgroups, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(timeout=0.3)) as sb:
        assert sb.exec(["sleep", "1"]).reason == "timeout"
        r = sb.exec(["sleep", "0.5"], timeout=5)
        assert r.reason == "exited", r
        r = sb.exec(["sleep", "0.5"], limits=Limits(timeout=5))
        assert r.reason == "exited", r


# -- output --------------------------------------------------------------------------------

_OUTPUT_FLOOD = textwrap.dedent(r"""
    import json, resource, sys, time
    from sandbox import Limits, Sandbox
    with Sandbox(rootfs=sys.argv[1]) as sb:
        sb.exec(["true"])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.monotonic()
        r = sb.exec(["head", "-c", "1000000000", "/dev/zero"], limits=Limits(output="1M", timeout=60))
        took = time.monotonic() - t
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"reason": r.reason, "len": len(r.stdout), "zeros": r.stdout.count(0),
                      "truncated": r.truncated, "signal": r.signal, "grew_kib": after - before,
                      "took": took}))
""")


def test_1_gb_of_output_is_cut_at_1_mib_with_host_memory_bounded(cgroups, busybox_rootfs) -> None:
    """In a fresh interpreter, so that its peak RSS (ru_maxrss) is clean."""
    out = subprocess.run(
        [sys.executable, "-c", _OUTPUT_FLOOD, str(busybox_rootfs)], capture_output=True, timeout=120
    )
    assert out.returncode == 0, out.stderr.decode()
    got = json.loads(out.stdout)
    assert got["reason"] == "output_limit", got
    assert got["len"] == got["zeros"] == MB  # exactly 1 MiB
    assert got["truncated"] is True
    assert got["signal"] == 9  # output_action "kill"
    assert got["grew_kib"] * 1024 < 64 * MB, got
    assert got["took"] < 20, got  # killed at the cap, not after the whole gigabyte


def test_output_cap_close_gives_the_writer_epipe(cgroups, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(timeout=SAFE)) as sb:
        r = sh(
            sb,
            "head -c 1000000000 /dev/zero; echo status=$? >&2",
            limits=Limits(output="1M", output_action="close"),
        )
        assert r.reason == "output_limit" and r.truncated
        assert len(r.stdout) == MB
        # head died of SIGPIPE (141 = 128 + 13), the shell went on and exited by itself
        assert r.stderr == b"status=141\n"
        assert (r.exit_code, r.signal) == (0, None)


def test_stderr_is_capped_on_its_own(cgroups, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(timeout=SAFE)) as sb:
        r = sh(sb, "echo out; head -c 1000000000 /dev/zero >&2", limits=Limits(output="1M"))
        assert r.reason == "output_limit" and r.truncated
        assert r.stdout == b"out\n"
        assert len(r.stderr) == MB
        r = sh(
            sb,
            "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2; echo done >&2",
            limits=Limits(output="1M", output_action="close"),
        )
        assert r.reason == "output_limit"
        assert (len(r.stdout), len(r.stderr)) == (MB, MB)


def test_output_cap_is_per_stream(cgroups, busybox_rootfs) -> None:
    """700 KB on each stream: 1.4 MB in all, under 1 MiB on each."""
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(timeout=SAFE, output="1M")) as sb:
        r = sh(sb, "head -c 700000 /dev/zero; head -c 700000 /dev/zero >&2")
        assert (r.reason, r.truncated) == ("exited", False)
        assert (len(r.stdout), len(r.stderr)) == (700000, 700000)
        r = sh(sb, f"head -c {MB} /dev/zero")  # exactly at the cap is not over it
        assert (r.reason, r.truncated, len(r.stdout)) == ("exited", False, MB)


# -- disk and rlimits ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["limits", "disk"])
def test_filling_the_disk_gives_enospc(sandbox_host, busybox_rootfs, how) -> None:
    kw: dict[str, object] = {"limits": Limits(disk="8M", timeout=SAFE)} if how == "limits" else {"disk": "8M"}
    with Sandbox(rootfs=busybox_rootfs, **kw) as sb:  # type: ignore[arg-type]
        for path in ("/tmp/fill", "/fill", "/root/fill"):
            r = sh(sb, f"cat /dev/zero > {path}", timeout=SAFE)
            assert r.exit_code == 1, r
            assert b"No space left on device" in r.stderr, r.stderr
            size = int(sh_ok(sb, f"wc -c < {path}; rm -f {path}"))
            assert 6 * MB <= size <= 8 * MB, size
        assert sh(sb, "echo small > /tmp/x && cat /tmp/x").stdout == b"small\n"  # room again


def test_disk_in_exec_limits_is_refused(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs) as sb:
        with pytest.raises(ConfigError) as e:
            sh(sb, "head -c 20000000 /dev/zero > /tmp/x", limits=Limits(disk="8M"), timeout=SAFE)
        assert e.value.option == "limits.disk"


def test_file_size_verdict(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(timeout=SAFE)) as sb:
        r = sh(sb, "exec head -c 10000000 /dev/zero > /tmp/f", limits=Limits(file_size="1M"))
        assert r.reason == "file_size", r
        assert r.signal == 25  # SIGXFSZ
        assert sh_ok(sb, "wc -c < /tmp/f").strip() == str(MB)
        assert "file_size" in r.describe()
        r = sh(sb, "head -c 1000 /dev/zero > /tmp/g; wc -c < /tmp/g", limits=Limits(file_size="1M"))
        assert (r.reason, r.stdout) == ("exited", b"1000\n")


def test_open_files_and_stack_are_rlimits(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(open_files=77, stack="4M", timeout=SAFE)) as sb:
        assert sh_ok(sb, "ulimit -n; ulimit -s").split() == ["77", "4096"]
        assert sh_ok(sb, "ulimit -Hn; ulimit -Hs").split() == ["77", "4096"]  # hard: not raised back
        out = sh_ok(sb, "ulimit -n; ulimit -s; ulimit -f", limits=Limits(open_files=20, file_size="1M"))
        assert out.split() == ["20", "4096", "2048"]  # overridden, kept, added (-f counts 512-byte blocks)
        # the limit holds: fd 77 is past it
        r = sh(sb, "exec 76</dev/null && echo 76 ok; exec 77</dev/null && echo 77 ok")
        assert b"76 ok" in r.stdout and b"77 ok" not in r.stdout


def test_cpu_time_is_also_an_rlimit(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(cpu_time=2.5, timeout=SAFE)) as sb:
        # a backstop a second above: the host ends it at the cgroup's exact count
        assert sh_ok(sb, "ulimit -t; ulimit -Ht").split() == ["4", "5"]
        assert sh_ok(sb, "ulimit -c").strip() == "0"  # never a core dump


# -- CPU bandwidth and set -----------------------------------------------------------------


def test_cpus_quota_halves_two_spinners(cgroups, debian_rootfs) -> None:
    """Two spinners for 2 s of wall time under cpus=0.5 get about 1 CPU-second
    in all: the kernel's CFS bandwidth control, over 20 periods of 100 ms."""
    spin2 = "use Time::HiRes qw(time); my $end = time + 2; fork; 1 while time < $end; wait"
    with Sandbox(rootfs=debian_rootfs, limits=Limits(timeout=SAFE)) as sb:
        r = sb.exec(["perl", "-e", spin2], limits=Limits(cpus=0.5))
        assert r.reason == "exited", (r, r.stderr)
        ratio = r.cpu_time / r.wall_time
        assert 0.3 <= ratio <= 0.7, (r.cpu_time, r.wall_time)


def test_cpuset_pins_the_command(cgroups, busybox_rootfs) -> None:
    cpus = os.cpu_count() or 1
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(timeout=SAFE)) as sb:
        for cpu in range(min(cpus, 2)):
            out = sh_ok(sb, "grep Cpus_allowed_list /proc/self/status; nproc", limits=Limits(cpuset=str(cpu)))
            assert out.split() == ["Cpus_allowed_list:", str(cpu), "1"], out
        if cpus >= 2:
            out = sh_ok(sb, "grep Cpus_allowed_list /proc/self/status", limits=Limits(cpuset="0-1"))
            assert out.split()[-1] == "0-1"


def test_cpuset_at_the_sandbox_level(cgroups, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(cpuset="0", timeout=SAFE)) as sb:
        assert sh_ok(sb, "nproc").strip() == "1"


# -- accounting ----------------------------------------------------------------------------


def test_accounting_of_memory_within_5_percent(cgroups, debian_rootfs) -> None:
    """perl touches and holds 100 MiB (and burns 0.2 s of CPU)."""
    with Sandbox(rootfs=debian_rootfs, limits=Limits(timeout=SAFE)) as sb:
        r = sb.exec(["perl", "-e", HOLD_AND_BURN, "100", "0.2"])
        assert r.reason == "exited" and r.exit_code == 0, (r, r.stderr)
        assert r.max_memory is not None
        assert 0.95 * 100 * MB <= r.max_memory <= 1.05 * 100 * MB, r.max_memory / MB
        assert r.cpu_time >= 0.2


def test_accounting_of_cpu_seconds_within_5_percent(cgroups, debian_rootfs) -> None:
    """perl touches 100 MiB (and frees it, so that its exit is quick), burns
    its CPU clock up to 1 s at least, and prints what the clock says at its
    end: N, what it burnt (touching the memory alone takes 1 s of system time
    in an emulated VM)."""
    prog = TOUCH_FREE_AND_BURN + 'printf "%.6f\\n", clock_gettime(CLOCK_PROCESS_CPUTIME_ID);'
    with Sandbox(rootfs=debian_rootfs, limits=Limits(timeout=SAFE)) as sb:
        r = sb.exec(["perl", "-e", prog, "100", "1"])
        assert r.reason == "exited" and r.exit_code == 0, (r, r.stderr)
        burnt = float(r.stdout)
        assert burnt >= 1.0
        assert r.cpu_time == pytest.approx(r.cpu_user + r.cpu_sys)
        assert r.cpu_user > 0 and r.cpu_sys > 0  # the loop, and page faults
        assert 0.95 * 100 * MB <= (r.max_memory or 0) <= 1.05 * 100 * MB
        assert 0.95 * burnt <= r.cpu_user + r.cpu_sys <= 1.05 * burnt, (burnt, r.cpu_user, r.cpu_sys)


def test_accounting_is_per_exec(cgroups, debian_rootfs) -> None:
    """Each exec's counts are its own cgroup's: nothing of the one before."""
    with Sandbox(rootfs=debian_rootfs, limits=Limits(timeout=SAFE)) as sb:
        big = sb.exec(["perl", "-e", HOLD_AND_BURN, "100", "0.3"])
        small = sb.exec(["perl", "-e", HOLD_AND_BURN, "0", "0"])
        assert big.ok and small.ok
        assert big.max_memory is not None and small.max_memory is not None
        assert big.max_memory >= 95 * MB
        assert small.max_memory < 20 * MB, small.max_memory / MB
        # the big one burnt 0.3 s more than the small one: none of it is counted twice
        assert big.cpu_time >= 0.3 and small.cpu_time < big.cpu_time - 0.25, (big.cpu_time, small.cpu_time)


def test_accounting_counts_every_process(cgroups, debian_rootfs) -> None:
    """Two processes of 0.5 s each: 1 s for the exec (rusage of the main
    process alone would say 0.5 s)."""
    prog = HOLD_AND_BURN.replace("my $n = 0;", "fork; my $n = 0;") + "wait;"
    with Sandbox(rootfs=debian_rootfs, limits=Limits(timeout=SAFE)) as sb:
        r = sb.exec(["perl", "-e", prog, "0", "0.5"])
        assert r.ok, (r, r.stderr)
        assert 0.95 <= r.cpu_time <= 1.5, r.cpu_time


# -- cgroups: one per exec, all removed ----------------------------------------------------


def exec_group(sb: Sandbox, argv: list[str] | None = None) -> str:
    """The name of the cgroup an exec of one process ran in (its own
    /proc/self/cgroup, read by `cat` itself: no shell forks first)."""
    r = sb.exec(argv or ["cat", "/proc/self/cgroup"], timeout=SAFE)
    assert r.ok, r
    return group_names(our_cgroups(r.stdout_text))[1]


def test_every_exec_has_its_own_cgroup_removed_after_it(cgroups, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(memory="64M", pids=16)) as sb:
        first = inside_cgroups(sb)
        sb1, ex1 = group_names(first)
        assert ex1.startswith("exec-")
        # memory, pids and CPU accounting in the exec's group (one line on v2)
        if sandbox_cgroup.root().version == 1:  # type: ignore[union-attr]
            assert {"memory", "pids", "cpuacct"} <= set(",".join(first).split(","))
        else:
            assert list(first) == [""]
        # a running exec's group is on the host, under the sandbox's ...
        p = sb.spawn(["sh", "-c", "cat /proc/self/cgroup; echo end; sleep 100"])
        try:
            assert p.stdout is not None
            lines = [ln.decode() for ln in iter(p.stdout.readline, b"end\n")]
            running = group_names(our_cgroups("".join(lines)))
            assert running[0] == sb1
            assert [d for d in host_dirs(sb1) if d.endswith(f"/{running[1]}")], host_dirs(sb1)
            # ... and no other exec runs in it meanwhile
            assert exec_group(sb) != running[1]
        finally:
            p.kill()
            assert p.wait().signal == 9
        # ... and removed after its exec (in the background): it ran several processes
        end = time.monotonic() + 5
        while [d for d in host_dirs(sb1) if d.endswith(f"/{running[1]}")] and time.monotonic() < end:
            time.sleep(0.02)
        assert [d for d in host_dirs(sb1) if d.endswith(f"/{running[1]}")] == [], (running, host_dirs(sb1))
    assert dirs_after_close(sb1) == []


def recycles() -> bool:
    """Whether an exec's group can be used again here: its memory peak can
    be reset on v1, and on v2 from Linux 6.12 (the v2 VM's kernel is 6.1)."""
    if sandbox_cgroup.root().version == 1:  # type: ignore[union-attr]
        return True
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    assert m, os.uname().release
    return (int(m[1]), int(m[2])) >= (6, 12)


def test_a_clean_exec_group_is_used_again(cgroups, busybox_rootfs) -> None:
    """An exec's group serves the next exec (Group.recycle) only where a new
    one would be no different: one process ran in it, and little memory is
    still charged to it.  Its CPU time and memory peak start again at 0."""
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(memory="64M", pids=16)) as sb:
        a = exec_group(sb)
        if not recycles():
            assert exec_group(sb) != a  # each exec has a new group
            return
        assert exec_group(sb) == a  # one process, nothing left: used again
        burn = sb.exec(["dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=5000"], timeout=SAFE)
        assert burn.ok and burn.cpu_time > 0.05, burn
        after = sb.exec(["cat", "/proc/self/cgroup"], timeout=SAFE)
        assert after.ok and f"/{a}\n" in after.stdout_text, after.stdout_text  # the same group
        assert after.cpu_time < burn.cpu_time / 2, (after.cpu_time, burn.cpu_time)
        # a second process ran in it: not used again
        assert exec_group(sb, ["sh", "-c", "cat /proc/self/cgroup; true"]) == a
        b = exec_group(sb)
        assert b != a
        # 4 MiB of a file it wrote stay charged to it (tmpfs): not used again
        assert sb.exec(["dd", "if=/dev/zero", "of=/tmp/f", "bs=1M", "count=4"], timeout=SAFE).ok
        assert exec_group(sb) != b


def pool_settled() -> None:
    """Closed sandboxes are gone and the pool has taken their groups back
    (kept, or removed)."""
    assert wait_closed()
    sandbox_cgroup._pool().drain()  # type: ignore[union-attr]


def test_closed_sandboxes_groups_are_kept_for_the_latest_limits(cgroups, busybox_rootfs) -> None:
    """The pool keeps the groups of the last KEEP closed sandboxes for the
    next ones with the same limits (sandbox/cgroup/pool.py): when the
    limits change, the group kept longest ago goes and the new limits'
    group is kept, so a caller whose limits changed gets groups kept again."""
    from contextlib import ExitStack

    from sandbox.cgroup import pool as cgroup_pool

    def closed_name(limits: Limits, hold: ExitStack | None = None) -> str:
        sb = Sandbox(rootfs=busybox_rootfs, limits=limits)
        sb.start()
        name = group_names(inside_cgroups(sb))[0]
        if hold is not None:
            hold.callback(sb.close)
        else:
            sb.close()
        return name

    old = Limits(memory="64M", pids=16)
    with ExitStack() as hold:  # KEEP at once: each is a group of its own
        olds = [closed_name(old, hold) for _ in range(cgroup_pool.KEEP)]
    pool_settled()
    assert all(host_dirs(n) for n in olds), olds  # all kept
    new = Limits(memory="48M", pids=16, timeout=SAFE)  # the timeout is no cgroup limit: not in the key
    first = closed_name(new)
    pool_settled()
    assert closed_name(new) == first  # kept, and taken again
    pool_settled()
    assert [n for n in olds if not host_dirs(n)] == [olds[-1]]  # the first closed went
    with Sandbox(rootfs=busybox_rootfs, limits=new) as sb:
        r = sh(sb, MEMORY_BOMB)
        assert r.reason == "oom" and r.max_memory <= 48 * MB, r  # its limits, not the old ones
    assert dirs_after_close(first) == []


def test_a_group_with_tmpfs_files_charged_to_it_is_not_kept(cgroups, busybox_rootfs, tmp_path) -> None:
    """Files a sandbox's commands leave on a host tmpfs mount stay charged
    to its group (no swap: never reclaimed); kept for the next sandbox, they
    would count against that one's memory limit.  Such a group is removed."""
    shm = tmp_path / "shm"
    shm.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32M,mode=1777", "sbx-test-shm", str(shm)], check=True)
    try:
        limits = Limits(memory="48M", pids=16, timeout=SAFE)
        with Sandbox(rootfs=busybox_rootfs, limits=limits) as sb:
            clean = group_names(inside_cgroups(sb))[0]
        pool_settled()
        assert host_dirs(clean)  # nothing left charged: kept
        mount = Mount(str(shm), "/shm", read_only=False)
        with Sandbox(rootfs=busybox_rootfs, limits=limits, mounts=[mount]) as sb:
            left = group_names(inside_cgroups(sb))[0]
            assert sh(sb, "head -c 8000000 /dev/zero > /shm/f", timeout=SAFE).ok
        pool_settled()
        assert (shm / "f").stat().st_size == 8000000  # still there, and charged to that group
        assert host_dirs(left) == []  # not kept
    finally:
        (shm / "f").unlink(missing_ok=True)
        subprocess.run(["umount", str(shm)], check=True)


def test_a_background_process_keeps_its_group_until_close(cgroups, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs) as sb:
        r = sh(sb, "setsid sleep 100 > /dev/null 2>&1 & echo started", timeout=SAFE)  # a cgroup: a limit
        assert r.reason == "exited" and r.stdout == b"started\n"
        end = time.monotonic() + 5  # setsid is on its way to exec sleep
        while not [c for c in live_cmdlines(sb) if c.startswith("sleep 100")] and time.monotonic() < end:
            time.sleep(0.02)
        assert [c for c in live_cmdlines(sb) if c.startswith("sleep 100")]
        name = group_names(inside_cgroups(sb))[0]
        assert host_dirs(name)
        pid = sb.pid
        assert pid is not None
    assert dirs_after_close(name) == []
    assert leakcheck.proc_info(pid) is None or leakcheck.proc_info(pid).state in ("Z", "X")


def test_close_removes_every_cgroup_and_leaves_nothing(cgroups, busybox_rootfs) -> None:
    before = leakcheck.snapshot()
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(memory="64M", pids=16, cpus=1, cpuset="0")) as sb:
        name = group_names(inside_cgroups(sb))[0]
        p = sb.spawn(["sleep", "100"])  # still running at close
        assert len(host_dirs(name)) >= 2  # the sandbox's and the running exec's
        assert p.poll() is None
    with pytest.raises(SandboxClosed):
        p.wait()  # the sandbox's close ended it: this only releases its pipes
    assert dirs_after_close(name) == []
    assert own_leaks(before) == []


def test_a_killed_owners_cgroups_are_collected_by_sandbox_gc(cgroups, busybox_rootfs) -> None:
    """A group whose owner is dead (pid 4194304 is above any pid_max) is
    removed, with its children, by `sandbox gc`; a live sandbox's are not
    (its command runs on, its limits hold)."""
    root = sandbox_cgroup.root()
    base = next(iter(root.base.values())) if isinstance(root.base, dict) else root.base  # type: ignore[union-attr]
    stale = os.path.join(base, "sandbox-4194304-1-1")
    os.makedirs(os.path.join(stale, "exec-1"))
    try:
        with Sandbox(rootfs=busybox_rootfs, limits=Limits(memory="64M", pids=16, timeout=SAFE)) as sb:
            p = sb.spawn(["sh", "-c", "echo ready; sleep 100"])
            try:
                assert p.stdout is not None and p.stdout.readline() == b"ready\n"
                name, lister = group_names(inside_cgroups(sb))
                live = [d for d in host_dirs(name) if not d.endswith(f"/{lister}")]  # that one is done
                assert len(live) >= 2  # the sandbox's group and the running command's, at least
                out = subprocess.run(
                    [sys.executable, "-m", "sandbox.cli", "gc"], capture_output=True, timeout=60
                )
                assert out.returncode == 0, out.stderr
                # gone (the background gc of a sandbox start may have been first)
                assert not os.path.exists(stale), out.stdout
                assert name.encode() not in out.stdout
                assert all(os.path.isdir(d) for d in live), live  # ours, in use: kept
                assert p.poll() is None  # and its command runs on
                r = sh(sb, MEMORY_BOMB)
                assert r.reason == "oom" and r.max_memory <= 64 * MB  # limits still hold
            finally:
                p.kill()
                p.wait()
    finally:
        for d in (os.path.join(stale, "exec-1"), stale):
            if os.path.exists(d):
                os.rmdir(d)


# -- limits of spawn() while the caller is not waiting -------------------------------------


def test_spawn_timeout_holds_while_the_caller_streams(cgroups, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs) as sb:
        p = sb.spawn(["sh", "-c", "sleep 3; echo late"], limits=Limits(timeout=0.5))
        try:
            assert p.stdout is not None
            began = time.monotonic()
            line = p.stdout.readline()
            assert line == b"" and time.monotonic() - began < 1.5, line
        finally:
            r = p.wait()
        assert r.reason == "timeout"


def test_async_spawn_limits_hold_while_the_caller_streams(cgroups, busybox_rootfs) -> None:
    async def main() -> None:
        async with AsyncSandbox(rootfs=busybox_rootfs) as sb:
            p = await sb.spawn(["sh", "-c", "sleep 3; echo late"], limits=Limits(timeout=0.5))
            try:
                with anyio.fail_after(2.5):
                    assert await p.read_stdout() == b""  # ended with nobody waiting
            finally:
                r = await p.wait()
            assert r.reason == "timeout"
            p = await sb.spawn(
                ["sh", "-c", f"({SPIN}) & ({SPIN}) & sleep 1.5; echo hi"], limits=Limits(cpu_time=0.5)
            )
            try:
                with anyio.fail_after(5):
                    while await p.read_stdout():
                        pass
            finally:
                r = await p.wait()
            assert r.reason == "cpu_time" and r.cpu_time <= 1.0, r

    require_sandbox_host()
    anyio.run(main, backend="asyncio")


def test_spawn_cpu_time_holds_while_the_caller_streams(cgroups, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(timeout=SAFE)) as sb:
        p = sb.spawn(["sh", "-c", f"({SPIN}) & ({SPIN}) & sleep 1.5; echo hi"], limits=Limits(cpu_time=0.5))
        try:
            assert p.stdout is not None
            p.stdout.readline()
        finally:
            r = p.wait()
        assert r.reason == "cpu_time" and r.cpu_time <= 0.7, r.cpu_time


# -- async ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_verdicts(cgroups, busybox_rootfs, backend: str) -> None:
    async def main() -> None:
        async with AsyncSandbox(rootfs=busybox_rootfs, limits=Limits(timeout=SAFE)) as sb:
            r = await sb.exec(["sh", "-c", TREE], limits=Limits(timeout=1))
            assert r.reason == "timeout" and 1.0 <= r.wall_time <= 1.2, r
            r = await sb.exec(["sleep", "10"], timeout=0.5)
            assert r.reason == "timeout"
            r = await sb.exec(["head", "-c", "1000000000", "/dev/zero"], limits=Limits(output="1M"))
            assert (r.reason, len(r.stdout), r.truncated) == ("output_limit", MB, True)
            r = await sb.exec(
                ["sh", "-c", "head -c 1000000000 /dev/zero; echo status=$? >&2"],
                limits=Limits(output="1M", output_action="close"),
            )
            assert (r.reason, len(r.stdout), r.stderr) == ("output_limit", MB, b"status=141\n")
            r = await sb.exec(["sh", "-c", SPIN], limits=Limits(cpu_time=1))
            assert r.reason == "cpu_time" and 0.9 <= r.cpu_time <= 1.5, r
            r = await sb.exec(["sh", "-c", f"({SPIN}) & {SPIN}"], limits=Limits(cpu_time=1))
            assert r.reason == "cpu_time" and 0.9 <= r.cpu_time <= 1.5, r
            r = await sb.exec(["sh", "-c", MEMORY_BOMB], limits=Limits(memory="32M"))
            assert r.reason == "oom" and r.max_memory <= 32 * MB, r
            r = await sb.exec(
                ["sh", "-c", "for i in 1 2 3 4 5 6; do sleep 1 & done; wait"], limits=Limits(pids=3)
            )
            assert r.reason == "pids", r
            left = await sb.exec(["sh", "-c", "pidof sleep; true"])
            assert left.stdout == b""

    require_sandbox_host()
    anyio.run(main, backend=backend)


# -- the command line ----------------------------------------------------------------------


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "sandbox.cli", *args], capture_output=True, timeout=timeout)


def test_cli_limits_with_json(cgroups, busybox_rootfs) -> None:
    rootfs = str(busybox_rootfs)
    run = ["run", "--json", "--rootfs", rootfs]
    r = _cli(*run, *["--memory", "32M", "--timeout", "30", "--", "sh", "-c"], MEMORY_BOMB)
    got = json.loads(r.stdout)
    assert (got["reason"], r.returncode) == ("oom", 137)
    assert got["max_memory"] <= 32 * MB
    r = _cli(*run, *["--cpu-time", "0.5", "--", "sh", "-c"], SPIN)
    assert json.loads(r.stdout)["reason"] == "cpu_time"
    r = _cli(*run, *["--output-limit", "1K", "--", "head", "-c", "5000", "/dev/zero"])
    got = json.loads(r.stdout)
    assert (got["reason"], len(got["stdout"]), got["truncated"]) == ("output_limit", 1024, True)
    flags = ["--file-size", "4K", "--open-files", "33", "--stack", "1M", "--", "sh", "-c"]
    r = _cli(*run, *flags, "ulimit -n; ulimit -s; exec head -c 10000 /dev/zero > /tmp/f")
    got = json.loads(r.stdout)
    assert (got["reason"], got["stdout"].split()) == ("file_size", ["33", "1024"])


def test_cli_bad_limit_is_125_and_names_it(sandbox_host, busybox_rootfs) -> None:
    r = _cli("run", "--rootfs", str(busybox_rootfs), "--memory", "lots", "--", "true")
    assert r.returncode == 125
    assert b"limits.memory" in r.stderr


def test_cli_output_limit_when_streaming(cgroups, busybox_rootfs) -> None:
    r = _cli(
        "run",
        "--rootfs",
        str(busybox_rootfs),
        *["--output-limit", "1K", "--", "head", "-c", "1000000", "/dev/zero"],
    )
    assert len(r.stdout) == 1024 and r.returncode == 137 and b"output_limit" in r.stderr


def test_cli_pids_limit_when_streaming(cgroups, debian_rootfs) -> None:
    cli = [sys.executable, "-m", "sandbox.cli", "run", "--rootfs", str(debian_rootfs)]
    child = subprocess.Popen(
        [*cli, "--pids-limit", "16", "--", "perl", "-e", FORK_BOMB],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # A bound against a hang, not a speed test: it ends within seconds in the v2
        # VM, but missed 10 s there once with the host busy (software
        # emulation); the bomb is held to 16 processes meanwhile.
        _, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()  # its sandbox dies with it (the lifeline); gc removes its cgroups
        child.communicate()
        subprocess.run([sys.executable, "-m", "sandbox.cli", "gc"], capture_output=True, timeout=60)
        raise AssertionError("the fork bomb ran on for 60 s") from None
    assert child.returncode == 137 and b"pids" in err


# -- bad values ----------------------------------------------------------------------------


def test_bad_limits_name_the_option_and_leave_nothing(cgroups, busybox_rootfs) -> None:
    before, fds = leakcheck.snapshot(), open_fds()
    for bad, option in (
        ("x", "limits"),
        ({"memroy": 1}, "limits"),
        ({"memory": "lots"}, "limits.memory"),
        ({"pids": 0}, "limits.pids"),
        (5, "limits"),
    ):
        with pytest.raises(ConfigError) as e:
            Sandbox(rootfs=busybox_rootfs, limits=bad)  # type: ignore[arg-type]
        assert e.value.option == option, str(e.value)
    with pytest.raises(ConfigError) as e:
        Sandbox(rootfs=busybox_rootfs, disk="8M", limits=Limits(disk="8M"))
    assert e.value.option == "disk"
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(pids=16)) as sb:
        for bad, option in (({"memroy": 1}, "limits"), ("256M", "limits"), ({"cpus": -1}, "limits.cpus")):
            with pytest.raises(ConfigError) as e:
                sb.exec(["true"], limits=bad)  # type: ignore[arg-type]
            assert e.value.option == option, str(e.value)
            with pytest.raises(ConfigError):
                sb.spawn(["true"], limits=bad)  # type: ignore[arg-type]
        assert sb.exec(["true"]).ok
    assert own_leaks(before) == []
    assert fd_leaks(fds) == {}


def test_limits_without_cgroups_need_no_cgroup(sandbox_host, busybox_rootfs) -> None:
    """Limits that are not cgroup limits work with or without cgroups."""
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(timeout=SAFE, output="10", open_files=50)) as sb:
        r = sb.exec(["echo", "hello world"])
        assert (r.stdout, r.reason, r.truncated) == (b"hello worl", "output_limit", True)
        r = sb.exec(["true"], limits=Limits(output=0))  # output=0: silence is fine
        assert (r.reason, r.truncated) == ("exited", False)
        r = sb.exec(["echo", "x"], limits=Limits(output=0))
        assert (r.stdout, r.reason, r.truncated) == (b"", "output_limit", True)


def test_execs_use_stdin_with_limits(cgroups, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(memory="64M", pids=16, timeout=SAFE)) as sb:
        r = sb.exec(["cat"], stdin=b"x" * (2 * MB))
        assert r.ok and len(r.stdout) == 2 * MB
        p = sb.spawn(["cat"], stdin=PIPE)
        r = p.communicate(b"abc")
        assert r.stdout == b"abc"
