"""What a start saves, and what it must not carry over: cgroups only where a
limit needs one, and network namespaces used again only when nothing of the
sandbox before is left in them (sandbox/netpool.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from sandbox import Limits, Sandbox, _core, netpool
from sandbox import cgroup as sandbox_cgroup
from sandbox.network import links
from tests.conftest import require, sh, sh_ok

T = TypeVar("T")

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


def _in_netns(netns_fd: int, make: Callable[[], T]) -> T:
    """What `make` returns, called by a thread that joins the network
    namespace (and ends there)."""
    out: list[T] = []

    def join() -> None:
        links._setns(netns_fd)
        out.append(make())

    t = threading.Thread(target=join)
    t.start()
    t.join()
    assert out, "the thread failed"
    return out[0]


def _stats_of(netns_fd: int, held: list[int]) -> tuple[int, ...]:
    """The namespace's files for netns_idle, opened (and held) anew: the
    pool's own are closed with it."""
    stats = _in_netns(netns_fd, _core.netns_files)
    held.extend(stats)
    return stats


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _open_as(fd: int, ident: tuple[int, int]) -> bool:
    """Whether fd is still open on the file it was (`ident`)."""
    try:
        return _identity(fd) == ident
    except OSError:
        return False


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
    assert not _core.netns_idle(_stats_of(held[0], held))
    for _ in range(12):
        with Sandbox(rootfs=debian_rootfs, warm=False) as sb:
            assert _netns(sb, held) != used
        time.sleep(0.002)


def test_a_reused_netns_is_checked_again(sandbox_host, debian_rootfs: Path, held) -> None:
    """The sockstat files opened when a namespace was made still count its
    sockets once it serves another sandbox: busy while one is open in it,
    idle when none is, and kept from the next sandbox when one is left."""
    require(netpool.pool.reuse, "SANDBOX_NETNS_REUSE=0")
    seen: set[int] = set()
    reused = None
    for _ in range(24):
        with Sandbox(rootfs=debian_rootfs, warm=False) as sb:
            ino = _netns(sb, held)
            if ino in seen:
                reused = ino
                assert sb._launched is not None and sb._launched.netns is not None
                stats = netpool.pool._stats[sb._launched.netns]
                assert _core.netns_idle(stats)
                pid = sh_ok(
                    sb,
                    "perl -MSocket -e 'socket(my $s, PF_INET6, SOCK_DGRAM, 0) or die; "
                    'open(my $f, ">", "/tmp/up.new") or die; print $f $$; close $f; '
                    'rename("/tmp/up.new", "/tmp/up"); sleep 100\' > /dev/null 2>&1 & '
                    "until [ -e /tmp/up ]; do sleep 0.01; done; cat /tmp/up",
                    timeout=30,
                ).strip()
                assert not _core.netns_idle(stats)  # the socket of a command still running
                sh_ok(sb, f"kill {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.01; done", timeout=30)
                assert _core.netns_idle(stats)
                r = sb.exec(["perl", "-e", TIME_WAIT], timeout=30)
                assert r.ok and b"tw 1" in r.stdout, (r.stdout, r.stderr)
                assert not _core.netns_idle(stats)
                break
            seen.add(ino)
        time.sleep(0.002)  # lets the pool's thread check what came back
    assert reused is not None, "no namespace was used again"
    for _ in range(12):
        with Sandbox(rootfs=debian_rootfs, warm=False) as sb:
            assert _netns(sb, held) != reused  # its TIME_WAIT keeps it out
        time.sleep(0.002)


