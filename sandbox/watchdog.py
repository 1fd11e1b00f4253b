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
within a few ms of 1 s."""

from __future__ import annotations

import heapq
import itertools
import threading
import time

from .collector import Collector


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Collector]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, col: Collector) -> None:
        first = col.first_check()
        if first is None:
            return
        with self._cond:
            heapq.heappush(self._heap, (first, next(self._seq), col))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sandbox-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                _, _, col = heapq.heappop(self._heap)
            try:
                nxt = col.check_watched()
            except OSError:
                nxt = None  # its cgroup went away under us: nothing left to watch
            if nxt is not None:
                with self._cond:
                    heapq.heappush(self._heap, (nxt, next(self._seq), col))


watchdog = Watchdog()
