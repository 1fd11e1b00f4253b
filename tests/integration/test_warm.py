"""Warm sandboxes (sandbox/warm.py): the next sandbox for options used
again is set up ahead of time; it must be indistinguishable from a fresh
one, and never kept for secrets, nor past its TTL."""

from __future__ import annotations

import time

import pytest

from sandbox import ConfigError, Mount, Sandbox, warm
from tests import leakcheck


@pytest.fixture(autouse=True)
def _clean_pool():
    warm.shutdown()
    yield
    warm.shutdown()


def _start_three(rootfs, **kw) -> list[bool]:
    was = []
    for i in range(3):
        with Sandbox(rootfs=rootfs, **kw) as sb:
            was.append(sb._was_warm)
            if i == 0:
                sb.files.write_text("/tmp/left-by-the-first", "x")
            else:
                # fresh: nothing of the earlier sandbox, only its init runs
                assert sb.files.list("/tmp") == []
                assert [n for n in sb.files.list("/proc") if n.isdigit()] == ["1"]
        _settle()
    return was


def _settle() -> None:
    """Until the pool's thread has made what was asked of it."""
    p, deadline = warm.pool(), time.monotonic() + 10
    while (p._wanted or p._making) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_spec_is_warmed_from_its_second_start(sandbox_host, busybox_rootfs) -> None:
    assert _start_three(busybox_rootfs, hostname="warm1") == [False, False, True]


def test_secrets_are_never_prepared_ahead(sandbox_host, busybox_rootfs) -> None:
    assert _start_three(busybox_rootfs, secrets={"k": b"v"}) == [False, False, False]


def test_warm_false_starts_cold(sandbox_host, busybox_rootfs) -> None:
    assert _start_three(busybox_rootfs, warm=False) == [False, False, False]


def test_the_environment_switch(sandbox_host, busybox_rootfs, monkeypatch) -> None:
    monkeypatch.setenv("SANDBOX_WARM", "0")
    assert _start_three(busybox_rootfs) == [False, False, False]


def test_an_unused_warm_sandbox_is_stopped_after_its_ttl(sandbox_host, busybox_rootfs, monkeypatch) -> None:
    monkeypatch.setattr(warm, "TTL", 0.3)
    before = leakcheck.snapshot()
    for _ in range(2):
        with Sandbox(rootfs=busybox_rootfs, hostname="ttl"):
            pass
    _settle()
    assert warm.pool()._ready, "no sandbox was set up ahead"
    deadline = time.monotonic() + 5
    while warm.pool()._ready and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not warm.pool()._ready
    assert leakcheck.leaks(before) == []


def test_warm_takes_a_boolean(busybox_rootfs) -> None:
    with pytest.raises(ConfigError) as e:
        Sandbox(rootfs=busybox_rootfs, warm="yes")  # type: ignore[arg-type]
    assert e.value.option == "warm"


def test_a_warm_sandbox_whose_setup_failed_is_replaced_by_a_cold_start(busybox_rootfs, monkeypatch) -> None:
    """The start that takes a warm sandbox reads its READY: a setup that
    failed there (made ahead, by another thread) is not the caller's, whose
    own launch then runs."""
    from sandbox import Mount
    from sandbox.spec import make_spec

    # a plan whose setup fails: a directory mounted onto a file of the image
    bad = make_spec(rootfs=busybox_rootfs, mounts=[Mount("/tmp", "/etc/passwd")])
    taken = []

    def take(self, spec):
        launched = warm.start_ahead(bad)
        taken.append(launched)
        return launched

    monkeypatch.setattr(warm.WarmPool, "take", take)
    with Sandbox(rootfs=busybox_rootfs) as sb:
        assert sb.exec(["cat", "/etc/hostname"]).stdout == b"sandbox\n"
        assert not sb._was_warm  # taken warm, then launched cold
    assert len(taken) == 1 and taken[0] is not None
    assert taken[0].ctl.fileno() == -1  # the failed one was reaped: its fds are closed


@pytest.mark.parametrize("front", ["sync", "asyncio", "trio"])
def test_a_warm_sandbox_stuck_in_its_setup_is_replaced_by_a_cold_start(
    busybox_rootfs, monkeypatch, front: str
) -> None:
    """A warm sandbox whose READY does not come within WARM_READY_TIMEOUT is
    reaped and the start launches its own (it waited START_TIMEOUT before)."""
    import select

    import anyio

    from sandbox import AsyncSandbox, _base
    from sandbox.spec import make_spec

    taken = []

    def take(self, spec):
        # a real init, whose READY is read here: the start then waits for one
        launched = warm.start_ahead(make_spec(rootfs=busybox_rootfs))
        assert launched is not None
        assert select.select([launched.ctl], [], [], 30)[0]
        launched.ctl.recv(4096)
        taken.append(launched)
        return launched

    monkeypatch.setattr(warm.WarmPool, "take", take)
    monkeypatch.setattr(_base, "WARM_READY_TIMEOUT", 0.2)
    if front == "sync":
        with Sandbox(rootfs=busybox_rootfs) as sb:
            assert sb.exec(["cat", "/etc/hostname"]).stdout == b"sandbox\n"
            assert not sb._was_warm  # taken warm, then launched cold
    else:

        async def main() -> None:
            async with AsyncSandbox(rootfs=busybox_rootfs) as sb:
                assert (await sb.exec(["cat", "/etc/hostname"])).stdout == b"sandbox\n"
                assert not sb._was_warm

        anyio.run(main, backend=front)
    assert len(taken) == 1
    assert taken[0].ctl.fileno() == -1  # the stuck one was reaped: its fds are closed


def test_a_mount_source_made_anew_is_not_served_by_a_warm_sandbox(
    sandbox_host, busybox_rootfs, tmp_path
) -> None:
    """A warm sandbox bound its mounts when it was launched: a caller that
    makes the same path anew for each sandbox (a judge's next submission)
    gets a cold start, which binds the directory the path is now, not the
    one it replaced.  The same directory changed in place is served warm."""
    box = tmp_path / "box"
    mounts = [Mount(str(box), "/srv")]
    was = []
    for i in range(4):
        if box.exists():
            box.rename(tmp_path / f"old-{i}")
        box.mkdir()
        (box / "prog").write_text(f"submission-{i}")
        with Sandbox(rootfs=busybox_rootfs, mounts=mounts) as sb:
            was.append(sb._was_warm)
            assert sb.exec(["cat", "/srv/prog"]).stdout == f"submission-{i}".encode()
        _settle()
    assert was == [False] * 4  # the warm ones had bound a directory since replaced
    for i in range(2):
        (box / "prog").write_text(f"in-place-{i}")
        with Sandbox(rootfs=busybox_rootfs, mounts=mounts) as sb:
            assert sb._was_warm  # launched with this directory
            assert sb.exec(["cat", "/srv/prog"]).stdout == f"in-place-{i}".encode()
        _settle()
