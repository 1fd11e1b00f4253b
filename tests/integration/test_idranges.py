"""idmap="auto" (the default): each sandbox is a host user of its own, a
block of 65,536 host ids leased for it (sandbox/idranges.py) from its launch
until its init is reaped, and never a block that holds an id the host uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import IdMap, Sandbox, _core, idranges
from sandbox.errors import ConfigError
from sandbox.reaper import reaper
from sandbox.spec import default_idmap
from tests import leakcheck

pytestmark = pytest.mark.integration


def held(start: int) -> bool:
    """Whether a process holds the lease of the block at `start` (its file
    stays once released: its mtime tells other processes when)."""
    return leakcheck.lease_held(os.path.join(idranges.root(), str(start)))


def host_range(sb: Sandbox) -> tuple[int, int]:
    inside, start, count = map(int, sb.exec(["cat", "/proc/self/uid_map"]).stdout.split())
    assert inside == 0
    return start, count


def test_two_sandboxes_are_two_host_users(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, warm=False) as a, Sandbox(rootfs=busybox_rootfs, warm=False) as b:
        (sa, ca), (sb_, cb) = host_range(a), host_range(b)
        assert ca == cb == 65536
        assert sa + ca <= sb_ or sb_ + cb <= sa, "two running sandboxes got overlapping host ids"
        for s in (sa, sb_):
            assert s >= idranges.FIRST and s + 65536 - 1 <= idranges.LAST
            assert not s <= os.geteuid() < s + 65536
            assert held(s), "the range is not leased"
        # their inits (container root) run as those host users
        assert a.pid is not None and b.pid is not None
        assert (os.stat(f"/proc/{a.pid}").st_uid, os.stat(f"/proc/{b.pid}").st_uid) == (sa, sb_)


def test_a_range_is_released_once_its_sandbox_is_gone(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, warm=False) as sb:
        start, _ = host_range(sb)
        assert held(start)
    reaper.drain()
    assert not held(start), "the range stayed leased after the sandbox closed"


def test_a_range_another_process_holds_is_not_taken(sandbox_host, busybox_rootfs) -> None:
    # another process leases the block this one would take next, and keeps it
    code = (
        "import sys; from sandbox import idranges; l = idranges.lease(); "
        "print(l.idmap.host_start, flush=True); sys.stdin.read()"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None
        theirs = int(other.stdout.readline())
        with Sandbox(rootfs=busybox_rootfs, warm=False) as sb:
            mine, _ = host_range(sb)
        assert mine != theirs, "a range held by another process was leased again"
    finally:
        other.communicate("")
    assert other.returncode == 0


_HOLD = (
    "import sys; from sandbox import idranges; l = idranges.lease(); "
    "print(l.idmap.host_start, flush=True); sys.stdin.read(); l.release()"
)


def test_processes_with_two_sandbox_homes_never_share_a_range(tmp_path: Path) -> None:
    """Found in review: the leases lived under $SANDBOX_HOME/run/ids, so a
    process with another home (another user of the library, a test session
    beside a production one) saw none of ours and leased the same lowest
    free block: two tenants' sandboxes were one host user.  Each process
    here holds its lease while the other takes one."""
    holders: list[subprocess.Popen[str]] = []
    starts: list[int] = []
    try:
        for home in ("a", "b"):
            env = dict(os.environ, SANDBOX_HOME=str(tmp_path / home))
            holders.append(
                subprocess.Popen(
                    [sys.executable, "-c", _HOLD],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                    cwd=Path(__file__).resolve().parents[2],
                )
            )
            assert holders[-1].stdout is not None
            starts.append(int(holders[-1].stdout.readline()))  # held while the next one leases
        for h in holders:
            h.communicate("")
    finally:
        for h in holders:
            if h.poll() is None:
                h.kill()
                h.wait()
    assert [h.returncode for h in holders] == [0, 0]
    assert starts[0] != starts[1], f"two homes' processes both leased host ids {starts[0]}.."


def test_a_block_with_a_host_id_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host user inside the first free block (here a passwd of our own):
    the lease is of another block, and that user's uid is in none."""
    first = idranges.lease()
    try:
        taken = first.idmap.host_start
    finally:
        first.release()
    passwd = tmp_path / "passwd"
    passwd.write_text(f"svc:x:{taken + 7}:{taken + 7}::/:/bin/false\n")
    monkeypatch.setattr(idranges, "_HOST_DBS", (str(passwd),))
    monkeypatch.setattr(idranges, "_taken", None)
    got = idranges.lease()
    try:
        assert not got.idmap.host_start <= taken + 7 < got.idmap.host_start + 65536
    finally:
        got.release()
    monkeypatch.setattr(idranges, "_taken", None)


def test_idmap_options(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, idmap="shared", warm=False) as sb:
        assert host_range(sb) == (default_idmap().host_start, 65536)
    with Sandbox(rootfs=busybox_rootfs, idmap=IdMap(300000), warm=False) as sb:
        assert host_range(sb) == (300000, 65536)
    with pytest.raises(ConfigError, match=r"idmap.*'auto', 'shared' or IdMap"):
        Sandbox(rootfs=busybox_rootfs, idmap="mine")


