"""Cgroups made ahead of time and removed afterwards, by one background
thread, so that neither mkdir nor rmdir is on a sandbox's start or end:
about 0.4 ms of mkdir and 0.1 ms of rmdir per group here (measured), for a
start that should take about 2 ms.

The pool keeps TARGET empty sandbox groups, each with a spare exec child,
and refills a sandbox's spare when an exec takes it and its group does not
come back clean (Group.recycle).  Groups handed back (`dispose`) are
removed in order, children first; one that still holds processes is tried
again a little later (its processes are being killed with their pid
namespace), up to a limit.  `shutdown()` (also at exit)
removes everything the pool holds; a process killed before that leaves
its groups to `gc`.

A closed sandbox's own group is used again, for the next sandbox with the
same cgroup limits (up to KEEP of them), with its spare: once its other
exec groups are removed it holds nothing but those limits (a sandbox's
processes are all in exec groups or gone; none reads its counts), and a
judge's sandboxes all have the same limits.  That saves its mkdir, rmdir and limit writes (~0.6 ms of
CPU per sandbox here, the memory limit's write alone ~50 us).  What its
exec groups left charged (page cache, reclaimable) counts against the next
sandbox's memory limit until it is reclaimed, as it would in its parent;
a group with more than RECYCLE_MEMORY of tmpfs or shared memory charged
(files its commands left on a host tmpfs mount: never reclaimed without
swap) is not kept, or the next sandbox would start with them counted."""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from collections.abc import Callable

from .. import interrupts
from ..limits import Limits
from .group import RECYCLE_MEMORY, Group

TARGET = 2
KEEP = 4  # closed sandboxes' groups kept for the next ones
RETRIES = 40  # x RETRY_DELAY
RETRY_DELAY = 0.025
DISPOSE_DELAY = 0.005  # seconds before a disposed group is removed


