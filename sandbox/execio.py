"""exec()'s host side in C (sandbox/_cext/execio.c): its pipes and reply
socket are made and sent in one call, its stdin written and its output
collected in another, until the exit record.  The Python version (still
used by spawn() and the async front end) took ~25 system calls per exec,
each releasing and retaking the interpreter lock, which a busy background
thread of ours (the warm pool, the cgroup pool) then held for a while; and
~150 us of bytecode, several times that after idleness, with cold caches.

The verdict logic stays in the Collector: this module only moves bytes and
says when the caller must act (a deadline, an output cap)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from . import _core, protocol
from ._base import INIT_GONE, OVERSIZED, REPLY_CLOSED, decode_reply
from ._core import ffi, lib
from .collector import Collector
from .errors import ProtocolError, SandboxClosed, SandboxError
from .result import ExecResult


def send(launched: _core.Launched, msg: bytes, pipes: int, extra: list[int]) -> tuple[int, int, int, int]:
    """Send an exec request with a new reply socket and the pipes of `pipes`
    (bit 0 stdin, 1 stdout, 2 stderr), then the fds of `extra`, which the
    call closes and removes from the list.  Our ends: (reply, stdin, stdout,
    stderr), -1 where none."""
    mine = ffi.new("int[4]")
    ex = ffi.new("int[]", extra) if extra else ffi.NULL
    with launched.sending:  # its ctl is not closed meanwhile (_core.collect)
        ctl = launched.ctl.fileno()
        if ctl < 0:
            rc = -errno.EPIPE  # closed by now
        else:
            rc = lib.sbx_exec_send(ctl, msg, len(msg), pipes, ex, len(extra), mine)
            extra.clear()  # closed by the call
    if rc == -errno.EPIPE:
        raise SandboxClosed(INIT_GONE)
    if rc < 0:
        raise OSError(-rc, f"sending an exec request: {os.strerror(-rc)}")
    return mine[0], mine[1], mine[2], mine[3]


def collect(
    col: Collector,
    fds: tuple[int, int, int, int],
    data: bytes | None,
    kill: Callable[[], None],
    first: Callable[[], None] | None = None,
) -> ExecResult:
    """Feed `data` to stdin and collect stdout and stderr until the exit
    record; `kill` ends the command (for a deadline or an output cap).  The
    fds are closed on return.  `first` runs before the wait, where an
    exception ends the command as an interruption does."""
    io = None
    try:
        io = ffi.new("struct sbx_io *")
        io.reply, io.in_fd, io.out_fd[0], io.out_fd[1] = fds  # sbx_io_free closes them
        keep = ffi.from_buffer(data) if data else None  # alive while the loop runs
        if keep is not None:
            io.input, io.input_len = keep, len(data or b"")
        cap = col.limits.output
        io.cap = -1 if cap is None else int(cap)
        io.close_on_cap = 1 if col.limits.closes_output else 0
        if first is not None:
            first()
        while True:
            deadline = None if col.killed else col.deadline
            rc = lib.sbx_io_wait(io, -1 if deadline is None else int(deadline * 1e9))
            if io.truncated:
                col.truncated = True
                if col.verdict is None:
                    col.verdict = "output_limit"
            if rc == lib.SBX_IO_RECORD:
                if io.exited:  # decoded and checked in C
                    col.on_exited(
                        protocol.Exited(
                            io.ex_status,
                            io.ex_utime_us / 1e6,
                            io.ex_stime_us / 1e6,
                            io.ex_maxrss_kb * 1024,
                            io.ex_syscall,
                        )
                    )
                    break
                reply = decode_reply(ffi.buffer(io.rec, io.rec_len)[:])
                col.on_reply(reply)  # a failed start raises its ExecError here
                if col.exited is not None:
                    break
            elif rc == lib.SBX_IO_DEADLINE:
                if col.due() is not None:
                    col.killed = True
                    kill()  # then wait for the exit record
            elif rc == lib.SBX_IO_CAP:
                if not col.killed:
                    col.killed = True
                    kill()  # more output is read and dropped until the exit record
            elif rc == lib.SBX_IO_CLOSED:
                raise SandboxClosed(REPLY_CLOSED)
            elif rc == -errno.EMSGSIZE:
                raise ProtocolError(OVERSIZED)
            elif rc < 0:
                raise OSError(-rc, f"collecting an exec's output: {os.strerror(-rc)}")
            # SBX_IO_EINTR: Python ran the signal handlers on return; go on
        for s, out in ((0, col.out), (1, col.err)):
            if io.len[s]:
                out.append(ffi.buffer(io.buf[s], io.len[s])[:])
            col.sizes[s + 1] = io.len[s]
    except SandboxError:
        raise
    except BaseException:
        # interrupted (KeyboardInterrupt...): do not leave the command running
        if col.exited is None:
            try:
                kill()
            except SandboxError:
                pass
        raise
    finally:
        if io is not None:
            lib.sbx_io_free(io)
        else:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
    return col.result()
