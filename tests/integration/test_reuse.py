"""What a start saves, and what it must not carry over: cgroups only where a
limit needs one, and network namespaces used again only when nothing of the
sandbox before is left in them (sandbox/netpool.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Limits, Sandbox, _core, netpool
from sandbox import cgroup as sandbox_cgroup
from tests.conftest import require, sh, sh_ok

# perl: a TCP connection over loopback, closed by the client first, which
# leaves the client's end in TIME_WAIT (60 s) inside the namespace.
TIME_WAIT = r"""
use Socket;
socket(my $l, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
setsockopt($l, SOL_SOCKET, SO_REUSEADDR, 1);
bind($l, sockaddr_in(0, INADDR_LOOPBACK)) or die "bind: $!";
listen($l, 1) or die "listen: $!";
my ($port) = sockaddr_in(getsockname($l));
socket(my $c, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
connect($c, sockaddr_in($port, INADDR_LOOPBACK)) or die "connect: $!";
accept(my $s, $l) or die "accept: $!";
close($c); sleep 1; close($s); close($l);
open(my $f, "<", "/proc/net/sockstat") or die; print <$f>;
"""


@pytest.fixture
def held() -> Iterator[list[int]]:
    """Network namespace fds to keep open during a test (see _netns)."""
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


def _netns(sb: Sandbox, held: list[int]) -> int:
    """The inode of the sandbox's network namespace, which is held (an fd in
    `held`) so that the kernel cannot destroy it and give its inode number
    to a new one: the same number then means the same namespace."""
    assert sb.pid is not None
    fd = os.open(f"/proc/{sb.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    held.append(fd)
    return os.fstat(fd).st_ino


def _own_groups(sb: Sandbox) -> list[str]:
    """The host's cgroup paths of the sandbox's init."""
    assert sb.pid is not None
    with open(f"/proc/{sb.pid}/cgroup") as f:
        return [line.strip() for line in f if "sandbox-" in line]


def test_a_sandbox_without_cgroup_limits_has_no_cgroup(sandbox_host, busybox_rootfs: Path) -> None:
    require(sandbox_cgroup.root() is not None, f"no usable cgroups: {sandbox_cgroup.why()}")
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(open_files=64, output="1M")) as sb:
        assert sb._group is None
        r = sb.exec(["cat", "/proc/self/cgroup"])
        assert r.ok and b"sandbox-" not in r.stdout, r.stdout
        assert r.max_memory is None  # no cgroup counted it; max_rss did
        assert r.max_rss > 0


def test_an_exec_that_needs_a_cgroup_gets_one(sandbox_host, busybox_rootfs: Path) -> None:
    """A timeout must end every process of the command, also one that left
    its session: that takes a cgroup, made at that exec."""
    require(sandbox_cgroup.root() is not None, f"no usable cgroups: {sandbox_cgroup.why()}")
    with Sandbox(rootfs=busybox_rootfs) as sb:
        assert sb._group is None
        r = sb.exec(["cat", "/proc/self/cgroup"], timeout=30)
        assert r.ok and b"sandbox-" in r.stdout and b"/exec-" in r.stdout, r.stdout
        assert r.max_memory is not None
        r = sb.exec(["sh", "-c", "setsid sleep 100 & sleep 100"], timeout=0.5)
        assert r.reason == "timeout"
        left = sh_ok(sb, "ps -o pid,comm | grep -c sleep || true").strip()
        assert left == "0", left  # the escapee went with its cgroup
        assert sb._group is not None
        assert _own_groups(sb) == []  # the init itself stays out of it


def test_a_netns_with_nothing_left_is_used_again(sandbox_host, busybox_rootfs: Path, held) -> None:
    require(netpool.pool.reuse, "SANDBOX_NETNS_REUSE=0")
    seen = []
    for _ in range(12):
        with Sandbox(rootfs=busybox_rootfs, warm=False) as sb:
            seen.append(_netns(sb, held))
            assert sb.exec(["true"]).ok
        time.sleep(0.002)  # lets the pool's thread check what came back
    assert len(set(seen)) < len(seen), seen


def test_a_netns_with_a_socket_left_is_not_used_again(sandbox_host, debian_rootfs: Path, held) -> None:
    """A TIME_WAIT left by the sandbox keeps its namespace from the next one,
    and so would any socket: the check reads the namespace's own counts."""
    with Sandbox(rootfs=debian_rootfs, warm=False) as sb:
        used = _netns(sb, held)
        r = sb.exec(["perl", "-e", TIME_WAIT], timeout=30)
        assert r.ok, r.stderr
        assert b"tw 1" in r.stdout, r.stdout
    assert not _core.netns_idle(held[0])
    for _ in range(12):
        with Sandbox(rootfs=debian_rootfs, warm=False) as sb:
            assert _netns(sb, held) != used
        time.sleep(0.002)


def test_a_fresh_netns_is_idle(sandbox_host) -> None:
    fd = _core.make_netns()
    assert fd >= 0
    try:
        assert _core.netns_idle(fd)
    finally:
        os.close(fd)


def test_reuse_off_gives_every_sandbox_a_new_netns(
    sandbox_host, busybox_rootfs: Path, monkeypatch, held
) -> None:
    monkeypatch.setattr(netpool.pool, "reuse", False)
    seen = []
    for _ in range(12):
        with Sandbox(rootfs=busybox_rootfs, warm=False) as sb:
            seen.append(_netns(sb, held))
        time.sleep(0.002)
    assert len(set(seen)) == len(seen), seen


def _sandbox_group(sb: Sandbox) -> str:
    """The name of the sandbox's own cgroup, from an exec's /proc/self/cgroup."""
    out = sh_ok(sb, "cat /proc/self/cgroup", timeout=30)
    names = {p.split("/")[-2] for p in (line.split(":", 2)[2] for line in out.splitlines()) if "/exec-" in p}
    assert len(names) == 1, out
    return names.pop()


def test_a_closed_sandboxs_group_serves_the_next_with_its_limits(sandbox_host, busybox_rootfs: Path) -> None:
    """Kept by the pool with nothing in it but its limits: its exec groups
    are gone, the next sandbox with the same limits gets it (and those
    limits hold), one with other limits does not."""
    require(sandbox_cgroup.root() is not None, f"no usable cgroups: {sandbox_cgroup.why()}")
    sandbox_cgroup.shutdown()  # nothing kept from other tests
    lim = Limits(memory="48M", pids=32, timeout=30)
    with Sandbox(rootfs=busybox_rootfs, limits=lim) as sb:
        first = _sandbox_group(sb)
        sh_ok(sb, "sleep 100 > /dev/null 2>&1 &")  # left running at close
    seen = set()
    for _ in range(10):
        with Sandbox(rootfs=busybox_rootfs, limits=lim) as sb:
            seen.add(_sandbox_group(sb))
            r = sh(sb, "cat /proc/self/cgroup; ps -o comm | grep -c sleep || true", timeout=30)
            assert r.stdout.splitlines()[-1] == b"0", r.stdout  # nothing of the one before
            bomb = sb.exec(["sh", "-c", "while :; do sleep 1 & done"], timeout=30)
            assert bomb.reason == "pids", bomb  # its limits hold
        time.sleep(0.01)  # lets the pool's thread take the group back
    assert first in seen, (first, seen)
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(memory="40M", timeout=30)) as sb:
        assert _sandbox_group(sb) not in seen | {first}
    sandbox_cgroup.shutdown()


def test_the_watchdog_lets_ended_commands_go(sandbox_host, busybox_rootfs: Path) -> None:
    """An ended command is not kept (with its output) until its next check."""
    from sandbox.watchdog import watchdog

    require(sandbox_cgroup.root() is not None, f"no usable cgroups: {sandbox_cgroup.why()}")

    def watched(p: object) -> bool:
        return any(c is p._col for c in list(watchdog._live.values()))  # type: ignore[attr-defined]

    with Sandbox(rootfs=busybox_rootfs, limits=Limits(cpu_time=10, timeout=30)) as sb:
        done = []
        for _ in range(5):
            p = sb.spawn(["echo", "ended"])
            assert watched(p)
            assert p.wait().ok
            done.append(p)
        assert not any(watched(p) for p in done)
        p = sb.spawn(["sleep", "100"])
        try:
            assert watched(p)
        finally:
            p.kill()
            p.wait()
        assert not watched(p)
