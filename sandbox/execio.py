"""exec()'s host side in C (sandbox/_cext/execio.c): its pipes and reply
socket are made and sent in one call, its stdin written and its output
collected in another, until the exit record; nothing but the calls comes
between the two.  The Python version (still
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
from typing import Any

from . import _core, protocol
from ._base import INIT_GONE, OVERSIZED, REPLY_CLOSED, Spawning, decode_reply
from ._core import ffi, lib
from .errors import ProtocolError, SandboxClosed, SandboxError
from .result import ExecResult


def _send(launched: _core.Launched, io: Any, msg: bytes, pipes: int, extra: list[int]) -> int:
    """Send an exec request with the pipes of `pipes` (bit 0 stdin, 1
    stdout, 2 stderr), then the fds of `extra`, which the call closes and
    removes from the list (first: the C call closes them in every case);
    our ends go into `io`.  Its replies come on a reply channel of the
    sandbox's, or on a new one the init keeps (protocol.EXEC_KEEP), or past
    MAX_CHANNELS at once on a socket of its own.  Returns the channel's
    number (-1: none), for `_give_back`.  Whether it was sent is
    io.reply >= 0 (the call sets it on success only), also for an
    interruption that comes just after the call (which loses the channel's
    number, no fd)."""
    fds = list(extra)
    extra.clear()
    ex = ffi.new("int[]", fds) if fds else ffi.NULL
    with launched.sending:  # its ctl is not closed meanwhile (_core.collect)
        chan, fd, flags = -1, -1, 0
        if pipes or fds:  # the init drops a request that comes with no fd
            if launched.channels:
                chan, fd = launched.channels.pop()
                flags = protocol.EXEC_REUSE
            elif launched.dropped:
                chan, flags = launched.dropped.pop(), protocol.EXEC_KEEP
            elif launched.next_channel < protocol.MAX_CHANNELS:
                chan, flags = launched.next_channel, protocol.EXEC_KEEP
                launched.next_channel += 1
        flags |= protocol.EXEC_WAITS  # we wait as soon as it is sent
        ctl = launched.ctl.fileno()
        if ctl < 0:
            rc = -errno.EPIPE  # closed by now
            if fd >= 0:
                os.close(fd)
            for x in fds:
                os.close(x)
        else:
            flags |= chan << 8 if chan >= 0 else 0
            rc = lib.sbx_exec_send(ctl, msg, len(msg), pipes, ex, len(fds), io, fd, flags)
        if rc < 0 and chan >= 0:
            launched.dropped.append(chan)  # our end was closed by the call
    if rc == -errno.EPIPE:
        raise SandboxClosed(INIT_GONE)
    if rc < 0:
        raise OSError(-rc, f"sending an exec request: {os.strerror(-rc)}")
    return chan


def _give_back(launched: _core.Launched, chan: int, fd: int | None) -> None:
    """A channel after its exec: free again with our end `fd` (its last
    record read), or dropped (None: our end is closed)."""
    with launched.sending:
        if fd is not None and launched.ctl.fileno() >= 0:
            launched.channels.append((chan, fd))
            return
        launched.dropped.append(chan)
    if fd is not None:
        os.close(fd)  # the sandbox is gone


def run(
    sp: Spawning,
    launched: _core.Launched,
    data: bytes | None,
    kill: Callable[[], None],
    first: Callable[[], None] | None = None,
) -> ExecResult:
    """Send the exec request of `sp` (made with make_pipes=False: the pipes
    of `sp.mask & 7` are made here, as `_send` says), feed `data` to its
    stdin and collect stdout and stderr until its exit record; `kill` ends
    the command (for a deadline or an output cap).  Every fd is closed on
    return, but a channel's, which goes back to `launched` once its exit
    record was read.  `first` runs just before the send.  Everything the
    wait needs is ready before the send: the init yields its CPU to us
    until we sleep (do_exec in init.c), so nothing comes in between."""
    col = sp.col
    io = None
    chan = -1
    clean = False  # the exit record read: nothing more comes on the channel
    try:
        # before the send: the init gives the CPU to this thread until it sleeps
        if first is not None:
            first()
        io = ffi.new("struct sbx_io *")  # sbx_io_free closes its fds
        io.reply = io.in_fd = io.out_fd[0] = io.out_fd[1] = -1
        io.req_id = sp.req_id
        keep = ffi.from_buffer(data) if data else None  # alive while the loop runs
        if keep is not None:
            io.input, io.input_len = keep, len(data or b"")
        cap = col.limits.kept_output
        io.cap = -1 if cap is None else cap
        io.close_on_cap = 1 if col.limits.closes_output else 0
        chan = _send(launched, io, sp.msg, sp.mask & 7, sp.theirs)  # empties sp.theirs
        while True:
            deadline = None if col.killed else col.deadline
            rc = lib.sbx_io_wait(io, -1 if deadline is None else int(deadline * 1e9))
            if io.truncated:
                col.truncated = True
                if col.verdict is None:
                    col.verdict = "output_limit"
            if rc == lib.SBX_IO_RECORD:
                if io.exited:  # decoded and checked in C (its id too)
                    clean = True
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
    except BaseException as e:
        if io is None or io.reply < 0:
            sp.abort()  # never sent: nothing runs
            raise
        # interrupted (KeyboardInterrupt...): do not leave the command running
        if not isinstance(e, SandboxError) and col.exited is None:
            try:
                kill()
            except SandboxError:
                pass
        raise
    finally:
        if chan >= 0:
            kept = None
            if clean and io is not None:
                kept, io.reply = io.reply, -1  # not closed by sbx_io_free
            _give_back(launched, chan, kept)  # else our end is closed below
        if io is not None:
            lib.sbx_io_free(io)
    return col.result()
