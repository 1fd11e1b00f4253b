"""Many sandboxes, one after the other and at once, leave nothing behind:
no process, mount, cgroup, network link, state dir, nor fd of ours."""

from __future__ import annotations

import os
import threading

import pytest

from sandbox import Sandbox
from tests import leakcheck
from tests.conftest import fd_leaks, open_fds

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _children() -> set[int]:
    """Our child processes (zombies included)."""
    me = os.getpid()
    out = set()
    for pid in leakcheck.all_pids():
        p = leakcheck.proc_info(pid)
        if p is not None and p.ppid == me:
            out.add(pid)
    return out


@pytest.fixture
def clean_after():
    """Assert in the test itself what the session leak check would say."""
    before, fds, kids = leakcheck.snapshot(), open_fds(), _children()
    yield
    assert leakcheck.leaks(before) == []
    assert fd_leaks(fds) == {}
    assert _children() <= kids


def test_1000_sequential_sandboxes(sandbox_host, busybox_rootfs, clean_after) -> None:
    inits = set()
    for i in range(1000):
        with Sandbox(rootfs=busybox_rootfs) as sb:
            r = sb.exec(["echo", str(i)])
            assert r.stdout == f"{i}\n".encode()
            inits.add(sb.pid)
    assert len(inits) > 1


def test_100_concurrent_sandboxes_in_threads(sandbox_host, busybox_rootfs, clean_after) -> None:
    n = 100
    all_up = threading.Barrier(n, timeout=120)
    errors: list[BaseException] = []
    pids: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            with Sandbox(rootfs=busybox_rootfs, hostname=f"sb-{i}") as sb:
                with lock:
                    pids.append(sb.pid)
                all_up.wait()  # all 100 are running at this point
                r = sb.exec(["sh", "-c", "hostname; echo $$"])
                assert r.stdout_text.split()[0] == f"sb-{i}"
                all_up.wait()
        except BaseException as e:
            errors.append(e)
            all_up.abort()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(set(pids)) == n


def test_many_execs_in_one_sandbox(sandbox_host, busybox_rootfs, clean_after) -> None:
    with Sandbox(rootfs=busybox_rootfs) as sb:
        assert sb.exec(["true"]).ok  # its reply channel is made, and kept (sandbox/execio.py)
        fds = open_fds()
        for _ in range(2000):
            assert sb.exec(["true"]).ok
        assert fd_leaks(fds) == {}
        assert len([n for n in sb.files.list("/proc") if n.isdigit()]) == 1  # only the init remains