def test_a_fresh_netns_is_idle_until_a_socket_is_made_in_it(sandbox_host) -> None:
    """Its sockstat files, opened inside it, are read from here (the host's
    namespace) and count its sockets only."""
    fd, stats = _core.make_checked_netns()
    assert fd >= 0 and min(stats) >= 0
    try:
        assert _core.netns_idle(stats)
        s = _in_netns(fd, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        assert not _core.netns_idle(stats)
        s.close()
        assert _core.netns_idle(stats)
    finally:
        for f in (fd, *stats):
            os.close(f)


# TCP connections over loopback that leave TCP metrics (the kernel's cache of
# what it learnt of each peer, kept per namespace for up to an hour) and no
# socket: each connection's server side is saved in LAST_ACK; its client's
# TIME_WAIT is taken over a second later (tcp_tw_reuse: loopback) and aborted
TCP_METRICS_LEFT = r"""
import socket, struct, sys, time
LINGER0 = struct.pack("ii", 1, 0)
pairs = []
for addr in sys.argv[1:]:
    srv = socket.socket(); srv.bind((addr, 0)); srv.listen()
    c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); c.bind((addr, 0))
    c.connect(srv.getsockname()); a, _ = srv.accept()
    c.sendall(b"x" * 100000); n = 0
    while n < 100000: n += len(a.recv(65536))
    c.shutdown(socket.SHUT_WR); a.recv(1); a.close()
    time.sleep(0.1); port = c.getsockname()[1]; c.close()
    pairs.append((srv, port))
time.sleep(1.1)  # tcp_tw_reuse takes a TIME_WAIT over once its timestamp is a second old
for srv, port in pairs:
    c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind((srv.getsockname()[0], port)); c.connect(srv.getsockname()); a, _ = srv.accept()
    for s in (c, a):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0); s.close()
    srv.close()
"""


def test_a_namespace_passed_on_keeps_no_tcp_metrics(sandbox_host) -> None:
    """What the kernel learnt of a sandbox's TCP peers (addresses it picks in
    127/8) outlives its sockets; a later sandbox with CAP_NET_ADMIN could
    read it (and not flush it): a channel from one to the next.  The check
    that passes a namespace on flushes it."""
    fd, stats = _core.make_checked_netns()
    assert fd >= 0, os.strerror(-fd)
    netns = ["nsenter", f"--net=/proc/{os.getpid()}/fd/{fd}"]

    def metrics() -> str:
        show = [*netns, "ip", "tcp_metrics", "show"]
        return subprocess.run(show, capture_output=True, text=True, check=True).stdout

    try:
        tagged = ["127.83.69.67", "127.0.0.9"]
        subprocess.run([*netns, sys.executable, "-c", TCP_METRICS_LEFT, *tagged], check=True, timeout=60)
        shown = metrics()
        assert all(a in shown for a in tagged), shown  # left: the check has something to do
        # no socket left, so it is passed on (once `ip`'s netlink socket is
        # freed: after an RCU grace period) ...
        deadline = time.monotonic() + 10
        while not _core.netns_idle(stats) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _core.netns_idle(stats)
        assert metrics() == ""  # ... with nothing of them
    finally:
        for f in (fd, *stats):
            os.close(f)


def test_netns_idle_takes_its_files_only(sandbox_host) -> None:
    with pytest.raises(ValueError, match="netns_files"):
        _core.netns_idle((0, 1))


def test_the_pool_closes_a_namespaces_files_with_it(sandbox_host, monkeypatch) -> None:
    """Every namespace the pool made, and both its sockstat files, are
    closed once it is gone: taken for a bridge (the caller closes the
    namespace), given back after shutdown(), or held at shutdown().  Each
    namespace stays held by the test, so its fd numbers cannot be reused for
    the same files."""
    p = netpool.NetnsPool(target=2)
    made: list[tuple[int, tuple[int, int]]] = []
    files: list[tuple[int, tuple[int, int]]] = []  # (fd, identity) of each
    real = _core.make_checked_netns

    def recording() -> tuple[int, tuple[int, int]]:
        fd, stats = real()
        if fd >= 0 and threading.current_thread() in (threading.main_thread(), p._thread):
            made.append((os.dup(fd), stats))  # the dup holds the namespace
            files.extend((f, _identity(f)) for f in (fd, *stats))
        return fd, stats

    monkeypatch.setattr(_core, "make_checked_netns", recording)
    try:
        first = p.take()
        p.launched()
        assert first is not None and _core.netns_idle(p._stats[first])
        p.give_back(first)
        deadline = time.monotonic() + 10
        while (len(p._ready) < 2 or p._returned) and time.monotonic() < deadline:
            time.sleep(0.01)  # the thread checks it and fills the pool up to 2
        # 2 or 3: the given-back one is kept past the target (KEEP) when the
        # thread had already made two while it was checked
        assert len(p._ready) >= 2 and not p._returned
        for _ in range(4):  # from the pool (their files closed at once), then made
            bridge = p.take(returned=False)
            p.launched()
            assert bridge is not None and bridge not in p._stats
            os.close(bridge)
        late = p.take()
        p.launched()
        assert late is not None
    finally:
        p.shutdown()
    p.give_back(late)
    assert p._stats == {} and not p._ready and not p._returned
    assert len(made) >= 2, made  # the take's own and the thread's
    assert [f for f, ident in files if _open_as(f, ident)] == []
    for dup, _ in made:
        os.close(dup)


def test_idle_namespaces_handed_back_are_kept_past_the_target(sandbox_host) -> None:
    """More namespaces out at once than the pool's target (warm sandboxes
    ahead, dying ones): all that come back idle are kept, up to KEEP, so
    that none is destroyed only to be made again a moment later."""
    p = netpool.NetnsPool(target=2)
    try:
        out = []
        for _ in range(6):
            fd = p.take()
            p.launched()
            assert fd is not None
            out.append(fd)
        for fd in out:
            p.give_back(fd)
        deadline = time.monotonic() + 10
        while p._returned and time.monotonic() < deadline:
            time.sleep(0.01)  # the thread checks them
        with p._cond:
            assert set(out) <= set(p._ready)  # every one kept, not closed
            assert len(p._ready) <= netpool.KEEP
    finally:
        p.shutdown()


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


def test_the_watchdog_keeps_no_ended_commands_checks(sandbox_host, busybox_rootfs: Path) -> None:
    """The watchdog's next check is always a running command's (an ended
    one's woke its thread for nothing: once per exec back to back under a
    pids limit), and the checks of ended commands do not pile up behind a
    long one's (each quick exec's first check is its deadline, 30 s on)."""
    from sandbox.watchdog import watchdog

    require(sandbox_cgroup.root() is not None, f"no usable cgroups: {sandbox_cgroup.why()}")

    def first_is_live() -> bool:
        with watchdog._cond:  # type: ignore[attr-defined]
            heap = watchdog._heap  # type: ignore[attr-defined]
            return not heap or heap[0][1] in watchdog._live  # type: ignore[attr-defined]

    with Sandbox(rootfs=busybox_rootfs, limits=Limits(pids=16)) as sb:
        for _ in range(20):
            assert sb.exec(["true"]).ok
            assert first_is_live()
        long = sb.spawn(["sleep", "100"], limits=Limits(timeout=30))
        try:
            for _ in range(300):
                assert sb.exec(["true"], limits=Limits(timeout=30)).ok
            with watchdog._cond:  # type: ignore[attr-defined]
                entries, live = len(watchdog._heap), len(watchdog._live)  # type: ignore[attr-defined]
            assert entries <= 2 * live + 65, (entries, live)
        finally:
            long.kill()
            long.wait()
        assert first_is_live()
