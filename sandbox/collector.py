"""The state of one running command, sans I/O: its output (capped), the
exit record, the limits the host watches (wall clock, CPU time, refused
forks, output size), and from all of it the verdict: why the run ended.

The front ends ask `wake_in()` how long they may wait, call `due()` when
that time comes, and kill the command when it returns a verdict."""

from __future__ import annotations

import errno
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field

from . import cgroup, protocol, redact
from .cgroup import Group, Usage
from .errors import CommandNotFound, ExecError, ProtocolError, os_error_text
from .leftovers import Leftovers
from .limits import Limits
from .result import ExecResult
from .watchdog import watchdog

PIDS_POLL = 0.05  # seconds between looks at the pids limit's refusal counter
CPU_POLL_MIN = 0.002
JOIN_WAIT = 0.001  # seconds before a look again at a command that is not in its group yet


def exec_error(f: protocol.Fail, argv0: str) -> ExecError:
    stage = protocol.EXEC_STAGES.get(f.stage, f"stage {f.stage}")
    if stage == "exec":
        msg = f"exec {argv0}: {os_error_text(f.errno)}"
        if f.errno == errno.ENOENT:
            return CommandNotFound(
                msg + "; check the path, or that the program exists in the image", f.errno, stage
            )
        return ExecError(msg, f.errno, stage)
    if stage == "chdir":
        return ExecError(
            f"exec {argv0}: cannot enter the working directory {f.detail!r}: "
            f"{os_error_text(f.errno)}; pass an existing cwd=",
            f.errno,
            stage,
        )
    if stage == "stopped":
        return ExecError(
            f"exec {argv0}: stopped ({f.detail}) by a process of the sandbox before it could "
            "start, and killed: something in the sandbox signals its new processes",
            f.errno,
            stage,
        )
    return ExecError(f"exec {argv0}: {stage} failed: {os_error_text(f.errno)}", f.errno, stage)


def start_reply(reply: protocol.Reply, argv0: str) -> int:
    """The pid from a STARTED reply; an EXEC_FAIL becomes its ExecError."""
    if reply.type == protocol.REP_STARTED:
        try:
            return protocol.decode_started(reply.body)
        except protocol.Malformed as e:
            raise ProtocolError(str(e)) from None
    if reply.type == protocol.REP_EXEC_FAIL:
        try:
            f = protocol.decode_fail(reply.body)
        except protocol.Malformed as e:
            raise ProtocolError(str(e)) from None
        raise exec_error(f, argv0)
    raise ProtocolError(f"unexpected message type {reply.type} for an exec")


def _syscall_name(nr: int) -> str | None:
    if nr == -1:
        return None
    if nr == -2:
        return "a syscall of another architecture"
    from .seccomp import syscall_name

    return syscall_name(nr)


_ncpu: tuple[float, float] = (-math.inf, 1.0)  # (when read, os.cpu_count())


def _cpu_count() -> float:
    """os.cpu_count(), read again once a second at most: it reads a sysfs
    file (~40 us per exec with limits here, the interpreter lock contended),
    and CPUs come and go rarely (hotplug)."""
    global _ncpu
    now = time.monotonic()
    if now - _ncpu[0] > 1.0:
        _ncpu = (now, float(os.cpu_count() or 1))
    return _ncpu[1]


def _cpus(limits: Limits) -> float:
    """How many CPUs the command can use at once: CPU time grows at most this fast."""
    n = _cpu_count()
    if limits.cpus is not None:
        n = min(n, limits.cpus)
    if limits.cpuset is not None:
        k = 0
        for part in limits.cpuset.split(","):
            a, _, b = part.partition("-")
            k += int(b or a) - int(a) + 1
        n = min(n, float(k))
    return max(n, 0.01)


