"""One thread that watches the limits only the host can check while a
command runs: its CPU time summed over all its processes (the cgroup's
exact count) and forks refused by its pids limit.  It ends a command that
went over by killing everything in the command's cgroup, whether or not
anyone waits for it (a spawned process whose output is being streamed
too).  The wall clock and the output caps stay with the waiting front
ends, which also work without cgroups.

Checks are scheduled, not polled at a fixed rate: for CPU time the next
look is when the limit could be reached at the earliest (what is left,
divided by the CPUs the command may use), so a spin of cpu_time=1 ends
within a few ms of 1 s.

A command that ended (`unwatch`, from its collector) is let go at once,
not kept until its next check with its output; and the thread is woken
only for a check sooner than the one it sleeps until (most commands end
long before their first check).  The next check in the heap is always a
running command's: an ended command's entry was left in it, and each one
woke the thread at its time for nothing, so that a sandbox under a pids
limit running execs back to back (each with a look due 50 ms later) had
it woken about once per exec, contending for the interpreter lock (~0.15
ms of CPU per exec here, measured).  Ended entries further down are
dropped in bulk once they outnumber the live ones: a long command no
longer keeps one entry for every short one that ended meanwhile."""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from typing import Protocol


class Watched(Protocol):
    """A running command (collector.Collector), or what an exec left
    running (leftovers.Leftovers)."""

    watch_id: int | None

    def first_check(self) -> float | None: ...

    def check_watched(self) -> float | None: ...


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []  # (when, id) of the next checks
        self._live: dict[int, Watched] = {}  # id -> a command that runs
        self._seq = itertools.count()
        self._lock = threading.RLock()  # entered as `with self._lock` (see interrupts.py)
        self._cond = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._until = float("inf")  # when the thread wakes next (it has seen no sooner check)

    def watch(self, col: Watched) -> None:
        first = col.first_check()
        if first is None:
            return
        with self._lock:
            # not the heap's first: the thread may sleep until a dropped entry's time
            sooner = first < self._until
            col.watch_id = next(self._seq)
            self._live[col.watch_id] = col
            heapq.heappush(self._heap, (first, col.watch_id))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sandbox-watchdog", daemon=True)
                self._thread.start()
            if sooner:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._until = self._heap[0][0] if self._heap else float("inf")
                    self._cond.wait(None if not self._heap else self._until - time.monotonic())
                self._until = 0.0  # awake: it looks at the heap before it sleeps again
                _, wid = heapq.heappop(self._heap)
                col = self._live.get(wid)
                self._drop_ended()
            if col is None:
                continue  # it ended meanwhile
            try:
                nxt = col.check_watched()
            except OSError:
                nxt = None  # its cgroup went away under us: nothing left to watch
            with self._lock:
                if nxt is None:
                    self._live.pop(wid, None)
                elif wid in self._live:
                    heapq.heappush(self._heap, (nxt, wid))
                self._drop_ended()
            del col

    def _drop_ended(self) -> None:
        """With the lock held: no ended command's entry first in the heap,
        and not many more entries than live commands (each has one)."""
        heap = self._heap
        while heap and heap[0][1] not in self._live:
            heapq.heappop(heap)
        if len(heap) > 2 * len(self._live) + 64:
            self._heap = [e for e in heap if e[1] in self._live]
            heapq.heapify(self._heap)

    def unwatch(self, col: Watched) -> None:
        """The command ended: no more checks (its heap entry is dropped, or skipped)."""
        if col.watch_id is not None:
            with self._lock:
                self._live.pop(col.watch_id, None)
                self._drop_ended()  # the thread may sleep on past this entry's time: once

    def _after_fork(self) -> None:
        # The thread does not exist in a forked child: without this, watch()
        # saw one and never started it, and no cpu_time or pids limit of the
        # child's own commands was enforced.  The parent's commands stay the
        # parent's to watch.
        self._lock = threading.RLock()  # entered as `with self._lock` (see interrupts.py)
        self._cond = threading.Condition(self._lock)
        self._heap = []
        self._live = {}
        self._thread = None
        self._until = float("inf")


watchdog = Watchdog()
os.register_at_fork(after_in_child=watchdog._after_fork)
