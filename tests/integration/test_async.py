"""AsyncSandbox on both anyio backends: the same names as the sync API,
timeouts and cancellation that kill the command's process tree, and many
sandboxes at once in tasks."""

from __future__ import annotations

import anyio
import pytest

from sandbox import AsyncSandbox, CommandNotFound, ExecError, SandboxClosed
from tests.conftest import require_sandbox_host

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("backend", ["asyncio", "trio"])]


def run(backend: str, fn, *args):  # type: ignore[no-untyped-def]
    require_sandbox_host()
    return anyio.run(fn, *args, backend=backend)


def test_exec_output_and_stdin(backend: str, busybox_rootfs) -> None:
    async def main() -> None:
        async with AsyncSandbox(rootfs=busybox_rootfs, hostname="async-box") as sb:
            r = await sb.exec(["sh", "-c", "hostname; echo err >&2; cat; exit 3"], stdin=b"from-stdin")
            assert r.exit_code == 3
            assert r.reason == "exited"
            assert r.stdout == b"async-box\nfrom-stdin"
            assert r.stderr == b"err\n"

    run(backend, main)


def test_missing_binary_is_a_plain_exception(backend: str, busybox_rootfs) -> None:
    async def main() -> None:
        async with AsyncSandbox(rootfs=busybox_rootfs) as sb:
            msg = r"exec /bin/nosuch: No such file or directory \(ENOENT\)"
            with pytest.raises(CommandNotFound, match=msg):
                await sb.exec(["/bin/nosuch"])
            with pytest.raises(CommandNotFound):
                await sb.spawn(["/bin/nosuch"])
            with pytest.raises(ExecError, match="working directory"):
                await sb.exec(["true"], cwd="/no/such/dir")
            # the sandbox still works afterwards
            assert (await sb.exec(["echo", "ok"])).stdout == b"ok\n"

    run(backend, main)


LIVE = ["sh", "-c", "cat /proc/[0-9]*/stat"]


def _count_procs(text: str) -> int:
    """Processes that still run: a killed one may still be a zombie for a
    moment, until the init has reaped it (it is dead all the same)."""
    live = 0
    for line in text.splitlines():
        state = line.rsplit(")", 1)[-1].split()[0] if ")" in line else "?"
        live += state != "Z"
    return live


def test_timeout_kills_the_tree(backend: str, busybox_rootfs) -> None:
    async def main() -> None:
        async with AsyncSandbox(rootfs=busybox_rootfs) as sb:
            r = await sb.exec(["sh", "-c", "sleep 100 & sleep 100 & wait"], timeout=0.3)
            assert r.reason == "timeout"
            assert r.signal == 9
            left = await sb.exec(LIVE)
            # only the init and this sh remain (the glob is expanded before cat starts)
            assert _count_procs(left.stdout.decode()) == 2, left.stdout

    run(backend, main)


def test_cancelling_an_exec_kills_its_tree(backend: str, busybox_rootfs) -> None:
    async def main() -> None:
        async with AsyncSandbox(rootfs=busybox_rootfs) as sb:
            with anyio.move_on_after(0.3) as scope:
                await sb.exec(["sh", "-c", "sleep 100 & sleep 100 & wait"])
            assert scope.cancelled_caught
            left = await sb.exec(LIVE)
            assert _count_procs(left.stdout.decode()) == 2, left.stdout

    run(backend, main)


def test_spawn_streams(backend: str, busybox_rootfs) -> None:
    async def main() -> None:
        async with AsyncSandbox(rootfs=busybox_rootfs) as sb:
            p = await sb.spawn(["sh", "-c", "read line; echo got $line; echo done"], stdin=-1)
            assert p.pid is not None and p.pid > 1
            await p.write_stdin(b"hello\n")
            p.close_stdin()
            out = b""
            while chunk := await p.read_stdout():
                out += chunk
            r = await p.wait()
            assert out == b"got hello\ndone\n"
            assert r.exit_code == 0

    run(backend, main)


def test_files_roundtrip(backend: str, busybox_rootfs, tmp_path) -> None:
    async def main() -> None:
        async with AsyncSandbox(rootfs=busybox_rootfs) as sb:
            await sb.files.write_text("/tmp/a.txt", "alpha")
            assert await sb.files.read_text("/tmp/a.txt") == "alpha"
            await sb.files.mkdir("/tmp/d/e", parents=True)
            assert await sb.files.list("/tmp") == ["a.txt", "d"]
            (tmp_path / "src").mkdir()
            (tmp_path / "src" / "f").write_bytes(b"F")
            await sb.files.put(tmp_path / "src", "/tmp/copied")
            await sb.files.get("/tmp/copied", tmp_path / "back")
            assert (tmp_path / "back" / "f").read_bytes() == b"F"

    run(backend, main)


def test_exec_after_close(backend: str, busybox_rootfs) -> None:
    async def main() -> None:
        sb = AsyncSandbox(rootfs=busybox_rootfs)
        async with sb:
            pass
        with pytest.raises(SandboxClosed):
            await sb.exec(["true"])
        await sb.aclose()  # idempotent

    run(backend, main)


def test_many_sandboxes_in_tasks(backend: str, busybox_rootfs) -> None:
    results: list[bytes] = []

    async def one(i: int) -> None:
        async with AsyncSandbox(rootfs=busybox_rootfs, hostname=f"t{i}") as sb:
            results.append((await sb.exec(["hostname"])).stdout)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(one, i)

    run(backend, main)
    assert sorted(results) == sorted(f"t{i}\n".encode() for i in range(100))


def test_an_init_that_does_not_answer_is_a_protocol_error(backend: str, busybox_rootfs, monkeypatch) -> None:
    """As in the sync API: an init that never answers a request (stopped
    here) is the package's ProtocolError after the bound, not anyio's
    TimeoutError; a caller's own deadline stays the caller's."""
    import os
    import signal

    from sandbox import _async
    from sandbox.errors import ProtocolError

    require_sandbox_host()
    monkeypatch.setattr(_async, "START_TIMEOUT", 0.2)

    async def main() -> None:
        async with AsyncSandbox(rootfs=busybox_rootfs, warm=False) as sb:
            assert sb.pid is not None
            os.kill(sb.pid, signal.SIGSTOP)
            try:
                with pytest.raises(ProtocolError, match="did not answer"):
                    await sb.files.read_bytes("/etc/passwd")
                with pytest.raises(TimeoutError):
                    with anyio.fail_after(0.05):  # the caller's, shorter than ours
                        await sb.files.read_bytes("/etc/passwd")
            finally:
                os.kill(sb.pid, signal.SIGCONT)

    run(backend, main)