@dataclass(slots=True)  # one per exec: smaller, and faster to make and read
class Collector:
    argv: list[str]
    limits: Limits = field(default_factory=Limits)
    group: Group | None = None
    watch_id: int | None = None  # the watchdog's, while it watches
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    out: list[bytes] = field(default_factory=list)
    err: list[bytes] = field(default_factory=list)
    sizes: list[int] = field(default_factory=lambda: [0, 0, 0])
    truncated: bool = False
    exited: protocol.Exited | None = None
    redact: tuple[bytes, ...] = field(default=(), repr=False)
    ended: float = 0.0
    verdict: str | None = None  # decided by the host: timeout, cpu_time, pids, output_limit
    pid: int | None = None
    killed: bool = False  # by us, for a verdict
    usage: Usage | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def arm(self) -> None:
        """The command is about to start: its clocks run from now."""
        self.started = time.monotonic()
        if self.limits.timeout is not None:
            self.deadline = self.started + self.limits.timeout

    @property
    def timed_out(self) -> bool:
        return self.verdict == "timeout"

    # -- output ----------------------------------------------------------------

    def feed(self, stream: int, data: bytes) -> bool:
        """Keep output up to the cap; True once the stream went over it."""
        cap = self.limits.kept_output
        if cap is not None:
            room = int(cap) - self.sizes[stream]
            if len(data) > room:
                data = data[: max(room, 0)]
                self.truncated = True
                if self.verdict is None:
                    self.verdict = "output_limit"
        if data:
            self.sizes[stream] += len(data)
            (self.out if stream == 1 else self.err).append(data)
        return self.truncated and cap is not None and self.sizes[stream] >= int(cap)

    def passed(self, stream: int, data: bytes) -> bytes:
        """Output a caller streams on itself (the CLI): counted towards the cap
        but not kept; the part within the cap."""
        cap = self.limits.passed_output
        if cap is None:
            return data
        room = max(int(cap) - self.sizes[stream], 0)
        if len(data) > room:
            data = data[:room]
            self.truncated = True
            if self.verdict is None:
                self.verdict = "output_limit"
        self.sizes[stream] += len(data)
        return data

    # -- watching ----------------------------------------------------------------

    def _check_period(self, used: float) -> float:
        period = PIDS_POLL if self.limits.pids is not None else float("inf")
        if self.limits.cpu_time is not None:
            # the soonest the CPU total can reach the limit
            period = min(period, max(CPU_POLL_MIN, (self.limits.cpu_time - used) / _cpus(self.limits)))
        return period

    def wake_in(self) -> float | None:
        """Seconds until the wall-clock deadline; None: wait for the end."""
        if self.killed or self.deadline is None:
            return None  # nothing to wait for, or killed: wait for the exit record
        return max(0.0, self.deadline - time.monotonic())

    def due(self) -> str | None:
        """At wake time: "timeout" once the deadline has passed."""
        if self.deadline is not None and time.monotonic() >= self.deadline and not self.killed:
            self.verdict = "timeout"
            return self.verdict
        return None

    def first_check(self) -> float | None:
        """When the watchdog first looks at this command (None: never)."""
        if self.group is None:
            return None
        first = [] if self.deadline is None else [self.deadline]
        if self.limits.cpu_time is not None or self.limits.pids is not None:
            first.append(self.started + self._check_period(0.0))
        return min(first) if first else None

    def check_watched(self) -> float | None:
        """In the watchdog's thread: end the command if it went over its CPU
        time or a fork was refused; the next time to look, or None."""
        with self._lock:
            g = self.group
            if g is None or self.killed or self.exited is not None:
                return None
            now = time.monotonic()
            used = g.cpu_seconds() if self.limits.cpu_time is not None else 0.0
            if self.deadline is not None and now >= self.deadline:
                if self.pid is None and not g.has_processes():
                    # Not in its group yet: the init is still starting it (a
                    # deadline of a millisecond can come first).  A kill now
                    # found nothing, and `killed` stopped the front end's own
                    # deadline: the command ran on, its result "timeout".
                    return now + JOIN_WAIT
                self.verdict = "timeout"  # also for a spawn nobody waits for
            elif self.limits.cpu_time is not None and used >= self.limits.cpu_time:
                self.verdict = "cpu_time"
            elif self.limits.pids is not None and g.pids_refused() > 0:
                self.verdict = "pids"
            else:
                times = [now + self._check_period(used)]
                if self.deadline is not None:
                    times.append(self.deadline)
                return min(times)
            self.killed = True
            g.kill()  # all its processes; the init then reports the exit
        return None

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    # -- the end ------------------------------------------------------------------

    def on_reply(self, reply: protocol.Reply) -> None:
        """STARTED, EXEC_FAIL (raised as ExecError) or EXITED."""
        if reply.type in (protocol.REP_STARTED, protocol.REP_EXEC_FAIL):
            try:
                self.pid = start_reply(reply, self.argv[0])
            except BaseException:
                self.abandon()  # it never ran
                raise
            return
        if reply.type != protocol.REP_EXITED:
            raise ProtocolError(f"unexpected message type {reply.type} while a command runs")
        try:
            exited = protocol.decode_exited(reply.body)
        except protocol.Malformed as e:
            raise ProtocolError(f"a malformed exit record: {e}") from None
        self.on_exited(exited)

    def on_exited(self, exited: protocol.Exited) -> None:
        self.exited = exited
        self.ended = time.monotonic()

    def settle(self) -> None:
        """After the exit record: read the exec cgroup's counts; after a kill
        of ours, end whatever the command left (processes that left its
        session too); then the cgroup goes back to its sandbox where it is
        clean (Group.recycle), or is removed where nothing is left in it."""
        if self.group is None and self.watch_id is None:
            return  # no cgroup, never watched: nothing to race with
        watchdog.unwatch(self)
        with self._lock:  # not while the watchdog kills it
            g, self.group = self.group, None
        if g is None:
            return
        self.usage = g.usage()
        if self._reason() not in ("exited", "signaled"):
            g.kill()  # a limit ended it: nothing of it may run on
        elif g.recycle(self.usage):
            return  # its sandbox's spare again, for the next exec
        elif (self.deadline is not None or self.limits.cpu_time is not None) and g.has_processes():
            watchdog.watch(Leftovers(g, self.deadline, self.limits.cpu_time))  # held to them still
        cgroup.dispose(g)  # in the background; one with a process left stays until the sandbox's close

    def _reason(self, code: int | None = None) -> str:
        """Why the command ended; `code`: its waitstatus_to_exitcode, where known."""
        assert self.exited is not None
        if code is None:
            code = os.waitstatus_to_exitcode(self.exited.status)
        sig = -code if code < 0 else None
        u = self.usage
        if self.verdict is not None:
            return self.verdict
        if u is not None and u.oom_kills:
            return "oom"
        if u is not None and u.pids_refused:
            return "pids"
        if (
            u is not None
            and self.limits.cpu_time is not None
            and u.cpu_user + u.cpu_sys >= self.limits.cpu_time
        ):
            return "cpu_time"
        if sig == signal.SIGXCPU:
            return "cpu_time"
        if sig == signal.SIGXFSZ:
            return "file_size"
        if sig == signal.SIGSYS or self.exited.syscall != -1:
            return "seccomp"  # a kill action of the profile (SIGSYS is not sent otherwise)
        return "signaled" if sig is not None else "exited"

    def result(self) -> ExecResult:
        assert self.exited is not None
        self.settle()
        code = os.waitstatus_to_exitcode(self.exited.status)
        sig = -code if code < 0 else None
        out, err = b"".join(self.out), b"".join(self.err)
        if self.redact:
            out = redact.scrub(out, self.redact, self.truncated)
            err = redact.scrub(err, self.redact, self.truncated)
        u = self.usage
        cpu_user = u.cpu_user if u else self.exited.utime
        cpu_sys = u.cpu_sys if u else self.exited.stime
        return ExecResult(
            argv=list(self.argv),  # its own: a caller's change to it is no Process's
            exit_code=None if sig is not None else code,
            signal=sig,
            stdout=out,
            stderr=err,
            reason=self._reason(code),
            wall_time=(self.ended or time.monotonic()) - self.started,
            cpu_time=cpu_user + cpu_sys,
            max_rss=self.exited.maxrss,
            cpu_user=cpu_user,
            cpu_sys=cpu_sys,
            max_memory=u.max_memory if u else None,
            pids_peak=u.pids_peak if u and u.pids_peak is not None and u.pids_peak >= 0 else None,
            truncated=self.truncated,
            syscall=_syscall_name(self.exited.syscall),
        )

    def abandon(self) -> None:
        """The command's end will never be read (the sandbox went away)."""
        watchdog.unwatch(self)
        with self._lock:
            g, self.group = self.group, None
        if g is not None:
            g.kill()
            cgroup.dispose(g)


def drain(fd: int, sink: Collector, stream: int) -> None:
    """After the exit record: take what the command left in the pipe, without
    waiting for processes it left behind that may hold the pipe open."""
    os.set_blocking(fd, False)
    for _ in range(4096):
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno == errno.EIO:
                return  # a pty whose other side has closed
            raise
        if not data:
            return
        sink.feed(stream, data)
