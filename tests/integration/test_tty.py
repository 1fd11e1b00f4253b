"""spawn(tty=True): the command's only terminal is a pty the SDK owns."""

from __future__ import annotations

import anyio
import pytest

from sandbox import AsyncSandbox, Sandbox
from tests.conftest import require_sandbox_host

pytestmark = pytest.mark.integration

SCRIPT = "test -t 0 && test -t 1 && test -t 2 && echo all-ttys; read x; echo got:$x; " \
         "cat /proc/self/stat | cut -d' ' -f7"  # fmt: skip


def _check(out: bytes) -> None:
    lines = out.replace(b"\r\n", b"\n").split(b"\n")
    assert b"all-ttys" in lines
    assert b"got:hello" in lines
    # tty_nr (field 7) is non-zero: the pty is the controlling terminal
    assert int(lines[-2]) != 0, out


def test_tty_spawn(busybox_rootfs) -> None:
    require_sandbox_host()
    with Sandbox(rootfs=busybox_rootfs) as sb:
        p = sb.spawn(["sh", "-c", SCRIPT], tty=True)
        assert p.stdin is not None and p.stderr is None  # stderr goes to the terminal too
        p.stdin.write(b"hello\n")
        r = p.wait(timeout=10)
        assert r.reason == "exited" and r.exit_code == 0, r
        _check(r.stdout)


def test_without_tty_nothing_is_a_terminal(busybox_rootfs) -> None:
    require_sandbox_host()
    with Sandbox(rootfs=busybox_rootfs) as sb:
        script = "test -t 0 || test -t 1 || test -t 2 || echo none; cut -d' ' -f7 /proc/self/stat"
        r = sb.exec(["sh", "-c", script])
        assert r.stdout.split() == [b"none", b"0"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_tty_spawn_async(backend: str, busybox_rootfs) -> None:
    require_sandbox_host()

    async def main() -> None:
        async with AsyncSandbox(rootfs=busybox_rootfs) as sb:
            p = await sb.spawn(["sh", "-c", SCRIPT], tty=True)
            await p.write_stdin(b"hello\n")
            r = await p.wait(timeout=10)
            assert r.exit_code == 0, r
            _check(r.stdout)

    anyio.run(main, backend=backend)


def test_tiocsti_on_the_terminal_is_refused(busybox_rootfs, probe_binary) -> None:
    """TIOCSTI pushes input into a terminal: on the pty the SDK owns it would
    type into whatever reads the master.  The default profile refuses it, the
    upper-half variant too; the terminal still works for ordinary ioctls."""
    import json

    from tests.integration.conftest import PROBE_PATH, errnos, install_probe

    require_sandbox_host()
    with Sandbox(rootfs=busybox_rootfs) as sb:
        install_probe(sb, probe_binary)
        p = sb.spawn([PROBE_PATH, "ioctl:tiocsti", "ioctl:tiocsti_hi", "ioctl:tcgets"], tty=True)
        r = p.wait(timeout=30)
        assert r.exit_code == 0, r
        got = errnos(json.loads(r.stdout.replace(b"\r\n", b"\n")))
    assert got["ioctl:tiocsti"] == "EPERM"
    assert got["ioctl:tiocsti_hi"] == "EPERM"
    assert got["ioctl:tcgets"] is None  # it is a terminal, and TCGETS is allowed


def test_the_terminal_has_a_name_inside(busybox_rootfs) -> None:
    """The pty comes from the sandbox's own devpts: `tty` names it."""
    require_sandbox_host()
    with Sandbox(rootfs=busybox_rootfs) as sb:
        r = sb.spawn(["sh", "-c", "tty; readlink /proc/self/fd/1"], tty=True).wait(timeout=10)
        lines = r.stdout.replace(b"\r\n", b"\n").split()
        assert lines[0].startswith(b"/dev/pts/"), r.stdout
        assert lines[1] == lines[0]