class Pool:
    def __init__(self, make: Callable[[], Group], target: int = TARGET) -> None:
        self._make = make
        self._target = target
        self._ready: deque[Group] = deque()
        self._kept: deque[Group] = deque()  # closed sandboxes' groups, with their limits
        self._trash: deque[tuple[Group, int, float]] = deque()
        self._spares: deque[Group] = deque()
        self._lock = threading.RLock()  # entered as `with self._lock` (see interrupts.py)
        self._cond = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._busy = False

    def _wake(self) -> None:
        # with self._lock held
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._run, name="sandbox-cgroups", daemon=True)
            self._thread.start()
        self._cond.notify()

    def take(self, limits: Limits) -> Group:
        key = limits_key(limits)
        g = None
        try:
            with self._lock:
                g = next((k for k in self._kept if limits_key(k.applied) == key), None)
                if g is not None:
                    self._kept.remove(g)
                elif self._ready:
                    # not g = popleft(): an interrupt raised as it returns lost the group
                    g = self._ready[0]
                    del self._ready[0]
                self._wake()
            if g is None:
                # the pool is empty (a burst): made here, as without a pool (an
                # interrupt inside the make would lose the group it made)
                with interrupts.deferred():
                    g = self._make()
                g.on_spare_taken = self._want_spare
            g.sandbox = True
            g.closed = False
            if limits_key(g.applied) != key:
                g.apply(limits)
            g.close_files()  # a sandbox's own group is written once, and never read
            return g
        except BaseException:
            # a failure, or an interrupt (KeyboardInterrupt) after the group
            # left the pool: removed, not left on the host with nothing holding it
            if g is not None:
                with interrupts.deferred():
                    self.dispose(g)
            raise

    def _want_spare(self, g: Group) -> None:
        with self._lock:
            self._spares.append(g)
            self._wake()

    def dispose(self, g: Group) -> None:
        g.on_spare_taken = None
        with g._lock:
            g.closed = True  # its execs' groups are not taken back now (Group.recycle)
        with self._lock:
            # not at once: the caller's next steps (its close, its next start)
            # are Python work this thread's would contend with for the lock
            self._trash.append((g, 0, time.monotonic() + DISPOSE_DELAY))
            self._wake()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopped and not self._work():
                    self._cond.wait(self._next_retry())
                if self._stopped:
                    return
                self._busy = True
                trash = self._trash.popleft() if self._due_trash() else None
                spare = self._spares.popleft() if trash is None and self._spares else None
                refill = trash is None and spare is None and len(self._ready) < self._target
            try:
                if trash is not None:
                    self._remove(*trash)
                elif spare is not None:
                    if spare.exists() and spare.on_spare_taken is not None:
                        spare.make_spare()
                elif refill:
                    g = self._make()
                    g.prepare_start(sandbox=True)
                    g.make_spare()
                    g.on_spare_taken = self._want_spare
                    with self._lock:
                        if self._stopped:
                            g.remove()
                        else:
                            self._ready.append(g)
            except OSError:
                time.sleep(RETRY_DELAY)  # e.g. EAGAIN/ENOMEM of the kernel: try later
            finally:
                with self._lock:
                    self._busy = False
                    self._cond.notify_all()

    def _due_trash(self) -> bool:
        return bool(self._trash) and self._trash[0][2] <= time.monotonic()

    def _work(self) -> bool:
        return self._due_trash() or bool(self._spares) or len(self._ready) < self._target

    def _next_retry(self) -> float | None:
        if not self._trash:
            return None
        return max(0.0, min(t for _, _, t in self._trash) - time.monotonic())

    def _remove(self, g: Group, tries: int, _: float) -> None:
        if g.sandbox and self._keep(g):
            return
        if not g.sandbox:
            g.note_shmem()
        if g.remove(wait=False) or tries >= RETRIES:
            return
        with self._lock:
            self._trash.append((g, tries + 1, time.monotonic() + RETRY_DELAY))

    def _keep(self, g: Group) -> bool:
        """A closed sandbox's group, kept for the next sandbox with its limits
        if its exec groups are gone (then nothing is left in it); True when
        kept.  With KEEP kept already, the one kept longest ago goes: a
        caller whose limits changed (a judge's next problem) would else
        never have a group kept again, behind groups of limits no longer
        asked for (a mkdir and rmdir per hierarchy, each sandbox)."""
        with self._lock:
            if self._stopped:
                return False
        if not g.clear():
            return False  # something of it is still there: removed, tried again
        if g.left_shmem or not 0 <= g.shmem() <= RECYCLE_MEMORY:
            return False  # tmpfs files its commands left would count against the next one's limit
        g.make_spare()
        g.on_spare_taken = self._want_spare
        with self._lock:
            if self._stopped:
                return False
            self._kept.append(g)
            old = self._kept.popleft() if len(self._kept) > KEEP else None
        if old is not None:
            old.sandbox = False  # removed, not kept again
            old.on_spare_taken = None
            self._remove(old, 0, 0.0)
        return True

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until every disposed group is removed (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while (self._trash or self._busy) and time.monotonic() < deadline:
                self._cond.wait(0.01)

    def shutdown(self) -> None:
        """Stop the thread; remove the pooled groups and what was disposed."""
        with self._lock:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(5.0)
        with self._lock:
            groups = [g for g, _, _ in self._trash] + list(self._ready) + list(self._kept)
            self._trash.clear()
            self._ready.clear()
            self._kept.clear()
            self._spares.clear()
        for g in groups:
            g.remove()

    def restart(self) -> None:
        """After shutdown(): usable again (the thread starts on demand)."""
        with self._lock:
            self._stopped = False
            self._thread = None


_pools: list[Pool] = []


def _at_exit() -> None:
    for p in _pools:
        p.shutdown()


atexit.register(_at_exit)


def limits_key(limits: Limits) -> tuple[object, ...]:
    """What of a Limits a group holds: its cgroup limits."""
    return (limits.memory, limits.memory_swap, limits.pids, limits.cpus, limits.cpuset)


def new(make: Callable[[], Group]) -> Pool:
    p = Pool(make)
    _pools.append(p)
    return p
