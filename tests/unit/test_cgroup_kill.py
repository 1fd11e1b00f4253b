"""kill_listed (sandbox/cgroup/_fs.py) signals only processes that a second
look still finds in the group: a pid read once may have been freed and given
to a host process before the signal.  The listings are scripted here (what
cgroup.procs shows at each read); the processes and signals are real."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

from sandbox.cgroup import _fs


def script(*listings: list[int]) -> Callable[[str], list[int]]:
    it: Iterator[list[int]] = iter(listings)
    return lambda _path: next(it, [])  # then an empty group


def test_a_pid_gone_from_the_group_is_not_signalled() -> None:
    host = subprocess.Popen(["sleep", "60"])  # a host process that got the freed pid
    try:
        _fs.kill_listed("cgroup.procs", script([host.pid], []))
        assert host.poll() is None, "kill_listed signalled a pid no longer in the group"
    finally:
        host.kill()
        host.wait()


def test_a_pid_still_in_the_group_is_killed() -> None:
    victim = subprocess.Popen(["sleep", "60"])
    try:
        _fs.kill_listed("cgroup.procs", script([victim.pid], [victim.pid]))
        assert victim.wait(5) == -9
    finally:
        victim.kill()
        victim.wait()


def test_a_pid_listed_twice_is_killed_and_leaves_no_pidfd() -> None:
    """A v1 cgroup.procs may list a pid more than once: one pidfd for it,
    closed with the others (a second one was lost before)."""
    victim = subprocess.Popen(["sleep", "60"])
    try:
        before = set(os.listdir("/proc/self/fd"))
        _fs.kill_listed("cgroup.procs", script([victim.pid, victim.pid], [victim.pid, victim.pid]))
        assert victim.wait(5) == -9
        assert set(os.listdir("/proc/self/fd")) <= before
    finally:
        victim.kill()
        victim.wait()


def test_a_listed_zero_is_skipped() -> None:
    """cgroup.procs may show 0 for a process in the middle of its exit (its
    pid detached already; seen on cgroup v2): pidfd_open(0) is EINVAL, and
    the kill went no further."""
    victim = subprocess.Popen(["sleep", "60"])
    try:
        _fs.kill_listed("cgroup.procs", script([0, victim.pid], [0, victim.pid]))
        assert victim.wait(5) == -9
    finally:
        victim.kill()
        victim.wait()
