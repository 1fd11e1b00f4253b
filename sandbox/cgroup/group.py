"""What the rest of the package sees of a cgroup, whichever the version:
a Group to make children in, to put an exec into, and to read accounting
from.  A sandbox has one group; each of its execs a child of it."""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import resource
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from .. import fsbatch
from ..limits import Limits
from . import _fs

PREFIX = "sandbox-"


@dataclass(frozen=True)
class Usage:
    """What one exec's cgroup counted."""

    cpu_user: float  # seconds
    cpu_sys: float
    max_memory: int  # bytes: the cgroup's peak
    oom_kills: int  # processes the OOM killer ended in it
    pids_refused: int  # forks refused by its pids limit
    pids_peak: int | None
    memory_now: int  # bytes charged at the read (-1: unknown)


def sandbox_name(seq: int) -> str:
    """sandbox-OWNERPID-OWNERSTART-SEQ: `gc` can tell whether the owner lives
    (a pid alone could have been reused)."""
    return f"{PREFIX}{os.getpid()}-{start_time(os.getpid())}-{seq}"


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (field 22 of stat)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2 :].split()[19])


def owner_alive(name: str) -> bool:
    """Whether the process that made this group still runs (a zombie does not)."""
    try:
        pid_s, start_s, _ = name[len(PREFIX) :].split("-")
        with open(f"/proc/{int(pid_s)}/stat", "rb") as f:
            data = f.read()
        rest = data[data.rindex(b")") + 2 :].split()
        return rest[0] not in (b"Z", b"X") and int(rest[19]) == int(start_s)
    except (ValueError, OSError, IndexError):
        return False


FD_RICH = 8192
# An exec's group is used again (recycle) only with at most this charged
# to it after its exec: the per-CPU charge batches the kernel keeps ahead
# (64 pages per CPU, charged to the group but unused) and the kernel
# objects of a finished process that are freed late (its stack, after a
# grace period).  More means pages of its own (a file it wrote, page
# cache it read first), which the next exec would find counted as its.
RECYCLE_MEMORY = 1 << 20


def _fd_rich() -> bool:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= FD_RICH


