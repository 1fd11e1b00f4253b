"""What an exec leaves running in its cgroup once its command exited (a
background job, a double fork): still held to that exec's `timeout` and
`cpu_time`, by the watchdog, until it is gone or killed.  Without this, a
`sh -c "setsid sleep 300 &"` under timeout=1 returned "exited" and the
sleep ran on until the sandbox closed, and a loop of short spinners burnt
CPU for the sandbox's whole life while the exec reported none of it.

A command that exits with processes left keeps exactly what Docker keeps
(they run on), unless it had one of these limits."""

from __future__ import annotations

import os
import time

from .cgroup import Group

POLL_MIN = 0.005  # seconds between looks at the CPU time at the soonest


class Leftovers:
    def __init__(self, group: Group, deadline: float | None, cpu_time: float | None) -> None:
        self.group = group
        self.deadline = deadline
        self.cpu_time = cpu_time
        self.watch_id: int | None = None

    def _next(self, now: float, used: float) -> float:
        times = [] if self.deadline is None else [self.deadline]
        if self.cpu_time is not None:
            # the soonest the limit can be reached, on every CPU at once
            times.append(now + max(POLL_MIN, (self.cpu_time - used) / (os.cpu_count() or 1)))
        return min(times)

    def first_check(self) -> float | None:
        return self._next(time.monotonic(), 0.0)

    def check_watched(self) -> float | None:
        """In the watchdog's thread: kill what is left once over the exec's
        deadline or CPU time; the next time to look, or None (gone)."""
        g = self.group
        if not g.has_processes():
            return None
        now = time.monotonic()
        used = g.cpu_seconds() if self.cpu_time is not None else 0.0
        if (self.deadline is not None and now >= self.deadline) or (
            self.cpu_time is not None and used >= self.cpu_time
        ):
            g.kill()
            return None
        return self._next(now, used)