def test_gc_removes_the_leases_of_dead_processes_only(sandbox_host) -> None:
    code = (
        "import os, sys; from sandbox import idranges; l = idranges.lease(); "
        "print(l.idmap.host_start, flush=True); sys.stdin.read(); os._exit(0)"  # no release
    )
    dead = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    live = idranges.lease()
    try:
        assert dead.stdout is not None
        start = dead.stdout.readline().strip()
        dead.communicate("")
        left = os.path.join(idranges.root(), start)
        assert os.path.exists(left), "the dead process's lease file is not there to collect"
        removed = idranges.gc()
        assert start in removed and not os.path.exists(left)
        assert str(live.idmap.host_start) not in removed
        assert os.path.exists(live.path), "gc removed the lease of a live sandbox"
    finally:
        live.release()


def test_a_released_range_cools_before_it_is_leased_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel frees a dead sandbox's IPC namespace (and the message queue
    bytes charged to its host user) in deferred work: the next sandbox gets
    another range.  COOL is made long here so that the test cannot depend
    on how fast it runs."""
    monkeypatch.setattr(idranges, "COOL", 3600.0)
    first = idranges.lease()
    first.release()
    second = idranges.lease()
    try:
        assert second.idmap.host_start != first.idmap.host_start
    finally:
        second.release()


def test_a_range_another_process_released_cools_here_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: cooling was this process's memory alone, so a range
    another process had just released (its sandbox's IPC namespace perhaps
    not yet freed) was leased here at once."""
    code = (
        "from sandbox import idranges; l = idranges.lease(); l.release(); "
        "print(l.idmap.host_start, flush=True)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    monkeypatch.setattr(idranges, "COOL", 3600.0)
    # what this process released before (other tests) would cool for an hour too
    monkeypatch.setattr(idranges, "_released", {})
    got = idranges.lease()
    try:
        assert got.idmap.host_start != int(r.stdout), "a range released a moment ago elsewhere was leased"
    finally:
        got.release()
    # a process that died holding its lease released nothing: its block is
    # free at once (the lowest: any below it were held or cooling for it too)
    r = subprocess.run(
        [sys.executable, "-c", code.replace("l.release(); ", "") + "; import os; os._exit(0)"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    monkeypatch.setattr(idranges, "_released", {})  # the first part's own release: not the point
    got = idranges.lease()
    try:
        assert got.idmap.host_start == int(r.stdout), "a dead holder's range was taken as cooling"
    finally:
        got.release()


@pytest.mark.parametrize("how", ["closed", "reused"])
def test_a_lost_idmapping_namespace_fd_is_made_again(sandbox_host, busybox_rootfs, how: str) -> None:
    """The user namespace of a range's idmapped mounts is kept as an fd for
    the process's life (sandbox/_core.py).  Code of the host process that
    closes that number, or dup2s onto it, made every later launch with the
    range fail (EBADF, or EINVAL "the file system must support idmapped
    mounts"): one of our own tests did.  The launch now finds it lost and
    makes it again."""
    ids = IdMap(0x7F000000 // 65536 * 65536 - 65536)  # a range no other test uses
    with Sandbox(rootfs=busybox_rootfs, idmap=ids, warm=False) as sb:
        assert sb.exec(["true"]).ok
    key = (ids.uid_map(), ids.uid_map())
    fd = _core._userns[key].fd
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if how == "closed":
            os.close(fd)
        else:
            os.dup2(null, fd)  # the number is a /dev/null now
        with Sandbox(rootfs=busybox_rootfs, idmap=ids, warm=False) as sb:
            r = sb.exec(["stat", "-c", "%u", "/bin/busybox"])
            assert r.ok and r.stdout == b"0\n", r  # idmapped: host root shows as container root
        assert _core._userns[key].fd != fd or how == "closed"
    finally:
        os.close(null)
        if how == "reused":
            os.close(fd)


def test_idle_idmapping_namespaces_beyond_the_limit_are_closed(
    sandbox_host, busybox_rootfs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of sandboxes on ranges of their own leaves one kept user
    namespace fd per range: beyond USERNS_KEEP the idle ones are closed,
    least recently used first, and a range whose fd went is made again."""
    monkeypatch.setattr(_core, "USERNS_KEEP", 2)
    base = 0x7E000000  # ranges no other test uses
    maps = [IdMap(base + i * 65536) for i in range(4)]
    keys = [(m.uid_map(), m.uid_map()) for m in maps]
    kept = []
    for ids, key in zip(maps, keys, strict=True):
        with Sandbox(rootfs=busybox_rootfs, idmap=ids, warm=False) as sb:
            assert sb.exec(["true"]).ok
        kept.append((_core._userns[key].fd, _core._userns[key].ident))
    assert keys[0] not in _core._userns and keys[1] not in _core._userns
    assert list(_core._userns)[-2:] == keys[2:]
    for fd, ident in kept[:2]:  # closed: the number is free, or another file's now
        assert not _core._KeptNs(fd, ident).intact()
    with Sandbox(rootfs=busybox_rootfs, idmap=maps[0], warm=False) as sb:
        r = sb.exec(["stat", "-c", "%u", "/bin/busybox"])
        assert r.ok and r.stdout == b"0\n", r  # idmapped again: host root is container root
    assert list(_core._userns)[-2:] == [keys[3], keys[0]]  # the least recently used went