class Group(ABC):
    """A sandbox's group.  Its execs' groups are children of it; one spare
    child is made ahead of time (by the pool's thread), so that an exec's
    start only writes its limits.  An exec's group that is as good as new
    after its exec becomes the spare again (recycle): sequential execs of
    one process each, the common case, reuse one group, through sandboxes
    too (the pool keeps a closed sandbox's group with its spare).  Else the
    next spare is made ahead only once a sandbox runs a second exec: most
    run one, and a spare nobody takes costs as much CPU as the group that is
    used (mkdir, then rmdir)."""

    version: int

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: Group | None = None
        self._seq = 0
        self._execs = 0
        self.children: list[Group] = []
        self.on_spare_taken: Callable[[Group], None] | None = None
        self._files: dict[str, int] = {}  # path -> an fd kept open (see prepare)
        self._pending: list[tuple[str, str]] | None = None  # _w()s of an apply() under way
        self.applied = Limits()  # what apply() wrote so far
        self.sandbox = False  # a sandbox's own group (the pool may keep it for the next)
        self._attach: list[int] | None = None  # kept open: attach_files() hands out duplicates
        self.parent: Group | None = None  # the sandbox's group, for an exec's
        self.closed = False  # a sandbox's group that was disposed: takes no exec's group back
        self.left_shmem = False  # an exec's group of it went with tmpfs files charged (see note_shmem)

    # -- files, through fds opened ahead of time where prepare() could ----------

    def _fd(self, path: str, flags: int) -> int:
        fd = self._files.get(path)
        if fd is None:
            fd = self._files[path] = os.open(path, flags | os.O_CLOEXEC)
        return fd

    def _w(self, path: str, value: str) -> None:
        if self._pending is not None:
            self._pending.append((path, value))  # apply() writes them at its end
            return
        os.write(self._fd(path, os.O_WRONLY), value.encode())

    def _flush(self, writes: list[tuple[str, str]]) -> None:
        """The limit writes of one apply(), in order, in two C calls (opens,
        then writes): the pool's thread made a spare's three writes with six
        Python calls, each giving the interpreter lock to the caller's thread
        and waiting to get it back.  The first failure is raised."""
        todo = list(dict.fromkeys(p for p, _ in writes if p not in self._files))
        self._open_files(todo, os.O_WRONLY, missing=())  # a missing file raises, as os.open did
        got = fsbatch.write_many([(self._files[p], v.encode()) for p, v in writes])
        for (p, _), r in zip(writes, got, strict=True):
            if r < 0:
                raise fsbatch.error(r, p)

    def _r(self, path: str) -> str:
        try:
            return os.pread(self._fd(path, os.O_RDONLY), 4096, 0).decode("ascii", "replace")
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENODEV):
                return ""  # a removed group (its sandbox closed meanwhile); kernfs says ENODEV
            raise

    def _ri(self, path: str, default: int = 0) -> int:
        return _fs.to_int(self._r(path), default)

    def _keyed(self, path: str) -> dict[str, int]:
        return _fs.parse_keyed(self._r(path))

    def _read_many(self, paths: list[str]) -> list[str]:
        """_r() of each path, in two C calls (sandbox/fsbatch.py)."""
        missing = (errno.ENOENT, errno.ENODEV)  # ENODEV: a group removed meanwhile (kernfs)
        self._open_files([p for p in paths if p not in self._files], os.O_RDONLY, missing)
        fds = [self._files.get(p, -1) for p in paths]
        out = []
        for got in fsbatch.pread_many(fds):
            if isinstance(got, bytes):
                out.append(got.decode("ascii", "replace"))
            elif -got in (errno.ENOENT, errno.ENODEV, errno.EBADF):
                out.append("")  # missing here, or a removed group (as _r)
            else:
                raise fsbatch.error(got)
        return out

    def _open_files(self, paths: list[str], flags: int, missing: tuple[int, ...] = (errno.ENOENT,)) -> None:
        """Open these files into _files at once; missing ones are skipped
        (not on this kernel or host: memsw, pids.peak...)."""
        err = None
        for p, fd in zip(paths, fsbatch.open_many(paths, flags), strict=True):
            if fd >= 0:
                self._files[p] = fd
            elif -fd not in missing and err is None:
                err = fsbatch.error(fd, p)
        if err is not None:
            raise err

    def prepare(self, writes: list[str], reads: list[str], sandbox: bool = False) -> None:
        """Open now (in the pool's thread) what a start will write and read:
        an open of a cgroup file costs ~20 us here, a start opens a dozen.
        That keeps about 15 fds per running sandbox, so only where the fd
        limit is high (RLIMIT_NOFILE >= FD_RICH); else files open on use."""
        # A sandbox's group is written once (its limits), never read nor
        # entered; an exec's is read, and written only for limits of its own.
        if sandbox:
            paths, flags = writes, os.O_WRONLY
        else:
            paths, flags = (reads if _fd_rich() else []), os.O_RDONLY
        self._open_files([p for p in paths if p not in self._files], flags)
        if not sandbox and self._attach is None:
            self._attach = self._open_attach()

    def close_files(self) -> None:
        """Close the fds kept for the group's files (not its attach fds).
        Forgotten first: interrupted between the two, the group kept the
        numbers of closed fds, and a later write went to whatever file
        reused one (EBADF seen; a limit written into another file, not)."""
        files, self._files = self._files, {}
        fsbatch.close_many(list(files.values()))

    def _drop_attach(self) -> None:
        fds, self._attach = self._attach, None
        fsbatch.close_many(fds or [])

    def _close_files(self) -> None:
        files, self._files = self._files, {}
        attach, self._attach = self._attach, None
        fsbatch.close_many([*files.values(), *(attach or [])])

    def _open_resettable(self, paths: list[str]) -> None:
        """At an exec's group's making: open these counters read-write, for
        usage() to read and _reset to write through (a v2 memory.peak's
        reset holds for the fd it was written to).  One the kernel will not
        open for writing (EACCES: no reset, e.g. memory.peak before 6.12)
        is opened on use read-only, and then the group is not recycled."""
        self._open_files(paths, os.O_RDWR, missing=(errno.ENOENT, errno.EACCES, errno.EPERM))

    def _reset(self, paths: list[str], value: bytes) -> bool:
        """Write `value` to each of these counters (_open_resettable's);
        False on any failure."""
        fds = [fd for p in paths if (fd := self._files.get(p)) is not None]
        if len(fds) != len(paths):
            return False
        return all(r == len(value) for r in fsbatch.write_many([(fd, value) for fd in fds]))

    @abstractmethod
    def _open_attach(self) -> list[int]: ...

    @abstractmethod
    def prepare_start(self, sandbox: bool = False) -> None:
        """prepare() with the files of this version's limits and accounting
        (a `sandbox` group's: its limits only)."""

    def attach_files(self) -> list[int]:
        """Fds that an exec child writes "0" into to enter this group (the
        caller owns them): duplicates of fds the group keeps, opened ahead
        of time, so that a recycled group opens nothing again."""
        if self._attach is None:
            self._attach = self._open_attach()
        fds = fsbatch.dup_many(self._attach)
        bad = next((fd for fd in fds if fd < 0), None)
        if bad is not None:
            fsbatch.close_many([fd for fd in fds if fd >= 0])
            raise fsbatch.error(bad)
        return fds

    @abstractmethod
    def _new_child(self, name: str, limits: Limits) -> Group: ...

    def _for_child(self, limits: Limits) -> None:  # noqa: B027 - most groups need nothing
        """Whatever this group needs before a child can have these limits."""

    def apply(self, limits: Limits) -> None:
        """Write these limits (those that are set) into the group."""
        self._pending = []
        try:
            self._apply(limits)
            writes = self._pending
        finally:
            self._pending = None
        self._flush(writes)
        self.applied = self.applied.merge(limits)

    @abstractmethod
    def _apply(self, limits: Limits) -> None: ...

    def _own(self, limits: Limits) -> Limits:
        """What of an exec's limits its group must hold itself.  Its CPU quota
        and cpuset, where they are its sandbox's, hold through the sandbox's
        group (sandbox/cgroup/v1.py joins the exec to it).  The memory and
        pids limits are held again: a charge or fork refused by the parent's
        limit first counts in the child's peak (pids limit + 1; memory a few
        MB over, THP and charge batches), and the peaks are the verdicts'
        figures.  The spare is made with them (make_spare): no write then."""
        return _without_held(limits, self.applied, (("cpus",), ("cpuset",)))

    def _next_name(self) -> str:
        with self._lock:
            self._seq += 1
            return f"exec-{self._seq}"

    def _held(self) -> Limits:
        """What a spare of this sandbox's group holds: its memory and pids
        limits, which an exec's group holds again (see _own)."""
        a = self.applied
        return Limits(memory=a.memory, memory_swap=a.memory_swap, pids=a.pids)

    def make_spare(self) -> None:
        if self._spare is not None:
            return  # one came back meanwhile (recycle)
        g = self._new_child(self._next_name(), self._held())
        g.parent = self
        try:
            g.prepare_start()
        except BaseException:
            g.remove()
            raise
        with self._lock:
            if self._spare is None:
                self._spare = g
                self.children.append(g)
                return
        g.remove()  # one was made meanwhile

    def child(self, limits: Limits) -> Group:
        """A child group with these limits, for one exec."""
        limits = self._own(limits)
        self._for_child(limits)
        with self._lock:
            g, self._spare = self._spare, None
            self.children = [c for c in self.children if c.exists()]
            self._execs += 1
            # a second exec found no spare (several at once, or the last one's
            # group was not recycled): more may follow, have one made ahead
            ahead = self._execs >= 2 and g is None
        if g is not None:
            try:
                # but what the spare holds already (make_spare)
                g.apply(_without_held(limits, g.applied, (("memory", "memory_swap"), ("pids",))))
            except BaseException:
                g.remove()
                raise
        else:
            g = self._new_child(self._next_name(), limits)
            g.parent = self
            with self._lock:
                self.children.append(g)
        if ahead and self.on_spare_taken is not None:
            self.on_spare_taken(self)
        return g

    def recycle(self, u: Usage) -> bool:
        """After its exec (its exit record read), an exec's group becomes its
        sandbox's spare again, where it is as good as a new one: only the
        exec's own process ever ran in it (pids peak 1, so none is left:
        the init reaped it before it sent the record), nothing was refused
        or killed, it holds its sandbox's limits and no more than
        RECYCLE_MEMORY is charged to it; and its counts can be reset.
        That saves a mkdir, an rmdir and a dozen opens per exec (~0.5 ms of
        CPU on this machine).  False: the caller disposes of it."""
        p = self.parent
        if (
            p is None
            or u.pids_peak != 1
            or u.oom_kills
            or u.pids_refused
            or not 0 <= u.memory_now <= RECYCLE_MEMORY
            or _cgroup_limits(self.applied) != _held_limits(p.applied)
        ):
            self._spare_wanted(p)
            return False
        # all under the sandbox's lock: a close sets `closed` under it, and
        # the pool removes (and closes the fds of) an exec's group that is not
        # the spare only after that; a reset through closed fds could write
        # into whatever file reused their numbers
        with p._lock:
            if p._spare is None and not p.closed and self.exists() and self._reset_counts():
                p._spare = self
                return True
        self._spare_wanted(p)
        return False

    @staticmethod
    def _spare_wanted(p: Group | None) -> None:
        """A sandbox that ran more than one exec will likely run another:
        its spare is made ahead when its last exec's group goes."""
        if p is None or p._execs < 2 or p._spare is not None or p.closed:
            return
        if p.on_spare_taken is not None:
            p.on_spare_taken(p)

    def _reset_counts(self) -> bool:
        """Zero the counts usage() reads (CPU time, memory peak); False where
        this version cannot."""
        return False

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def cpu_seconds(self) -> float:
        """CPU time used so far (user + system), cheap: the watchdog polls it."""

    @abstractmethod
    def pids_refused(self) -> int: ...

    @abstractmethod
    def usage(self) -> Usage: ...

    @abstractmethod
    def kill(self) -> None:
        """SIGKILL every process in the group and wait (bounded) until they are gone."""

    @abstractmethod
    def has_processes(self) -> bool:
        """Whether any process is in the group (read by path: never through
        a kept fd that a removal may close meanwhile)."""

    @abstractmethod
    def shmem(self) -> int:
        """Bytes of tmpfs and shared memory charged to the group and its
        children (-1: unknown).  Once its processes are gone, these are files
        they left on a tmpfs that outlives them (a host mount's): no swap
        here, so never reclaimed, and charged to it (even to a removed exec
        group, which counts in its parent) for as long as the files exist."""

    def note_shmem(self) -> None:
        """Before an exec's group goes: tell its sandbox's group when more
        than RECYCLE_MEMORY of tmpfs is charged to it (see shmem).  Read
        here, not only in the sandbox's group afterwards: memory.stat is
        brought up to date on a read only where the kernel counted enough
        changes in that group (memcg_vmstats_needs_flush), and it stops
        counting them in the ancestors of a group that has enough already.
        A sandbox's group read after a write of 8 MB in its exec's group
        showed none of it, once in about 30 runs of test_limits.py (it was
        then kept with the file charged); the exec's own group, read
        first, is brought up to date."""
        p = self.parent
        if p is not None and not p.left_shmem and self.shmem() > RECYCLE_MEMORY:
            p.left_shmem = True

    def clear(self) -> bool:
        """Remove the exec groups but the spare (fresh, or recycled: clean
        either way): True when no other is left."""
        with self._lock:
            spare = self._spare
            self._execs = 0
        ok = True
        for g in list(self.children):
            if g is not spare:
                g.note_shmem()
                ok = g.remove(False) and ok
        self.children = [g for g in self.children if g.exists()]
        return ok and self.exists()

    def remove(self, wait: bool = True) -> bool:
        """Remove the group (children first); False while processes remain
        (after waiting a little for dying ones, unless wait=False)."""
        self._close_files()
        ok = True
        for g in list(self.children):
            ok = g.remove(wait) and ok
        self.children = [g for g in self.children if g.exists()]
        return self._rmdirs(50 if wait else 1) and ok

    @abstractmethod
    def _rmdirs(self, tries: int) -> bool:
        """Remove this group's own directories; False for one still busy."""


def _cgroup_limits(a: Limits) -> tuple[object, ...]:
    return (a.memory, a.memory_swap, a.pids, a.cpus, a.cpuset)


def _held_limits(a: Limits) -> tuple[object, ...]:
    """_cgroup_limits of Group._held() of a group with these limits, without
    making that Limits (each exec asks; a new Limits validates every field)."""
    return (a.memory, a.memory_swap, a.pids, None, None)


@functools.lru_cache(maxsize=256)
def _without_held(limits: Limits, held: Limits, fields: tuple[tuple[str, ...], ...]) -> Limits:
    """`limits` without each group of fields whose values `held` has already
    (a group's fields go together: memory_swap is written with memory).
    Asked twice per exec with the same few values: kept (Limits are frozen),
    since a new Limits validates every field again (~0.1 ms a cycle here,
    with the interpreter lock contended)."""
    same: dict[str, None] = {}
    for group in fields:
        if all(getattr(limits, f) == getattr(held, f) for f in group):
            same.update(dict.fromkeys(group))
    return dataclasses.replace(limits, **same) if same else limits
