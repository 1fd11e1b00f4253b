"""The async front end on anyio (asyncio and trio): AsyncSandbox and
AsyncProcess, with the names and arguments of the sync twin.  Only the
waiting differs: every blocking wait becomes an awaited readiness check on
the same fds, so nothing here blocks the event loop for longer than a
system call (the launch itself, about a millisecond, runs inline)."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Sequence
from types import TracebackType

import anyio

from . import files, interrupts, protocol, redact
from . import warm as _warm
from ._base import (
    DEVNULL,
    PIPE,
    START_TIMEOUT,
    SandboxBase,
    read_stream,
    recv_reply,
    send_request,
    stdin_bytes,
)
from .collector import Collector, drain
from .errors import ExecError, ProtocolError, SandboxClosed, SandboxError
from .files import AsyncFiles
from .limits import Limits, check_limits
from .result import ExecResult

KILL_GRACE = 10.0  # seconds to wait for the exit record of a killed command


class AsyncSandbox(SandboxBase):
    """``async with AsyncSandbox(rootfs=DIR) as sb: await sb.exec([...])``."""

    async def __aenter__(self) -> AsyncSandbox:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> AsyncSandbox:
        launched = self._launch()
        while True:
            timeout = self._ready_timeout()
            try:
                with anyio.fail_after(timeout):
                    await anyio.wait_readable(launched.ctl)
                err = self._first_reply(launched)
            except TimeoutError:
                err = self._not_ready(timeout)
            except BaseException:
                with interrupts.deferred():
                    self._reap(launched)
                raise
            if err is None:
                break
            launched = self._setup_failed(launched, err)
        self._launched = launched
        try:
            await files.run_async(self._after_start_op(), self._roundtrip)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        """Stop every process of the sandbox and free what it held.  Idempotent."""
        self.close()  # never blocks: the wait for the init is the reaper's (sandbox/reaper.py)

    @property
    def files(self) -> AsyncFiles:
        return AsyncFiles(self._roundtrip)

    async def _roundtrip(self, msg: bytes) -> tuple[protocol.Reply, int | None]:
        ctl = self._ctl()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with mine:
            try:
                send_request(ctl, msg, [theirs.fileno()])
            finally:
                theirs.close()
            try:
                with anyio.fail_after(START_TIMEOUT):
                    await anyio.wait_readable(mine)
            except TimeoutError:  # ours: a caller's own deadline is raised at its scope
                raise ProtocolError("the sandbox's init did not answer a request") from None
            return recv_reply(mine)

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int = DEVNULL,
        stdout: int = PIPE,
        stderr: int = PIPE,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        user: str | int | None = None,
        timeout: float | None = None,
        tty: bool = False,
        limits: Limits | dict[str, object] | None = None,
    ) -> AsyncProcess:
        """Start a command and return once it runs; one that cannot start
        raises ExecError here."""
        p = await self._spawn(argv, stdin, stdout, stderr, env, cwd, user, timeout, tty=tty, limits=limits)
        try:
            await p._wait_started()
        except BaseException as e:
            await p._abandon(e)  # cancelled as it starts: not left running with no handle
            raise
        return p

    async def _spawn(
        self,
        argv: object,
        stdin: int,
        stdout: int,
        stderr: int,
        env: object,
        cwd: object,
        user: object,
        timeout: object,
        quiet: bool = False,
        tty: bool = False,
        limits: object = None,
    ) -> AsyncProcess:
        args, extra, wd, uspec, t = self._exec_args(argv, env, cwd, user, timeout)
        lim = check_limits("limits", limits)
        u = self._plain_user(uspec)
        if u is None:
            u = await files.run_async(self._user_op(uspec), self._roundtrip)
        pty = await files.run_async(files.open_pty(), self._roundtrip) if tty else None
        sp = self._prepare_spawn((stdin, stdout, stderr), u, t, args, extra, wd, quiet, pty, lim)
        try:
            send_request(self._ctl(), sp.msg, sp.theirs)
        except SandboxClosed:
            sp.abort()  # nothing went out
            raise
        except BaseException:
            # e.g. a KeyboardInterrupt, raised as the send returns: the
            # command may be starting, and would run on with no handle
            # (no interrupts.deferred() around an await: holds of tasks that
            # interleave would restore each other's handlers out of order;
            # the kill is shielded from cancellation)
            await self._kill_quietly(sp.req_id)
            sp.abort()
            raise
        sp.sent()
        assert sp.reply is not None
        if self._warm:
            _warm.pool().kick()  # the next warm sandbox is made while this exec runs
        return AsyncProcess(self, sp.req_id, sp.reply, sp.mine, sp.col)

    async def exec(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        user: str | int | None = None,
        check: bool = False,
        limits: Limits | dict[str, object] | None = None,
    ) -> ExecResult:
        """Run a command to its end.  Cancelling the await kills its process tree."""
        data = stdin_bytes(stdin)
        # quiet: the exit record (or the failure) is all exec() needs
        stdin_mode = PIPE if data is not None else DEVNULL
        p = await self._spawn(
            argv, stdin_mode, PIPE, PIPE, env, cwd, user, timeout, quiet=True, limits=limits
        )
        r = await p.communicate(data)
        return r.check() if check else r

    async def _kill_quietly(self, req_id: int) -> None:
        """Kill a command being given up on, shielded from a cancellation
        (a kill of an id the init does not know, or of one that ended, does
        nothing); a sandbox that is gone has killed it already."""
        with anyio.CancelScope(shield=True):
            try:
                await self._roundtrip(protocol.encode_kill(next(self._ids), req_id, int(signal.SIGKILL)))
            except SandboxError:
                pass


class AsyncProcess:
    """A command started by AsyncSandbox.spawn.  Its pipes are raw fds
    (`stdout_fd`...); read them with `read_stdout()`, or let `communicate()`
    collect everything."""

    def __init__(
        self, sandbox: AsyncSandbox, req_id: int, reply: socket.socket, fds: dict[int, int], col: Collector
    ) -> None:
        self._sb = sandbox
        self.id = req_id
        self._reply = reply
        self._col = col
        self._fds = dict(fds)
        for fd in fds.values():
            os.set_blocking(fd, False)
        self._result: ExecResult | None = None
        self._lost: BaseException | None = None  # why it was given up on (_abandon)
        # with redact_secrets: what read_stdout/read_stderr give (sandbox/redact.py)
        self._scrubbers = {n: redact.Scrubber(col.redact) for n in (1, 2) if col.redact}

    @property
    def pid(self) -> int | None:
        """The command's pid inside the sandbox (once it started)."""
        return self._col.pid

    @property
    def argv(self) -> list[str]:
        return list(self._col.argv)  # a copy: the command it ran, whatever the caller does to it

    def _close_all(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        self._reply.close()

    async def _wait_started(self) -> None:
        try:
            with anyio.fail_after(START_TIMEOUT):
                await anyio.wait_readable(self._reply)
        except TimeoutError as e:
            raise ProtocolError("the sandbox's init did not answer an exec request") from e
        self._on_reply()

    async def _abandon(self, e: BaseException) -> None:
        """Give the command up after `e`: killed (shielded from the
        cancellation that may be `e`) unless the sandbox is gone or it never
        started (a SandboxError), its group and fds let go.  Used again,
        the process raises SandboxClosed (not a ValueError of a closed fd)."""
        if self._lost is None:
            self._lost = e
        if not isinstance(e, SandboxError):
            await self._sb._kill_quietly(self.id)  # shielded (no signal hold: see _spawn)
        self._col.abandon()
        self._close_all()

    def _check_usable(self) -> None:
        if self._lost is not None:
            raise SandboxClosed(f"this process was given up on ({type(self._lost).__name__}: {self._lost})")

    @property
    def returncode(self) -> int | None:
        return self._result.returncode if self._result else None

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the command and everything it started in its session."""
        if self._result is None:
            self._check_usable()
            await self._sb._roundtrip(protocol.encode_kill(next(self._sb._ids), self.id, int(sig)))

    async def _read(self, n: int) -> bytes:
        while True:
            fd = self._fds.get(n)
            if fd is None:
                return b""
            try:
                data = read_stream(fd)
            except BlockingIOError:
                await anyio.wait_readable(fd)
                continue
            if not data:
                os.close(self._fds.pop(n))
            return data

    async def read_stdout(self) -> bytes:
        """The next chunk of stdout; b"" at its end."""
        return await self._read_scrubbed(1)

    async def read_stderr(self) -> bytes:
        return await self._read_scrubbed(2)

    async def _read_scrubbed(self, n: int) -> bytes:
        """A chunk for the caller: with redact_secrets, once something of it
        cannot be the start of a secret (or at the end)."""
        s = self._scrubbers.get(n)
        if s is None:
            return await self._read(n)
        while True:
            data = await self._read(n)
            out = s.feed(data) if data else s.end()
            if out or not data:
                return out

    def _take_rest(self) -> None:
        """What a scrubber holds back: the collector's, for communicate()."""
        for n, s in self._scrubbers.items():
            rest = s.end()
            if rest:
                self._col.feed(n, rest)

    async def write_stdin(self, data: bytes) -> None:
        fd = self._fds.get(0)
        if fd is None:
            raise ExecError("stdin: the process was not started with stdin=PIPE, or it is closed")
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                await anyio.wait_writable(fd)

    def close_stdin(self) -> None:
        fd = self._fds.pop(0, None)
        if fd is not None:
            os.close(fd)

    async def _pump(self, n: int) -> None:
        while self._fds.get(n) is not None:
            data = await self._read(n)
            if data and self._col.feed(n, data):
                # over the output limit: close the stream, or kill (and read on, dropping)
                if self._col.limits.closes_output:
                    fd = self._fds.pop(n, None)
                    if fd is not None:
                        os.close(fd)
                    return
                if not self._col.killed:
                    self._col.killed = True
                    await self.kill()

    async def _feed(self, data: bytes) -> None:
        try:
            await self.write_stdin(data)
        except BrokenPipeError:
            pass
        self.close_stdin()

    def _on_reply(self) -> None:
        """Read one record: the start (or why it failed), or the exit."""
        reply, fd = recv_reply(self._reply)
        if fd is not None:
            os.close(fd)
        self._col.on_reply(reply)

    def _finish(self) -> ExecResult:
        """After the exit record, once no task waits on our fds any more."""
        for n in (1, 2):
            if n in self._fds:
                drain(self._fds[n], self._col, n)
        self._close_all()
        self._result = self._col.result()
        return self._result

    async def _wait_exit(self) -> None:
        while self._col.exited is None:
            await anyio.wait_readable(self._reply)
            self._on_reply()

    async def _kill_and_finish(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.kill()
            with anyio.move_on_after(KILL_GRACE):
                await self._wait_exit()
            if self._col.exited is not None:
                self._finish()
            else:
                self._close_all()

    async def wait(self, timeout: float | None = None) -> ExecResult:
        return await self.communicate(None, timeout)

    async def communicate(self, input: bytes | None = None, timeout: float | None = None) -> ExecResult:
        """Feed stdin, collect output, wait for the end.  On the deadline, or
        when the caller is cancelled, the command's process tree is killed."""
        if self._result is not None:
            return self._result
        self._check_usable()
        col = self._col
        if timeout is not None:
            d = time.monotonic() + timeout
            col.deadline = d if col.deadline is None else min(col.deadline, d)
        self._take_rest()
        failed: SandboxError | None = None
        try:
            limit = col.remaining() if col.deadline is not None else float("inf")
            with anyio.move_on_after(limit) as scope:
                async with anyio.create_task_group() as tg:
                    for n in (1, 2):
                        if n in self._fds:
                            tg.start_soon(self._pump, n)
                    if 0 in self._fds:
                        if input:
                            tg.start_soon(self._feed, input)
                        else:
                            self.close_stdin()
                    try:
                        await self._wait_exit()
                    except SandboxError as e:
                        failed = e  # raised below, not as an exception group
                    tg.cancel_scope.cancel()
            if failed is not None:
                raise failed
            if scope.cancelled_caught and col.exited is None:
                col.verdict = "timeout"
                col.killed = True
                await self._kill_and_finish()
            else:
                self._finish()
        except SandboxError as e:
            self._lost = e
            self._col.abandon()
            self._close_all()
            raise
        except anyio.get_cancelled_exc_class():
            await self._kill_and_finish()
            raise
        if self._result is None:
            raise SandboxClosed("a killed command did not report its end")
        return self._result
