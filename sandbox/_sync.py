"""The blocking front end: Sandbox and Process.  Only I/O lives here; the
logic is shared with the async twin in `_base`."""

from __future__ import annotations

import io
import os
import select
import signal
import socket
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, cast

from . import execio, files, interrupts, protocol, redact
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
from .errors import ProtocolError, SandboxClosed, SandboxError
from .files import Files
from .limits import Limits, check_limits
from .result import ExecResult

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


def _wait_readable(sock: socket.socket, timeout: float | None) -> bool:
    p = select.poll()
    p.register(sock, select.POLLIN)
    return bool(p.poll(None if timeout is None else max(0, int(timeout * 1000) + 1)))


class Sandbox(SandboxBase):
    """A running container: ``with Sandbox(rootfs=DIR) as sb: sb.exec([...])``."""

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> Sandbox:
        launched = self._launch()
        while True:
            try:
                timeout = self._ready_timeout()
                ready = _wait_readable(launched.ctl, timeout)
                err = self._first_reply(launched) if ready else self._not_ready(timeout)
            except BaseException:
                with interrupts.deferred():
                    self._reap(launched)
                raise
            if err is None:
                break
            launched = self._setup_failed(launched, err)
        self._launched = launched
        try:
            files.run_sync(self._after_start_op(), self._roundtrip)
        except BaseException:
            self.close()
            raise
        return self

    @property
    def files(self) -> Files:
        return Files(self._roundtrip)

    def _roundtrip(
        self, msg: bytes, timeout: float | None = START_TIMEOUT
    ) -> tuple[protocol.Reply, int | None]:
        ctl = self._ctl()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with mine:
            try:
                send_request(ctl, msg, [theirs.fileno()])
            finally:
                theirs.close()
            if not _wait_readable(mine, timeout):
                raise ProtocolError("the sandbox's init did not answer a request")
            return recv_reply(mine)

    def spawn(
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
    ) -> Process:
        """Start a command and return once it runs; stream with `stdout`,
        `stdin`.  A command that cannot start raises ExecError here."""
        p = self._spawn(argv, stdin, stdout, stderr, env, cwd, user, timeout, tty=tty, limits=limits)
        try:
            p._wait_started()
        except BaseException as e:
            p._abandon(e)  # interrupted as it starts: not left running with no handle
            raise
        return p

    def _spawn(
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
    ) -> Process:
        args, extra, wd, uspec, t = self._exec_args(argv, env, cwd, user, timeout)
        lim = check_limits("limits", limits)
        u = self._plain_user(uspec) or files.run_sync(self._user_op(uspec), self._roundtrip)
        pty = files.run_sync(files.open_pty(), self._roundtrip) if tty else None
        sp = self._prepare_spawn((stdin, stdout, stderr), u, t, args, extra, wd, quiet, pty, lim)
        try:
            send_request(self._ctl(), sp.msg, sp.theirs)
        except SandboxClosed:
            sp.abort()  # nothing went out
            raise
        except BaseException:
            # e.g. a KeyboardInterrupt, raised as the send returns: the
            # command may be starting, and would run on with no handle
            with interrupts.deferred():
                self._kill_quietly(sp.req_id)
                sp.abort()
            raise
        sp.sent()
        assert sp.reply is not None
        if self._warm:
            _warm.pool().kick()  # the next warm sandbox is made while this exec runs
        return Process(self, sp.req_id, sp.reply, sp.mine, sp.col)

    def exec(
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
        """Run a command to its end and return how it went; `limits`
        override the sandbox's for this command."""
        data = stdin_bytes(stdin)
        args, extra, wd, uspec, t = self._exec_args(argv, env, cwd, user, timeout)
        lim = check_limits("limits", limits)
        launched = self._running()
        u = self._plain_user(uspec) or files.run_sync(self._user_op(uspec), self._roundtrip)
        # quiet: no start record, only the exit record (one wakeup less)
        streams = (PIPE if data is not None else DEVNULL, PIPE, PIPE)
        # the next warm sandbox is made while this exec runs
        kick = _warm.pool().kick if self._warm else None
        sp = self._prepare_spawn(streams, u, t, args, extra, wd, True, None, lim, make_pipes=False)
        r = execio.run(sp, launched, data, lambda: self._kill_exec(sp.req_id), kick)
        return r.check() if check else r

    def _kill_exec(self, req_id: int, sig: int = signal.SIGKILL) -> None:
        """Signal a command and everything it started in its session."""
        self._roundtrip(protocol.encode_kill(next(self._ids), req_id, int(sig)))

    def _kill_quietly(self, req_id: int) -> None:
        """Kill a command being given up on (a kill of an id the init does
        not know, or of one that ended, does nothing); a sandbox that is
        gone has killed it already."""
        try:
            self._kill_exec(req_id)
        except SandboxError:
            pass


class RedactedStream(io.RawIOBase):
    """A spawn's stdout or stderr with the sandbox's secrets scrubbed, for
    `Process.stdout` (redact_secrets=True).  A read waits until it has
    something to give that cannot be the start of a secret, or the end."""

    def __init__(self, raw: BinaryIO, found: tuple[bytes, ...]) -> None:
        super().__init__()
        self._raw = raw
        self._scrubber = redact.Scrubber(found)
        self._ready = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw.fileno()

    def readinto(self, b: WriteableBuffer) -> int | None:
        while not self._ready and not self._eof:
            try:
                data = read_stream(self._raw.fileno())
            except BlockingIOError:
                return None  # non-blocking, nothing yet
            if data:
                self._ready = self._scrubber.feed(data)
            else:
                self._eof = True
                self._ready = self._scrubber.end()
        view = memoryview(b).cast("B")
        n = min(len(view), len(self._ready))
        view[:n] = self._ready[:n]
        self._ready = self._ready[n:]
        return n

    def take_rest(self) -> bytes:
        """What was read from the pipe and not given out yet (for
        communicate(), which reads on from the fd itself)."""
        out = self._ready + self._scrubber.end()
        self._ready = b""
        return out

    def close(self) -> None:
        self._raw.close()
        super().close()


class Process:
    """A command started by Sandbox.spawn."""

    def __init__(
        self, sandbox: Sandbox, req_id: int, reply: socket.socket, fds: dict[int, int], col: Collector
    ) -> None:
        self._sb = sandbox
        self.id = req_id
        self._reply = reply
        self._col = col
        self._result: ExecResult | None = None
        self._lost: BaseException | None = None  # why it was given up on (_abandon)
        self._fds = fds
        self.stdin: BinaryIO | None = os.fdopen(fds[0], "wb", buffering=0) if 0 in fds else None
        self.stdout: BinaryIO | None = self._reader(fds, 1)
        self.stderr: BinaryIO | None = self._reader(fds, 2)

    def _reader(self, fds: dict[int, int], n: int) -> BinaryIO | None:
        """Our end of stdout or stderr; with redact_secrets, read through a
        RedactedStream (sandbox/redact.py)."""
        if n not in fds:
            return None
        raw = os.fdopen(fds[n], "rb", buffering=0)
        if not self._col.redact:
            return raw
        return cast(BinaryIO, RedactedStream(raw, self._col.redact))

    def _take_rest(self) -> None:
        """Bytes a RedactedStream read from a pipe and did not give out:
        the collector's now, which reads on from the fds themselves."""
        for n, f in ((1, self.stdout), (2, self.stderr)):
            if isinstance(f, RedactedStream) and not f.closed:
                rest = f.take_rest()
                if rest:
                    self._col.feed(n, rest)

    @property
    def pid(self) -> int | None:
        """The command's pid inside the sandbox (once it started)."""
        return self._col.pid

    @property
    def argv(self) -> list[str]:
        return list(self._col.argv)  # a copy: the command it ran, whatever the caller does to it

    @property
    def returncode(self) -> int | None:
        return self._result.returncode if self._result else None

    def _close_all(self) -> None:
        for f in (self.stdin, self.stdout, self.stderr):
            if f is not None:
                f.close()
        self._reply.close()

    def _wait_started(self) -> None:
        if not _wait_readable(self._reply, START_TIMEOUT):
            raise ProtocolError("the sandbox's init did not answer an exec request")
        self._on_reply()

    def _abandon(self, e: BaseException) -> None:
        """Give the command up after `e`: killed unless the sandbox is gone
        or it never started (a SandboxError), its group and fds let go.
        Used again, the process raises SandboxClosed (not a ValueError of
        a closed fd)."""
        if self._lost is None:
            self._lost = e
        with interrupts.deferred():
            if not isinstance(e, SandboxError):
                self._sb._kill_quietly(self.id)
            self._col.abandon()
            self._close_all()

    def _check_usable(self) -> None:
        if self._lost is not None:
            raise SandboxClosed(f"this process was given up on ({type(self._lost).__name__}: {self._lost})")

    def _on_reply(self) -> None:
        """Read one record: the start (or why it failed), or the exit."""
        try:
            reply, fd = recv_reply(self._reply)
            if fd is not None:
                os.close(fd)
            self._col.on_reply(reply)
        except SandboxError as e:
            self._lost = e
            self._close_all()  # it failed to start, or the sandbox is gone
            raise
        if self._col.exited is None:
            return
        self._take_rest()
        for n, f in ((1, self.stdout), (2, self.stderr)):
            if f is not None and not f.closed:
                drain(f.fileno(), self._col, n)
        self._close_all()
        self._result = self._col.result()

    def _over_cap(self, poller: select.poll, streams: dict[int, int], fd: int) -> None:
        """The stream went over its output limit."""
        if self._col.limits.closes_output:
            poller.unregister(fd)
            n = streams.pop(fd)
            f = self.stdout if n == 1 else self.stderr
            if f is not None:
                f.close()  # the command's next write gets EPIPE
        elif not self._col.killed:
            self._col.killed = True
            self.kill()  # more output is read and dropped until the exit record

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the command and everything it started in its session."""
        if self._result is not None:
            return
        self._check_usable()
        self._sb._kill_exec(self.id, sig)

    def poll(self) -> ExecResult | None:
        if self._result is None:
            self._check_usable()
        while self._result is None and _wait_readable(self._reply, 0):
            self._on_reply()
        return self._result

    def wait(self, timeout: float | None = None) -> ExecResult:
        return self.communicate(None, timeout)

    def communicate(self, input: bytes | None = None, timeout: float | None = None) -> ExecResult:
        """Feed stdin, collect stdout and stderr, wait for the end.  On the
        deadline the command's process tree is killed: reason "timeout"."""
        if self._result is not None:
            return self._result
        self._check_usable()
        try:
            return self._communicate(input, timeout)
        except BaseException as e:
            # the sandbox went away, or interrupted (KeyboardInterrupt...):
            # then the command is not left running
            self._abandon(e)
            raise

    def _communicate(self, input: bytes | None, timeout: float | None) -> ExecResult:
        col = self._col
        if timeout is not None:
            d = time.monotonic() + timeout
            col.deadline = d if col.deadline is None else min(col.deadline, d)
        self._take_rest()
        pending = memoryview(input or b"")
        if self.stdin is not None and not pending:
            self.stdin.close()
        poller = select.poll()
        streams: dict[int, int] = {}
        for n, f in ((1, self.stdout), (2, self.stderr)):
            if f is not None and not f.closed:
                poller.register(f.fileno(), select.POLLIN)
                streams[f.fileno()] = n
        if self.stdin is not None and not self.stdin.closed:
            os.set_blocking(self.stdin.fileno(), False)
            poller.register(self.stdin.fileno(), select.POLLOUT)
        reply_fd = self._reply.fileno()
        poller.register(reply_fd, select.POLLIN)
        while self._result is None:
            left = col.wake_in()
            if left == 0:
                if col.due() is not None:
                    col.killed = True
                    self.kill()  # now wait for the exit record
                continue
            events = poller.poll(None if left is None else int(left * 1000) + 1)
            for fd, ev in events:
                if fd == reply_fd:
                    self._on_reply()
                    if self._result is not None:
                        break
                elif fd in streams:
                    data = read_stream(fd)
                    if not data:
                        poller.unregister(fd)
                    elif col.feed(streams[fd], data):
                        self._over_cap(poller, streams, fd)
                elif self.stdin is not None and fd == self.stdin.fileno():
                    try:
                        n = os.write(fd, pending[:65536]) if not (ev & select.POLLERR) else 0
                    except (BrokenPipeError, BlockingIOError):
                        n = -1
                    if n > 0:
                        pending = pending[n:]
                    if n < 0 or ev & select.POLLERR or not pending:
                        poller.unregister(fd)
                        self.stdin.close()
        return self._result
